"""LlamaIndex LLMs the user already has, as pool members (``type: llamaindex``, ``from_models``).

A configured LlamaIndex ``LLM`` (``Bedrock``, ``Anthropic``, ``OpenAI``, ``OpenAILike``...)
keeps its own authentication and wire protocol; :class:`LlamaIndexAdapter` only translates
the mesh's OpenAI-shaped request into LlamaIndex chat messages and tools, and the answer
back (:mod:`._foreign_convert`). Deadlines, error classification and reply wrapping are
done once for every framework by :class:`mesh_core.providers.ForeignProvider`.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator, Mapping
from typing import Any

from llama_index.core.constants import DEFAULT_CONTEXT_WINDOW, DEFAULT_NUM_OUTPUTS
from llama_index.core.llms.custom import CustomLLM
from llama_index.core.llms.function_calling import FunctionCallingLLM
from llama_index.core.llms.llm import LLM

from mesh_core._config import ProviderConfig
from mesh_core._errors import ConfigurationError, MalformedResponseError, ProviderError
from mesh_core._mesh import Mesh
from mesh_core._types import CompletionChunk, CompletionRequest
from mesh_core.providers import Provider
from mesh_core.providers._foreign import ForeignProvider, mesh_from_models
from mesh_core.providers._foreign_mesh import class_path, held_secrets, provider_from_section
from mesh_core.providers._reply import ParsedResponse

from ._foreign_convert import StreamReader, parse_response, plan

__all__ = ["LlamaIndexAdapter", "mesh_of_models", "provider_from_config"]


def _raised_in_integration(exc: BaseException) -> bool:
    """Whether ``exc`` was raised in a LlamaIndex integration's code (its innermost frame)."""
    tb = exc.__traceback__
    while tb is not None and tb.tb_next is not None:
        tb = tb.tb_next
    module = tb.tb_frame.f_globals.get("__name__", "") if tb is not None else ""
    return str(module).startswith("llama_index.llms.")


def _defined_by(cls: type, name: str) -> type | None:
    """The class of ``cls``'s MRO that defines ``name``."""
    return next((c for c in cls.__mro__ if name in vars(c)), None)


# --- the adapter ------------------------------------------------------------------------------
class LlamaIndexAdapter:
    """The ``ForeignAdapter`` over one LlamaIndex ``LLM`` (sync and async, plain and streamed).

    Keep the LLM's own retries off (``max_retries=0`` on OpenAI's integrations): the mesh
    retries and fails over itself, and a model retrying inside one attempt only eats the
    attempt's deadline.
    """

    name = "llamaindex"

    def __init__(self, llm: LLM) -> None:
        if not isinstance(llm, LLM):
            raise TypeError(f"expected a LlamaIndex LLM, got {type(llm).__name__}")
        self.llm = llm

    def __repr__(self) -> str:  # the LLM's repr may show its key: only its class
        return f"LlamaIndexAdapter({type(self.llm).__name__})"

    def invoke(self, model_name: str, request: CompletionRequest) -> ParsedResponse:
        call = plan(self.llm, request, stream=False)
        return parse_response(self.llm, call, call.bind(self.llm, "chat")())

    async def ainvoke(self, model_name: str, request: CompletionRequest) -> ParsedResponse:
        call = plan(self.llm, request, stream=False)
        return parse_response(self.llm, call, await call.bind(self.llm, "achat")())

    def stream(self, model_name: str, request: CompletionRequest) -> Iterator[CompletionChunk]:
        call = plan(self.llm, request, stream=True)
        state = StreamReader(self.llm, call)
        for resp in call.bind(self.llm, "stream_chat")():
            if (chunk := state.feed(resp)) is not None:
                yield chunk
        yield state.end()

    async def astream(
        self, model_name: str, request: CompletionRequest
    ) -> AsyncIterator[CompletionChunk]:
        call = plan(self.llm, request, stream=True)
        state = StreamReader(self.llm, call)
        async for resp in await call.bind(self.llm, "astream_chat")():
            if (chunk := state.feed(resp)) is not None:
                yield chunk
        yield state.end()

    def sync_only(self, streaming: bool) -> bool:
        """Whether the LLM has no async code of its own for this kind of call: a
        ``CustomLLM`` whose async methods are still LlamaIndex's, which call the sync ones on
        the event loop (blocking it, out of reach of any deadline). The mesh then calls the
        sync method on its own workers instead (:mod:`mesh_core.providers._foreign_threads`)."""
        names = ("astream_chat", "astream_complete") if streaming else ("achat", "acomplete")
        cls = type(self.llm)
        return all(_defined_by(cls, name) is CustomLLM for name in names)

    def classify(self, exc: BaseException) -> ProviderError | None:
        """What only LlamaIndex knows; the rest (SDK errors, the HTTP statuses under them,
        output parser failures) is the shared classifier's.

        A lookup error raised inside an integration (``llama_index.llms.*``) is the
        integration failing to read the model's reply (``choices: []``, a message that
        is not an object): a malformed reply, which fails over at once, not an
        unclassified error. (A TypeError about arguments is the caller's call, not that.)
        """
        if not isinstance(exc, (IndexError, KeyError, AttributeError, TypeError)):
            return None
        if isinstance(exc, TypeError) and "argument" in str(exc):
            return None
        if not _raised_in_integration(exc):
            return None
        return MalformedResponseError(
            f"llamaindex: {type(self.llm).__name__} could not read the model's reply "
            f"({type(exc).__name__}: {exc})"
        )

    def close(self) -> None:
        """Nothing to close: the LLM is the caller's, and so are its clients (LlamaIndex
        LLMs have no close either: their SDK clients are closed when collected)."""


# --- building providers: ``type: llamaindex`` and ``MeshLLM.from_models`` -----------------------
def provider_from_config(provider_id: str, config: ProviderConfig) -> Provider:
    """The provider of a ``type: llamaindex`` section: ``class`` (a LlamaIndex ``LLM``)
    built with ``kwargs``, and ``api_key`` as its ``api_key`` argument unless given there."""
    return provider_from_section(
        provider_id,
        config,
        LLM,
        "LlamaIndex LLM",
        lambda llm, secrets: ForeignProvider(provider_id, LlamaIndexAdapter(llm), secrets=secrets),
    )


def _model_section(llm: LLM) -> dict[str, Any]:
    """What the LLM's metadata tells of it; LlamaIndex's defaults (a 3900-token window, 256
    output tokens) are not knowledge of the model, nor is OpenAI's -1 (no max_tokens set),
    so they are not passed as limits."""
    meta = llm.metadata
    section: dict[str, Any] = {
        "features": {
            "tool_calling": isinstance(llm, FunctionCallingLLM) and meta.is_function_calling_model
        },
    }
    if meta.context_window > 0 and meta.context_window != DEFAULT_CONTEXT_WINDOW:
        section["context_window"] = meta.context_window
    if meta.num_output > 0 and meta.num_output != DEFAULT_NUM_OUTPUTS:
        section["max_output_tokens"] = meta.num_output
    return section


def mesh_of_models(
    models: Mapping[str, LLM],
    *,
    pool: str = "default",
    strategy: str = "priority-selection",
    config: Mapping[str, Any] | None = None,
) -> Mesh:
    """A Mesh whose pool ``pool`` holds ``models`` (mesh model ID -> LLM), in order, then the
    models of ``config`` (see :func:`mesh_core.providers._foreign.foreign_mesh_config`).
    What each LLM's metadata tells is the default of its model's section; ``config``'s
    settings win (its ``features`` merged over the detected ones)."""
    for key, llm in models.items():
        if not isinstance(llm, LLM):
            raise ConfigurationError(
                [(f"models.{key}", f"expected a LlamaIndex LLM, got {type(llm).__name__}")]
            )
    given = dict(config or {})
    sections = dict(given.get("models") or {})
    for key, llm in models.items():
        ours, theirs = _model_section(llm), dict(sections.get(key) or {})
        features = {**ours.pop("features"), **(theirs.pop("features", None) or {})}
        sections[key] = {**ours, **theirs, "features": features}
    return mesh_from_models(
        models,
        lambda pid, llm: ForeignProvider(pid, LlamaIndexAdapter(llm), secrets=held_secrets(llm)),
        type_name="llamaindex",
        class_path=lambda llm: class_path(llm, "llama_index.core.llms.llm:LLM"),
        pool=pool,
        strategy=strategy,
        config={**given, "models": sections},
    )
