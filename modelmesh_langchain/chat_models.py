"""``MeshChatModel``: a LangChain chat model over a ModelMesh capability pool."""

from __future__ import annotations

import os
import re
import zlib
from collections.abc import AsyncIterator, Callable, Iterator, Mapping, Sequence
from operator import itemgetter
from typing import Any, ClassVar, Literal

from langchain_core.callbacks import AsyncCallbackManagerForLLMRun, CallbackManagerForLLMRun
from langchain_core.language_models import LangSmithParams, LanguageModelInput
from langchain_core.language_models.chat_models import BaseChatModel, generate_from_stream
from langchain_core.language_models.model_profile import ModelProfile
from langchain_core.messages import AIMessage, BaseMessage
from langchain_core.output_parsers import JsonOutputParser, PydanticOutputParser
from langchain_core.output_parsers.openai_tools import (
    JsonOutputKeyToolsParser,
    PydanticToolsParser,
)
from langchain_core.outputs import ChatGeneration, ChatGenerationChunk, ChatResult
from langchain_core.runnables import Runnable, RunnableMap, RunnablePassthrough
from langchain_core.tools import BaseTool
from langchain_core.utils.function_calling import convert_to_json_schema, convert_to_openai_tool
from langchain_core.utils.pydantic import is_basemodel_subclass
from pydantic import BaseModel, ConfigDict, Field, PrivateAttr

from mesh_core._mesh import Mesh
from mesh_core._portable import PortableAdapter
from mesh_core._redact import redact
from mesh_core._shared import mesh_for_pool
from mesh_core._types import CompletionResponse

from ._convert import PROVIDER, to_ai_message, to_generation_chunk, to_openai_messages
from .errors import langchain_errors

__all__ = ["MeshChatModel"]

_TOKEN = re.compile(r"\w+|[^\w\s]", re.UNICODE)


class MeshChatModel(PortableAdapter, BaseChatModel):
    """A chat model that routes every call through a ModelMesh pool, with failover.

    Setup:
        ``pip install "modelmesh-lite[langchain]"`` and a mesh configuration (a YAML
        path, a dict or a ``Mesh``; by default ``$MODELMESH_CONFIG`` or
        ``./modelmesh.yaml``).

    Instantiate:
        .. code-block:: python

            from modelmesh_langchain import MeshChatModel

            llm = MeshChatModel(pool="reasoning", temperature=0)

    Invoke:
        .. code-block:: python

            msg = llm.invoke("Why is the sky blue?")
            msg.response_metadata["model_name"]   # the model that actually answered
            msg.response_metadata["mesh"]         # pool, provider, cost, every attempt

    Instances built from the same configuration share one Mesh, so one state.
    """

    model_config = ConfigDict(populate_by_name=True, arbitrary_types_allowed=True)
    FIELD_ALIASES: ClassVar[dict[str, str]] = {
        "model_name": "model",
        "max_completion_tokens": "max_tokens",
        "stop_sequences": "stop",
        "request_timeout": "timeout",
    }
    _DROPPED: ClassVar[tuple[str, ...]] = ("_serialized",)  # LangChain's cached dumpd()

    pool: str
    """The capability pool to route to."""
    config: Any = Field(default=None, exclude=True, repr=False)
    """A YAML path, a configuration dict or a ``Mesh`` (default: ``$MODELMESH_CONFIG``).

    Never shown (a dict may hold literal keys) nor serialized, unless it is a path."""
    model: str | None = Field(default=None, alias="model_name")
    """Pin one model of the pool (its mesh ID); None lets the pool's strategy choose."""
    temperature: float | None = None
    max_tokens: int | None = Field(default=None, alias="max_completion_tokens")
    top_p: float | None = None
    seed: int | None = None
    stop: list[str] | None = Field(default=None, alias="stop_sequences")
    timeout: float | None = Field(default=None, alias="request_timeout")
    """Caps every timeout of each attempt, in seconds."""
    max_retries: int | None = None
    """Retries on the same model for transient errors before failing over."""
    session_id: str | None = None
    """For session-stickiness pools: keep this conversation on one model."""
    streaming: bool = False
    """Stream under ``invoke`` too (callbacks get every token)."""
    model_kwargs: dict[str, Any] = Field(default_factory=dict)
    """Extra parameters passed through to the provider."""

    _mesh: Mesh = PrivateAttr()

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        # After validation, so a configuration error surfaces as itself, not wrapped.
        self._mesh = mesh_for_pool(self.config, self.pool)

    # --- profile (LangChain v1) ------------------------------------------------------------
    def _resolve_model_profile(self) -> ModelProfile | None:
        """What the pool can do, for ``create_agent`` and middleware: the smallest context
        window and output of its models (every one of them can honour them), and a
        capability when a model of the pool has it (the mesh routes requests that need it
        to those models). Computed when the model is built (LangChain's validator calls
        this; ``profile=`` given explicitly wins)."""
        models = mesh_for_pool(self.config, self.pool).pool(self.pool).models
        if self.model is not None:
            models = [m for m in models if m.id == self.model] or models
        windows = [m.context_window for m in models if m.context_window]
        outputs = [m.max_output_tokens for m in models if m.max_output_tokens]
        tools = any("tool_calling" in m.features for m in models)
        vision = any("vision" in m.features for m in models)
        profile = ModelProfile(
            text_inputs=True,
            text_outputs=True,
            tool_calling=tools,
            tool_choice=tools,
            tool_call_streaming=tools,
            structured_output=any("structured_output" in m.features for m in models),
            image_inputs=vision,
            image_url_inputs=vision,
        )
        if windows:
            profile["max_input_tokens"] = min(windows)
        if outputs:
            profile["max_output_tokens"] = min(outputs)
        return profile

    # --- copies: deepcopy, pickle, model_copy (mesh_core._portable.PortableAdapter) ------
    def _rerouted(self, changed: set[str]) -> None:
        """A copy with a new ``config``, ``pool`` or ``model``: its Mesh, and its profile
        unless the update gave one."""
        super()._rerouted(changed)
        if "profile" not in changed:
            self.__dict__["profile"] = self._resolve_model_profile()

    def __repr_args__(self) -> Any:
        """LangChain's (non-default fields), with secrets in ``model_kwargs`` hidden."""
        return [(name, redact(value, name)) for name, value in super().__repr_args__()]

    @classmethod
    def is_lc_serializable(cls) -> bool:
        return True

    @classmethod
    def get_lc_namespace(cls) -> list[str]:
        return ["modelmesh_langchain", "chat_models"]

    def to_json(self) -> Any:
        """Serialize; a config *path* travels along, a dict or Mesh does not (it may
        hold literal secrets), so such a model reloads from ``$MODELMESH_CONFIG``.

        Secrets in ``model_kwargs`` are masked: what is serialized lands in traces
        (LangSmith records it with every run). Keys belong in the mesh configuration.
        """
        out = super().to_json()
        if out["type"] == "constructor":
            if isinstance(self.config, (str, os.PathLike)):
                out["kwargs"]["config"] = os.fspath(self.config)
            if "model_kwargs" in out["kwargs"]:
                out["kwargs"]["model_kwargs"] = redact(out["kwargs"]["model_kwargs"])
        return out

    @classmethod
    def from_models(
        cls,
        models: Mapping[str, BaseChatModel],
        *,
        pool: str = "default",
        strategy: str = "priority-selection",
        config: Mapping[str, Any] | None = None,
        **fields: Any,
    ) -> MeshChatModel:
        """A chat model over a pool of LangChain chat models you already have.

        ``models`` maps mesh model IDs (``"bedrock.claude"``) to chat models (``ChatBedrock``,
        ``ChatVertexAI``, ``ChatOpenAI``...), in priority order: each becomes a pool member
        with the mesh's state, standby and recovery, strategies, quotas, budgets and
        first-token failover, its calls going through the model's own client and
        credentials. ``config`` (a configuration dict) adds native providers and models
        (a mixed pool), per-model settings (``pricing``, ``context_window``) and pool
        settings (``deactivation``, ``recovery``, ``storage``...). ``fields`` are this
        class's (``temperature``, ``streaming``...). The result has its own Mesh.
        """
        from mesh_core.providers._foreign_mesh import mesh_from_models

        from ._foreign import class_path, foreign_provider

        for key, member in models.items():
            if not isinstance(member, BaseChatModel):
                raise TypeError(
                    f"from_models: models[{key!r}] is a {type(member).__name__}, not a "
                    "LangChain chat model (a BaseChatModel such as ChatOpenAI)"
                )
        mesh = mesh_from_models(
            models,
            foreign_provider,
            type_name="langchain",
            class_path=class_path,
            pool=pool,
            strategy=strategy,
            config=config,
        )
        return cls(pool=pool, config=mesh, **fields)

    @property
    def mesh(self) -> Mesh:
        """The Mesh this model routes through (shared with same-config instances)."""
        return self._mesh

    @property
    def _llm_type(self) -> str:
        return "modelmesh-chat"

    @property
    def _identifying_params(self) -> dict[str, Any]:
        """What callbacks and tracers see as the invocation parameters: secrets masked."""
        params: dict[str, Any] = redact({"pool": self.pool, **self._default_params})
        return params

    @property
    def _default_params(self) -> dict[str, Any]:
        params = {
            "model": self.model,
            "temperature": self.temperature,
            "max_tokens": self.max_tokens,
            "top_p": self.top_p,
            "seed": self.seed,
            "stop": self.stop or None,
            "timeout": self.timeout,
            "max_retries": self.max_retries,
            "session_id": self.session_id,
        }
        return {k: v for k, v in params.items() if v is not None} | self.model_kwargs

    def _params(self, stop: list[str] | None, kwargs: dict[str, Any]) -> dict[str, Any]:
        kwargs.pop("ls_structured_output_format", None)
        params = {**self._default_params, **kwargs}
        if stop is not None:
            params["stop"] = stop
        if not params.get("stop"):
            params.pop("stop", None)
        return params

    def _get_ls_params(self, stop: list[str] | None = None, **kwargs: Any) -> LangSmithParams:
        params = self._params(stop, dict(kwargs))
        ls = LangSmithParams(
            ls_provider=PROVIDER,
            ls_model_name=kwargs.get("model") or self.model or self.pool,
            ls_model_type="chat",
        )
        if params.get("temperature") is not None:
            ls["ls_temperature"] = params["temperature"]
        if params.get("max_tokens") is not None:
            ls["ls_max_tokens"] = params["max_tokens"]
        if params.get("stop"):
            ls["ls_stop"] = params["stop"]
        return ls

    # --- calls ------------------------------------------------------------------------
    # Every call runs inside ``langchain_errors()``: mesh errors leave the adapter as
    # LangChain's typed model errors too (ContextOverflowError, ModelRateLimitError...).
    # Streams pass ``restart=False``: LangChain joins every chunk it is given into the
    # answer, so a recovery may continue by prefill but never start over after a chunk.
    @staticmethod
    def _llm_output(model: str | None, token_usage: dict[str, Any] | None) -> dict[str, Any]:
        return {"model_name": model, "token_usage": token_usage or {}, "model_provider": PROVIDER}

    @classmethod
    def _result(cls, resp: CompletionResponse) -> ChatResult:
        message = to_ai_message(resp)
        usage = resp.usage.to_dict()
        return ChatResult(
            generations=[
                ChatGeneration(
                    message=message,
                    generation_info={
                        "finish_reason": resp.finish_reason,
                        "model_name": resp.model,
                        "token_usage": usage,
                    },
                )
            ],
            llm_output=cls._llm_output(resp.model, usage),
        )

    @classmethod
    def _streamed_result(cls, chunks: list[ChatGenerationChunk]) -> ChatResult:
        """The joined chunks, with the ``llm_output`` of a plain ``invoke`` (the model that
        answered, usage) taken from the last chunk's ``generation_info``."""
        result = generate_from_stream(iter(chunks))
        info = result.generations[0].generation_info or {}
        result.llm_output = cls._llm_output(info.get("model_name"), info.get("token_usage"))
        return result

    def _generate(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: CallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> ChatResult:
        if self.streaming:
            return self._streamed_result(list(self._stream(messages, stop, run_manager, **kwargs)))
        with langchain_errors():
            resp = self._mesh.complete(
                self.pool, to_openai_messages(messages), **self._params(stop, kwargs)
            )
        return self._result(resp)

    async def _agenerate(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: AsyncCallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> ChatResult:
        if self.streaming:
            chunks = [c async for c in self._astream(messages, stop, run_manager, **kwargs)]
            return self._streamed_result(chunks)
        with langchain_errors():
            resp = await self._mesh.acomplete(
                self.pool, to_openai_messages(messages), **self._params(stop, kwargs)
            )
        return self._result(resp)

    def _stream(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: CallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> Iterator[ChatGenerationChunk]:
        with langchain_errors():
            chunks = self._mesh.stream(
                self.pool, to_openai_messages(messages), restart=False, **self._params(stop, kwargs)
            )
            for chunk in chunks:
                gen = to_generation_chunk(chunk)
                if run_manager:
                    run_manager.on_llm_new_token(gen.text, chunk=gen)
                yield gen

    async def _astream(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: AsyncCallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> AsyncIterator[ChatGenerationChunk]:
        with langchain_errors():
            chunks = self._mesh.astream(
                self.pool, to_openai_messages(messages), restart=False, **self._params(stop, kwargs)
            )
            async for chunk in chunks:
                gen = to_generation_chunk(chunk)
                if run_manager:
                    await run_manager.on_llm_new_token(gen.text, chunk=gen)
                yield gen

    # --- tokens (offline) -----------------------------------------------------------------
    def get_token_ids(self, text: str) -> list[int]:
        """Approximate token IDs, offline: one per word or punctuation mark.

        The pool's models use different tokenizers, so no exact count exists
        before a model is chosen; this estimate needs no download.
        """
        return [zlib.crc32(piece.encode()) & 0xFFFFF for piece in _TOKEN.findall(text)]

    # --- tools and structured output ----------------------------------------------------------
    def bind_tools(
        self,
        tools: Sequence[dict[str, Any] | type | Callable[..., Any] | BaseTool],
        *,
        tool_choice: dict[str, Any] | str | bool | None = None,
        strict: bool | None = None,
        parallel_tool_calls: bool | None = None,
        **kwargs: Any,
    ) -> Runnable[LanguageModelInput, AIMessage]:
        """Bind tools (LangChain tools, pydantic models, functions or OpenAI dicts).

        ``tool_choice``: ``"auto"``, ``"none"``, ``"any"``/``"required"``/``True`` (call
        some tool), a tool name (call that tool), or an OpenAI tool-choice dict.
        """
        formatted = [convert_to_openai_tool(t, strict=strict) for t in tools]
        names = [t["function"]["name"] for t in formatted]
        if tool_choice is not None and tool_choice is not False:
            if tool_choice is True or tool_choice == "any":
                tool_choice = "required"
            if isinstance(tool_choice, str) and tool_choice not in ("auto", "none", "required"):
                if tool_choice not in names:
                    raise ValueError(
                        f"tool_choice {tool_choice!r} names no bound tool (bound: {names})"
                    )
                tool_choice = {"type": "function", "function": {"name": tool_choice}}
            kwargs["tool_choice"] = tool_choice
        if parallel_tool_calls is not None:
            kwargs["parallel_tool_calls"] = parallel_tool_calls
        return super().bind(tools=formatted, **kwargs)

    def with_structured_output(
        self,
        schema: dict[str, Any] | type | None = None,
        *,
        method: Literal["function_calling", "json_mode", "json_schema"] = "function_calling",
        include_raw: bool = False,
        strict: bool | None = None,
        **kwargs: Any,
    ) -> Runnable[LanguageModelInput, dict[str, Any] | BaseModel]:
        """Answers parsed into ``schema`` (a pydantic class, TypedDict or JSON schema).

        ``method``: ``function_calling`` (a forced tool call), ``json_schema`` (the
        provider's structured outputs) or ``json_mode`` (JSON object mode; the prompt
        must ask for the keys). With ``include_raw`` the result is
        ``{"raw": AIMessage, "parsed": ..., "parsing_error": ...}``.
        """
        if kwargs:
            raise ValueError(f"unexpected arguments: {sorted(kwargs)}")
        is_pydantic = isinstance(schema, type) and is_basemodel_subclass(schema)
        llm: Runnable[LanguageModelInput, Any]
        if method == "json_mode":
            llm = self.bind(
                response_format={"type": "json_object"},
                ls_structured_output_format={
                    "kwargs": {"method": method},
                    "schema": convert_to_json_schema(schema) if schema is not None else None,
                },
            )
        else:
            if schema is None:
                raise ValueError(f"method={method!r} needs a schema")
            fmt = {
                "kwargs": {"method": method, "strict": strict},
                "schema": convert_to_openai_tool(schema),
            }
            if method == "function_calling":
                name = convert_to_openai_tool(schema)["function"]["name"]
                llm = self.bind_tools(
                    [schema], tool_choice=name, strict=strict, ls_structured_output_format=fmt
                )
            elif method == "json_schema":
                function = convert_to_openai_tool(schema, strict=strict)["function"]
                json_schema = {"name": function["name"], "schema": function["parameters"]}
                if strict is not None:
                    json_schema["strict"] = strict
                llm = self.bind(
                    response_format={"type": "json_schema", "json_schema": json_schema},
                    ls_structured_output_format=fmt,
                )
            else:
                raise ValueError(
                    f"unknown method {method!r}; use function_calling, json_schema or json_mode"
                )
        if method == "function_calling":
            parser: Runnable[Any, Any] = (
                PydanticToolsParser(tools=[schema], first_tool_only=True)  # type: ignore[list-item]
                if is_pydantic
                else JsonOutputKeyToolsParser(key_name=name, first_tool_only=True)
            )
        else:
            parser = (
                PydanticOutputParser(pydantic_object=schema)  # type: ignore[arg-type]
                if is_pydantic
                else JsonOutputParser()
            )
        if not include_raw:
            return llm | parser
        parse = RunnablePassthrough.assign(
            parsed=itemgetter("raw") | parser, parsing_error=lambda _: None
        )
        no_parse = RunnablePassthrough.assign(parsed=lambda _: None)
        return RunnableMap(raw=llm) | parse.with_fallbacks(
            [no_parse], exception_key="parsing_error"
        )
