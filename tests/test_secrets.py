"""Secrets never show: adapters' reprs and serializations, config reprs, config errors.

The rule (``mesh_core._redact``): every header value, every URL's userinfo and every
value under a key named like a secret is hidden, in every message and every repr.
"""

from __future__ import annotations

import io
import json

import pytest

from mesh_core._cli import main
from mesh_core._config import load_config
from mesh_core._errors import ConfigurationError
from tests.conftest import config_for
from tests.helpers import FREE_FORM

API = "sk-live-APIKEY-0123456789"
PROXY_PW = "proxyPW0123"
HEADER = "hdrVALUE0123"
URL_PW = "urlPW0123"
REDIS_PW = "redisPW0123"
NESTED = "nestedTOKEN0123"
KWARG = "kwargSECRET0123"
SECRETS = (API, PROXY_PW, HEADER, URL_PW, REDIS_PW, NESTED, KWARG)


def leaks(text: str) -> list[str]:
    return [s for s in SECRETS if s in text]


def secret_config(servers) -> dict:
    """Every kind of secret a configuration can hold, literally (no ${VAR})."""
    cfg = config_for(servers)
    p1 = cfg["providers"]["p1"]
    p1["api_key"] = API
    p1["proxy"] = f"http://user:{PROXY_PW}@127.0.0.1:9"
    p1["headers"] = {"X-Custom": HEADER, "Authorization": f"Bearer {HEADER}"}
    cfg["pools"]["chat"]["strategy"] = FREE_FORM  # a custom strategy that takes any option
    cfg["pools"]["chat"]["strategy_options"] = {"upstream": {"token": NESTED, "note": "kept"}}
    cfg["storage"] = {"backend": "memory", "url": f"redis://:{REDIS_PW}@127.0.0.1:6390/0"}
    with_userinfo = json.loads(json.dumps(cfg))
    base = with_userinfo["providers"]["p2"]["base_url"]
    with_userinfo["providers"]["p2"]["base_url"] = base.replace("://", f"://bob:{URL_PW}@", 1)
    try:
        load_config(with_userinfo)
    except ConfigurationError as exc:  # credentials in base_url may be refused outright
        assert not leaks(str(exc)), str(exc)
        return cfg
    return with_userinfo


def test_config_repr_and_str_hide_every_secret(servers):
    cfg = load_config(secret_config(servers))
    for text in (repr(cfg), str(cfg), repr(cfg.providers), repr(cfg.pools), repr(cfg.storage)):
        assert not leaks(text), text
    assert "127.0.0.1" in repr(cfg.providers["p2"]) and "'note': 'kept'" in repr(cfg.pools)
    assert "X-Custom" in repr(cfg.providers["p1"])  # the header's name still shows
    assert cfg.providers["p1"].headers["X-Custom"] == HEADER  # the value is intact


def test_langchain_adapter_shows_no_secret(servers):
    from langchain_core.load import dumpd, dumps

    from modelmesh_langchain import MeshChatModel

    llm = MeshChatModel(
        pool="chat",
        config=secret_config(servers),
        model_kwargs={"user": "u1", "extra_headers": {"X-Org": KWARG}, "api_key": KWARG},
    )
    shown = {
        "repr": repr(llm),
        "str": str(llm),
        "repr_args": repr(list(llm.__repr_args__())),
        "model_dump": repr(llm.model_dump()),
        "asdict": repr(llm.asdict() if hasattr(llm, "asdict") else llm.dict()),
        "identifying": repr(llm._identifying_params),
        "invocation": repr(llm._get_invocation_params()),
        "ls_params": repr(llm._get_ls_params()),
        "dumpd": repr(dumpd(llm)),
        "dumps": dumps(llm),
        "config": repr(llm.mesh.config),
    }
    shown["model_dump"] = shown["model_dump"].replace(KWARG, "")  # the data API keeps it
    for where, text in shown.items():
        assert not leaks(text), f"{where}: {text}"
    assert "pool='chat'" in shown["repr"] and "'user': 'u1'" in shown["repr"]
    assert llm._default_params["api_key"] == KWARG  # still sent to the provider


def test_llamaindex_adapter_shows_no_secret(servers):
    from modelmesh_llamaindex import MeshLLM

    llm = MeshLLM(
        pool="chat",
        config=secret_config(servers),
        additional_kwargs={"user": "u1", "extra_headers": {"X-Org": KWARG}},
    )
    shown = {
        "repr": repr(llm),
        "str": str(llm),
        "repr_args": repr(list(llm.__repr_args__())),
        "model_dump": repr(llm.model_dump()).replace(KWARG, ""),
        "to_dict": repr(llm.to_dict()),
        "to_json": llm.to_json(),
        "metadata": repr(llm.metadata),
        "config": repr(llm.mesh.config),
    }
    for where, text in shown.items():
        assert not leaks(text), f"{where}: {text}"
    assert "pool='chat'" in shown["repr"] and "'user': 'u1'" in shown["repr"]
    assert llm._params({})["extra_headers"] == {"X-Org": KWARG}


@pytest.mark.parametrize(
    "bad",
    [
        {"storage": f"redis://:{REDIS_PW}@cache:6379/0"},
        {"storage": {"url": [f"redis://:{REDIS_PW}@cache:6379/0"]}},
        {"storage": {"url": 5, "backend": f"redis://:{REDIS_PW}@cache"}},
        {"providers": {"openai": API}},
        {"providers": {"openai": [API]}},
        {"providers": {"p": {"api_key": [API]}}},
        {"providers": {"p": {"api_key": {"value": API}}}},
        {"providers": {"p": {"headers": {"X-Custom": [HEADER]}}}},
        {"providers": {"p": {"headers": {"X-Custom": {"v": HEADER}}}}},
        {"providers": {"p": {"headers": f"Authorization: Bearer {HEADER}"}}},
        {"providers": {"p": {"headers": [HEADER]}}},
        {"providers": {"p": {"base_url": [f"https://bob:{URL_PW}@api.example.invalid/v1"]}}},
        {"providers": {"p": {"base_url": f"ftp://bob:{URL_PW}@api.example.invalid/v1"}}},
        {"providers": {"p": {"base_url": f"bob:{URL_PW}@api.example.invalid"}}},
        {"providers": {"p": {"proxy": f"ftp://bob:{PROXY_PW}@proxy:3128"}}},
        {"providers": {"p": {"proxy": [f"http://bob:{PROXY_PW}@proxy:3128"]}}},
        {"providers": {"p": {"timeouts": {"total": f"https://bob:{URL_PW}@x"}}}},
        {"providers": {"p": {"max_connections": f"https://bob:{URL_PW}@x"}}},
        {"providers": {"p": {"apikey": API, "tokens": {"password": NESTED}}}},
        {"models": {"m.x": {"provider": "p", "pricing": API}}},
        {"pools": {"p": {"capability": "chat-completion", "retry": {"token": NESTED}}}},
    ],
)
def test_configuration_errors_echo_no_secret(bad):
    with pytest.raises(ConfigurationError) as ei:
        load_config(bad)
    exc = ei.value
    for text in (str(exc), repr(exc), repr(exc.errors), json.dumps(exc.details)):
        assert not leaks(text), text


def test_errors_still_show_harmless_values():
    with pytest.raises(ConfigurationError) as ei:
        load_config(
            {
                "storage": {"backend": "nope"},
                "pools": {"p": {"capability": "chat-completion", "retry": {"max_attempts": 0}}},
                "providers": {"openai": "sk-whatever"},
            }
        )
    errors = dict(ei.value.errors)
    assert "(got 'nope')" in errors["storage.backend"]
    assert "(got 0)" in errors["pools.p.retry.max_attempts"]
    assert "valid dictionary" in errors["providers.openai"]
    assert "(got a string" in errors["providers.openai"]


def test_a_yaml_file_and_the_cli_echo_no_secret(tmp_path):
    path = tmp_path / "mesh.yaml"
    path.write_text(
        f"providers:\n  openai: {API}\n"
        f"storage: redis://:{REDIS_PW}@cache:6379/0\n"
        f"pools:\n  p:\n    capability: chat-completion\n    bogus: {{password: {NESTED}}}\n"
    )
    with pytest.raises(ConfigurationError) as ei:
        load_config(path)
    assert not leaks(str(ei.value)), str(ei.value)
    out = io.StringIO()
    assert main(["validate", str(path)], out=out) == 1
    assert "providers.openai" in out.getvalue() and not leaks(out.getvalue()), out.getvalue()


def test_configuration_error_hides_url_userinfo_from_any_producer():
    exc = ConfigurationError([("storage.url", f"cannot reach redis://:{REDIS_PW}@cache:6379/0")])
    assert not leaks(str(exc)) and not leaks(repr(exc.errors)) and not leaks(repr(exc.details))
    assert "redis://***@cache:6379/0" in str(exc)
