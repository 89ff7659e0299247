"""What a request needs from a model, and which models of a pool can give it.

Tools need tool calling; a JSON schema needs structured output; JSON mode needs
JSON mode; images need vision; and the prompt (estimated offline at about four
characters a token) plus the requested output must fit the context window.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

from ._pool import Model
from ._types import CompletionRequest, Usage
from .providers._base import can_embed

if TYPE_CHECKING:
    from ._spaces import EmbeddingSpec

__all__ = [
    "RequestNeeds",
    "embedding_unmet",
    "estimate_embedding_usage",
    "estimate_tokens",
    "is_plain_text",
    "needs_of",
]

_CHARS_PER_TOKEN = 4
_TOKENS_PER_MESSAGE = 4


def _text_of(content: object) -> tuple[int, bool]:
    """(characters of text, has an image) of one message's content."""
    if content is None:
        return 0, False
    if isinstance(content, str):
        return len(content), False
    chars, image = 0, False
    if isinstance(content, list):
        for part in content:
            if isinstance(part, dict):
                kind = part.get("type")
                if kind in ("image_url", "image", "input_image"):
                    image = True
                else:
                    chars += len(str(part.get("text") or ""))
            else:
                chars += len(str(part))
    else:
        chars = len(str(content))
    return chars, image


def estimate_usage(request: CompletionRequest, answer: str) -> Usage:
    """Usage for a provider that reported none (or an unusable one): prompt and answer
    estimated, so that token limits and budgets still count something sensible."""
    prompt, _ = estimate_tokens(request)
    completion = max(1, len(answer) // _CHARS_PER_TOKEN)
    return Usage(prompt, completion, prompt + completion)


def estimate_tokens(request: CompletionRequest) -> tuple[int, bool]:
    """(estimated prompt tokens, whether any message carries an image)."""
    chars, images, n = 0, False, 0
    for msg in request.messages:
        c, img = _text_of(msg.get("content"))
        chars += c
        images = images or img
        n += 1
        for tc in msg.get("tool_calls") or ():
            chars += len(str(tc))
    for tool in request.tools or ():
        chars += len(str(tool))
    return chars // _CHARS_PER_TOKEN + n * _TOKENS_PER_MESSAGE, images


@dataclass(frozen=True, slots=True)
class RequestNeeds:
    tools: bool
    schema: bool
    json_mode: bool
    vision: bool
    tokens: int
    """Estimated prompt tokens plus the requested output."""

    @property
    def special(self) -> bool:
        return self.tools or self.schema or self.json_mode or self.vision

    def unmet(self, model: Model) -> str | None:
        """Why ``model`` cannot serve the request, or None when it can."""
        f = model.features
        if self.tools and "tool_calling" not in f:
            return "does not support tool calling"
        if self.schema and "structured_output" not in f:
            return "does not support structured output (JSON schema)"
        if self.json_mode and "json_mode" not in f:
            return "does not support JSON mode"
        if self.vision and "vision" not in f:
            return "does not accept images"
        if model.context_window is not None and self.tokens > model.context_window:
            return f"context window of {model.context_window} tokens < about {self.tokens} needed"
        return None


def needs_of(request: CompletionRequest) -> RequestNeeds:
    tokens, images = estimate_tokens(request)
    fmt = (request.response_format or {}).get("type")
    return RequestNeeds(
        tools=bool(request.tools),
        schema=fmt == "json_schema",
        json_mode=fmt == "json_object",
        vision=images,
        tokens=tokens + (request.max_tokens or 0),
    )


def is_plain_text(request: CompletionRequest) -> bool:
    """True when ``request`` needs no feature at all: text messages, no tools, no format.

    The common case; it is decided without estimating tokens, so a pool whose members
    declare no context window never pays for the estimate.
    """
    if request.tools or request.response_format is not None:
        return False
    return all(type(m.get("content")) is not list for m in request.messages)


# --- embedding requests -----------------------------------------------------------------


def embedding_unmet(
    model: Model, spec: EmbeddingSpec | None, provider: object, space: str | None
) -> str | None:
    """Why ``model`` cannot serve an embedding request in ``space`` (None: any space), or
    None when it can: it must declare a space, be in that space, and have a provider that
    can embed."""
    if spec is None:
        return "not an embedding model (it declares no embedding_space)"
    if provider is None or not can_embed(provider):
        return f"its provider {model.provider_id!r} cannot embed"
    if space is not None and spec.space != space:
        return f"in embedding space {spec.space!r}, not {space!r}"
    return None


def estimate_embedding_usage(texts: Sequence[str]) -> Usage:
    """Usage of an embedding call whose provider reported none (Gemini's): about four
    characters a token, at least one a text, so that limits and budgets still count."""
    tokens = sum(max(1, len(t) // _CHARS_PER_TOKEN) for t in texts)
    return Usage(tokens, 0, tokens)
