"""``modelmesh demo --real``: the same story as the fake demo, on two real local models."""

from __future__ import annotations

import io
import os

import pytest

from mesh_core._local_model import LocalModelUnavailable, model_path, run_real_demo

try:
    model_path()
except LocalModelUnavailable as exc:  # pragma: no cover - CI installs both
    if os.environ.get("CI"):
        raise
    pytest.skip(f"real local model not installed: {exc}", allow_module_level=True)


def test_the_real_demo_shows_the_standby_under_its_request_and_ends_with_the_table():
    out = io.StringIO()
    run_real_demo(requests=6, out=out)
    lines = out.getvalue().splitlines()
    killed = next(i for i, line in enumerate(lines) if "killed (SIGKILL)" in line)
    after = lines[killed + 1 :]
    assert "failed over from alpha.smollm2: connection_error" in after[0]
    standby = next(i for i, line in enumerate(after) if "alpha.smollm2 → standby" in line)
    assert "(error_threshold, back in 60.0s)" in after[standby]
    assert after[standby - 1].startswith("#")  # under the request that caused it
    assert "failed over from alpha.smollm2" in after[standby - 1]
    assert lines[-4].split()[:2] == ["model", "status"]
    assert lines[-1].split()[:3] == ["beta.smollm2", "active", "-"]
    assert lines[-2].split()[:3] == ["alpha.smollm2", "standby", "error_threshold"]
