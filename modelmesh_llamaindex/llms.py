"""``MeshLLM``: a LlamaIndex function-calling LLM over a ModelMesh capability pool."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

from llama_index.core.base.llms.generic_utils import (
    achat_to_completion_decorator,
    astream_chat_to_completion_decorator,
    chat_to_completion_decorator,
    stream_chat_to_completion_decorator,
)
from llama_index.core.base.llms.types import (
    ChatMessage,
    ChatResponse,
    ChatResponseAsyncGen,
    ChatResponseGen,
    CompletionResponse,
    CompletionResponseAsyncGen,
    CompletionResponseGen,
    LLMMetadata,
    MessageRole,
)
from llama_index.core.bridge.pydantic import Field, PrivateAttr
from llama_index.core.constants import DEFAULT_CONTEXT_WINDOW, DEFAULT_NUM_OUTPUTS
from llama_index.core.llms.callbacks import llm_chat_callback, llm_completion_callback
from llama_index.core.llms.function_calling import FunctionCallingLLM
from llama_index.core.llms.llm import ToolSelection
from llama_index.core.llms.utils import parse_partial_json

from mesh_core._mesh import Mesh
from mesh_core._redact import redact
from mesh_core._shared import mesh_for_pool

from ._convert import StreamAccumulator, to_chat_response, to_openai_messages
from ._foreign import mesh_of_models
from ._portable import LlamaIndexPortable

if TYPE_CHECKING:
    from llama_index.core.llms.llm import LLM
    from llama_index.core.tools.types import BaseTool

__all__ = ["MeshLLM"]


class MeshLLM(LlamaIndexPortable, FunctionCallingLLM):
    """A LlamaIndex LLM that routes every call through a ModelMesh pool, with failover.

    Examples:
        ``pip install "modelmesh-lite[llamaindex]"``

        .. code-block:: python

            from modelmesh_llamaindex import MeshLLM

            llm = MeshLLM(pool="reasoning")          # config from $MODELMESH_CONFIG
            query_engine = index.as_query_engine(llm=llm)
            resp = llm.chat([ChatMessage(role="user", content="hi")])
            resp.raw["model"], resp.raw["attempts"]  # who answered, what was tried

    Instances built from the same configuration (as ``MeshChatModel`` ones) share one Mesh.
    """

    pool: str = Field(description="The capability pool to route to.")
    config: Any = Field(
        default=None,
        exclude=True,
        repr=False,  # a dict may hold literal keys: never shown, never serialized
        description="A YAML path, a configuration dict or a Mesh.",
    )
    model: str | None = Field(default=None, description="Pin one model of the pool.")
    temperature: float | None = Field(default=None)
    max_tokens: int | None = Field(default=None, description="Tokens to generate at most.")
    timeout: float | None = Field(default=None, description="Caps each attempt's timeouts (s).")
    max_retries: int | None = Field(default=None, description="Retries on the same model.")
    session_id: str | None = Field(default=None)
    additional_kwargs: dict[str, Any] = Field(
        default_factory=dict, description="Extra parameters passed through to the provider."
    )

    _mesh: Mesh = PrivateAttr()

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self._mesh = mesh_for_pool(self.config, self.pool)

    # --- copies: deepcopy, pickle, model_copy (mesh_core._portable.PortableAdapter) ------
    def __repr_args__(self) -> Any:
        """Pydantic's, with secrets in ``additional_kwargs`` hidden."""
        return [(name, redact(value, name)) for name, value in super().__repr_args__()]

    def to_dict(self, **kwargs: Any) -> dict[str, Any]:
        """As LlamaIndex's, with secrets in ``additional_kwargs`` masked: this dict is
        what instrumentation events carry (``LLMChatStartEvent.model_dict``)."""
        data = super().to_dict(**kwargs)
        if isinstance(data.get("additional_kwargs"), Mapping):
            data["additional_kwargs"] = redact(data["additional_kwargs"])
        return data

    @classmethod
    def from_models(
        cls,
        models: Mapping[str, LLM],
        *,
        pool: str = "default",
        strategy: str = "priority-selection",
        config: Mapping[str, Any] | None = None,
        **fields: Any,
    ) -> MeshLLM:
        """A MeshLLM over LlamaIndex LLMs you already have (``Bedrock``, ``Anthropic``,
        ``OpenAI``...), each a pool member under its key (the mesh model ID, e.g.
        ``"bedrock.claude"``); ``priority-selection`` tries them in the order given, then
        the models of ``config``. ``config`` adds to the configuration (native
        providers and models for a mixed pool, pricing, pool settings); ``fields`` are
        MeshLLM's (``temperature``, ``timeout``...). The instance owns its Mesh
        (``llm.mesh``): close it when done.

        Turn the LLMs' own retries off (``max_retries=0``): the mesh retries and fails
        over, and a model retrying inside an attempt only uses up that attempt's deadline.
        """
        mesh = mesh_of_models(models, pool=pool, strategy=strategy, config=config)
        return cls(pool=pool, config=mesh, **fields)

    @classmethod
    def class_name(cls) -> str:
        return "MeshLLM"

    @property
    def mesh(self) -> Mesh:
        return self._mesh

    @property
    def metadata(self) -> LLMMetadata:
        """The truth about the pool: a window and output every member can honour."""
        models = self._mesh.pool(self.pool).models
        if self.model is not None:
            models = [m for m in models if m.id == self.model]
        windows = [m.context_window for m in models if m.context_window]
        outputs = [m.max_output_tokens for m in models if m.max_output_tokens]
        return LLMMetadata(
            context_window=min(windows) if windows else DEFAULT_CONTEXT_WINDOW,
            num_output=self.max_tokens or (min(outputs) if outputs else DEFAULT_NUM_OUTPUTS),
            is_chat_model=True,
            is_function_calling_model=any("tool_calling" in m.features for m in models),
            model_name=self.model or self.pool,
        )

    def _params(self, kwargs: dict[str, Any]) -> dict[str, Any]:
        params = {
            "model": self.model,
            "temperature": self.temperature,
            "max_tokens": self.max_tokens,
            "timeout": self.timeout,
            "max_retries": self.max_retries,
            "session_id": self.session_id,
        }
        return {k: v for k, v in params.items() if v is not None} | self.additional_kwargs | kwargs

    # --- chat ------------------------------------------------------------------------
    @llm_chat_callback()
    def chat(self, messages: Sequence[ChatMessage], **kwargs: Any) -> ChatResponse:
        resp = self._mesh.complete(self.pool, to_openai_messages(messages), **self._params(kwargs))
        return to_chat_response(resp)

    @llm_chat_callback()
    async def achat(self, messages: Sequence[ChatMessage], **kwargs: Any) -> ChatResponse:
        resp = await self._mesh.acomplete(
            self.pool, to_openai_messages(messages), **self._params(kwargs)
        )
        return to_chat_response(resp)

    @llm_chat_callback()
    def stream_chat(self, messages: Sequence[ChatMessage], **kwargs: Any) -> ChatResponseGen:
        # restart=False: the engines join every ``delta``, so a recovery may continue by
        # prefill but never start the answer over once a delta was yielded.
        chunks = self._mesh.stream(
            self.pool, to_openai_messages(messages), restart=False, **self._params(kwargs)
        )

        def gen() -> ChatResponseGen:
            acc = StreamAccumulator()
            for chunk in chunks:
                yield acc.add(chunk)

        return gen()

    @llm_chat_callback()
    async def astream_chat(
        self, messages: Sequence[ChatMessage], **kwargs: Any
    ) -> ChatResponseAsyncGen:
        chunks = self._mesh.astream(
            self.pool, to_openai_messages(messages), restart=False, **self._params(kwargs)
        )

        async def gen() -> ChatResponseAsyncGen:
            acc = StreamAccumulator()
            async for chunk in chunks:
                yield acc.add(chunk)

        return gen()

    # --- completion (a one-message chat) -------------------------------------------------
    @llm_completion_callback()
    def complete(self, prompt: str, formatted: bool = False, **kwargs: Any) -> CompletionResponse:
        return chat_to_completion_decorator(self.chat)(prompt, **kwargs)

    @llm_completion_callback()
    async def acomplete(
        self, prompt: str, formatted: bool = False, **kwargs: Any
    ) -> CompletionResponse:
        return await achat_to_completion_decorator(self.achat)(prompt, **kwargs)

    @llm_completion_callback()
    def stream_complete(
        self, prompt: str, formatted: bool = False, **kwargs: Any
    ) -> CompletionResponseGen:
        return stream_chat_to_completion_decorator(self.stream_chat)(prompt, **kwargs)

    @llm_completion_callback()
    async def astream_complete(
        self, prompt: str, formatted: bool = False, **kwargs: Any
    ) -> CompletionResponseAsyncGen:
        return await astream_chat_to_completion_decorator(self.astream_chat)(prompt, **kwargs)

    # --- tools ----------------------------------------------------------------------------
    def _prepare_chat_with_tools(
        self,
        tools: Sequence[BaseTool],
        user_msg: str | ChatMessage | None = None,
        chat_history: list[ChatMessage] | None = None,
        verbose: bool = False,
        allow_parallel_tool_calls: bool = False,
        tool_required: bool = False,
        tool_choice: str | dict[str, Any] | None = None,
        **kwargs: Any,
    ) -> dict[str, Any]:
        specs = [tool.metadata.to_openai_tool(skip_length_check=True) for tool in tools]
        messages = list(chat_history or [])
        if isinstance(user_msg, str):
            user_msg = ChatMessage(role=MessageRole.USER, content=user_msg)
        if user_msg is not None:
            messages.append(user_msg)
        if specs:
            if tool_choice is None:
                tool_choice = "required" if tool_required else "auto"
            elif isinstance(tool_choice, str) and tool_choice not in ("auto", "none", "required"):
                tool_choice = {"type": "function", "function": {"name": tool_choice}}
            kwargs |= {"tools": specs, "tool_choice": tool_choice}
        return {"messages": messages, **kwargs}

    def _validate_chat_with_tools_response(
        self,
        response: ChatResponse,
        tools: Sequence[BaseTool],
        allow_parallel_tool_calls: bool = False,
        **kwargs: Any,
    ) -> ChatResponse:
        calls = response.message.additional_kwargs.get("tool_calls") or []
        if not allow_parallel_tool_calls and len(calls) > 1:
            response.message.additional_kwargs["tool_calls"] = calls[:1]
        return response

    def get_tool_calls_from_response(
        self, response: ChatResponse, error_on_no_tool_call: bool = True, **kwargs: Any
    ) -> list[ToolSelection]:
        calls = response.message.additional_kwargs.get("tool_calls") or []
        if not calls and error_on_no_tool_call:
            raise ValueError("expected at least one tool call, but the model made none")
        selections = []
        for call in calls:
            fn = call.get("function") or {}
            args = fn.get("arguments") or "{}"
            try:
                parsed = parse_partial_json(args)
            except (ValueError, TypeError):
                parsed = {}
            selections.append(
                ToolSelection(
                    tool_id=call.get("id") or "",
                    tool_name=fn.get("name") or "",
                    tool_kwargs=parsed if isinstance(parsed, dict) else {},
                )
            )
        return selections
