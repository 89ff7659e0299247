"""Shared by the tests of foreign LlamaIndex LLMs as pool members (fixtures: conftest.py)."""

from __future__ import annotations

from typing import Any

from llama_index.core.base.llms.types import ChatMessage
from llama_index.llms.openai_like import OpenAILike

from mesh_core.testing import FaultServer
from tests.conftest import FAST

FAST_POOL = {"retry": {"initial_delay": "10ms"}}


def like(server: FaultServer, model: str, **kw: Any) -> OpenAILike:
    """LlamaIndex's OpenAI-compatible LLM, retries off (the mesh retries)."""
    return OpenAILike(
        model=model,
        api_base=server.base_url,
        api_key="sk-test",
        is_chat_model=True,
        is_function_calling_model=True,
        max_retries=0,
        **kw,
    )


def fast(*model_ids: str, **pool: Any) -> dict[str, Any]:
    """Short timeouts for the members, short retry delays for the pool."""
    return {
        "models": {m: {"timeouts": FAST} for m in model_ids},
        "pools": {"default": {**FAST_POOL, **pool}},
    }


def user(text: str) -> list[ChatMessage]:
    return [ChatMessage(role="user", content=text)]
