"""What counts as a secret, and how to hide it in a message or a repr.

One rule, shared by the configuration's reprs, its error messages and the LangChain
and LlamaIndex adapters, so that a secret hidden in one place cannot show in another:

* every value under a key named like a secret (``api_key``, ``key``, ``token``,
  ``secret``, ``password``, ``authorization``, ``credentials``... case-insensitive, at
  any depth of a nested dict);
* every header value (any value of a mapping under a key named ``headers`` or
  ``*_headers``);
* every URL's userinfo (the ``user:pass@`` of ``scheme://user:pass@host``).

Over-hiding is cheap (a repr shows ``'**********'``), under-hiding is a leaked key, so
the rule errs on the side of hiding.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

__all__ = [
    "MASK",
    "is_header_key",
    "is_secret_key",
    "is_url_key",
    "redact",
    "redact_text",
]

MASK = "**********"
"""What a hidden value shows as (as pydantic's ``SecretStr`` does)."""

# A key is secret when its last word is one of these (``access_token``, ``X-Api-Key``,
# ``auth``), so that ``token_limit`` or ``key_prefix`` (a number, a prefix) still show...
_SECRET_LAST_WORDS = frozenset(
    {
        "key",
        "apikey",
        "token",
        "secret",
        "password",
        "passwd",
        "pwd",
        "pass",
        "passphrase",
        "auth",
        "authorization",
        "credential",
        "credentials",
        "cookie",
        "bearer",
        "signature",
    }
)
# ...or when it holds one of these anywhere (``password_file``, ``client_secret_id``).
_SECRET_PARTS = (
    "secret",
    "password",
    "passwd",
    "credential",
    "apikey",
    "api_key",
    "api-key",
    "authorization",
    "private_key",
    "access_key",
)
_WORD_SPLIT = re.compile(r"[^a-z0-9]+")
_CAMEL = re.compile(r"(?<=[a-z0-9])(?=[A-Z])")

# ``scheme://`` then everything up to the last ``@`` of the same unbroken run of text:
# greedy, so a password holding an unescaped ``@`` or ``/`` is hidden whole.
_USERINFO = re.compile(r"(?i)\b([a-z][a-z0-9+.\-]*://)[^\s'\"<>]*@")

_MAX_DEPTH = 32


def is_secret_key(key: object) -> bool:
    """Whether a value stored under ``key`` must never be shown."""
    if not isinstance(key, str) or not key:
        return False
    lowered = _CAMEL.sub("_", key).lower()
    if any(part in lowered for part in _SECRET_PARTS):
        return True
    words = [w for w in _WORD_SPLIT.split(lowered) if w]
    return bool(words) and words[-1] in _SECRET_LAST_WORDS


def is_header_key(key: object) -> bool:
    """Whether ``key`` names a mapping of HTTP headers (every value of which is hidden)."""
    return isinstance(key, str) and (
        key.lower() == "headers" or key.lower().endswith(("_headers", "-headers"))
    )


def is_url_key(key: object) -> bool:
    """Whether ``key`` names a URL-like setting, whose value may carry credentials."""
    if not isinstance(key, str):
        return False
    lowered = key.lower()
    return lowered in ("url", "uri", "dsn", "proxy") or lowered.endswith(
        ("_url", "_uri", "_dsn", "_proxy")
    )


def redact_text(text: str) -> str:
    """``text`` with every URL's userinfo replaced: ``redis://***@host:6379/0``."""
    return _USERINFO.sub(r"\1***@", text)


def redact(value: Any, key: object = None, *, _depth: int = 0) -> Any:
    """A copy of ``value`` safe to show: secrets masked, URL userinfo removed.

    ``key`` is the name ``value`` is stored under, if any. Mappings, lists and tuples
    are copied with the rule applied at every depth; pydantic models (their own repr
    is responsible for them) and other objects are returned as they are; ``None`` and
    empty strings stay visible, so "not set" still reads as such.
    """
    if hasattr(type(value), "__pydantic_fields__"):
        return value  # e.g. a provider whose ID reads like a secret: its repr hides its own
    if key is not None and is_secret_key(key):
        return value if value is None or value == "" or _is_secret_type(value) else MASK
    if isinstance(value, str):
        return redact_text(value)
    if _depth >= _MAX_DEPTH:
        return "..." if isinstance(value, (Mapping, list, tuple)) else value
    if isinstance(value, Mapping):
        if key is not None and is_header_key(key):
            return {k: MASK for k in value}
        return {k: redact(v, k, _depth=_depth + 1) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        items = [redact(v, _depth=_depth + 1) for v in value]
        return items if isinstance(value, list) else tuple(items)
    return value


def _is_secret_type(value: Any) -> bool:
    return type(value).__name__ in ("SecretStr", "SecretBytes")
