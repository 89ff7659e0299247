"""What of a provider's settings is a credential: revealing them for the request, and
knowing them to keep them out of reprs and error messages.

The transport sends credentials only in request headers (the API key, HTTP basic auth from
``user:pass@`` in a URL, a proxy's ``Proxy-Authorization``); every one of them, in every
form it could be echoed back in (a basic token too), is also listed so an error message a
provider or proxy builds from the request can be scrubbed.
"""

from __future__ import annotations

import base64
import re
from collections.abc import Mapping
from typing import Any

import httpx

__all__ = ["basic_token", "reveal", "secret_header_values", "shown_url", "url_credentials"]

_SECRET_HEADER = re.compile(r"auth|key|token|secret|cookie|session|signature|password", re.I)
"""Names of extra headers whose values are kept out of error messages."""


def reveal(secret: Any) -> str | None:
    """The plain value of a SecretStr (or a str); None when empty."""
    value = secret.get_secret_value() if hasattr(secret, "get_secret_value") else secret
    return str(value) if value else None


def basic_token(username: str, password: str) -> str:
    """The token of ``Authorization: Basic`` (as httpx builds it, for proxies too)."""
    return base64.b64encode(f"{username}:{password}".encode()).decode()


def url_credentials(url: str | None) -> list[str]:
    """What of a URL's userinfo must never be shown: the password (or a lone user name,
    which is then a token) and the basic token made of them."""
    if not url:
        return []
    parsed = httpx.URL(url)
    if not parsed.userinfo:
        return []
    user, password = parsed.username, parsed.password
    return [s for s in (password or user, basic_token(user, password)) if s]


def secret_header_values(headers: Mapping[str, str]) -> list[str]:
    """The values of extra headers named like secrets (``X-Api-Key``, ``Cookie``...); values
    under four characters are not worth hiding (and would mangle every message)."""
    return [v for k, v in headers.items() if _SECRET_HEADER.search(k) and len(v) >= 4]


def shown_url(url: httpx.URL) -> str:
    """A URL fit for a repr: no userinfo (already stripped), and no query values."""
    shown = str(url.copy_with(query=None)).rstrip("/")
    return shown + ("?***" if url.query else "")
