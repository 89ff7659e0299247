"""Configuration: YAML or dict, validated into pydantic models.

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

import difflib
import importlib.util
import os
import re
import types
import typing
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field as dataclass_field
from typing import Annotated, Any, Literal, Union

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ByteSize,
    ConfigDict,
    Field,
    SecretStr,
    ValidationError,
    ValidationInfo,
    field_validator,
)

from ._config_source import (
    MAX_CONFIG_BYTES,
    MAX_DEPTH,
    MAX_VALUES,
    check_shape,
    join_path,
    read_yaml,
)
from ._errors import ConfigurationError
from ._redact import MASK, is_header_key, is_secret_key, is_url_key, redact, redact_text

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
    type: Literal["openai-compatible", "openai"] = Field("openai-compatible", alias="connector")
    base_url: BaseURL = "https://api.openai.com/v1"
    """Credentials in it (``https://user:pass@host/v1``) are sent as HTTP basic auth."""
    api_key: SecretStr | None = None
    headers: dict[str, str] = Field(default_factory=dict)
    timeouts: TimeoutsConfig = Field(default_factory=TimeoutsConfig)
    verify_tls: bool = True
    max_connections: int = Field(100, ge=1)
    proxy: SecretStr | None = None
    """``http://``, ``https://`` or ``socks5://`` proxy URL; may hold credentials."""
    enabled: bool = True
    limits: LimitsConfig = Field(default_factory=LimitsConfig)

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


class RateLimitConfig(_Section):
    threshold: float = Field(0.8, gt=0, le=1)
    min_delta: Duration = 0.0
    max_rpm: int = Field(0, ge=0)


class PoolConfig(_Section):
    capability: str | None = Field(None, alias="hierarchy_node")
    models: list[str] = Field(default_factory=list)
    strategy: str = "modelmesh.stick-until-failure.v1"
    strategy_options: dict[str, Any] = Field(default_factory=dict)
    model_priority: list[str] = Field(default_factory=list)
    provider_priority: list[str] = Field(default_factory=list)
    allowed_providers: list[str] | None = Field(None, alias="providers")
    excluded_providers: list[str] = Field(default_factory=list)
    fallback_strategy: str = "round-robin"
    balance_mode: Literal["absolute", "relative"] = "relative"
    affinity_mode: Literal["fallback", "strict"] = "fallback"
    session_timeout: Duration = 1800.0
    output_ratio: float = Field(0.25, ge=0, le=1)
    rate_limit: RateLimitConfig = Field(default_factory=RateLimitConfig)
    deactivation: DeactivationConfig = Field(default_factory=DeactivationConfig)
    recovery: RecoveryConfig = Field(default_factory=RecoveryConfig)
    retry: RetryConfig = Field(default_factory=RetryConfig)
    wait_for_recovery: Duration = 0.0
    """When every model is in standby, wait up to this long for one to recover."""
    stream_recovery: Literal["raise", "continue"] = "raise"
    """A stream cut after its first token: raise StreamInterruptedError, or continue on the
    next model with the partial answer as an assistant prefill (restarting cleanly when
    that model rejects prefill)."""


class StorageConfig(_Section):
    backend: Literal["memory", "json", "sqlite", "redis"] = "memory"
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


# --- loading ------------------------------------------------------------------

_ENV_REF = re.compile(r"\$\{(?:secrets:)?([A-Za-z_][A-Za-z0-9_]*)(?::-([^}]*))?\}")
_BAD_REF = (
    "unclosed or malformed ${...} reference (write ${NAME} or ${NAME:-default}); "
    "the value is not used as written"
)


class _Substitution:
    """``${VAR}`` references replaced from ``env``, with what went wrong and where.

    A reference that is not closed (``${OPENAI_API_KEY``) or not a valid name is an
    error rather than text: taken literally it would become, say, the API key sent to
    the provider. The value itself is never quoted (it may be a secret).
    """

    def __init__(self, env: Mapping[str, str]) -> None:
        self.env = env
        self.errors: list[tuple[str, str]] = []
        self.missing: list[tuple[tuple[Any, ...], str]] = []
        """``(key path, problem)`` of each unset variable without a default."""

    def __call__(self, node: Any, loc: tuple[Any, ...] = ()) -> Any:
        if isinstance(node, str):
            if "${" not in node:
                return node
            path = _env_path(loc)
            unset: list[str] = []

            def repl(m: re.Match[str]) -> str:
                name, default = m.group(1), m.group(2)
                if name in self.env:
                    return self.env[name]
                if default is not None:
                    return default
                unset.append(name)
                return ""

            out = _ENV_REF.sub(repl, node)
            for name in unset:
                self.missing.append((loc, f"environment variable {name} is not set"))
            if "${" in _ENV_REF.sub("", node):
                self.errors.append((path, _BAD_REF))
            return out
        if isinstance(node, Mapping):
            return {k: self(v, (*loc, k)) for k, v in node.items()}
        if isinstance(node, list):
            return [self(v, (*loc, i)) for i, v in enumerate(node)]
        return node


def _env_path(loc: tuple[Any, ...]) -> str:
    """A key path as substitution errors have always written it (keys joined by dots)."""
    out = ""
    for part in loc:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out


def _forget_provider_settings(data: dict[str, Any], locs: list[tuple[Any, ...]]) -> None:
    """Drop the provider settings at ``locs`` (their defaults apply instead)."""
    providers = data.get("providers")
    for loc in locs:
        provider = providers.get(loc[1]) if isinstance(providers, dict) else None
        if isinstance(provider, dict):
            provider.pop(loc[2], None)


def load_config(
    source: str | os.PathLike[str] | Mapping[str, Any] | MeshConfig,
    *,
    env: Mapping[str, str] | None = None,
    require_provider_env: bool = True,
) -> MeshConfig:
    """Read, substitute and validate a configuration (a path, a dict or a MeshConfig).

    Raises ConfigurationError listing every problem found, in one pass: schema errors
    (a bad value, an unknown key) and cross-reference errors (an unknown provider,
    model, capability or strategy) together, so a broken file is fixed in one go.

    ``require_provider_env=False`` lets a provider setting whose ``${VAR}`` is unset
    fall back to its default instead of failing, for tools that read the state and
    never call a provider (``modelmesh status``, ``modelmesh explain``): they should
    not need every API key of the deployment.
    """
    if isinstance(source, MeshConfig):
        return source
    origin: str | None = None
    if isinstance(source, Mapping):
        data: Any = source
    elif isinstance(source, (str, os.PathLike)):
        data, origin = read_yaml(source)
    else:
        raise ConfigurationError(
            [("", f"expected a path, a mapping or a MeshConfig, got {type(source).__name__}")]
        )
    if data is None:
        data = {}
    if not isinstance(data, Mapping):
        raise ConfigurationError(
            [("", f"expected a mapping of sections, got {type(data).__name__}")], source=origin
        )
    check_shape(data, source=origin)
    sub = _Substitution(os.environ if env is None else env)
    data = sub(data)
    errors = list(sub.errors)
    forgotten = []
    for loc, problem in sub.missing:
        if not require_provider_env and len(loc) >= 3 and loc[0] == "providers":
            forgotten.append(loc)
        else:
            errors.append((_env_path(loc), problem))
    _forget_provider_settings(data, forgotten)
    try:
        config = MeshConfig.model_validate(data)
    except ValidationError as exc:
        errors.extend(_describe(err) for err in exc.errors())
        partial = _valid_part(data, exc)
        if partial is not None:
            errors.extend(_cross_check(*partial))
        raise ConfigurationError(errors, source=origin) from None
    errors.extend(_cross_check(config))
    if errors:
        raise ConfigurationError(errors, source=origin)
    return config


_ENTRY_SECTIONS = ("providers", "models", "pools")


@dataclass
class _Dropped:
    """What :func:`_valid_part` left out to get a configuration that validates."""

    ids: dict[str, set[str]] = dataclass_field(
        default_factory=lambda: {s: set() for s in _ENTRY_SECTIONS}
    )
    """Providers, models and pools left out: they exist, they are only invalid."""
    fields: set[tuple[str, str, str]] = dataclass_field(default_factory=set)
    """``(section, id, key)`` of the settings left out of an entry that was kept."""
    sections: set[str] = dataclass_field(default_factory=set)
    """Whole sections left out: nothing can be said about references into them."""


def _valid_part(
    data: Mapping[str, Any], exc: ValidationError
) -> tuple[MeshConfig, _Dropped] | None:
    """The configuration without what failed validation, to cross-check the rest.

    Without it a schema error would hide every cross-reference error (an unknown
    capability, provider or model) until it is fixed, and a broken file would take one
    run per kind of problem. An invalid setting of a provider, model or pool is left
    out (its default applies), and the whole entry when that is not enough (a required
    key); references to a dropped entry are not reported as unknown. Any other invalid
    section is left out whole. None when no valid part could be found.
    """
    current: dict[Any, Any] = {
        k: dict(v) if k in _ENTRY_SECTIONS and isinstance(v, Mapping) else v
        for k, v in data.items()
    }
    dropped = _Dropped()
    for _ in range(4):
        bad_items: set[int] = set()
        for err in exc.errors():
            loc = tuple(err.get("loc", ()))
            if not loc:
                return None
            section = loc[0]
            entries = current.get(section)
            if section in _ENTRY_SECTIONS and len(loc) >= 2 and isinstance(entries, dict):
                entry = entries.get(loc[1])
                key = loc[2] if len(loc) >= 3 else None
                if isinstance(entry, Mapping) and key in entry and err.get("type") != "missing":
                    entries[loc[1]] = {k: v for k, v in entry.items() if k != key}
                    dropped.fields.add((section, str(loc[1]), str(key)))
                else:  # a required key is missing, or the entry is not a mapping
                    entries.pop(loc[1], None)
                    dropped.ids[section].add(str(loc[1]))
                continue
            if section == "capabilities" and len(loc) >= 2 and isinstance(loc[1], int):
                bad_items.add(loc[1])  # not a string: no model can name it anyway
                continue
            current.pop(section, None)
            dropped.sections.add(str(section))
        items = current.get("capabilities")
        if bad_items and isinstance(items, list):
            current["capabilities"] = [v for i, v in enumerate(items) if i not in bad_items]
        try:
            return MeshConfig.model_validate(current), dropped
        except ValidationError as again:
            exc = again
    return None


def _describe(err: Mapping[str, Any]) -> tuple[str, str]:
    loc = tuple(err.get("loc", ()))
    path = join_path(loc)
    kind = err.get("type", "")
    if kind == "extra_forbidden":
        valid = _valid_keys(MeshConfig, loc[:-1])
        close = difflib.get_close_matches(str(loc[-1]), valid, n=1, cutoff=0.6)
        hint = f"; did you mean {close[0]!r}?" if close else ""
        return path, f"unknown key{hint} (valid keys: {', '.join(sorted(valid))})"
    msg = str(err.get("msg", "invalid value"))
    msg = msg.removeprefix("Value error, ")
    if kind == "missing":
        return path, "required key is missing"
    value = err.get("input")
    shown = _shown(loc, kind, value)
    if isinstance(value, str) and len(value) >= 4 and not shown.startswith("got '"):
        msg = msg.replace(value, MASK)  # a validator may have quoted what it refused
    if shown in msg:
        return path, msg  # the validator's message already says what it got
    return path, f"{msg} ({shown})"


# A string where a section or a mapping was expected is most likely a secret written in
# the wrong place (``providers: {openai: sk-...}``, ``storage: redis://:pw@host``).
_MAPPING_EXPECTED = frozenset(
    {"model_type", "model_attributes_type", "dict_type", "mapping_type", "dataclass_type"}
)


def _kind_of(value: Any) -> str:
    for kind, name in ((str, "a string"), (bool, "a boolean"), ((int, float), "a number")):
        if isinstance(value, kind):
            return name
    if isinstance(value, Mapping):
        return "a mapping"
    return "a list" if isinstance(value, (list, tuple)) else f"a {type(value).__name__}"


def _shown(loc: tuple[Any, ...], kind: str, value: Any) -> str:
    """What an error may say about the value it refused: nothing that could be a secret.

    Nothing but its type under a secret-like key, a header or a URL setting; else a
    number, boolean or null shows, and so does a string (URL userinfo removed, cut at 60
    characters) unless it came where a section or a mapping was expected. A list or a
    mapping only ever shows as such.
    """
    what = _kind_of(value)
    if any(is_secret_key(p) or is_header_key(p) or is_url_key(p) for p in loc):
        return "value hidden" if value is None else f"got {what}, value hidden"
    if value is None or isinstance(value, (bool, int, float)):
        return f"got {value!r}"
    if not isinstance(value, str) or kind in _MAPPING_EXPECTED:
        return f"got {what}"
    shown = redact_text(repr(value))
    return f"got {shown[:57]}..." if len(shown) > 60 else f"got {shown}"


def _unwrap(tp: Any) -> Any:
    origin = typing.get_origin(tp)
    if origin is Annotated:
        return _unwrap(typing.get_args(tp)[0])
    if origin in (Union, types.UnionType):
        for arg in typing.get_args(tp):
            if isinstance(arg, type) and issubclass(arg, BaseModel):
                return arg
    return tp


def _valid_keys(model: type[BaseModel], loc: tuple[Any, ...]) -> list[str]:
    """Field names (and aliases) of the section at ``loc``."""
    current: Any = model
    parts = list(loc)
    while parts and isinstance(current, type) and issubclass(current, BaseModel):
        name = parts.pop(0)
        field = current.model_fields.get(name) or next(
            (f for f in current.model_fields.values() if f.alias == name), None
        )
        if field is None:
            return []
        tp = _unwrap(field.annotation)
        if typing.get_origin(tp) is dict:
            tp = _unwrap(typing.get_args(tp)[1])
            if parts:
                parts.pop(0)  # the dict key (a provider, model or pool ID)
        current = tp
    if not (isinstance(current, type) and issubclass(current, BaseModel)):
        return []
    names = set(current.model_fields)
    names |= {f.alias for f in current.model_fields.values() if f.alias}
    return sorted(names)


def _suggest(name: str, options: Any) -> str:
    """``; did you mean 'x'?`` for the closest option, the one phrasing every message uses."""
    close = difflib.get_close_matches(str(name), [str(o) for o in options], n=1)
    return f"; did you mean {close[0]!r}?" if close else ""


def _cross_check(config: MeshConfig, dropped: _Dropped | None = None) -> list[tuple[str, str]]:
    """Checks that span sections: references, strategy IDs, capabilities, cron.

    ``dropped`` (from :func:`_valid_part`) names what was left out of ``config`` for
    failing validation: a reference to it is not reported as unknown, since the entry
    exists and its own errors are reported already.
    """
    from ._capabilities import CapabilityTree, UnknownCapabilityError
    from .strategies import resolve_strategy_id

    dropped = dropped or _Dropped()
    errors: list[tuple[str, str]] = []
    tree = CapabilityTree()
    for i, node in enumerate(config.capabilities):
        try:
            tree.add(node)
        except ValueError as exc:
            errors.append((f"capabilities[{i}]", str(exc)))
    # Custom nodes of a section that failed validation are unknown: say nothing of them.
    check_capabilities = "capabilities" not in dropped.sections

    def known(section: str, name: str) -> bool:
        entries = getattr(config, section)
        return name in entries or name in dropped.ids[section] or section in dropped.sections

    def unknown_provider(at: str, prov: str) -> None:
        if not known("providers", prov):
            options = [*config.providers, *dropped.ids["providers"]]
            errors.append((at, f"unknown provider {prov!r}{_suggest(prov, options)}"))

    def lost(section: str, entry: str, *keys: str) -> bool:
        """A setting of this entry was left out for being invalid: do not judge without it."""
        return any((section, entry, k) in dropped.fields for k in keys)

    def capability(at: str, name: str) -> None:
        try:
            tree.resolve(name)
        except UnknownCapabilityError as exc:
            if check_capabilities:
                errors.append((at, str(exc)))

    for mid, model in config.models.items():
        unknown_provider(f"models.{mid}.provider", model.provider)
        for i, cap in enumerate(model.capabilities):
            capability(f"models.{mid}.capabilities[{i}]", cap)
        if model.name is None and "." not in mid and not lost("models", mid, "name"):
            errors.append((f"models.{mid}", "set 'name' or use an ID of the form vendor.model"))

    for pid, pool in config.pools.items():
        at = f"pools.{pid}"
        for key in ("models", "model_priority"):
            for i, mid in enumerate(getattr(pool, key)):
                if not known("models", mid):
                    options = [*config.models, *dropped.ids["models"]]
                    errors.append(
                        (f"{at}.{key}[{i}]", f"unknown model {mid!r}{_suggest(mid, options)}")
                    )
        for key in ("provider_priority", "excluded_providers"):
            for i, prov in enumerate(getattr(pool, key)):
                unknown_provider(f"{at}.{key}[{i}]", prov)
        for i, prov in enumerate(pool.allowed_providers or ()):
            unknown_provider(f"{at}.allowed_providers[{i}]", prov)
        target = pool.capability
        if target is None and not pool.models:
            if pid in tree:
                target = pid
            elif check_capabilities and not lost(
                "pools", pid, "capability", "hierarchy_node", "models"
            ):
                errors.append((at, "set 'capability' (a capability node) or 'models' (a list)"))
        if target is not None:
            capability(f"{at}.capability", target)
        try:
            strategy_id = resolve_strategy_id(pool.strategy)
        except KeyError as exc:
            errors.append((f"{at}.strategy", exc.args[0]))
            strategy_id = ""
        if pool.fallback_strategy != "error":
            try:
                if (
                    resolve_strategy_id(pool.fallback_strategy)
                    == strategy_id
                    == ("modelmesh.priority-selection.v1")
                ):
                    errors.append(
                        (f"{at}.fallback_strategy", "cannot be priority-selection itself")
                    )
            except KeyError as exc:
                msg = str(exc.args[0])
                msg = msg[:-1] + ", or 'error')" if msg.endswith(")") else msg + " (or 'error')"
                errors.append((f"{at}.fallback_strategy", msg))
        window = pool.deactivation.maintenance_window
        if window is not None:
            cron = window if isinstance(window, str) else window.cron
            from croniter import croniter

            if not croniter.is_valid(cron):
                errors.append(
                    (
                        f"{at}.deactivation.maintenance_window",
                        f"invalid cron expression {cron!r} "
                        "(expected five fields, e.g. '0 2 * * 0')",
                    )
                )
    return errors


def config_warnings(config: MeshConfig) -> list[tuple[str, str]]:
    """``(key path, problem)`` for what is valid but almost certainly not meant.

    An empty configuration, a configuration with models but no pool, a pool that no
    model joins (its capability has no models, or their providers are disabled) and
    a model that is in no pool all load fine and then fail, or do nothing, at the
    first request: ``modelmesh validate`` says so before that.
    """
    from ._assembly import capability_tree, pool_members

    warnings: list[tuple[str, str]] = []
    if not (config.providers or config.models or config.pools):
        return [("", "the configuration is empty: no providers, models or pools")]
    if config.models and not config.pools:
        warnings.append(("pools", "no pools: requests name a pool, so no model can be used"))
    tree = capability_tree(config)
    used: set[str] = set()
    for pid, pool in config.pools.items():
        members = pool_members(pid, pool, config, tree)
        used.update(members)
        if members:
            continue
        if pool.models:
            why = "the providers of its models are disabled"
        else:
            node = tree.resolve(pool.capability or pid)
            disabled = [
                mid
                for mid, m in config.models.items()
                if any(tree.covers(node, tree.resolve(c)) for c in m.capabilities)
            ]
            why = (
                f"its models' providers are disabled or excluded ({', '.join(disabled)})"
                if disabled
                else f"no model has capability {node!r} or one below it"
            )
        warnings.append((f"pools.{pid}", f"no model joins this pool: {why}"))
    for mid in config.models:
        if config.pools and mid not in used:
            warnings.append((f"models.{mid}", "in no pool: no request can reach it"))
    return warnings
