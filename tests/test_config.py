import textwrap

import pytest

from mesh_core.config import load_config, parse_duration
from mesh_core.errors import ConfigurationError

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
    assert pool.recovery.cooldown == 300.0 and pool.rate_limit.min_delta == 1.0
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


def test_broken_file_reports_every_problem_with_its_path():
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
    # schema errors come first; cross-reference errors need a schema-valid file
    fixed = dict(bad)
    fixed.pop("storag")
    fixed["providers"] = {"a": {"base_url": "http://x"}}
    fixed["pools"] = {
        "p": {
            "capability": "chat-completion",
            "strategy": "roundrobin",
            "model_priority": ["a.x"],
            "deactivation": {"maintenance_window": "every sunday"},
        },
        "q": {},
    }
    errs, text = errors_of(fixed)
    assert errs["models.a.m.provider"] == "unknown provider 'nope'"
    assert "did you mean 'chat-completion'" in errs["models.a.m.capabilities[0]"]
    assert "unknown strategy 'roundrobin'" in errs["pools.p.strategy"]
    assert "unknown model 'a.x'" in errs["pools.p.model_priority[0]"]
    assert "invalid cron" in errs["pools.p.deactivation.maintenance_window"]
    assert "set 'capability'" in errs["pools.q"]
    assert text.startswith("invalid ModelMesh configuration")


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
