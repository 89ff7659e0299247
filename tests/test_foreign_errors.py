"""Exceptions of foreign models (LangChain, LlamaIndex and the SDKs under them) read into
the mesh's error kinds by ``classify_foreign_error``: the real SDK error types, built
offline, and a botocore-shaped one (botocore is not a dependency)."""

from __future__ import annotations

import pickle
import subprocess
import sys
from typing import Any

import anthropic
import httpx
import httpx2
import openai
import pytest
from google.genai import errors as genai_errors
from langchain_core.exceptions import (
    ContextOverflowError,
    ModelAuthenticationError,
    ModelRateLimitError,
    OutputParserException,
)

from mesh_core._errors import (
    AuthenticationError,
    ErrorKind,
    ProviderError,
    QuotaExhaustedError,
    RateLimitError,
    ServerError,
)
from mesh_core.providers import classify_foreign_error
from mesh_core.providers._foreign_errors import UNCLASSIFIED, scrub

URL = "http://127.0.0.1:9/v1/chat/completions"


def _openai(cls: type, status: int, body: dict[str, Any] | None = None, **headers: str) -> Any:
    response = httpx.Response(status, headers=headers, request=httpx.Request("POST", URL))
    return cls(f"Error code: {status} - {body}", response=response, body=body)


def _anthropic(cls: type, status: int, kind: str, **headers: str) -> Any:
    request = httpx2.Request("POST", "http://127.0.0.1:9/v1/messages")
    response = httpx2.Response(status, headers=headers, request=request)
    body = {"type": "error", "error": {"type": kind, "message": kind}}
    return cls(kind, response=response, body=body)


class ClientError(Exception):
    """botocore.exceptions.ClientError's shape (``response`` is the parsed error dict)."""

    def __init__(self, error_response: dict[str, Any], operation_name: str) -> None:
        super().__init__(
            f"An error occurred ({error_response['Error']['Code']}) when calling the "
            f"{operation_name} operation: {error_response['Error']['Message']}"
        )
        self.response = error_response
        self.operation_name = operation_name


def _aws(code: str, message: str, status: int, **headers: str) -> ClientError:
    return ClientError(
        {
            "Error": {"Code": code, "Message": message},
            "ResponseMetadata": {"HTTPStatusCode": status, "HTTPHeaders": headers},
        },
        "Converse",
    )


REQUEST = httpx.Request("POST", URL)

CASES: list[tuple[str, BaseException, ErrorKind, int | None, float | None]] = [
    # openai
    (
        "openai rate limit",
        _openai(
            openai.RateLimitError, 429, {"code": "rate_limit_exceeded"}, **{"retry-after": "7"}
        ),
        ErrorKind.RATE_LIMITED,
        429,
        7.0,
    ),
    (
        "openai insufficient_quota",
        _openai(openai.RateLimitError, 429, {"code": "insufficient_quota", "message": "quota"}),
        ErrorKind.QUOTA_EXHAUSTED,
        429,
        None,
    ),
    ("openai 500", _openai(openai.APIStatusError, 500), ErrorKind.SERVER_ERROR, 500, None),
    (
        "openai 401",
        _openai(openai.AuthenticationError, 401, {"code": "invalid_api_key"}),
        ErrorKind.AUTHENTICATION,
        401,
        None,
    ),
    (
        "openai context_length_exceeded",
        _openai(
            openai.BadRequestError,
            400,
            {"code": "context_length_exceeded", "message": "maximum context length is 8192"},
        ),
        ErrorKind.CONTEXT_WINDOW,
        400,
        None,
    ),
    (
        "openai content_filter",
        _openai(openai.BadRequestError, 400, {"code": "content_filter", "message": "filtered"}),
        ErrorKind.CONTENT_POLICY,
        400,
        None,
    ),
    (
        "openai plain 400",
        _openai(openai.BadRequestError, 400, {"code": "invalid_value", "message": "bad temp"}),
        ErrorKind.BAD_REQUEST,
        400,
        None,
    ),
    ("openai timeout", openai.APITimeoutError(request=REQUEST), ErrorKind.TIMEOUT, None, None),
    (
        "openai connection",
        openai.APIConnectionError(request=REQUEST),
        ErrorKind.CONNECTION,
        None,
        None,
    ),
    (
        "openai error event in a stream",
        openai.APIError("Overloaded", REQUEST, body=None),
        ErrorKind.SERVER_ERROR,
        None,
        None,
    ),
    # anthropic
    (
        "anthropic rate limit",
        _anthropic(anthropic.RateLimitError, 429, "rate_limit_error", **{"retry-after": "3"}),
        ErrorKind.RATE_LIMITED,
        429,
        3.0,
    ),
    (
        "anthropic overloaded 529",
        _anthropic(anthropic.OverloadedError, 529, "overloaded_error"),
        ErrorKind.SERVER_ERROR,
        529,
        None,
    ),
    (
        "anthropic 401",
        _anthropic(anthropic.AuthenticationError, 401, "authentication_error"),
        ErrorKind.AUTHENTICATION,
        401,
        None,
    ),
    (
        "anthropic prompt too long",
        _anthropic(anthropic.BadRequestError, 400, "prompt is too long: maximum context 200000"),
        ErrorKind.CONTEXT_WINDOW,
        400,
        None,
    ),
    (
        "anthropic 402",
        _anthropic(anthropic.PaymentRequiredError, 402, "billing_error"),
        ErrorKind.QUOTA_EXHAUSTED,
        402,
        None,
    ),
    # google-genai
    (
        "gemini 429 resource exhausted",
        genai_errors.ClientError(
            429,
            {
                "error": {
                    "code": 429,
                    "message": "Resource exhausted",
                    "status": "RESOURCE_EXHAUSTED",
                }
            },
        ),
        ErrorKind.RATE_LIMITED,
        429,
        None,
    ),
    (
        "gemini quota",
        genai_errors.ClientError(
            429,
            {
                "error": {
                    "code": 429,
                    "message": "You exceeded your current quota",
                    "status": "RESOURCE_EXHAUSTED",
                }
            },
        ),
        ErrorKind.QUOTA_EXHAUSTED,
        429,
        None,
    ),
    (
        "gemini 503",
        genai_errors.ServerError(
            503, {"error": {"code": 503, "message": "overloaded", "status": "UNAVAILABLE"}}
        ),
        ErrorKind.SERVER_ERROR,
        503,
        None,
    ),
    (
        "gemini 403",
        genai_errors.ClientError(
            403, {"error": {"code": 403, "message": "denied", "status": "PERMISSION_DENIED"}}
        ),
        ErrorKind.AUTHENTICATION,
        403,
        None,
    ),
    (
        "gemini 400 token count",
        genai_errors.ClientError(
            400,
            {
                "error": {
                    "code": 400,
                    "message": "input token count exceeds the maximum (too many tokens)",
                    "status": "INVALID_ARGUMENT",
                }
            },
        ),
        ErrorKind.CONTEXT_WINDOW,
        400,
        None,
    ),
    # botocore-shaped (Bedrock)
    (
        "aws throttling",
        _aws("ThrottlingException", "Too many requests", 429, **{"retry-after": "2"}),
        ErrorKind.RATE_LIMITED,
        429,
        2.0,
    ),
    (
        "aws access denied",
        _aws("AccessDeniedException", "no access", 403),
        ErrorKind.AUTHENTICATION,
        403,
        None,
    ),
    (
        "aws validation: input too long",
        _aws("ValidationException", "Input is too long for requested model.", 400),
        ErrorKind.CONTEXT_WINDOW,
        400,
        None,
    ),
    (
        "aws validation",
        _aws("ValidationException", "temperature must be <= 1", 400),
        ErrorKind.BAD_REQUEST,
        400,
        None,
    ),
    (
        "aws model timeout",
        _aws("ModelTimeoutException", "timed out", 408),
        ErrorKind.TIMEOUT,
        408,
        None,
    ),
    (
        "aws service unavailable",
        _aws("ServiceUnavailableException", "try later", 503),
        ErrorKind.SERVER_ERROR,
        503,
        None,
    ),
    # transports and builtins
    (
        "httpx connect",
        httpx.ConnectError("refused", request=REQUEST),
        ErrorKind.CONNECTION,
        None,
        None,
    ),
    (
        "httpx read timeout",
        httpx.ReadTimeout("slow", request=REQUEST),
        ErrorKind.TIMEOUT,
        None,
        None,
    ),
    ("builtin timeout", TimeoutError(), ErrorKind.TIMEOUT, None, None),
    (
        "connection refused",
        ConnectionRefusedError(111, "refused"),
        ErrorKind.CONNECTION,
        None,
        None,
    ),
    # langchain-core's typed errors
    ("lc context overflow", ContextOverflowError("too long"), ErrorKind.CONTEXT_WINDOW, None, None),
    ("lc rate limit", ModelRateLimitError("slow down"), ErrorKind.RATE_LIMITED, None, None),
    ("lc auth", ModelAuthenticationError("who are you"), ErrorKind.AUTHENTICATION, None, None),
    (
        "lc output parser",
        OutputParserException("not JSON"),
        ErrorKind.MALFORMED_RESPONSE,
        None,
        None,
    ),
]


@pytest.mark.parametrize(
    ("exc", "kind", "status", "retry_after"), [c[1:] for c in CASES], ids=[c[0] for c in CASES]
)
def test_each_sdk_error_gets_its_kind(
    exc: BaseException, kind: ErrorKind, status: int | None, retry_after: float | None
) -> None:
    err = classify_foreign_error(exc, provider_id="bedrock")
    assert err.kind is kind, str(err)
    assert err.status_code == status
    assert err.retry_after == retry_after
    assert err.provider_id == "bedrock"
    assert str(err).startswith("bedrock:")
    assert type(exc).__name__ in str(err)  # the original type is named
    assert "unclassified" not in err.details


def test_error_class_matches_kind() -> None:
    assert isinstance(classify_foreign_error(CASES[0][1], provider_id="p"), RateLimitError)
    assert isinstance(classify_foreign_error(CASES[1][1], provider_id="p"), QuotaExhaustedError)
    assert isinstance(classify_foreign_error(CASES[3][1], provider_id="p"), AuthenticationError)


def test_a_wrapper_is_read_through_to_its_cause() -> None:
    try:
        try:
            raise _openai(openai.RateLimitError, 429, None, **{"retry-after": "4"})
        except openai.RateLimitError as inner:
            raise RuntimeError("chain step failed") from inner
    except RuntimeError as outer:
        err = classify_foreign_error(outer, provider_id="p")
    assert err.kind is ErrorKind.RATE_LIMITED and err.retry_after == 4.0
    assert "RuntimeError" in str(err)


def test_unknown_exception_is_an_unclassified_server_error() -> None:
    err = classify_foreign_error(KeyError("tool_name"), provider_id="p")
    assert UNCLASSIFIED is ErrorKind.SERVER_ERROR
    assert isinstance(err, ServerError)
    assert err.details["unclassified"] is True
    assert "unclassified" in str(err) and "KeyError" in str(err)
    assert err.status_code is None


def test_mesh_errors_keep_their_kind() -> None:
    inner = AuthenticationError("nested mesh refused", status_code=401)
    err = classify_foreign_error(inner, provider_id="outer")
    assert err.kind is ErrorKind.AUTHENTICATION and err.status_code == 401


def test_secrets_never_show() -> None:
    exc = ValueError(
        "Incorrect API key provided: sk-live-abcdefghijklmnop at https://user:hunter2@host/v1 "
        "with Bearer eyJhbGciOiJIUzI1NiJ9.abc and ?key=AIzaSyA-secretsecretsecret1 "
        "myvery-own-secret"
    )
    err = classify_foreign_error(exc, provider_id="p", secrets=["myvery-own-secret"])
    for secret in (
        "sk-live-abcdefghijklmnop",
        "hunter2",
        "eyJhbGciOiJIUzI1NiJ9",
        "AIzaSyA",
        "myvery-own-secret",
    ):
        assert secret not in str(err), secret
    assert scrub("nothing secret here") == "nothing secret here"


class _Hostile(Exception):
    def __str__(self) -> str:
        raise RuntimeError("no str for you")

    @property
    def response(self) -> Any:
        raise RuntimeError("no response either")


def test_never_raises_on_a_hostile_exception() -> None:
    hostile = _Hostile()
    hostile.__cause__ = hostile  # a cycle, too
    err = classify_foreign_error(hostile, provider_id="p")
    assert isinstance(err, ProviderError) and "_Hostile" in str(err)


def test_classified_errors_pickle() -> None:
    err = classify_foreign_error(CASES[0][1], provider_id="p")
    back = pickle.loads(pickle.dumps(err))
    assert back.kind is ErrorKind.RATE_LIMITED and back.retry_after == 7.0 and str(back) == str(err)


def test_the_classifier_imports_no_sdk() -> None:
    code = (
        "import sys, mesh_core.providers._foreign_errors, mesh_core.providers._foreign\n"
        "bad = [m for m in ('openai', 'anthropic', 'langchain_core', 'llama_index', 'google.genai',"
        " 'botocore') if m in sys.modules]\n"
        "assert not bad, bad\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True)
