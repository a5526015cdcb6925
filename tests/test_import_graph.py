"""experiments/import_graph.py on the package: no import cycles and no upward imports among module-level
imports (the layers are its docstring's), and its detectors find both on a small hand-made graph."""

from __future__ import annotations

from pathlib import Path

from scripts import load_script

REPO = Path(__file__).resolve().parents[1]


def _graph():
    return load_script("experiments/import_graph.py")


def test_detectors_on_a_made_up_graph(tmp_path):
    g = _graph()
    pkg = tmp_path / "voxinv"
    (pkg / "eval" / "report").mkdir(parents=True)
    (pkg / "__init__.py").write_text("")
    (pkg / "rundir.py").write_text("from voxinv.eval import formats\n")  # layer 0 → 2: upward
    (pkg / "eval" / "__init__.py").write_text("")
    (pkg / "eval" / "formats.py").write_text("import voxinv.eval.metrics\n")
    (pkg / "eval" / "metrics.py").write_text("from . import formats\n\n\ndef f():\n    import voxinv.run\n")
    (pkg / "eval" / "report" / "__init__.py").write_text("from voxinv.eval.report import cli\n")
    (pkg / "eval" / "report" / "cli.py").write_text("from voxinv import rundir\n")
    (pkg / "run.py").write_text("")
    res = g.analyse(tmp_path)
    assert res["cycles"] == [["voxinv.eval.formats", "voxinv.eval.metrics"]]  # relative import resolved
    assert res["upward"] == [["voxinv.rundir", "voxinv.eval"], ["voxinv.rundir", "voxinv.eval.formats"]]
    assert res["in_function_imports"] == 1 and res["in_function_voxinv_imports"] == 1
    (lazy,) = res["in_function"]
    assert (lazy["module"], lazy["imports"], lazy["upward"], lazy["dodges_cycle"]) == (
        "voxinv.eval.metrics",
        "voxinv.run",
        True,
        False,
    )
    assert ["voxinv.eval.metrics", "voxinv.run"] in g.analyse(tmp_path, include_inner=True)["upward"]


def test_package_has_no_cycles_and_no_upward_imports():
    res = _graph().analyse(REPO)
    assert res["modules"] > 50
    assert res["cycles"] == []
    assert res["upward"] == []
    inner = _graph().analyse(REPO, include_inner=True)  # in-function imports too: no layer leak anywhere
    assert inner["upward"] == [] and inner["cycles"] == []
