"""experiments/gpu_check.sh: valid bash, and its CPU dry run (the same steps, small settings) passes."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "experiments" / "gpu_check.sh"


def test_gpu_check_is_valid_bash():
    subprocess.run(["bash", "-n", str(SCRIPT)], check=True)


def test_gpu_check_benches_accept_its_arguments():
    """Every flag the script passes to a bench (its BI_/BC_/BT_/BM_ argument arrays) is one the bench takes."""
    text = SCRIPT.read_text()
    for prefix, bench in (
        ("BI_", "bench_invert"),
        ("BC_", "bench_codec"),
        ("BT_", "bench_tts"),
        ("BM_", "bench_manifest"),
    ):
        arrays = re.findall(rf"{prefix}\w*=\(([^)]*)\)", text)
        flags = set(re.findall(r"(--[a-z][a-z-]*)", " ".join(arrays)))
        assert arrays and flags, bench
        helptext = subprocess.run(
            [sys.executable, str(ROOT / "experiments" / f"{bench}.py"), "--help"],
            capture_output=True,
            text=True,
            check=True,
            env={**os.environ, "PYTHONPATH": str(ROOT)},
        ).stdout
        assert flags <= set(re.findall(r"(--[a-z][a-z-]*)", helptext)), (bench, flags)


@pytest.mark.slow
def test_gpu_check_cpu_dry_run(tmp_path):
    env = {**os.environ, "GPU_CHECK_DEVICE": "cpu", "OUT": str(tmp_path), "PYTHONPATH": str(ROOT)}
    r = subprocess.run(["bash", str(SCRIPT)], env=env, capture_output=True, text=True, timeout=3000)
    summary = json.loads((tmp_path / "gpu_check" / "summary.json").read_text())
    failed = [s for s in summary["steps"] if s["rc"] != 0]
    assert r.returncode == 0 and not failed, (failed, r.stderr[-3000:])
    assert {"bench_invert", "bench_codec_fp32", "bench_tts"} <= set(summary)
    assert "default" in summary["runs"] and summary["runs"]["default"]["device"] == "cpu"
