"""Exceptions of foreign models (a LangChain chat model, a LlamaIndex LLM, the SDK under
them) as the mesh's error kinds, so that failover treats them like a native provider's.

Nothing here imports an SDK: an exception is read by what it carries, duck-typed, so the
same rules serve ``openai``, ``anthropic``, ``google.genai``, ``google.api_core``,
``botocore``, ``httpx``, ``requests``, ``aiohttp`` and LangChain's typed errors alike. In
order, along the exception's ``__cause__``/``__context__`` chain (a wrapper such as a
LangChain ``ModelError`` raised *from* an SDK error is read through):

1. a mesh :class:`~mesh_core._errors.ProviderError` (a mesh nested as a model) keeps its kind;
2. a botocore-style ``response["Error"]["Code"]`` (``ThrottlingException``,
   ``ValidationException``, ``AccessDeniedException``...);
3. an HTTP status (``status_code``, an integer ``code`` or ``status``, or the same on
   ``exc.response``), read with the rules every native dialect uses
   (:func:`~._http_errors.kind_for_status`, on the status and the body's text:
   ``context_length_exceeded``, ``content_filter``, ``insufficient_quota``...);
4. the exception's class names, its own and its bases' (``APITimeoutError``,
   ``ReadTimeout``, ``ConnectError``, ``RateLimitError``, ``ContextOverflowError``,
   ``OutputParserException``...), and the builtins ``TimeoutError`` / ``ConnectionError``.

Anything else is **unclassified**: a :class:`~mesh_core._errors.ServerError` (it counts
against the model, is retried per the pool's ``retry`` and then fails over, as an
unexplained 500 would) whose message says ``unclassified`` and names the exception's type,
with ``details["unclassified"] = True``. A bug in the caller's own code (a ``TypeError`` in
a tool) thus never passes for a provider outage silently: it shows by name in every
attempt, and in the ``AllProvidersExhaustedError`` when every model hit it.

Messages name the provider and the original exception type, and never a secret: URL
userinfo, the ``secrets`` passed in, and anything shaped like a key or bearer token are
replaced by ``***``.
"""

from __future__ import annotations

import base64
import contextlib
import json
import re
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote, quote_plus

from .._errors import ErrorKind, ProviderError, provider_error
from .._redact import redact_text
from ._http_errors import CONTEXT, POLICY, QUOTA, kind_for_status
from ._reply import parse_retry_after

__all__ = [
    "UNCLASSIFIED",
    "classify_foreign_error",
    "scrub",
    "shows_secret",
    "stale_event_loop",
]

UNCLASSIFIED = ErrorKind.SERVER_ERROR
"""The kind of an exception none of the rules recognise (see the module docstring)."""

_MAX_CHAIN = 8
_MAX_TEXT = 300

# botocore ``response["Error"]["Code"]`` values (Bedrock, SageMaker, any AWS service).
_AWS_CODES: dict[str, ErrorKind] = {
    "ThrottlingException": ErrorKind.RATE_LIMITED,
    "Throttling": ErrorKind.RATE_LIMITED,
    "TooManyRequestsException": ErrorKind.RATE_LIMITED,
    "ProvisionedThroughputExceededException": ErrorKind.RATE_LIMITED,
    "RequestLimitExceeded": ErrorKind.RATE_LIMITED,
    "ServiceQuotaExceededException": ErrorKind.QUOTA_EXHAUSTED,
    "AccessDeniedException": ErrorKind.AUTHENTICATION,
    "UnrecognizedClientException": ErrorKind.AUTHENTICATION,
    "InvalidSignatureException": ErrorKind.AUTHENTICATION,
    "ExpiredTokenException": ErrorKind.AUTHENTICATION,
    "IncompleteSignature": ErrorKind.AUTHENTICATION,
    "MissingAuthenticationTokenException": ErrorKind.AUTHENTICATION,
    "ModelTimeoutException": ErrorKind.TIMEOUT,
    "RequestTimeout": ErrorKind.TIMEOUT,
    "InternalServerException": ErrorKind.SERVER_ERROR,
    "InternalFailure": ErrorKind.SERVER_ERROR,
    "ServiceUnavailableException": ErrorKind.SERVER_ERROR,
    "ServiceUnavailable": ErrorKind.SERVER_ERROR,
    "ModelNotReadyException": ErrorKind.SERVER_ERROR,
    "ModelErrorException": ErrorKind.SERVER_ERROR,
    "ModelStreamErrorException": ErrorKind.SERVER_ERROR,
    "ResourceNotFoundException": ErrorKind.SERVER_ERROR,
    "ValidationException": ErrorKind.BAD_REQUEST,
}

# Class names (of the exception or any of its bases) -> kind, first match wins; checked
# only when no status code says more. Timeouts before connection errors: openai's
# APITimeoutError is an APIConnectionError.
_NAMES: tuple[tuple[frozenset[str], ErrorKind], ...] = (
    (frozenset({"ContextOverflowError", "ContextWindowExceededError"}), ErrorKind.CONTEXT_WINDOW),
    (
        frozenset({"OutputParserException", "JSONDecodeError", "LengthFinishReasonError"}),
        ErrorKind.MALFORMED_RESPONSE,
    ),
    (
        frozenset({"ModelRefusalError", "ContentFilterFinishReasonError", "ContentPolicyError"}),
        ErrorKind.CONTENT_POLICY,
    ),
    (
        frozenset(
            {
                "TimeoutError",
                "APITimeoutError",
                "TimeoutException",
                "ReadTimeout",
                "WriteTimeout",
                "ConnectTimeout",
                "PoolTimeout",
                "Timeout",
                "ReadTimeoutError",
                "ConnectTimeoutError",
                "ServerTimeoutError",
                "ModelTimeoutError",
                "DeadlineExceeded",
            }
        ),
        ErrorKind.TIMEOUT,
    ),
    (
        frozenset(
            {
                "ConnectionError",
                "APIConnectionError",
                "ConnectError",
                "NetworkError",
                "TransportError",
                "RemoteProtocolError",
                "ProtocolError",
                "ChunkedEncodingError",
                "ClientConnectionError",
                "ClientConnectorError",
                "ServerDisconnectedError",
                "ClientPayloadError",
                "EndpointConnectionError",
                "ConnectionClosedError",
                "ModelConnectionError",
            }
        ),
        ErrorKind.CONNECTION,
    ),
    (
        frozenset({"RateLimitError", "ModelRateLimitError", "ResourceExhausted"}),
        ErrorKind.RATE_LIMITED,
    ),
    (
        frozenset(
            {
                "AuthenticationError",
                "PermissionDeniedError",
                "ModelAuthenticationError",
                "ModelPermissionDeniedError",
                "Unauthenticated",
                "PermissionDenied",
                "NoCredentialsError",
                "DefaultCredentialsError",
                "RefreshError",
            }
        ),
        ErrorKind.AUTHENTICATION,
    ),
    (
        frozenset(
            {
                "InternalServerError",
                "OverloadedError",
                "ServiceUnavailableError",
                "ServiceUnavailable",
                "ModelAPIError",
                "ModelNotFoundError",
                "NotFoundError",
                "ServerError",
                "APIError",
            }
        ),
        ErrorKind.SERVER_ERROR,
    ),
    (
        frozenset(
            {
                "BadRequestError",
                "UnprocessableEntityError",
                "ModelInvalidRequestError",
                "InvalidArgument",
            }
        ),
        ErrorKind.BAD_REQUEST,
    ),
)

# Secret-shaped words a provider or SDK may echo into a message (OpenAI/Anthropic keys,
# Google API keys, AWS access key IDs, bearer tokens, ``key=`` query parameters).
_SECRETISH = re.compile(
    r"(?i)\b(?:sk-[a-z0-9_\-]{8,}|AIza[0-9a-z_\-]{20,}|AKIA[0-9A-Z]{12,}|ASIA[0-9A-Z]{12,})"
    r"|(?<=bearer )[a-z0-9._~+/\-]{8,}=*"
    r"|(?<=basic )[a-z0-9+/]{8,}=*"
    r"|(?:(?<=[?&]key=)|(?<=[?&]api-key=)|(?<=[?&]api_key=)|(?<=[?&]access_token=))[^&\s'\"]+"
)
# ``api_key='...'``, ``"x-api-key": "..."``, ``password=...``: the value after a secret's name.
_ASSIGNED = re.compile(
    r"(?i)\b((?:x-)?api[-_]?key|access[-_]?token|secret[-_]?(?:access[-_]?)?key|client[-_]?secret"
    r"|password)(['\"]?\s*[:=]\s*(?:SecretStr\()?['\"]?)([^\s'\",;&)}]{4,})"
)


@dataclass(frozen=True, slots=True)
class _Verdict:
    kind: ErrorKind
    status: int | None = None
    retry_after: float | None = None
    why: str = ""


def scrub(text: str, secrets: Iterable[str] = ()) -> str:
    """``text`` fit for an error message: URL userinfo, each of ``secrets`` and anything
    shaped like an API key or a bearer token replaced by ``***``."""
    for secret in secrets:
        if secret and len(secret) >= 4:
            for form in _forms(secret):
                text = text.replace(form, "***")
    text = _SECRETISH.sub("***", redact_text(text))
    return _ASSIGNED.sub(lambda m: f"{m.group(1)}{m.group(2)}***", text)


def _forms(secret: str) -> set[str]:
    """``secret`` as it may be echoed: as is, URL-encoded, JSON- or repr-escaped, and base64
    (alone, or as HTTP basic auth's ``user:secret``, whose tail it is)."""
    forms = {secret, quote(secret, safe=""), quote_plus(secret), json.dumps(secret)[1:-1]}
    forms.add(repr(secret)[1:-1])
    encoded = base64.b64encode(secret.encode()).decode().rstrip("=")
    if len(encoded) >= 8:
        forms.add(encoded)
    return {f for f in forms if len(f) >= 4}


def classify_foreign_error(
    exc: BaseException, *, provider_id: str, secrets: Iterable[str] = ()
) -> ProviderError:
    """The mesh error for ``exc``, raised by foreign model ``provider_id``.

    ``secrets`` (the model's API key, say) are hidden from the message on top of the
    secret shapes :func:`scrub` knows. Never raises."""
    verdict = None
    for link in _chain(exc):
        try:
            verdict = _verdict(link)
        except Exception:  # an exception whose attributes raise tells nothing more
            verdict = None
        if verdict is not None:
            break
    unclassified = verdict is None
    if verdict is None:
        verdict = _Verdict(UNCLASSIFIED, why="unclassified error")
    origin = f"{type(exc).__module__}.{type(exc).__qualname__}".removeprefix("builtins.")
    text = scrub(_text(exc), secrets)[:_MAX_TEXT]
    status = f" HTTP {verdict.status}" if verdict.status is not None else ""
    message = f"{provider_id}:{status} {verdict.why or verdict.kind.value} ({origin}: {text})"
    details: dict[str, Any] = {"foreign_type": origin}
    if unclassified:
        details["unclassified"] = True
    return provider_error(
        verdict.kind,
        message,
        provider_id=provider_id,
        status_code=verdict.status,
        retry_after=verdict.retry_after,
        details=details,
    )


def shows_secret(exc: BaseException, secrets: Iterable[str] = ()) -> bool:
    """Whether ``exc`` or what it was raised from says something :func:`scrub` would hide
    (then its traceback must not be shown: the exception is not kept as a cause)."""
    for link in _chain(exc):
        text = _text(link)
        if scrub(text, secrets) != text:
            return True
    return False


def stale_event_loop(exc: BaseException) -> bool:
    """Whether ``exc`` comes of a connection pooled in an event loop that has since closed
    (``RuntimeError: Event loop is closed`` under an SDK's connection error): what an async
    client kept by a model (``ChatOpenAI``'s, say) raises once in each new ``asyncio.run``.
    Not the provider's fault, and gone on the next try: the pool dropped the connection."""
    return any(
        isinstance(link, RuntimeError) and "event loop is closed" in _text(link).lower()
        for link in _chain(exc)
    )


def _chain(exc: BaseException) -> Iterator[BaseException]:
    """``exc``, then what it was raised from (or during), a few links deep, no cycles."""
    seen: set[int] = set()
    link: BaseException | None = exc
    while link is not None and id(link) not in seen and len(seen) < _MAX_CHAIN:
        seen.add(id(link))
        yield link
        link = link.__cause__ or link.__context__


def _verdict(exc: BaseException) -> _Verdict | None:
    if isinstance(exc, ProviderError):
        return _Verdict(exc.kind, exc.status_code, exc.retry_after, "mesh error")
    headers = _headers(exc)
    retry_after = parse_retry_after(headers) if headers else None
    retry_after = retry_after if retry_after is not None else _number(exc, "retry_after")
    text = _body_text(exc)
    aws = _aws_code(exc)
    status = _status(exc)
    if aws is not None and aws in _AWS_CODES:
        kind = _AWS_CODES[aws]
        if kind is ErrorKind.BAD_REQUEST:
            kind = _bad_request_kind(text)
        return _Verdict(kind, status, retry_after, f"AWS {aws}")
    if status == 402:  # payment required: the account's allowance is spent
        return _Verdict(ErrorKind.QUOTA_EXHAUSTED, status, retry_after, "payment required")
    if status is not None:
        return _Verdict(kind_for_status(status, text), status, retry_after, "provider error")
    names = {cls.__name__ for cls in type(exc).__mro__}
    for group, kind in _NAMES:
        if names & group:
            if kind is ErrorKind.RATE_LIMITED and QUOTA.search(text):
                kind = ErrorKind.QUOTA_EXHAUSTED
            elif kind is ErrorKind.BAD_REQUEST:
                kind = _bad_request_kind(text)
            return _Verdict(kind, None, retry_after, kind.value.replace("_", " "))
    return None


def _bad_request_kind(text: str) -> ErrorKind:
    if CONTEXT.search(text) or re.search(r"input is too long|too many input tokens", text, re.I):
        return ErrorKind.CONTEXT_WINDOW
    if POLICY.search(text):
        return ErrorKind.CONTENT_POLICY
    return ErrorKind.BAD_REQUEST


def _status(exc: BaseException) -> int | None:
    """An HTTP status the exception carries: its own (``status_code``, or an integer
    ``code``/``status`` as google-genai, google-api-core and aiohttp have) or its
    response's (httpx, requests; botocore's ``ResponseMetadata.HTTPStatusCode``)."""
    for name in ("status_code", "code", "status", "http_status"):
        if (status := _http_status(getattr(exc, name, None))) is not None:
            return status
    response = getattr(exc, "response", None)
    if isinstance(response, Mapping):
        meta = response.get("ResponseMetadata")
        return _http_status(meta.get("HTTPStatusCode")) if isinstance(meta, Mapping) else None
    for name in ("status_code", "status"):
        if (status := _http_status(getattr(response, name, None))) is not None:
            return status
    return None


def _http_status(value: Any) -> int | None:
    if isinstance(value, int) and not isinstance(value, bool) and 400 <= value <= 599:
        return value
    return None


def _aws_code(exc: BaseException) -> str | None:
    response = getattr(exc, "response", None)
    if isinstance(response, Mapping):
        error = response.get("Error")
        if isinstance(error, Mapping) and isinstance(error.get("Code"), str):
            return str(error["Code"])
    return None


def _headers(exc: BaseException) -> dict[str, str]:
    """The reply's headers, lower-cased (httpx's and requests' are case-insensitive
    already; botocore's sit in ``ResponseMetadata.HTTPHeaders``)."""
    response = getattr(exc, "response", None)
    raw: Any = None
    if isinstance(response, Mapping):
        meta = response.get("ResponseMetadata")
        raw = meta.get("HTTPHeaders") if isinstance(meta, Mapping) else None
    elif response is not None:
        raw = getattr(response, "headers", None)
    if raw is None:
        raw = getattr(exc, "headers", None)
    try:
        return {str(k).lower(): str(v) for k, v in raw.items()} if raw is not None else {}
    except Exception:  # a header object of unknown shape: no retry-after, not a crash
        return {}


def _number(exc: BaseException, name: str) -> float | None:
    value = getattr(exc, name, None)
    if isinstance(value, (int, float)) and not isinstance(value, bool) and value >= 0:
        return float(value)
    return None


def _body_text(exc: BaseException) -> str:
    """Everything textual the exception says about itself (message, body, codes), for the
    context-window / content-policy / quota patterns."""
    parts = [_text(exc)]
    for name in ("body", "code", "type", "status", "details"):
        value = getattr(exc, name, None)
        if isinstance(value, str):
            parts.append(value)
        elif isinstance(value, (Mapping, list)):
            with contextlib.suppress(TypeError, ValueError, RecursionError):
                parts.append(json.dumps(value, default=str)[:4000])
    response = getattr(exc, "response", None)
    if isinstance(response, Mapping) and isinstance(response.get("Error"), Mapping):
        parts.append(str(response["Error"].get("Message", "")))
    return " ".join(parts)


def _text(exc: BaseException) -> str:
    try:
        return str(exc) or type(exc).__name__
    except Exception:  # a __str__ that raises
        return type(exc).__name__
