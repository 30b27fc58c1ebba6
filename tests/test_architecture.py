"""The layers of kgitm import forward only (core -> data -> graphs -> knowledge -> pipeline -> encoders
-> matchers -> eval -> models -> lit -> convert -> cli), and the foundation imports nothing of kgitm."""

from __future__ import annotations

import importlib.util
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def _script():
    spec = importlib.util.spec_from_file_location("draw_architecture", REPO / "scripts/draw_architecture.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_no_import_runs_against_the_pipeline():
    edges, modules, backward = _script().import_graph()
    assert not backward, "imports from a later layer into an earlier one:\n" + "\n".join(backward)
    assert not any(src == "core" for src, _ in edges), "kgitm.core must import nothing of kgitm"
    assert sum(edges.values()) > 50 and set(modules) >= {"core", "models", "cli"}  # the graph was read


def test_a_backward_import_is_found(tmp_path):
    pkg = tmp_path / "kgitm"
    (pkg / "core").mkdir(parents=True)
    (pkg / "matchers").mkdir()
    (pkg / "core" / "x.py").write_text("from kgitm.matchers.y import z\n")
    (pkg / "matchers" / "y.py").write_text("import kgitm.core.x\n")
    script = _script()
    script.REPO = tmp_path
    edges, _, backward = script.import_graph(pkg)
    assert edges[("core", "matchers")] == 1 and edges[("matchers", "core")] == 1
    assert backward == ["kgitm/core/x.py:1 core -> kgitm.matchers.y"]
