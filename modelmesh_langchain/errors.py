"""Mesh errors as langchain-core's typed model errors, without losing their mesh type.

LangChain code reacts to the typed errors of ``langchain_core.exceptions`` (``except
ContextOverflowError`` to summarize and retry, middleware that backs off on
``ModelRateLimitError``...), and provider integrations raise errors that inherit from
both their SDK's type and LangChain's (``langchain-openai``'s context overflow is an
``openai.BadRequestError`` and a ``ContextOverflowError``). The adapter does the same
at its boundary: each error below inherits from the mesh error it stands for *and*
from LangChain's, carries the same message and attributes, so ``except
mesh_core.RateLimitError`` and ``except ModelRateLimitError`` both catch it.
``mesh_core`` itself never imports LangChain.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from langchain_core.exceptions import (
    ContextOverflowError,
    ModelAPIError,
    ModelAuthenticationError,
    ModelConnectionError,
    ModelError,
    ModelInvalidRequestError,
    ModelPermissionDeniedError,
    ModelRateLimitError,
    ModelTimeoutError,
)

from mesh_core import _errors as mesh
from mesh_core._mesh import InvalidRequestError

__all__ = [
    "MeshAPIError",
    "MeshAuthenticationError",
    "MeshBadRequestError",
    "MeshConnectionError",
    "MeshContentPolicyError",
    "MeshContextOverflowError",
    "MeshExhaustedAPIError",
    "MeshExhaustedAuthenticationError",
    "MeshExhaustedConnectionError",
    "MeshExhaustedPermissionDeniedError",
    "MeshExhaustedRateLimitError",
    "MeshExhaustedTimeoutError",
    "MeshInvalidRequestError",
    "MeshMalformedResponseError",
    "MeshNoAvailableModelError",
    "MeshPermissionDeniedError",
    "MeshQuotaExhaustedError",
    "MeshRateLimitError",
    "MeshStreamInterruptedError",
    "MeshStreamTimeoutError",
    "MeshTimeoutError",
    "langchain_errors",
    "to_langchain_error",
]


class _Converted:
    """A copy of a mesh error under a type that is also LangChain's."""

    args: tuple[Any, ...]  # a mixin of exceptions: theirs

    def __reduce__(self) -> Any:  # picklable although the mesh errors take keywords
        return (_rebuild, (type(self), self.args, self.__dict__))


def _rebuild(cls: type[BaseException], args: tuple[Any, ...], state: dict[str, Any]) -> Any:
    err = cls.__new__(cls)
    err.args = args
    err.__dict__.update(state)
    return err


# --- one provider call's failure (raised when nothing else could serve) -----------------
class MeshRateLimitError(_Converted, mesh.RateLimitError, ModelRateLimitError):
    """429: the provider asks to slow down."""


class MeshQuotaExhaustedError(_Converted, mesh.QuotaExhaustedError, ModelRateLimitError):
    """429 with a quota body: the account's allowance is spent."""


class MeshAuthenticationError(_Converted, mesh.AuthenticationError, ModelAuthenticationError):
    """401: the provider refused the credentials."""


class MeshPermissionDeniedError(_Converted, mesh.AuthenticationError, ModelPermissionDeniedError):
    """403: the credentials lack the permission."""


class MeshAPIError(_Converted, mesh.ServerError, ModelAPIError):
    """5xx from the provider."""


class MeshMalformedResponseError(_Converted, mesh.MalformedResponseError, ModelAPIError):
    """The provider's reply could not be read."""


class MeshTimeoutError(_Converted, mesh.ProviderTimeoutError, ModelTimeoutError):
    """A connect, first-token, stall or total timeout expired."""


class MeshConnectionError(_Converted, mesh.ProviderConnectionError, ModelConnectionError):
    """The connection was refused, reset or closed before a reply."""


class MeshContextOverflowError(_Converted, mesh.ContextWindowExceededError, ContextOverflowError):
    """The prompt fits no model of the pool that was tried."""


class MeshBadRequestError(_Converted, mesh.BadRequestError, ModelInvalidRequestError):
    """The provider rejected the request as malformed."""


class MeshContentPolicyError(_Converted, mesh.ContentPolicyError, ModelInvalidRequestError):
    """The provider refused the content (a 400)."""


class MeshStreamInterruptedError(_Converted, mesh.StreamInterruptedError, ModelConnectionError):
    """A stream broke after its first token (the connection was lost)."""


class MeshStreamTimeoutError(_Converted, mesh.StreamInterruptedError, ModelTimeoutError):
    """A stream stalled after its first token."""


# --- the request as a whole -------------------------------------------------------------
class MeshInvalidRequestError(_Converted, InvalidRequestError, ModelInvalidRequestError):
    """The request is malformed (messages, tools): nothing was sent."""


class MeshNoAvailableModelError(_Converted, mesh.NoAvailableModelError, ModelAPIError):
    """Every model of the pool is in standby: like a 503, retryable later."""


class MeshExhaustedRateLimitError(_Converted, mesh.AllProvidersExhaustedError, ModelRateLimitError):
    """Every candidate failed, the last one rate-limited."""


class MeshExhaustedTimeoutError(_Converted, mesh.AllProvidersExhaustedError, ModelTimeoutError):
    """Every candidate failed, the last one timing out."""


class MeshExhaustedConnectionError(
    _Converted, mesh.AllProvidersExhaustedError, ModelConnectionError
):
    """Every candidate failed, the last one unreachable."""


class MeshExhaustedAuthenticationError(
    _Converted, mesh.AllProvidersExhaustedError, ModelAuthenticationError
):
    """Every candidate failed, the last one refusing the credentials."""


class MeshExhaustedPermissionDeniedError(
    _Converted, mesh.AllProvidersExhaustedError, ModelPermissionDeniedError
):
    """Every candidate failed, the last one denying the permission (403)."""


class MeshExhaustedAPIError(_Converted, mesh.AllProvidersExhaustedError, ModelAPIError):
    """Every candidate failed (server errors, unreadable replies...)."""


_BY_KIND: dict[mesh.ErrorKind, type[BaseException]] = {
    mesh.ErrorKind.RATE_LIMITED: MeshRateLimitError,
    mesh.ErrorKind.QUOTA_EXHAUSTED: MeshQuotaExhaustedError,
    mesh.ErrorKind.SERVER_ERROR: MeshAPIError,
    mesh.ErrorKind.TIMEOUT: MeshTimeoutError,
    mesh.ErrorKind.CONNECTION: MeshConnectionError,
    mesh.ErrorKind.AUTHENTICATION: MeshAuthenticationError,
    mesh.ErrorKind.CONTEXT_WINDOW: MeshContextOverflowError,
    mesh.ErrorKind.CONTENT_POLICY: MeshContentPolicyError,
    mesh.ErrorKind.BAD_REQUEST: MeshBadRequestError,
    mesh.ErrorKind.MALFORMED_RESPONSE: MeshMalformedResponseError,
}

_EXHAUSTED_BY_LAST: tuple[tuple[type[BaseException], type[BaseException]], ...] = (
    (mesh.RateLimitError, MeshExhaustedRateLimitError),
    (mesh.ProviderTimeoutError, MeshExhaustedTimeoutError),
    (mesh.ProviderConnectionError, MeshExhaustedConnectionError),
    (mesh.AuthenticationError, MeshExhaustedAuthenticationError),
)


def _target(err: mesh.ModelMeshError) -> type[BaseException] | None:
    if isinstance(err, mesh.StreamInterruptedError):
        if err.kind == mesh.ErrorKind.TIMEOUT:
            return MeshStreamTimeoutError
        return MeshStreamInterruptedError
    if isinstance(err, mesh.ProviderError):
        if isinstance(err, mesh.AuthenticationError) and err.status_code == 403:
            return MeshPermissionDeniedError
        target = _BY_KIND.get(err.kind)
        # Only when the mesh type is kept: a subclass of the user's own is left alone.
        return target if target is not None and issubclass(target, type(err)) else None
    if isinstance(err, mesh.AllProvidersExhaustedError):
        last = err.last_error
        if isinstance(last, mesh.AuthenticationError) and last.status_code == 403:
            return MeshExhaustedPermissionDeniedError
        return next(
            (cls for base, cls in _EXHAUSTED_BY_LAST if isinstance(last, base)),
            MeshExhaustedAPIError,
        )
    if isinstance(err, mesh.NoAvailableModelError):
        return MeshNoAvailableModelError
    return None


def to_langchain_error(err: BaseException) -> BaseException:
    """``err`` as the matching LangChain-typed mesh error (``err`` itself when none applies).

    The copy has the same message, attributes, cause and traceback; its type inherits
    from ``type(err)``'s mesh class and from the ``langchain_core.exceptions`` class.
    """
    if isinstance(err, ModelError) or not isinstance(err, mesh.ModelMeshError):
        return err
    if type(err) is InvalidRequestError:
        return _copy(err, MeshInvalidRequestError)
    target = _target(err)
    return err if target is None else _copy(err, target)


def _copy(err: BaseException, cls: type[BaseException]) -> BaseException:
    new = cls.__new__(cls)
    new.args = err.args
    new.__dict__.update(err.__dict__)
    new.__cause__ = err.__cause__
    new.__suppress_context__ = err.__suppress_context__
    return new.with_traceback(err.__traceback__)


@contextmanager
def langchain_errors() -> Iterator[None]:
    """Re-raise mesh errors from the block under their LangChain-typed classes."""
    try:
        yield
    except mesh.ModelMeshError as err:
        converted = to_langchain_error(err)
        if converted is err:
            raise
        raise converted from err.__cause__
