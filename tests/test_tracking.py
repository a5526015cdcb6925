"""Tracking through the CLI (``python -m voxinv.run`` in a subprocess): a run killed with SIGKILL and
resumed keeps every evaluation once, at its own step, in metrics.csv and in the offline W&B files
(one directory for ``wandb sync``); a ``max_time`` stop evaluates and exports the current codes."""

from __future__ import annotations

import csv
import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
TESTS = Path(__file__).resolve().parent
FAST = ["model=tiny", "target=synthetic", "target.n_frames=2", "device=cpu", "eval.which=[]", "init=random",
        "trainer.enable_progress_bar=false", "trainer.log_every_n_steps=1", "callbacks.early_stop.patience=0"]  # fmt: skip


def run_cli(out: Path, *overrides: str, env: dict) -> subprocess.CompletedProcess:
    cmd = [sys.executable, "-m", "voxinv.run", *FAST, *overrides, f"hydra.run.dir={out}"]
    return subprocess.run(cmd, cwd=out.parent, env=env, capture_output=True, text=True, timeout=600)


@pytest.fixture
def cli_env(voxinv_cache, tmp_path) -> dict:
    env = dict(os.environ)
    env.update(VOXINV_CACHE=str(voxinv_cache), OMP_NUM_THREADS="1", WANDB_MODE="offline", WANDB_SILENT="true")
    env["PYTHONPATH"] = os.pathsep.join([str(REPO), str(TESTS), env.get("PYTHONPATH", "")])
    for var in ("WANDB_DIR", "WANDB_CACHE_DIR", "WANDB_CONFIG_DIR", "WANDB_DATA_DIR", "WANDB_ARTIFACT_DIR"):
        env[var] = str(tmp_path / "wandb-home")
    env.pop("WANDB_API_KEY", None)
    env.pop("WANDB_SERVICE", None)  # each CLI process starts its own wandb-core, as from a user's shell
    return env


def csv_evals(out: Path) -> list[tuple[int, float]]:
    with open(out / "metrics.csv", newline="") as f:
        return [
            (int(float(r["step"])), float(r["eval/objective"])) for r in csv.DictReader(f) if r.get("eval/objective")
        ]


def wandb_evals(run_dir: Path, records) -> list[tuple[int, float]]:
    """(trainer/global_step, eval/objective) of every history row of an offline run holding an evaluation."""
    (wb,) = run_dir.glob("run-*.wandb")
    rows = []
    for r in records(wb):
        if r.WhichOneof("record_type") == "history":
            row = {(it.key or "/".join(it.nested_key)): json.loads(it.value_json) for it in r.history.item}
            if "eval/objective" in row:
                rows.append((int(row["trainer/global_step"]), float(row["eval/objective"])))
    return rows


@pytest.mark.parametrize("logger", ["csv", "wandb", pytest.param("many", marks=pytest.mark.slow)])
def test_sigkill_then_resume_keeps_every_evaluation_once(tmp_path, cli_env, wandb_records, logger):
    out = tmp_path / "run"
    common = [f"logger={logger}", "steps=8", "eval_every=2", "checkpoint_every=2"]
    killed = run_cli(
        out, *common, "+callbacks.kill._target_=helpers.kill.KillAt", "+callbacks.kill.step=5", env=cli_env
    )
    assert killed.returncode == -signal.SIGKILL, killed.stderr[-2000:]
    assert not (out / "metrics.json").exists()
    wb = logger != "csv"
    if wb:  # flushed while running: the killed segment's file already holds evaluations 0, 2, 4
        (seg,) = (out / "wandb").glob("offline-run-*")
        assert [s for s, _ in wandb_evals(seg, wandb_records)] == [0, 2, 4]
    done = run_cli(out, *common, "resume=true", env=cli_env)
    assert done.returncode == 0, done.stderr[-2000:]
    m = json.loads((out / "metrics.json").read_text())
    history = [(h["step"], pytest.approx(h["objective"], rel=1e-6)) for h in m["history"]]
    assert [h["step"] for h in m["history"]] == [0, 2, 4, 6, 8] and m["steps"] == 8 and m["stopped"] is None
    assert csv_evals(out) == history
    assert m["wall_time_s"] >= m["history"][-1]["wall_s"]  # both segments, not the last one only
    if wb:
        (run_dir,) = (out / "wandb").glob("offline-run-*")  # what `wandb sync <run dir>/wandb/offline-run-*` uploads
        assert wandb_evals(run_dir, wandb_records) == history  # each once, at its own step, in order
        assert len(list((out / "wandb" / "superseded").glob("offline-run-*"))) == 1
        assert "wandb sync" in done.stderr


def test_max_time_stop_evaluates_and_exports_the_current_codes(tmp_path, cli_env):
    out = tmp_path / "run"
    r = run_cli(out, "steps=100000", "eval_every=0", "+trainer.max_time=00:00:00:03", env=cli_env)
    assert r.returncode == 0, r.stderr[-2000:]
    m = json.loads((out / "metrics.json").read_text())
    assert m["stopped"] == "max_time" and 0 < m["steps"] < 100000
    assert [h["step"] for h in m["history"]] == [0, m["steps"]]  # the codes at the stop were evaluated
    assert f"stopped early at step {m['steps']}: trainer.max_time reached" in r.stderr  # the console says it
    assert csv_evals(out)[-1][0] == m["steps"]
