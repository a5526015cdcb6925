"""experiments/bench_tiny_anytime.py end to end on one tiny checkpoint, a few steps: the default and the
recipe run back to back and the speed-up is the recipe's CPU seconds over the default's time to reach
the recipe's final log-mel distance."""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


def test_bench_tiny_anytime(tmp_path):
    pytest.importorskip("resemblyzer")  # the recipe's speaker term
    spec = importlib.util.spec_from_file_location("bench_tiny_anytime", REPO / "experiments" / "bench_tiny_anytime.py")
    mod = importlib.util.module_from_spec(spec)
    sys.modules["bench_tiny_anytime"] = mod
    spec.loader.exec_module(mod)
    out = tmp_path / "anytime.json"
    assert mod.main(["--tiny-seeds", "0", "--steps", "4", "--eval-every", "1", "--json", str(out)]) == 0
    rows = json.loads(out.read_text())["rows"]
    assert len(rows) == 1
    r = rows[0]
    assert r["recipe_cpu_s"] > 0 and r["recipe_mel"] > 0 and r["default_mel"] > 0
    if r["reach_cpu_s"] is None:  # never reached in 4 steps: no speed-up, no step
        assert r["speedup_cpu"] is None and r["reach_step"] is None
    else:
        assert 0 <= r["reach_step"] <= 4
        rc, rt, h = r["recipe_cpu_s"], r["reach_cpu_s"], 0.005  # both rounded to 0.01 s
        assert (rc - h) / (rt + h) - 0.01 <= r["speedup_cpu"] <= (rc + h) / max(rt - h, 1e-3) + 0.01
