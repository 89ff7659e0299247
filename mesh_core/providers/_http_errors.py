"""HTTP error replies to the error taxonomy: the part every dialect shares.

Each dialect digs the provider's own code and message out of its error body shape; the
decision from there (the status first, then what the text says: a context-window
overflow, a content-policy refusal, a spent quota) is the same for all of them, so that a
429 or a 503 means the same thing to the router whoever sent it.
"""

from __future__ import annotations

import re

from .._errors import ErrorKind, ProviderError, provider_error

__all__ = ["CONTEXT", "POLICY", "QUOTA", "kind_for_status", "proxy_auth_error"]

CONTEXT = re.compile(r"context[_ ]length|context window|maximum context|too many tokens", re.I)
POLICY = re.compile(r"content[_ ]policy|content[_ ]filter|safety system|flagged", re.I)
QUOTA = re.compile(r"insufficient_quota|quota|billing|credit", re.I)


def kind_for_status(status: int, text: str, context: re.Pattern[str] = CONTEXT) -> ErrorKind:
    """The kind of an HTTP error ``status`` whose body says ``text`` (code and message);
    ``context`` recognises a context-window overflow in the provider's own words."""
    if status in (401, 403):
        return ErrorKind.AUTHENTICATION
    if status == 429:
        return ErrorKind.QUOTA_EXHAUSTED if QUOTA.search(text) else ErrorKind.RATE_LIMITED
    if status == 408:
        return ErrorKind.TIMEOUT
    if status >= 500 or status == 404:
        return ErrorKind.SERVER_ERROR
    if context.search(text):
        return ErrorKind.CONTEXT_WINDOW
    if POLICY.search(text):
        return ErrorKind.CONTENT_POLICY
    return ErrorKind.BAD_REQUEST


def proxy_auth_error() -> ProviderError:
    """A 407: a proxy between us and the provider wants (other) credentials. The provider
    cannot be reached, which is no fault of the request; the body may echo what was sent,
    so none of it is shown."""
    return provider_error(
        ErrorKind.CONNECTION, "HTTP 407: the proxy requires authentication", status_code=407
    )
