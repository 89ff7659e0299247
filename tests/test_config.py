import textwrap

import pytest

from mesh_core._config import load_config, parse_duration
from mesh_core._errors import ConfigurationError
from mesh_core._strategy_config import strategy_options

GOOD = """
providers:
  openai:
    base_url: https://api.example.invalid/v1
    api_key: ${TEST_KEY}
    timeouts: {connect: 2s, first_token: 500ms}
models:
  openai.gpt-4o-mini:
    provider: openai
    capabilities: [chat-completion, tool-calling]
    pricing: {input_per_1k: 0.00015, output_per_1k: 0.0006}
    context_window: 128000
pools:
  reasoning:
    hierarchy_node: generation.text-generation
    strategy: modelmesh.cost-first.v1
    rate_limit: {threshold: 0.9, min_delta: 1s, max_rpm: 60}
    deactivation:
      retry_limit: 2
      error_codes: [429, 500, 502, 503]
      budget_limit: 5
      quota_window: daily
      maintenance_window: "0 2 * * 0"
    recovery: {cooldown: 5m}
"""


def write(tmp_path, text):
    p = tmp_path / "mesh.yaml"
    p.write_text(textwrap.dedent(text))
    return p


def errors_of(source, **kw):
    with pytest.raises(ConfigurationError) as ei:
        load_config(source, **kw)
    return dict(ei.value.errors), str(ei.value)


def test_good_file_loads_with_env_and_durations(tmp_path):
    cfg = load_config(write(tmp_path, GOOD), env={"TEST_KEY": "sk-secret-123"})
    prov = cfg.providers["openai"]
    assert prov.api_key.get_secret_value() == "sk-secret-123"
    assert "sk-secret-123" not in repr(cfg) and "sk-secret-123" not in str(prov)
    assert prov.timeouts.first_token == 0.5
    pool = cfg.pools["reasoning"]
    assert pool.capability == "generation.text-generation"
    assert pool.recovery.cooldown == 300.0
    # rate_limit is an option of rate-limit-aware: a cost-first pool ignores it
    assert pool.rate_limit["min_delta"] == "1s" and not hasattr(
        strategy_options("reasoning", pool), "rate_limit"
    )
    aware = pool.model_copy(update={"strategy": "rate-limit-aware"})
    limits = strategy_options("reasoning", aware).rate_limit
    assert (limits.threshold, limits.min_delta, limits.max_rpm) == (0.9, 1.0, 60)
    assert pool.deactivation.error_codes == [429, 500, 502, 503]


def test_missing_env_var_names_the_key(tmp_path):
    errs, _ = errors_of(write(tmp_path, GOOD), env={})
    assert errs["providers.openai.api_key"] == "environment variable TEST_KEY is not set"


def test_env_default_syntax():
    cfg = load_config({"providers": {"p": {"api_key": "${NOPE:-fallback}"}}}, env={})
    assert cfg.providers["p"].api_key.get_secret_value() == "fallback"


@pytest.mark.parametrize(
    "value, seconds",
    [("30s", 30), ("5m", 300), ("1h", 3600), ("250ms", 0.25), ("1d", 86400), (12, 12)],
)
def test_durations(value, seconds):
    assert parse_duration(value) == seconds


def test_broken_file_reports_every_problem_with_its_path_in_one_pass():
    bad = {
        "providers": {"a": {"base_url": "http://x", "timeouts": {"connect": "soon"}}},
        "models": {"a.m": {"provider": "nope", "capabilities": ["chat-completon"]}},
        "pools": {
            "p": {
                "capability": "chat-completion",
                "stratgy": "round-robin",
                "strategy": "roundrobin",
                "model_priority": ["a.x"],
                "deactivation": {"retry_limit": "three", "maintenance_window": "every sunday"},
            },
            "q": {},
        },
        "storag": {},
    }
    errs, text = errors_of(bad)
    assert "expected a duration" in errs["providers.a.timeouts.connect"]
    assert "unknown key; did you mean 'strategy'?" in errs["pools.p.stratgy"]
    assert "did you mean 'storage'?" in errs["storag"]
    assert (
        "valid integer" in errs["pools.p.deactivation.retry_limit"]
        and "'three'" in errs["pools.p.deactivation.retry_limit"]
    )
    # the schema errors above do not hide the cross-reference errors: one run says it all
    assert errs["models.a.m.provider"] == "unknown provider 'nope'"
    assert "did you mean 'chat-completion'" in errs["models.a.m.capabilities[0]"]
    assert "unknown strategy 'roundrobin'" in errs["pools.p.strategy"]
    assert "unknown model 'a.x'" in errs["pools.p.model_priority[0]"]
    assert "set 'capability'" in errs["pools.q"]
    assert text.startswith("invalid ModelMesh configuration")
    # a setting left out for being invalid is not judged again (the cron is in the
    # deactivation section that had a bad retry_limit): no guess, no duplicate
    assert "pools.p.deactivation.maintenance_window" not in errs


def test_an_invalid_entry_is_not_reported_again_as_unknown():
    errs, _ = errors_of(
        {
            "providers": {"a": {"max_connections": 0}},
            "models": {"a.m": {"provider": "a", "context_window": -1}, "a.n": {"provider": 3}},
            "pools": {"p": {"models": ["a.m", "a.n", "a.zz"], "strategy": "round-robbin"}},
        }
    )
    assert set(errs) == {
        "providers.a.max_connections",
        "models.a.m.context_window",
        "models.a.n.provider",
        "pools.p.models[2]",
        "pools.p.strategy",
    }
    assert errs["pools.p.models[2]"].startswith("unknown model 'a.zz'")


def test_cross_references_need_no_schema_valid_file():
    fixed = {
        "providers": {"a": {"base_url": "http://x"}},
        "models": {"a.m": {"provider": "nope", "capabilities": ["chat-completon"]}},
        "pools": {
            "p": {
                "capability": "chat-completion",
                "strategy": "roundrobin",
                "model_priority": ["a.x"],
                "deactivation": {"maintenance_window": "every sunday"},
            },
            "q": {},
        },
    }
    errs, _ = errors_of(fixed)
    assert "invalid cron" in errs["pools.p.deactivation.maintenance_window"]
    assert "set 'capability'" in errs["pools.q"]


def test_did_you_mean_is_phrased_one_way():
    errs, _ = errors_of(
        {
            "providers": {"openai": {}},
            "models": {"openai.m": {"provider": "opena", "capabilities": ["chat-completon"]}},
            "pools": {
                "p": {"models": ["openai.n"], "provider_priority": ["opneai"], "stratgy": "x"}
            },
        }
    )
    for path, expected in {
        "models.openai.m.provider": "unknown provider 'opena'; did you mean 'openai'?",
        "models.openai.m.capabilities[0]": (
            "unknown capability 'chat-completon'; did you mean 'chat-completion'?"
        ),
        "pools.p.models[0]": "unknown model 'openai.n'; did you mean 'openai.m'?",
        "pools.p.provider_priority[0]": "unknown provider 'opneai'; did you mean 'openai'?",
    }.items():
        assert errs[path] == expected
    assert errs["pools.p.stratgy"].startswith("unknown key; did you mean 'strategy'?")
    errs, _ = errors_of(
        {
            "capabilities": ["generation.text-generation.search"],
            "providers": {"a": {}},
            "models": {"a.m": {"provider": "a", "capabilities": ["search"]}},
        }
    )
    assert errs["models.a.m.capabilities[0]"] == (
        "ambiguous capability 'search': write one of "
        "'generation.text-generation.search', 'retrieval.search'"
    )


def test_a_duration_error_says_what_it_got_once():
    errs, _ = errors_of(
        {"pools": {"p": {"models": [], "recovery": {"cooldown": "5x", "max_cooldown": [1, 2]}}}}
    )
    assert errs["pools.p.recovery.cooldown"] == (
        "expected a duration such as 30s, 5m or 1h (got '5x')"
    )
    assert errs["pools.p.recovery.max_cooldown"] == (
        "expected a duration such as 30s, 5m or 1h (got a list)"
    )


@pytest.mark.parametrize("url", ["ftp://host/v1", "api.openai.com/v1", "http://", "file:///x"])
def test_a_base_url_must_be_an_http_url(url):
    errs, _ = errors_of({"providers": {"p": {"base_url": url}}})
    assert "must be an HTTP or HTTPS URL" in errs["providers.p.base_url"]


@pytest.mark.parametrize(
    "value", ["${OPENAI_API_KEY", "sk-${KEY", "${KEY:-x", "${1BAD}", "${}", "${A}${B"]
)
def test_an_unclosed_or_malformed_env_reference_is_an_error_not_the_key(value):
    errs, text = errors_of(
        {"providers": {"p": {"api_key": value}}}, env={"A": "a", "OPENAI_API_KEY": "sk-real"}
    )
    assert "unclosed or malformed ${...} reference" in errs["providers.p.api_key"]
    assert value not in text  # the value itself (maybe a key) is never echoed


def test_missing_provider_secrets_can_be_tolerated_by_tools_that_call_no_provider():
    data = {
        "providers": {
            "p": {
                "base_url": "${P_URL}",
                "api_key": "${P_KEY}",
                "headers": {"X-Team": "${TEAM}"},
            }
        },
        "models": {"p.m": {"provider": "p"}},
        "pools": {"chat": {"capability": "chat-completion"}},
        "storage": {"backend": "json", "path": "${STATE_FILE}"},
    }
    errs, _ = errors_of(data, env={"STATE_FILE": "s.json"})
    assert set(errs) == {
        "providers.p.base_url",
        "providers.p.api_key",
        "providers.p.headers.X-Team",
    }
    cfg = load_config(data, env={"STATE_FILE": "s.json"}, require_provider_env=False)
    assert cfg.providers["p"].api_key is None
    assert cfg.storage.path == "s.json"
    # only provider settings: the state's whereabouts are still required
    errs, _ = errors_of(data, env={}, require_provider_env=False)
    assert set(errs) == {"storage.path"}


def test_warnings_for_what_is_valid_but_surely_not_meant():
    from mesh_core._config import config_warnings

    assert config_warnings(load_config({})) == [
        ("", "the configuration is empty: no providers, models or pools")
    ]
    cfg = load_config({"providers": {"a": {}}, "models": {"a.m": {"provider": "a"}}})
    assert config_warnings(cfg) == [
        ("pools", "no pools: requests name a pool, so no model can be used")
    ]
    cfg = load_config(
        {
            "providers": {"a": {}, "off": {"enabled": False}},
            "models": {
                "a.m": {"provider": "a"},
                "a.img": {"provider": "a", "capabilities": ["text-to-image"]},
                "off.m": {"provider": "off", "capabilities": ["text-to-speech"]},
            },
            "pools": {
                "chat": {"capability": "chat-completion"},
                "video": {"capability": "text-to-video"},
                "speech": {"capability": "text-to-speech"},
            },
        }
    )
    warnings = dict(config_warnings(cfg))
    assert (
        "no model has capability 'generation.video-generation.text-to-video'"
        in (warnings["pools.video"])
    )
    assert "disabled or excluded (off.m)" in warnings["pools.speech"]
    assert warnings["models.a.img"] == "in no pool: no request can reach it"
    assert "pools.chat" not in warnings


def test_unknown_strategy_is_an_error_not_a_silent_fallback():
    errs, _ = errors_of({"pools": {"p": {"capability": "chat-completion", "strategy": "fastest"}}})
    assert "unknown strategy 'fastest'" in errs["pools.p.strategy"]


def test_yaml_syntax_error_has_line(tmp_path):
    _, text = errors_of(write(tmp_path, "pools:\n  p: [unclosed\n"))
    assert "line" in text and "invalid YAML" in text


def test_not_a_mapping_and_missing_file(tmp_path):
    errs, _ = errors_of(write(tmp_path, "- a\n- b\n"))
    assert "expected a mapping" in errs[""]
    errs, _ = errors_of(tmp_path / "absent.yaml")
    assert "file not found" in errs[""]


def test_secret_values_never_echoed_in_errors():
    _, text = errors_of({"providers": {"p": {"api_key": ["sk-leak-me"]}}})
    assert "sk-leak-me" not in text


def test_user_defined_capabilities():
    cfg = load_config(
        {
            "capabilities": ["generation.text-generation.poetry"],
            "providers": {"a": {}},
            "models": {"a.bard": {"provider": "a", "capabilities": ["poetry"]}},
            "pools": {"poems": {"capability": "poetry"}},
        }
    )
    assert cfg.models["a.bard"].capabilities == ["poetry"]
