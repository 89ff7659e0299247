"""The modelmesh command line."""

from __future__ import annotations

import io
import subprocess
import sys
import time

import yaml

from mesh_core import Mesh
from mesh_core._cli import main
from tests.conftest import config_for


def run(*argv: str) -> tuple[int, str]:
    out = io.StringIO()
    return main(list(argv), out=out), out.getvalue()


def test_validate_ok_and_every_error_with_its_path(tmp_path, servers):
    good = tmp_path / "good.yaml"
    good.write_text(yaml.safe_dump(config_for(servers)))
    code, text = run("validate", str(good))
    assert code == 0 and "OK (2 providers, 2 models, 1 pools" in text
    assert "pool chat (modelmesh.stick-until-failure.v1): p1.m1, p2.m2" in text
    bad = tmp_path / "bad.yaml"
    bad.write_text("pools:\n  chat:\n    capability: chat-completon\n    stratgy: x\n")
    code, text = run("validate", str(bad))
    assert code == 1 and "problem(s)" in text
    assert "pools.chat.stratgy: unknown key; did you mean 'strategy'?" in text


def test_status_reads_persisted_state(tmp_path, servers):
    cfg = config_for(servers)
    cfg["storage"] = {"backend": "sqlite", "path": str(tmp_path / "s.db")}
    path = tmp_path / "mesh.yaml"
    path.write_text(yaml.safe_dump(cfg))
    with Mesh.from_config(str(path)) as mesh:
        mesh.complete("chat", "hi")
        mesh.deactivate("p2.m2")
    code, text = run("status", "--config", str(path))
    assert code == 0
    lines = text.splitlines()
    assert lines[0].split()[:4] == ["pool", "model", "status", "reason"]
    row = next(line for line in lines if "p2.m2" in line).split()
    assert row[2:5] == ["standby", "manual", "manual"]
    row = next(line for line in lines if "p1.m1" in line).split()
    assert row[2] == "active" and row[5] == "1"
    assert "state: sqlite" in text


def test_console_script_is_installed_and_demo_runs():
    out = subprocess.run(
        [sys.executable, "-m", "mesh_core._cli", "demo", "--requests", "6", "--pace", "0"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert out.returncode == 0, out.stderr
    assert "failed over from alpha.fast" in out.stdout


def test_bad_config_is_an_error_exit(tmp_path):
    code = main(["status", "--config", str(tmp_path / "none.yaml")], out=io.StringIO())
    assert code == 1


def test_status_shows_a_due_recovery_without_writing_it(tmp_path, servers):
    cfg = config_for(servers, {"recovery": {"cooldown": "200ms"}})
    cfg["storage"] = {"backend": "sqlite", "path": str(tmp_path / "s.db")}
    path = tmp_path / "mesh.yaml"
    path.write_text(yaml.safe_dump(cfg))
    with Mesh.from_config(str(path)) as mesh:
        mesh.pool("chat").deactivate(mesh.model("p1.m1"), "error_threshold")
    time.sleep(0.3)  # the cooldown is over; no request has come to apply it
    code, text = run("status", "--config", str(path))
    assert code == 0
    row = next(line for line in text.splitlines() if "p1.m1" in line).split()
    assert row[2:4] == ["active", "on-trial"]  # what the next request will find
    with Mesh.from_config(str(path)) as mesh:  # ... and the store still says standby
        assert mesh.model("p1.m1").state.status == "standby"
