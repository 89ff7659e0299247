"""The demo notebooks: stored as built, and they still run top to bottom (offline)."""

from __future__ import annotations

import sys
from pathlib import Path

import nbformat
import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "notebooks"))
import build  # noqa: E402

NAMES = sorted(build.NOTEBOOKS)


@pytest.mark.parametrize("name", NAMES)
def test_stored_notebook_matches_its_builder_and_has_outputs(name):
    stored = nbformat.read(ROOT / "notebooks" / name, as_version=4)
    expected = [src for _, src in build.NOTEBOOKS[name]]
    assert [c.source for c in stored.cells] == expected, "rebuild: python notebooks/build.py"
    code = [c for c in stored.cells if c.cell_type == "code"]
    assert all(c.execution_count for c in code)
    assert any(c.outputs for c in code)
    errors = [o for c in code for o in c.outputs if o.output_type == "error"]
    assert not errors


@pytest.mark.parametrize("name", NAMES)
def test_notebook_runs_top_to_bottom(name):
    nb = build.execute(nbformat.read(ROOT / "notebooks" / name, as_version=4), timeout=240)
    text = "".join(o.get("text", "") for c in nb.cells if c.cell_type == "code" for o in c.outputs)
    if name.startswith("01"):
        assert "answered by: alpha.fast" in text and "beta.smart <-" in text
        assert "hedged: [('alpha.fast', 'slow'), ('beta.smart', 'success')]" in text
        assert "continued from: alpha.fast" in text
    if name.startswith("02"):
        assert "The tool returned: 42" in text
        # the model that answered, as the mesh reports it: alpha, then beta once alpha is silent
        answered = [line for line in text.splitlines() if line.startswith("answered by:")]
        assert answered == ["answered by: alpha.fast", "answered by: beta.smart"]
        # the query's embedding fails over within its space: gamma's embedder, then beta's
        embedded = [line for line in text.splitlines() if line.startswith("query embedded by:")]
        assert [line.split()[3] for line in embedded] == ["gamma.embed", "beta.embed"], embedded
    if name.startswith("03"):
        images = [
            o for c in nb.cells for o in c.get("outputs", []) if "image/png" in o.get("data", {})
        ]
        assert images and "cost-first" in text
    if name.startswith("04"):
        assert "budget_exceeded" in text and "maintenance_window" in text
        assert "after the restart" in text
        # explain: why gamma, and why nothing inside the window
        assert "would be served by gamma.spare" in text
        assert "in standby (budget_exceeded)" in text and "4/5 requests" in text
        assert "explain: every capable model of pool 'chat' is in standby" in text
