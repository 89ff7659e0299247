"""Per-strategy options: each strategy declares its own, checked when the configuration loads.

An out-of-tree strategy with a parameter is one class (here, in this test module) plus
``register_strategy``: a YAML file names it and sets its option, and a bad value or an
unknown option is refused at load with the pool, the strategy and the option named.
"""

from __future__ import annotations

import textwrap
from collections.abc import Sequence
from pathlib import Path

import pytest
from pydantic import Field

from mesh_core import Mesh
from mesh_core._config import config_warnings, load_config
from mesh_core._errors import ConfigurationError
from mesh_core._state import ModelSnapshot
from mesh_core._strategy_config import strategy_options
from mesh_core._types import CompletionRequest
from mesh_core.strategies import (
    BalanceMode,
    CostFirstStrategy,
    LoadBalancedStrategy,
    PrioritySelectionStrategy,
    RateLimitAwareStrategy,
    SelectionResult,
    SelectionStrategy,
    SessionStickinessStrategy,
    StrategyOptions,
    create_strategy,
    register_strategy,
)
from tests.helpers import req, snap


class NthOptions(StrategyOptions):
    """The options of the test's own strategy."""

    n: int = Field(1, ge=1)
    """Which candidate to take (1-based, wrapping around)."""


class NthStrategy(SelectionStrategy):
    """Take the n-th candidate: a strategy with one parameter, defined outside the repo."""

    strategy_id = "acme.nth.v1"
    Options = NthOptions
    options: NthOptions

    def select(
        self, candidates: Sequence[ModelSnapshot], request: CompletionRequest
    ) -> SelectionResult:
        self._require(candidates)
        chosen = candidates[(self.options.n - 1) % len(candidates)]
        return self._result(chosen, 1.0, f"candidate #{self.options.n}")


register_strategy(NthStrategy.strategy_id, NthStrategy)

YAML = """
providers:
  p: {base_url: "http://127.0.0.1:9/v1"}
models:
  p.a: {provider: p}
  p.b: {provider: p}
  p.c: {provider: p}
pools:
  chat:
    models: [p.a, p.b, p.c]
    strategy: acme.nth.v1
    strategy_options: {OPTIONS}
"""


def write(tmp_path: Path, options: str) -> Path:
    path = tmp_path / "mesh.yaml"
    path.write_text(textwrap.dedent(YAML).replace("{OPTIONS}", options))
    return path


def errors(source: object) -> dict[str, str]:
    with pytest.raises(ConfigurationError) as ei:
        load_config(source)  # type: ignore[arg-type]
    return dict(ei.value.errors)


def test_an_out_of_tree_strategy_takes_its_option_from_yaml(tmp_path):
    with Mesh.from_config(write(tmp_path, "{n: 2}")) as mesh:
        strategy = mesh.pools["chat"].strategy
        assert isinstance(strategy, NthStrategy) and strategy.options.n == 2
        assert strategy.select([snap("p.a"), snap("p.b"), snap("p.c")], req()).model_id == "p.b"


def test_its_default_applies_when_the_option_is_not_set(tmp_path):
    with Mesh.from_config(write(tmp_path, "{}")) as mesh:
        assert mesh.pools["chat"].strategy.options == NthOptions(n=1)


def test_a_bad_value_names_the_pool_the_strategy_and_the_option(tmp_path):
    path = write(tmp_path, "{n: 0}")
    errs = errors(path)
    assert list(errs) == ["pools.chat.strategy_options.n"]
    assert errs["pools.chat.strategy_options.n"] == (
        "invalid option 'n' of strategy 'acme.nth.v1': "
        "Input should be greater than or equal to 1 (got 0)"
    )
    with pytest.raises(ConfigurationError, match=r"pools\.chat\.strategy_options\.n:"):
        Mesh.from_config(path)
    assert "acme.nth.v1" in errors(write(tmp_path, "{n: two}"))["pools.chat.strategy_options.n"]


def test_an_unknown_option_is_refused_with_a_suggestion(tmp_path):
    errs = errors(write(tmp_path, "{nn: 2}"))
    assert errs == {
        "pools.chat.strategy_options.nn": (
            "unknown option 'nn' of strategy 'acme.nth.v1'; did you mean 'n'? (its options: n)"
        )
    }


def test_a_strategy_without_options_refuses_any():
    cfg = {"pools": {"p": {"capability": "chat-completion", "strategy_options": {"x": 1}}}}
    assert errors(cfg)["pools.p.strategy_options.x"] == (
        "unknown option 'x' of strategy 'modelmesh.stick-until-failure.v1' (it takes no options)"
    )


def test_options_must_be_a_strategy_options_model():
    class Loose(SelectionStrategy):
        Options = dict  # type: ignore[assignment]  # the mistake under test

    with pytest.raises(TypeError, match="Options must subclass"):
        register_strategy("acme.loose.v1", Loose)


def test_a_strategy_is_given_options_of_its_own_kind_only():
    with pytest.raises(TypeError, match="NthStrategy takes NthOptions"):
        NthStrategy(StrategyOptions())
    assert create_strategy("acme.nth.v1", {"n": 3}).options == NthOptions(n=3)


# --- the shipped strategies' options, written as the pool keys the contract names ---------

POOL = {"capability": "chat-completion"}


@pytest.mark.parametrize(
    ("strategy", "key", "value", "expected"),
    [
        ("load-balanced", "balance_mode", "absolute", BalanceMode.ABSOLUTE),
        ("session-stickiness", "affinity_mode", "strict", "strict"),
        ("session-stickiness", "session_timeout", "10m", 600.0),
        ("cost-first", "output_ratio", 0.5, 0.5),
        ("priority-selection", "fallback_strategy", "error", "error"),
    ],
)
def test_pool_keys_reach_the_strategy_that_has_them(strategy, key, value, expected):
    cfg = load_config({"pools": {"p": {**POOL, "strategy": strategy, key: value}}})
    assert getattr(strategy_options("p", cfg.pools["p"]), key) == expected


@pytest.mark.parametrize(
    ("cls", "key", "value"),
    [
        (LoadBalancedStrategy, "balance_mode", "absolut"),
        (SessionStickinessStrategy, "affinity_mode", "loose"),
        (SessionStickinessStrategy, "session_timeout", "5x"),
        (CostFirstStrategy, "output_ratio", 2),
        (PrioritySelectionStrategy, "fallback_strategy", "fastest"),
        (PrioritySelectionStrategy, "fallback_strategy", "priority-selection"),
    ],
)
def test_a_bad_pool_key_is_refused_where_it_was_written(cls, key, value):
    errs = errors({"pools": {"p": {**POOL, "strategy": cls.strategy_id, key: value}}})
    assert list(errs) == [f"pools.p.{key}"]
    assert errs[f"pools.p.{key}"].startswith(
        f"invalid option {key!r} of strategy {cls.strategy_id!r}: "
    )


def test_a_nested_option_is_named_by_its_path():
    pool = {**POOL, "strategy": "rate-limit-aware", "rate_limit": {"threshold": 1.5}}
    errs = errors({"pools": {"p": pool}})
    assert list(errs) == ["pools.p.rate_limit.threshold"]
    assert "'rate_limit.threshold' of strategy 'modelmesh.rate-limit-aware.v1'" in str(errs)
    pool = {**POOL, "strategy": "rate-limit-aware", "rate_limit": {"max_rmp": 5}}
    assert "unknown option" in errors({"pools": {"p": pool}})["pools.p.rate_limit.max_rmp"]


def test_an_option_set_as_a_pool_key_and_under_strategy_options_is_refused():
    pool = {**POOL, "strategy": "cost-first", "output_ratio": 0.5}
    errs = errors({"pools": {"p": {**pool, "strategy_options": {"output_ratio": 0.4}}}})
    assert "set option 'output_ratio' of strategy" in errs["pools.p.strategy_options.output_ratio"]


def test_a_pool_key_the_strategy_has_no_option_for_loads_with_a_warning():
    """Existing configurations set these keys on any pool: they still load, and
    ``modelmesh validate`` says the key does nothing there."""
    cfg = load_config({"pools": {"p": {**POOL, "strategy": "round-robin", "balance_mode": "x"}}})
    assert (
        "pools.p.balance_mode",
        "ignored: strategy 'modelmesh.round-robin.v1' has no option 'balance_mode'",
    ) in config_warnings(cfg)


def test_the_fallback_strategy_gets_its_own_options_from_the_same_pool():
    pool = {
        **POOL,
        "strategy": "priority-selection",
        "fallback_strategy": "rate-limit-aware",
        "rate_limit": {"max_rpm": 7},
    }
    cfg = load_config({"pools": {"p": pool}})
    assert not [w for w in config_warnings(cfg) if "ignored" in w[1]]  # the fallback's key
    with Mesh(cfg) as mesh:
        fallback = mesh.pools["p"].strategy._fallback  # type: ignore[attr-defined]
        assert isinstance(fallback, RateLimitAwareStrategy)
        assert fallback.options.rate_limit.max_rpm == 7
    bad = {**pool, "rate_limit": {"max_rpm": -1}}
    assert "pools.p.rate_limit.max_rpm" in errors({"pools": {"p": bad}})


def test_a_configuration_built_without_load_config_is_checked_when_the_mesh_is_built():
    """``MeshConfig.model_validate`` skips the cross-section checks; the mesh does not."""
    from mesh_core import MeshConfig

    pool = {**POOL, "strategy": "acme.nth.v1", "strategy_options": {"n": 0}}
    config = MeshConfig.model_validate({"pools": {"p": pool}})
    with pytest.raises(ConfigurationError, match=r"pools\.p\.strategy_options\.n: invalid option"):
        Mesh(config)
