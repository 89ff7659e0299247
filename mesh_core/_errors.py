"""The error taxonomy.

Every error the mesh raises derives from :class:`ModelMeshError`, which carries a
message, a ``details`` dict (JSON-safe, never a secret) and a ``retryable`` hint
telling the caller whether trying again later may help.

The tree::

    ModelMeshError
    ├── ConfigurationError (ValueError)      a configuration file or dict is invalid
    ├── InvalidRequestError (ValueError)     the caller's request is malformed
    ├── UnknownModelError (KeyError)         no model with this ID
    ├── UnknownCapabilityError (KeyError)    no capability with this name
    ├── StateStoreError                      the state store cannot be read or written
    ├── MeshClosedError (RuntimeError)       the mesh was closed
    ├── RoutingError                         no model of a pool could be used
    │   ├── UnknownPoolError (KeyError)
    │   ├── NoAvailableModelError            every (capable) model is in standby
    │   ├── NoCapableModelError              no model can serve this request
    │   ├── SessionModelUnavailableError
    │   └── AllProvidersExhaustedError       every candidate was tried and failed
    └── ProviderError                        one provider call failed (``kind``)
        ├── AuthenticationError, RateLimitError > QuotaExhaustedError, ServerError,
        ├── ProviderTimeoutError, ProviderConnectionError, ContextWindowExceededError,
        ├── ContentPolicyError, BadRequestError, MalformedResponseError
        └── StreamInterruptedError           a stream broke after its first token

Provider failures are classified into an :class:`ErrorKind` so that routing
decisions (retry, fail over, raise, take the provider out) are pure functions of
the kind and the HTTP status, not of exception types scattered through the code.
"""

from __future__ import annotations

import enum
from typing import Any

from ._redact import redact_text


class ErrorKind(enum.StrEnum):
    """What went wrong with one provider call."""

    RATE_LIMITED = "rate_limited"
    QUOTA_EXHAUSTED = "quota_exhausted"
    SERVER_ERROR = "server_error"
    TIMEOUT = "timeout"
    CONNECTION = "connection_error"
    AUTHENTICATION = "authentication"
    CONTEXT_WINDOW = "context_window_exceeded"
    CONTENT_POLICY = "content_policy"
    BAD_REQUEST = "bad_request"
    MALFORMED_RESPONSE = "malformed_response"


#: Kinds that are the caller's doing: raised at once, never retried on another model.
CALLER_KINDS = frozenset({ErrorKind.BAD_REQUEST, ErrorKind.CONTENT_POLICY})


class ModelMeshError(Exception):
    """Base class of every error raised by the mesh."""

    retryable: bool = False

    def __init__(
        self,
        message: str,
        *,
        details: dict[str, Any] | None = None,
        retryable: bool | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.details: dict[str, Any] = details or {}
        if retryable is not None:
            self.retryable = retryable


class MeshClosedError(ModelMeshError, RuntimeError):
    """The mesh was closed: it takes no new request."""


class ConfigurationError(ModelMeshError, ValueError):
    """A configuration file or dict is invalid.

    ``errors`` lists one ``(key_path, problem)`` pair per problem found, so that a
    broken file is reported whole rather than one error per run. Every URL's userinfo
    (``user:pass@``) is removed from them, whoever wrote the problem: a configuration
    error is printed, logged and shown to users, and must never carry a password.
    """

    def __init__(self, errors: list[tuple[str, str]], *, source: str | None = None) -> None:
        errors = [(redact_text(str(path)), redact_text(str(problem))) for path, problem in errors]
        self.errors = errors
        self.source = source = redact_text(source) if source else source
        where = f" in {source}" if source else ""
        lines = [f"invalid ModelMesh configuration{where}:"]
        lines += [f"  {path or '<root>'}: {problem}" for path, problem in errors]
        super().__init__("\n".join(lines), details={"errors": [list(e) for e in errors]})


class InvalidRequestError(ModelMeshError, ValueError):
    """The caller's request is malformed (caught before any provider is called)."""


class UnknownModelError(ModelMeshError, KeyError):
    """No model of the mesh has this ID (``Mesh.model``, ``snapshot``, ``deactivate``...)."""

    def __str__(self) -> str:  # KeyError would repr() the message otherwise
        return self.message


class UnknownCapabilityError(ModelMeshError, KeyError):
    """A capability name is neither a node of the tree nor an alias of one."""

    def __init__(self, name: str, suggestion: str | None = None) -> None:
        hint = f" (did you mean {suggestion!r}?)" if suggestion else ""
        super().__init__(f"unknown capability {name!r}{hint}", details={"capability": name})
        self.suggestion = suggestion

    def __str__(self) -> str:
        return self.message


class StateStoreError(ModelMeshError):
    """The persisted state cannot be read or written (``details['where']`` names it)."""


class RoutingError(ModelMeshError):
    """A request could not be routed to any model of a pool."""

    def __init__(self, message: str, *, pool_name: str, **kwargs: Any) -> None:
        super().__init__(message, **kwargs)
        self.pool_name = pool_name


class UnknownPoolError(RoutingError, KeyError):
    """The pool named by the caller does not exist."""

    def __str__(self) -> str:  # KeyError would repr() the message otherwise
        return self.message


class NoAvailableModelError(RoutingError):
    """Every model of the pool is in standby (or was already tried).

    ``recovers_at`` is the Unix time at which the earliest standby model becomes
    eligible again, or ``None`` when none recovers by itself (manual standby).
    """

    retryable = True

    def __init__(
        self,
        message: str,
        *,
        pool_name: str,
        recovers_at: float | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(message, pool_name=pool_name, **kwargs)
        self.recovers_at = recovers_at


#: The name used by the upstream design; the same class.
NoActiveModelError = NoAvailableModelError


class NoCapableModelError(RoutingError):
    """No model of the pool can serve this request (tools, schema, images, size).

    ``reasons`` maps each model to the need that ruled it out.
    """

    def __init__(self, message: str, *, pool_name: str, reasons: dict[str, str]) -> None:
        super().__init__(message, pool_name=pool_name, details={"reasons": reasons})
        self.reasons = reasons


class SessionModelUnavailableError(RoutingError):
    """Strict session affinity: the session's model is not available."""


class AllProvidersExhaustedError(RoutingError):
    """Every candidate was tried and failed; ``attempts`` says what happened."""

    def __init__(
        self,
        message: str,
        *,
        pool_name: str,
        attempts: list[Any],
        last_error: BaseException | None,
    ) -> None:
        super().__init__(message, pool_name=pool_name)
        self.attempts = attempts
        self.last_error = last_error


class ProviderError(ModelMeshError):
    """One provider call failed. ``kind`` classifies it; ``status_code`` keeps the HTTP status."""

    kind: ErrorKind = ErrorKind.SERVER_ERROR

    def __init__(
        self,
        message: str,
        *,
        provider_id: str | None = None,
        model_id: str | None = None,
        status_code: int | None = None,
        kind: ErrorKind | None = None,
        retry_after: float | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(message, **kwargs)
        self.provider_id = provider_id
        self.model_id = model_id
        self.status_code = status_code
        if kind is not None:
            self.kind = kind
        self.retry_after = retry_after

    def __reduce__(self) -> Any:  # keep errors picklable across processes
        return (_rebuild_provider_error, (type(self), self.message, self.__dict__))


def _rebuild_provider_error(
    cls: type[ProviderError], message: str, state: dict[str, Any]
) -> ProviderError:
    err = cls.__new__(cls)
    Exception.__init__(err, message)
    err.__dict__.update(state)
    return err


class AuthenticationError(ProviderError):
    """401/403: the provider refused the credentials. Every model of it leaves rotation."""

    kind = ErrorKind.AUTHENTICATION


class RateLimitError(ProviderError):
    """429: slow down. ``retry_after`` is the provider's Retry-After in seconds, if sent."""

    kind = ErrorKind.RATE_LIMITED
    retryable = True


class QuotaExhaustedError(RateLimitError):
    """429 with a quota/billing body: the account's allowance is spent."""

    kind = ErrorKind.QUOTA_EXHAUSTED


class ServerError(ProviderError):
    """5xx from the provider."""

    kind = ErrorKind.SERVER_ERROR
    retryable = True


class ProviderTimeoutError(ProviderError):
    """A connect, first-token, stall or total timeout expired."""

    kind = ErrorKind.TIMEOUT
    retryable = True

    def __init__(self, message: str, *, timeout_seconds: float | None = None, **kw: Any) -> None:
        super().__init__(message, **kw)
        self.timeout_seconds = timeout_seconds


class ProviderConnectionError(ProviderError):
    """The connection was refused, reset or closed before a reply."""

    kind = ErrorKind.CONNECTION
    retryable = True


class ContextWindowExceededError(ProviderError):
    """The prompt does not fit this model's context window; a larger model may serve it."""

    kind = ErrorKind.CONTEXT_WINDOW


class ContentPolicyError(ProviderError):
    """The provider refused the content. Raised to the caller, never routed around."""

    kind = ErrorKind.CONTENT_POLICY


class BadRequestError(ProviderError):
    """The provider rejected the request as malformed (the caller's fault)."""

    kind = ErrorKind.BAD_REQUEST


class MalformedResponseError(ProviderError):
    """The provider's reply could not be parsed as an OpenAI-compatible response."""

    kind = ErrorKind.MALFORMED_RESPONSE
    retryable = True


class StreamInterruptedError(ProviderError):
    """A stream broke after its first token. ``partial_text`` holds what arrived.

    The mesh never returns a truncated stream as complete: this error is raised instead.
    """

    def __init__(self, message: str, *, partial_text: str, **kwargs: Any) -> None:
        super().__init__(message, **kwargs)
        self.partial_text = partial_text


_CLASS_BY_KIND: dict[ErrorKind, type[ProviderError]] = {
    ErrorKind.RATE_LIMITED: RateLimitError,
    ErrorKind.QUOTA_EXHAUSTED: QuotaExhaustedError,
    ErrorKind.SERVER_ERROR: ServerError,
    ErrorKind.TIMEOUT: ProviderTimeoutError,
    ErrorKind.CONNECTION: ProviderConnectionError,
    ErrorKind.AUTHENTICATION: AuthenticationError,
    ErrorKind.CONTEXT_WINDOW: ContextWindowExceededError,
    ErrorKind.CONTENT_POLICY: ContentPolicyError,
    ErrorKind.BAD_REQUEST: BadRequestError,
    ErrorKind.MALFORMED_RESPONSE: MalformedResponseError,
}


def provider_error(kind: ErrorKind, message: str, **kwargs: Any) -> ProviderError:
    """Build the :class:`ProviderError` subclass that matches ``kind``."""
    return _CLASS_BY_KIND[kind](message, **kwargs)


__all__ = [
    "CALLER_KINDS",
    "AllProvidersExhaustedError",
    "AuthenticationError",
    "BadRequestError",
    "ConfigurationError",
    "ContentPolicyError",
    "ContextWindowExceededError",
    "ErrorKind",
    "MalformedResponseError",
    "MeshClosedError",
    "ModelMeshError",
    "NoActiveModelError",
    "NoAvailableModelError",
    "NoCapableModelError",
    "ProviderConnectionError",
    "ProviderError",
    "ProviderTimeoutError",
    "QuotaExhaustedError",
    "RateLimitError",
    "RoutingError",
    "ServerError",
    "SessionModelUnavailableError",
    "StreamInterruptedError",
    "UnknownPoolError",
    "provider_error",
]
