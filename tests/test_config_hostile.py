"""A configuration is not an attack surface: hostile files and dicts fail fast and cleanly.

Alias bombs, recursive aliases, deep nesting, FIFOs, devices, huge files: each one is a
``ConfigurationError`` that says what is wrong and where, within seconds, through every
entry point (``load_config``, ``Mesh.from_config``, both adapters, ``modelmesh validate``).
"""

from __future__ import annotations

import contextlib
import io
import itertools
import os
import signal
import sys
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from mesh_core import Mesh
from mesh_core._cli import main
from mesh_core._config import MAX_CONFIG_BYTES, MAX_DEPTH, MAX_VALUES, load_config
from mesh_core._errors import ConfigurationError
from mesh_core._shared import forget_shared_meshes
from modelmesh_langchain import MeshChatModel  # imported here: not timed with each case
from modelmesh_llamaindex import MeshLLM
from tests.helpers import FREE_FORM

pytestmark = pytest.mark.skipif(not hasattr(signal, "SIGALRM"), reason="needs SIGALRM")

FAST = 5.0
"""Generous: every case takes milliseconds; the bound holds even on a loaded machine."""


@contextlib.contextmanager
def deadline(seconds: float = FAST, hard: float = 60.0) -> Iterator[None]:
    """Fail when the block takes over ``seconds``; interrupt it after ``hard`` seconds,
    so that a regression fails the test instead of hanging the suite."""

    def on_alarm(signum: int, frame: Any) -> None:
        raise TimeoutError(f"still running after {hard:.0f} s")

    previous = signal.signal(signal.SIGALRM, on_alarm)
    signal.setitimer(signal.ITIMER_REAL, hard)
    start = time.perf_counter()
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)
    elapsed = time.perf_counter() - start
    assert elapsed < seconds, f"took {elapsed:.1f} s"


def _chat_model(source: Any) -> Any:
    return MeshChatModel(pool="chat", config=source)


def _llamaindex(source: Any) -> Any:
    return MeshLLM(pool="chat", config=source)


ENTRY_POINTS: dict[str, Callable[[Any], Any]] = {
    "load_config": load_config,
    "Mesh.from_config": Mesh.from_config,
    "MeshChatModel": _chat_model,
    "MeshLLM": _llamaindex,
}


@pytest.fixture(autouse=True)
def _no_shared_meshes() -> Iterator[None]:
    yield
    forget_shared_meshes()


def fails(source: Any, match: str, entry: str = "load_config") -> ConfigurationError:
    with deadline(), pytest.raises(ConfigurationError, match=match) as ei:
        ENTRY_POINTS[entry](source)
    return ei.value


def validate(path: os.PathLike[str] | str) -> tuple[int, str]:
    out = io.StringIO()
    with deadline():
        code = main(["validate", str(path)], out=out)
    return code, out.getvalue()


def alias_bomb(levels: int, width: int = 9, indent: str = "") -> str:
    """The "billion laughs": ``width ** levels`` strings from a few hundred bytes."""
    names = "abcdefghijklmnopqrstuvwxyz"[:levels]
    lines = [f"{indent}a: &a [" + ",".join(["lol"] * width) + "]"]
    for prev, name in itertools.pairwise(names):
        lines.append(f"{indent}{name}: &{name} [" + ",".join([f"*{prev}"] * width) + "]")
    return "\n".join(lines) + "\n"


# --- alias bombs ----------------------------------------------------------------


@pytest.mark.parametrize("levels", [9, 10])
@pytest.mark.parametrize("entry", list(ENTRY_POINTS))
def test_an_alias_bomb_fails_fast(tmp_path, levels, entry):
    path = tmp_path / "bomb.yaml"
    path.write_text(alias_bomb(levels))
    assert path.stat().st_size < 400 + 40 * (levels - 9)
    exc = fails(path, "expands to more than .* values \\(YAML aliases\\?\\)", entry)
    assert str(path) in str(exc)


def test_an_alias_bomb_inside_a_valid_section_fails_fast(tmp_path):
    path = tmp_path / "bomb.yaml"
    bomb = alias_bomb(9, indent="      ")
    path.write_text(f"pools:\n  p:\n    capability: chat-completion\n    strategy_options:\n{bomb}")
    exc = fails(path, "expands to more than")
    assert exc.errors[0][0].startswith("pools.p.strategy_options")
    code, text = validate(path)
    assert code == 1 and "expands to more than" in text


@pytest.mark.parametrize("entry", list(ENTRY_POINTS))
def test_a_dict_bomb_fails_fast(entry):
    node: Any = ["lol"] * 9
    for _ in range(10):
        node = [node] * 9  # shared, not copied: 9 ** 11 values from a few hundred objects
    cfg = {"pools": {"chat": {"capability": "chat-completion", "strategy_options": {"x": node}}}}
    fails(cfg, "expands to more than", entry)


def test_merge_keys_cannot_multiply(tmp_path):
    keys = ", ".join(f"k{i}: v{i}" for i in range(10))
    lines = [f"      m0: &m0 {{{keys}}}"]
    for i in range(1, 12):
        refs = ", ".join([f"*m{i - 1}"] * 9)
        lines.append(f"      m{i}: &m{i} {{<<: [{refs}], own{i}: {i}}}")
    path = tmp_path / "merge.yaml"
    path.write_text(
        f"pools:\n  p:\n    capability: chat-completion\n    strategy: {FREE_FORM}\n"
        "    strategy_options:\n" + "\n".join(lines) + "\n"
    )
    with deadline():
        cfg = load_config(path)
    top = cfg.pools["p"].strategy_options["m11"]
    assert top["k3"] == "v3" and top["own11"] == 11 and top["own1"] == 1 and len(top) == 21


def test_merge_keys_keep_yaml_semantics(tmp_path):
    path = tmp_path / "merge.yaml"
    path.write_text(
        f"pools:\n  p:\n    capability: chat-completion\n    strategy: {FREE_FORM}\n"
        "    strategy_options:\n"
        "      a: &a {x: 1, y: 1}\n"
        "      b: &b {y: 2, z: 2}\n"
        "      c: {<<: [*a, *b], z: 3}\n"
        "      d: {<<: *a, x: 0}\n"
    )
    opts = load_config(path).pools["p"].strategy_options
    assert opts["c"] == {"x": 1, "y": 1, "z": 3}  # the first merged map wins, own keys win
    assert opts["d"] == {"x": 0, "y": 1}


def test_too_many_values_without_aliases_is_named_as_such():
    cfg = {"pools": {"p": {"capability": "chat-completion", "strategy_options": {}}}}
    cfg["pools"]["p"]["strategy_options"]["x"] = list(range(MAX_VALUES + 1))
    exc = fails(cfg, f"more than {MAX_VALUES} values")
    assert "alias" not in str(exc)


def test_a_large_ordinary_config_still_loads(tmp_path):
    models = "".join(
        f"  p.m{i}:\n    provider: p\n    capabilities: [chat-completion]\n"
        f"    pricing: {{input_per_1k: 0.001, output_per_1k: 0.002}}\n"
        for i in range(2000)
    )
    path = tmp_path / "big.yaml"
    path.write_text(f"providers:\n  p: {{api_key: x}}\nmodels:\n{models}")
    assert path.stat().st_size < MAX_CONFIG_BYTES
    with deadline(30.0):
        assert len(load_config(path).models) == 2000


# --- recursion --------------------------------------------------------------------


@pytest.mark.parametrize(
    "text", ["pools: &a {p: *a}\n", "capabilities: &a [*a]\n", "x: &a [[[*a]]]\n"]
)
def test_a_recursive_alias_is_refused(tmp_path, text):
    path = tmp_path / "loop.yaml"
    path.write_text(text)
    fails(path, "refers to itself")


@pytest.mark.parametrize("entry", list(ENTRY_POINTS))
def test_a_dict_that_contains_itself_is_refused(entry):
    opts: dict[str, Any] = {}
    opts["again"] = opts
    cfg = {"pools": {"chat": {"capability": "chat-completion", "strategy_options": opts}}}
    exc = fails(cfg, "refers to itself", entry)
    assert exc.errors[0][0] == "pools.chat.strategy_options.again"


@pytest.mark.parametrize("opener", ["[", "{a: "])
def test_deeply_nested_yaml_is_refused(tmp_path, opener):
    path = tmp_path / "deep.yaml"
    closer = "]" if opener == "[" else "}"
    path.write_text("pools: " + opener * 10_000 + "1" + closer * 10_000 + "\n")
    exc = fails(path, f"nested more than {MAX_DEPTH} levels")
    assert "line 1, column" in str(exc) and str(path) in str(exc)
    code, text = validate(path)
    assert code == 1 and "nested more than" in text


def test_deeply_nested_block_yaml_is_refused(tmp_path):
    path = tmp_path / "deep.yaml"
    path.write_text("".join(" " * i + "a:\n" for i in range(400)) + " " * 400 + "b\n")
    fails(path, f"nested more than {MAX_DEPTH} levels")


@pytest.mark.parametrize("entry", list(ENTRY_POINTS))
@pytest.mark.parametrize("kind", ["dict", "list"])
def test_deeply_nested_dicts_are_refused(entry, kind):
    node: Any = 1
    for _ in range(10_000):
        node = {"a": node} if kind == "dict" else [node]
    cfg = {"pools": {"chat": {"capability": "chat-completion", "strategy_options": {"x": node}}}}
    exc = fails(cfg, f"nested more than {MAX_DEPTH} levels", entry)
    assert exc.errors[0][0].startswith("pools.chat.strategy_options.x")


def test_configuration_nesting_well_within_the_limit_loads():
    node: Any = 1
    for _ in range(MAX_DEPTH - 10):
        node = {"a": node}
    pool = {"capability": "chat-completion", "strategy": FREE_FORM, "strategy_options": node}
    cfg = load_config({"pools": {"p": pool}})
    assert cfg.pools["p"].strategy_options["a"]["a"]["a"]


# --- what is read ---------------------------------------------------------------------


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="needs FIFOs")
@pytest.mark.parametrize("entry", list(ENTRY_POINTS))
def test_a_fifo_is_refused_without_blocking(tmp_path, entry):
    fifo = tmp_path / "mesh.yaml"
    os.mkfifo(fifo)
    exc = fails(fifo, "not a regular file", entry)
    assert "FIFO" in str(exc) and str(fifo) in str(exc)
    if entry == "load_config":
        code, text = validate(fifo)
        assert code == 1 and "not a regular file" in text


@pytest.mark.skipif(not os.path.exists("/dev/zero"), reason="needs /dev/zero")
@pytest.mark.parametrize("entry", list(ENTRY_POINTS))
def test_a_device_is_refused(entry):
    exc = fails("/dev/zero", "not a regular file", entry)
    assert "/dev/zero" in str(exc) and "device" in str(exc)


def test_a_directory_is_refused(tmp_path):
    fails(tmp_path, "not a regular file \\(a directory\\)")


@pytest.mark.parametrize("entry", list(ENTRY_POINTS))
def test_an_oversized_file_is_refused(tmp_path, entry):
    path = tmp_path / "huge.yaml"
    path.write_bytes(b"# " + b"x" * MAX_CONFIG_BYTES + b"\n")
    exc = fails(path, "larger than", entry)
    assert str(path) in str(exc)


def test_a_file_of_exactly_the_limit_is_read(tmp_path):
    path = tmp_path / "full.yaml"
    body = b"storage: {backend: memory}\n"
    path.write_bytes(body + b"#" * (MAX_CONFIG_BYTES - len(body) - 1) + b"\n")
    assert load_config(path).storage.backend == "memory"


def test_a_symlink_to_a_regular_file_is_followed(tmp_path):
    (tmp_path / "real.yaml").write_text("storage: {backend: memory}\n")
    (tmp_path / "link.yaml").symlink_to(tmp_path / "real.yaml")
    assert load_config(tmp_path / "link.yaml").storage.backend == "memory"


def test_binary_and_odd_files_are_configuration_errors(tmp_path):
    path = tmp_path / "bin.yaml"
    path.write_bytes(b"pools: \xff\xfe\x00\n")
    fails(path, "not UTF-8")
    path.write_text("pools: " + "9" * 10_000 + "\n")
    fails(path, "invalid YAML")
    path.write_text("pools: 2020-13-45\n")
    fails(path, "invalid YAML")
    path.write_text("a: 1\n\x00\n")
    fails(path, "invalid YAML")


def test_odd_sources_are_configuration_errors(tmp_path):
    fails(str(tmp_path / "a\x00b.yaml"), "cannot read")
    fails(["providers"], "expected a path, a mapping or a MeshConfig")
    fails(tmp_path / "missing.yaml", "file not found")


@pytest.mark.skipif(sys.platform == "win32" or os.geteuid() == 0, reason="root reads anything")
def test_an_unreadable_file_is_a_configuration_error(tmp_path):
    path = tmp_path / "secret.yaml"
    path.write_text("storage: {backend: memory}\n")
    path.chmod(0)
    exc = fails(path, "cannot read")
    assert str(path) in str(exc)
