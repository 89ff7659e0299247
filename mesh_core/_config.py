"""Configuration: YAML or dict, validated into pydantic models (the schema is here; the
loader, :func:`load_config` and :func:`config_warnings`, is in :mod:`._config_load` and
re-exported).

``load_config`` reports a broken file whole: every problem with its key path
(``pools.reasoning.deactivation.retry_limit``), the bad value and what was
expected; an unknown key suggests the closest valid one. Secrets come from the
environment through ``${VAR}`` (or ``${VAR:-default}``) references and are held
as ``SecretStr`` so they never show in a repr, a log line or an error; a repr or
an error hides header values, URL userinfo and anything under a secret-like key too
(the rule lives in ``mesh_core._redact``).

A configuration is not an attack surface: only a regular file of at most
``MAX_CONFIG_BYTES`` is read, and a structure nested deeper than ``MAX_DEPTH``, one
that contains itself or one that expands (YAML aliases, shared objects) to more than
``MAX_VALUES`` values is refused before anything walks it, so loading stays linear in
the size of the file.
"""

from __future__ import annotations

import importlib
import importlib.util
import re
from collections.abc import Iterator
from typing import Annotated, Any, Literal

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ByteSize,
    ConfigDict,
    Field,
    SecretStr,
    ValidationInfo,
    field_validator,
    model_validator,
)

from ._config_source import (
    MAX_CONFIG_BYTES,
    MAX_DEPTH,
    MAX_VALUES,
    check_shape,
)
from ._redact import is_secret_key, redact

__all__ = [
    "MAX_CONFIG_BYTES",
    "MAX_DEPTH",
    "MAX_VALUES",
    "DeactivationConfig",
    "MeshConfig",
    "ModelConfig",
    "PoolConfig",
    "ProviderConfig",
    "RecoveryConfig",
    "RetryConfig",
    "TimeoutsConfig",
    "check_shape",
    "config_warnings",
    "load_config",
    "parse_duration",
]

_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h|d)?\s*$")
_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0, None: 1.0}


def parse_duration(value: Any) -> float:
    """Seconds from ``30s``, ``5m``, ``1h``, ``500ms``, ``1d`` or a plain number of seconds.

    The error does not quote the value: configuration errors add what was refused
    themselves (``(got '5x')``), hiding it where it could be a secret.
    """
    if isinstance(value, bool):
        raise ValueError("expected a duration such as 30s, 5m or 1h")
    if isinstance(value, (int, float)):
        if value < 0:
            raise ValueError("a duration cannot be negative")
        return float(value)
    if isinstance(value, str):
        m = _DURATION.match(value)
        if m:
            return float(m.group(1)) * _UNITS[m.group(2)]
    raise ValueError("expected a duration such as 30s, 5m or 1h")


Duration = Annotated[float, BeforeValidator(parse_duration)]


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", populate_by_name=True, frozen=True)

    def __repr_args__(self) -> Iterator[tuple[str | None, Any]]:
        """Pydantic's, with secrets hidden: its repr (and ``str``) would show a header
        value, a password in a URL or a nested ``token`` as they are."""
        for name, value in super().__repr_args__():
            yield name, redact(value, name)


class TimeoutsConfig(_Section):
    """Per provider or model. Unset values inherit (model <- provider <- defaults)."""

    connect: Duration | None = None
    first_token: Duration | None = None
    """Streaming: until the first token. Non-streaming: until the response starts."""
    stall: Duration | None = None
    """Streaming: the longest gap allowed between two chunks."""
    total: Duration | None = None
    """The whole attempt, streaming or not."""
    adaptive: bool | None = None
    """Streams: learn ``first_token`` and ``stall`` from the model's own history (a
    smoothed mean plus four deviations, at least 5 s / 10 s); the values above stay the
    ceiling. On unless set to false (here, on the provider or on the model)."""


_PROXY_SCHEMES = ("http", "https", "socks5", "socks5h")


class LimitsConfig(_Section):
    """Caps on what one provider may send back, counted after decompression (``32MiB``,
    ``64KiB`` or a number of bytes): a reply past one is a MalformedResponseError that fails
    over, so a decompression bomb or an endless line costs an attempt, not the process."""

    max_response_bytes: ByteSize = Field(ByteSize(32 << 20), ge=1024)
    """A whole answer, plain or streamed."""
    max_error_bytes: ByteSize = Field(ByteSize(64 << 10), ge=256)
    """What is read of an error reply (>= 400) to classify it; the rest is never read."""
    max_sse_line_bytes: ByteSize = Field(ByteSize(4 << 20), ge=1024)
    """One line, and one event, of a stream."""


class _MaskedURL(str):
    """A URL whose repr hides its userinfo (``user:***@``), so that neither a repr of the
    configuration nor a validation error shows a password written into ``base_url``."""

    __slots__ = ()

    def __repr__(self) -> str:
        scheme, sep, rest = self.partition("://")
        authority, slash, path = rest.partition("/")
        userinfo, at, host = authority.rpartition("@")
        if not sep or not at:
            return str.__repr__(self)
        return repr(f"{scheme}://{userinfo.partition(':')[0]}:***@{host}{slash}{path}")


def _masked(value: Any) -> Any:
    return _MaskedURL(value) if isinstance(value, str) else value


def _http_url(value: Any) -> Any:
    """Before pydantic's own check (so its error shows the masked value)."""
    if isinstance(value, str):
        scheme, sep, rest = value.partition("://")
        host = rest.split("/", 1)[0].rpartition("@")[2]
        if not sep or scheme.lower() not in ("http", "https") or not host.strip(":"):
            raise ValueError("base_url must be an HTTP or HTTPS URL with a host name")
    return value


BaseURL = Annotated[
    str, BeforeValidator(_http_url), BeforeValidator(_masked), AfterValidator(_masked)
]
"""Before-validators run last-declared first: masked, then checked; masked again once a str."""


class ProviderConfig(_Section):
    type: str = Field("openai-compatible", alias="connector")
    """The wire protocol: ``openai-compatible`` (alias ``openai``), ``anthropic``, ``gemini``,
    ``azure-openai`` (alias ``azure``), or a name given to ``register_provider_type``."""
    base_url: BaseURL | None = Field(None, validate_default=True)
    """Default: the type's (``https://api.openai.com/v1``, ``https://api.anthropic.com``,
    ``https://generativelanguage.googleapis.com``; Azure has none:
    ``https://<resource>.openai.azure.com``). Credentials in it
    (``https://user:pass@host/v1``) are sent as HTTP basic auth."""
    api_key: SecretStr | None = None
    headers: dict[str, str] = Field(default_factory=dict)
    timeouts: TimeoutsConfig = Field(default_factory=TimeoutsConfig)
    verify_tls: bool = True
    max_connections: int = Field(100, ge=1)
    proxy: SecretStr | None = None
    """``http://``, ``https://`` or ``socks5://`` proxy URL; may hold credentials."""
    enabled: bool = True
    limits: LimitsConfig = Field(default_factory=LimitsConfig)
    api_version: str | None = Field(None, min_length=1, max_length=64)
    """The protocol version a type pins: Azure's ``api-version`` query parameter (default
    ``2024-10-21``), Anthropic's ``anthropic-version`` header (default ``2026-10-21``, what
    the official SDK sends), Gemini's path segment (default ``v1beta``)."""
    auth: Literal["api-key", "bearer"] | None = None
    """How ``api_key`` is sent, where a type allows both: Azure's ``api-key`` header (its
    default) or ``Authorization: Bearer`` (a Microsoft Entra ID token); Anthropic's
    ``Authorization: Bearer`` (default, as its current SDK sends it) or ``x-api-key``.
    OpenAI-compatible: always bearer."""
    deployments: dict[str, str] = Field(default_factory=dict)
    """Azure: model name -> deployment name, for deployments not named after their model
    (default: a model's ``name`` is its deployment)."""
    default_max_tokens: int = Field(4096, ge=1)
    """Anthropic requires ``max_tokens``: sent when the request sets none."""
    class_path: str | None = Field(None, alias="class")
    """Types ``langchain`` and ``llamaindex``: the model's class, ``"package.module:Class"``
    (``langchain_aws:ChatBedrockConverse``). Imported when the configuration is loaded."""
    kwargs: dict[str, Any] = Field(default_factory=dict)
    """Types ``langchain`` and ``llamaindex``: the class's constructor arguments. Values under
    secret-like keys (``api_key``, ``aws_secret_access_key``...) are held as ``SecretStr``
    (hidden in reprs and dumps) and passed revealed; ``api_key`` above, when set, is passed
    as the ``api_key`` argument unless ``kwargs`` has one."""

    @field_validator("kwargs")
    @classmethod
    def _hidden_kwargs(cls, value: dict[str, Any]) -> dict[str, Any]:
        hidden: dict[str, Any] = _hide_secrets(value)
        return hidden

    @field_validator("class_path")
    @classmethod
    def _importable_class(cls, value: str | None, info: ValidationInfo) -> str | None:
        from .providers import provider_type

        if value is not None and provider_type(info.data.get("type", "openai")).foreign:
            import_class(value)  # ValueError saying what is wrong with the path
        return value

    @model_validator(mode="after")
    def _foreign_settings(self) -> ProviderConfig:
        """``class``/``kwargs`` for the foreign types (a model object of another framework),
        the HTTP settings for the others: a setting that would be ignored is an error."""
        from .providers import provider_type

        if not provider_type(self.type).foreign:
            wrong = sorted({"class_path", "kwargs"} & self.model_fields_set)
            if wrong:
                names = ", ".join("class" if n == "class_path" else n for n in wrong)
                raise ValueError(
                    f"{names}: only for provider types langchain and llamaindex "
                    f"(this one is {self.type!r})"
                )
            return self
        if self.class_path is None:
            raise ValueError(
                f"provider type {self.type!r} needs class: the model's class as "
                '"package.module:ClassName" (e.g. "langchain_openai:ChatOpenAI")'
            )
        http_only = sorted(_HTTP_ONLY & self.model_fields_set)
        if http_only:
            raise ValueError(
                f"{', '.join(http_only)}: not for provider type {self.type!r} (its model's own "
                "client makes the calls): pass the model's settings in kwargs"
            )
        return self

    @field_validator("api_version", mode="before")
    @classmethod
    def _version_text(cls, value: Any) -> Any:
        """``api_version: 2024-10-21`` unquoted is a date to YAML: take it as written."""
        isoformat = getattr(value, "isoformat", None)
        return isoformat() if callable(isoformat) and not isinstance(value, str) else value

    @field_validator("type")
    @classmethod
    def _known_type(cls, value: str) -> str:
        from .providers import provider_type  # the registry (built-in and registered types)

        provider_type(value)  # ValueError naming the value and the known types
        return value

    @field_validator("base_url")
    @classmethod
    def _default_base_url(cls, value: str | None, info: ValidationInfo) -> str | None:
        if value is not None or "type" not in info.data:
            return value
        from .providers import provider_type

        kind = provider_type(info.data["type"])
        if kind.foreign:
            return None  # the foreign model's client knows where it goes
        default = kind.default_base_url
        if default is None:
            raise ValueError(
                f"provider type {info.data['type']!r} has no default base_url: set one "
                "(Azure: https://<resource>.openai.azure.com)"
            )
        return _MaskedURL(default)

    @field_validator("api_key")
    @classmethod
    def _one_credential(cls, value: SecretStr | None, info: ValidationInfo) -> SecretStr | None:
        base_url = info.data.get("base_url") or ""
        if value is not None and "@" in base_url.partition("://")[2].split("/", 1)[0]:
            raise ValueError(
                "cannot be combined with credentials in base_url (both would be sent as the "
                "Authorization header): remove one of them"
            )
        return value

    @field_validator("proxy")
    @classmethod
    def _proxy_scheme(cls, value: SecretStr | None) -> SecretStr | None:
        if value is None or not value.get_secret_value():
            return None  # e.g. ``${HTTPS_PROXY:-}`` with the variable unset: no proxy
        scheme = value.get_secret_value().partition("://")[0].lower()
        if scheme not in _PROXY_SCHEMES:
            schemes = ", ".join(f"{s}://" for s in _PROXY_SCHEMES)
            raise ValueError(f"proxy must be a URL starting with {schemes}")
        if scheme.startswith("socks") and importlib.util.find_spec("socksio") is None:
            raise ValueError("a SOCKS proxy needs httpx's socks extra: pip install 'httpx[socks]'")
        return value


_HTTP_ONLY = frozenset(
    {
        "base_url",
        "headers",
        "verify_tls",
        "max_connections",
        "proxy",
        "limits",
        "api_version",
        "auth",
        "deployments",
        "default_max_tokens",
    }
)
_CLASS_PATH = re.compile(r"^[A-Za-z_]\w*(\.[A-Za-z_]\w*)*:[A-Za-z_]\w*(\.[A-Za-z_]\w*)*$")


def _hide_secrets(value: Any, key: object = None) -> Any:
    """``kwargs`` with each string under a secret-like key (at any depth) as a SecretStr."""
    if isinstance(value, str) and is_secret_key(key):
        return SecretStr(value)
    if isinstance(value, dict):
        return {k: _hide_secrets(v, k) for k, v in value.items()}
    if isinstance(value, list):
        return [_hide_secrets(v) for v in value]
    return value


def import_class(path: str) -> type:
    """The class ``"package.module:ClassName"`` names; ValueError saying what is wrong."""
    if not _CLASS_PATH.match(path):
        raise ValueError(
            f'expected "package.module:ClassName" (e.g. "langchain_openai:ChatOpenAI"), '
            f"got {path!r}"
        )
    module_name, _, name = path.partition(":")
    try:
        found: Any = importlib.import_module(module_name)
    except ImportError as exc:
        raise ValueError(
            f"cannot import module {module_name!r} ({exc}): is its package installed?"
        ) from None
    except Exception as exc:  # the module itself failed while being imported
        raise ValueError(
            f"importing module {module_name!r} failed: {type(exc).__name__}: {exc}"
        ) from None
    for part in name.split("."):
        if not hasattr(found, part):
            raise ValueError(f"module {module_name!r} has no attribute {name!r}")
        found = getattr(found, part)
    if not isinstance(found, type):
        raise ValueError(f"{path!r} is not a class (it is a {type(found).__name__})")
    return found


class PricingConfig(_Section):
    input_per_1k: float = Field(0.0, ge=0)
    output_per_1k: float = Field(0.0, ge=0)
    per_request: float = Field(0.0, ge=0)


class FeaturesConfig(_Section):
    tool_calling: bool = True
    structured_output: bool = True
    json_mode: bool = True
    vision: bool = False
    system_prompt: bool = True


class ModelConfig(_Section):
    provider: str
    name: str | None = None
    """The model name sent to the provider (default: the ID after its first dot)."""
    capabilities: list[str] = Field(default_factory=lambda: ["chat-completion"])
    features: FeaturesConfig = Field(default_factory=FeaturesConfig)
    context_window: int | None = Field(None, gt=0)
    max_output_tokens: int | None = Field(None, gt=0)
    pricing: PricingConfig | None = None
    timeouts: TimeoutsConfig = Field(default_factory=TimeoutsConfig)
    dimensions: int | None = Field(None, ge=1, le=65536)
    """Embedding models: asks the provider for vectors of this size (OpenAI's
    text-embedding-3 ``dimensions``, Gemini's ``outputDimensionality``); must agree with
    the space's ``@N``."""
    embedding_space: str | None = None
    """Embedding models: the space of the vectors (``openai/text-embedding-3-small@1536``,
    ``@N`` the dimension). Required for a model with an embeddings capability: a pool fails
    over only between members of one space (see ``mesh_core._spaces``)."""
    max_batch_size: int | None = Field(None, ge=1, le=100_000)
    """Embedding models: texts per call (default: the provider's limit, OpenAI 2048,
    Gemini 100); longer inputs are split, the vectors kept in order."""

    @field_validator("embedding_space")
    @classmethod
    def _space(cls, value: str | None, info: ValidationInfo) -> str | None:
        if value is not None:  # (``dimensions`` is validated first: declared first)
            from ._spaces import parse_space

            parse_space(value, info.data.get("dimensions"))
        return value


class MaintenanceWindowConfig(_Section):
    cron: str
    duration: Duration | None = None


class DeactivationConfig(_Section):
    retry_limit: int = Field(3, ge=1)
    error_rate_threshold: float = Field(0.5, gt=0, le=1)
    error_rate_window: int = Field(20, ge=1)
    error_rate_min_requests: int = Field(5, ge=1)
    error_codes: list[int] = Field(default_factory=lambda: [429, 500, 503])
    request_limit: int | None = Field(None, ge=1)
    token_limit: int | None = Field(None, ge=1)
    budget_limit: float | None = Field(None, gt=0)
    quota_window: Literal["hourly", "daily", "weekly", "monthly"] = "monthly"
    budget_window: Literal["hourly", "daily", "weekly", "monthly"] = "monthly"
    maintenance_window: str | MaintenanceWindowConfig | None = None


class RecoveryConfig(_Section):
    cooldown: Duration = 60.0
    backoff_factor: float = Field(2.0, ge=1)
    max_cooldown: Duration = 3600.0
    trial: bool = True


class RetryConfig(_Section):
    """Retries on the same model before failing over (transient errors only)."""

    max_attempts: int = Field(2, ge=1, le=10)
    backoff: Literal["exponential_jitter", "fixed"] = "exponential_jitter"
    initial_delay: Duration = 0.1
    max_delay: Duration = 2.0
    """Also the longest Retry-After honoured in place; a longer one fails over."""


class HedgingConfig(_Section):
    """First-token hedging: when a stream's first token is late, ask the next model too;
    the first token wins and the other request is cancelled (at most one extra request
    per call)."""

    after: Literal["auto", "off"] | Duration = "auto"
    """``auto``: three times the model's median time to first token (the pool's while the
    model has fewer than 8 streams; 10 s with no history at all), at least 2 s. A
    duration: that long. ``off``: never hedge."""

    @field_validator("after", mode="before")
    @classmethod
    def _yaml_off(cls, value: object) -> object:
        return "off" if value is False else value  # YAML reads a bare ``off`` as false


class PoolConfig(_Section):
    capability: str | None = Field(None, alias="hierarchy_node")
    models: list[str] = Field(default_factory=list)
    strategy: str = "modelmesh.stick-until-failure.v1"
    strategy_options: dict[str, Any] = Field(default_factory=dict)
    """Options of the pool's strategy, checked against its options model (an unknown or
    invalid one is an error that names the pool, the strategy and the option)."""
    model_priority: list[str] = Field(default_factory=list)
    provider_priority: list[str] = Field(default_factory=list)
    allowed_providers: list[str] | None = Field(None, alias="providers")
    excluded_providers: list[str] = Field(default_factory=list)
    # Strategy options written as pool keys (``strategies.POOL_OPTION_KEYS``): their type,
    # bounds and default are the strategy's (its ``Options``), checked at load; None: unset.
    fallback_strategy: Any = None
    """priority-selection: ``round-robin`` (default), another strategy, or ``error``."""
    balance_mode: Any = None
    """load-balanced: ``relative`` (default) or ``absolute``."""
    affinity_mode: Any = None
    """session-stickiness: ``fallback`` (default) or ``strict``."""
    session_timeout: Any = None
    """session-stickiness: idle sessions expire after this long (default ``30m``)."""
    output_ratio: Any = None
    """cost-first: the expected share of output tokens, 0 to 1 (default 0.25)."""
    rate_limit: Any = None
    """rate-limit-aware: ``{threshold, min_delta, max_rpm}`` (defaults 0.8, 0s, 0)."""
    deactivation: DeactivationConfig = Field(default_factory=DeactivationConfig)
    recovery: RecoveryConfig = Field(default_factory=RecoveryConfig)
    retry: RetryConfig = Field(default_factory=RetryConfig)
    wait_for_recovery: Duration = 0.0
    """When every model is in standby, wait up to this long for one to recover."""
    hedging: HedgingConfig = Field(default_factory=HedgingConfig)
    mixed_embedding_spaces: bool = False
    """Allow embedding members of several spaces in this pool (refused by default: vectors
    of different spaces are not comparable); each request still stays in one space."""
    stream_recovery: Literal["raise", "continue"] = "continue"
    """A stream that breaks after its first token (cut, stall, malformed event): continue on
    the next model with the partial answer as an assistant prefill (the default), or raise
    StreamInterruptedError. Starting the answer over (a model that rejects prefill, a break
    inside a tool call) is only done for a consumer that opted in (``restart=True``)."""


class StorageConfig(_Section):
    backend: str = "memory"
    """``memory``, ``json``, ``sqlite``, ``redis``, or the name of a backend registered
    with ``register_store_backend`` (before the configuration is loaded)."""
    path: str | None = None
    """JSON file or SQLite database (default ``modelmesh-state.json`` / ``.db``)."""
    url: SecretStr | None = None
    """Redis URL (default ``redis://127.0.0.1:6379/0``); may hold a password."""
    key_prefix: str = "modelmesh:"
    sync_policy: Literal["write_through", "periodic"] = "write_through"
    sync_interval: Duration = 5.0
    """``periodic``: the longest time between two saves (and on close)."""
    refresh_interval: Duration = 1.0
    """Shared stores: how often to pick up other processes' status changes."""
    on_corrupt: Literal["error", "fresh"] = "error"
    """An unreadable state: raise, or move it aside, log a warning and start fresh."""
    timeout: Duration = 2.0
    """The longest a single store operation may take (SQLite's busy wait, Redis's socket
    timeout) before the store counts as failed and the mesh carries on from memory."""
    on_unavailable: Literal["error", "degrade"] = "error"
    """A store that cannot be reached when the mesh starts: raise StateStoreError, or
    start with fresh in-memory state and connect when the store is back."""
    options: dict[str, Any] = Field(default_factory=dict)
    """Settings of a registered backend (its factory reads them); the shipped ones take none."""

    @field_validator("backend")
    @classmethod
    def _registered(cls, value: str) -> str:
        from .stores._registry import store_factory

        try:
            store_factory(value)
        except KeyError as exc:  # the error adds "(got 'name')" itself
            raise ValueError(str(exc.args[0]).replace(f" {value!r}", "", 1)) from None
        return value

    @field_validator("options")
    @classmethod
    def _own_options(cls, value: dict[str, Any], info: ValidationInfo) -> dict[str, Any]:
        from .stores._registry import SHIPPED_BACKENDS

        backend = info.data.get("backend")
        if value and backend in SHIPPED_BACKENDS:
            raise ValueError(
                f"the {backend} backend takes no options (they are for registered backends)"
            )
        return value


class ObservabilityConfig(_Section):
    logger: str = "modelmesh"
    tracing: Literal["auto", "on", "off"] = "auto"
    """OpenTelemetry spans: ``auto`` when opentelemetry-api is installed."""
    metrics: Literal["auto", "on", "off"] = "auto"
    """Prometheus metrics: ``auto`` when prometheus-client is installed."""


class MeshConfig(_Section):
    providers: dict[str, ProviderConfig] = Field(default_factory=dict)
    models: dict[str, ModelConfig] = Field(default_factory=dict)
    pools: dict[str, PoolConfig] = Field(default_factory=dict)
    capabilities: list[str] = Field(default_factory=list)
    """User-defined capability nodes, added to the tree."""
    storage: StorageConfig = Field(default_factory=StorageConfig)
    observability: ObservabilityConfig = Field(default_factory=ObservabilityConfig)


# The loader lives beside the schema; imported last, as it builds on the classes above.
from ._config_load import config_warnings, load_config  # noqa: E402
