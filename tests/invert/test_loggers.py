"""Experiment tracking read back from disk: every evaluation once, at its own step, in metrics.csv and
in the offline W&B run (history, media, summary, artifact, table), equal to metrics.json's history;
resume continues the CSV and the same W&B run."""

from __future__ import annotations

import csv
import json
import math
import time
from pathlib import Path

import pytest
from fast_config import compose_fast
from hydra import compose, initialize_config_dir
from omegaconf import DictConfig

import voxinv.run as R

FAST = {
    "model": "tiny",
    "target": "synthetic",
    "device": "cpu",
    "target.n_frames": "2",
    "steps": "5",
    "eval_every": "2",  # evaluations at 0, 2, 4 and the last step 5
    "checkpoint_every": "2",
    "eval.which": "[]",
    "init": "random",
    "trainer.enable_progress_bar": "false",
    "trainer.log_every_n_steps": "3",  # evaluations must not be sampled by it
}
EVAL_KEYS = ("objective", "si_sdr", "mel", "code_sem_acc", "code_ac_acc")


@pytest.fixture(autouse=True)
def _env(voxinv_cache, monkeypatch):
    monkeypatch.setenv("VOXINV_CACHE", str(voxinv_cache))


def cfg_of(*overrides: str) -> DictConfig:
    return compose_fast(FAST, *overrides)


def _stop_at(k: int) -> type:
    """An EvalLogger that also stops the trainer after ``k`` steps (the run "dies" there)."""
    from voxinv.invert.callbacks import EvalLogger

    class StopAt(EvalLogger):
        def on_train_batch_end(self, trainer, *args):
            if trainer.global_step >= k:
                trainer.should_stop = True

    return StopAt


def _run_interrupted(tmp_path: Path, monkeypatch, k: int, *o: str) -> tuple[Path, dict, dict]:
    """A run stopped after ``k`` steps, then resumed in the same directory → (dir, first, resumed)."""
    import voxinv.invert.callbacks as C

    out = tmp_path / "run"
    with monkeypatch.context() as mp:
        mp.setattr(C, "EvalLogger", _stop_at(k))  # callbacks.eval_logger._target_ resolves at build time
        first = R.run(cfg_of(*o), out)
    assert first["steps"] == k
    return out, first, R.run(cfg_of(*o, "resume=true"), out)


def _csv(out: Path) -> list[dict]:
    with open(out / "metrics.csv", newline="") as f:
        return [{k: float(v) for k, v in r.items() if v != ""} for r in csv.DictReader(f)]


def _check_evals(rows: list[dict], history: list[dict], step_key: str = "step") -> None:
    """``rows`` holding ``eval/*`` are the evaluations of ``history``: once each, at their own step."""
    evals = [r for r in rows if "eval/objective" in r]
    assert [int(r[step_key]) for r in evals] == [h["step"] for h in history]
    for r, h in zip(evals, history):
        for k in EVAL_KEYS:
            assert r[f"eval/{k}"] == pytest.approx(h[k], rel=1e-6, abs=1e-9), (h["step"], k)


# ------------------------------------------------------------------------------------------------ CSV
def test_csv_has_every_evaluation_once_and_a_final_row(tmp_path):
    out = tmp_path / "run"
    m = R.run(cfg_of(), out)
    assert [h["step"] for h in m["history"]] == [0, 2, 4, 5]
    rows = _csv(out)
    _check_evals(rows, m["history"])
    train = [int(r["step"]) for r in rows if "loss" in r]
    assert train == [2], train  # training scalars: every trainer.log_every_n_steps (batch index 2)
    final = rows[-1]  # the exported codes' metrics and the evaluation they come from
    assert int(final["step"]) == 5 and "eval/objective" not in final
    assert final["final/si_sdr"] == pytest.approx(m["signal"]["si_sdr"])
    assert final["final/loss_total"] == pytest.approx(m["final"]["total"])
    assert final["final/code_sem_acc"] == pytest.approx(m["truth"]["code_sem_acc"])
    best = next(h for h in m["history"] if h["step"] == m["best_step"])
    assert final["best/step"] == m["best_step"] and final["best/si_sdr"] == pytest.approx(best["si_sdr"])
    assert final["best/objective"] == pytest.approx(m["final"]["total"], rel=1e-5)  # the exported codes


def test_csv_resume_appends(tmp_path, monkeypatch):
    out, first, m = _run_interrupted(tmp_path, monkeypatch, 2)
    rows = _csv(out)
    _check_evals(rows, m["history"])  # 0, 2 from the first segment, 4, 5 from the resumed one
    assert [h["step"] for h in first["history"]] == [0, 2]
    assert m["history"][:2] == first["history"]
    assert sum("final/si_sdr" in r for r in rows) == 1 and "final/si_sdr" in rows[-1]  # one final row, last
    assert rows[-1]["final/si_sdr"] == pytest.approx(m["signal"]["si_sdr"])


def test_csv_fresh_run_in_a_used_directory_starts_over(tmp_path):
    out = tmp_path / "run"
    R.run(cfg_of("steps=3"), out)
    m = R.run(cfg_of("steps=2", "seed=1", "overwrite=true"), out)  # a new run replacing the old one
    rows = _csv(out)
    _check_evals(rows, m["history"])
    assert int(rows[-1]["step"]) == 2 and sum("final/si_sdr" in r for r in rows) == 1


# ------------------------------------------------------------------------------------------------ W&B
def _wandb_run(run_dir: Path, records) -> dict:
    """history rows, summary, artifacts and run id of one offline run directory."""
    (wb,) = run_dir.glob("run-*.wandb")
    # wandb-core writes the log in its own process: finish() can return before the last block is on disk
    deadline = time.monotonic() + 60
    while not any(r.WhichOneof("record_type") == "exit" for r in records(wb)) and time.monotonic() < deadline:
        time.sleep(0.5)
    hist, summary, arts, run_id, name, group, tags, config = [], {}, [], None, None, None, [], {}
    for r in records(wb):
        kind = r.WhichOneof("record_type")
        if kind == "run" and not run_id:
            run_id, name, group, tags = r.run.run_id, r.run.display_name, r.run.run_group, list(r.run.tags)
            config.update({it.key: json.loads(it.value_json) for it in r.run.config.update})
        elif kind == "config":
            config.update({it.key: json.loads(it.value_json) for it in r.config.update})
        elif kind == "history":
            row: dict = {}
            for it in r.history.item:
                key = it.key or "/".join(it.nested_key)
                row[key] = json.loads(it.value_json)
            hist.append(row)
        elif kind == "summary":
            summary.update({it.key or "/".join(it.nested_key): json.loads(it.value_json) for it in r.summary.update})
        elif kind == "artifact":
            arts.append(r.artifact)
    return {
        "history": hist, "summary": summary, "artifacts": arts, "id": run_id, "name": name, "group": group,
        "tags": tags, "config": config,
    }  # fmt: skip


def _media_steps(hist: list[dict]) -> list[tuple[int, str]]:
    """(chart step, caption) of every logged reconstruction."""
    out = []
    for h in hist:
        cap = h.get("media/reconstruction/caption", (h.get("media/reconstruction") or {}).get("caption"))
        if cap is not None:
            out.append((int(h["trainer/global_step"]), cap))
    return out


def test_wandb_offline_run_reads_back(tmp_path, wandb_offline, wandb_records):
    out = tmp_path / "run"
    m = R.run(cfg_of("logger=wandb"), out)
    (run_dir,) = (out / "wandb").glob("offline-run-*")
    w = _wandb_run(run_dir, wandb_records)
    assert w["id"] == (out / "wandb-run-id").read_text().strip()
    _check_evals(w["history"], m["history"], step_key="trainer/global_step")
    assert {"loss", "train/lr"} <= set().union(*w["history"])
    # media on the charts' axis: one reconstruction per evaluation, at that evaluation's step
    assert _media_steps(w["history"]) == [(h["step"], f"step {h['step']}") for h in m["history"]]
    files = run_dir / "files" / "media"
    assert {p.name.split("_")[0] for p in (files / "audio").rglob("*.wav")} >= {"reconstruction", "target"}
    # summary: the final and best values, explicitly (not whatever was logged last)
    s = w["summary"]
    assert s["final/si_sdr"] == pytest.approx(m["signal"]["si_sdr"])
    assert s["final/loss_total"] == pytest.approx(m["final"]["total"])
    assert s["best/step"] == m["best_step"]
    assert s["eval/si_sdr"] == pytest.approx(m["history"][-1]["si_sdr"])
    # the deliverable as a versioned artifact, and the per-run comparison table
    (voice,) = [a for a in w["artifacts"] if a.type == "voice"]
    assert voice.name == f"voice-{w['name']}-{w['id']}"  # one artifact per run, not per target
    assert json.loads(voice.metadata)["target"] == m["target"]["name"]
    assert {e.path for e in voice.manifest.contents} >= {"voice.pt", "codes.safetensors", "reconstruction.wav"}
    (table,) = [a for a in w["artifacts"] if a.type == "run_table"]
    assert any(e.path.endswith("comparison.table.json") for e in table.manifest.contents)
    t = next(h for h in w["history"] if any(k.startswith("runs/comparison") for k in h))
    assert t["runs/comparison/_type"] == "table-file"
    assert t["runs/comparison/ncols"] == 4 + len([k for k in s if k.startswith("final/")])
    assert all(math.isfinite(v) for k, v in s.items() if k.startswith(("final/", "best/")))


def test_wandb_resume_continues_the_same_run(tmp_path, monkeypatch, wandb_offline, wandb_records):
    out, first, m = _run_interrupted(tmp_path, monkeypatch, 2, "logger=wandb")
    (run,) = (out / "wandb").glob("offline-run-*")  # one directory to sync: the run, whole
    (old,) = (out / "wandb" / "superseded").glob("offline-run-*")  # the first segment, moved aside
    a, b = _wandb_run(old, wandb_records), _wandb_run(run, wandb_records)
    assert a["id"] == b["id"] == (out / "wandb-run-id").read_text().strip()
    _check_evals(a["history"], first["history"], step_key="trainer/global_step")
    _check_evals(b["history"], m["history"], step_key="trainer/global_step")  # replayed 0, 2; then 4, 5
    steps = [int(h["trainer/global_step"]) for h in b["history"] if "trainer/global_step" in h]
    assert steps == sorted(steps)  # one monotonic axis: what wandb sync uploads as one run
    assert _media_steps(b["history"]) == [(4, "step 4"), (5, "step 5")]  # media state survived the resume
    assert b["summary"]["final/si_sdr"] == pytest.approx(m["signal"]["si_sdr"])


def test_wandb_fresh_run_gets_a_new_id(tmp_path, wandb_offline):
    out = tmp_path / "run"
    R.run(cfg_of("logger=wandb", "steps=1"), out)
    first = (out / "wandb-run-id").read_text()
    R.run(cfg_of("logger=wandb", "steps=1", "overwrite=true"), out)
    assert (out / "wandb-run-id").read_text() != first


# ------------------------------------------------------------------------------ W&B sweep, workspace
SWEEPS = Path(__file__).resolve().parents[2] / "experiments" / "sweeps"


def test_wandb_sweep_runs_the_hydra_sweep_config():
    """Every grid point of the W&B sweep is a valid Hydra run of the config it names; its metric is
    one that log_final writes to the summary."""
    import itertools

    import yaml

    from voxinv.invert.final import final_record

    sw = yaml.safe_load((SWEEPS / "wandb_loss_random.yaml").read_text())
    assert sw["program"] == "voxinv.run" and "${args_no_hyphens}" in sw["command"]
    opts = dict(a.removeprefix("--").split("=", 1) for a in sw["command"] if a.startswith("--"))
    fixed = [a for a in sw["command"] if "=" in a and not a.startswith(("-", "$"))]
    assert "logger=wandb" in fixed
    hydra_sweep = yaml.safe_load((SWEEPS / f"{opts['config-name']}.yaml").read_text())["hydra"]["sweeper"]["params"]
    grid = {k: v["values"] for k, v in sw["parameters"].items()}
    assert {k: [str(x) for x in v] for k, v in grid.items()} == {
        k: str(v).split(",") for k, v in hydra_sweep.items()
    }  # the same grid as the Hydra multirun
    with initialize_config_dir(config_dir=str(SWEEPS), version_base="1.3"):
        for point in itertools.product(*grid.values()):
            o = [f"hydra.searchpath=[file://{R.CONF_DIR}]", *fixed, *(f"{k}={v}" for k, v in zip(grid, point))]
            cfg = compose(opts["config-name"], overrides=o)  # as voxinv.run --config-dir … --config-name …
            assert cfg.logger.wandb._target_.endswith("wandb_logger") and cfg.model.name == "tiny"
    assert sw["metric"]["name"] in final_record({"signal": {"si_sdr": -3.0}, "history": []})


def test_wandb_workspace_definition(capsys, monkeypatch):
    pytest.importorskip("wandb_workspaces")
    import importlib.util

    spec = importlib.util.spec_from_file_location("wandb_workspace", SWEEPS / "wandb_workspace.py")
    w = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(w)
    view = w.workspace("someone", "voxinv")
    assert [s.name.split()[0] for s in view.sections] == ["Evaluations", "Final:", "Training", "Media", "Runs"]
    line_plots = [p for s in view.sections for p in s.panels if type(p).__name__ == "LinePlot"]
    assert {p.x for p in line_plots} == {"trainer/global_step"}  # the axis evaluations and media use
    # offline-safe: without --wandb or without a login, one line and exit 0
    assert w.main([]) == 0 and capsys.readouterr().out.count("\n") == 1
    monkeypatch.delenv("WANDB_API_KEY", raising=False)
    monkeypatch.setenv("WANDB_CONFIG_DIR", "/nonexistent-voxinv")
    monkeypatch.setenv("NETRC", "/nonexistent-voxinv/netrc")
    assert w.main(["--wandb"]) == 0 and "not logged in" in capsys.readouterr().out


def test_wandb_multirun_names_runs_by_what_is_swept(tmp_path, wandb_offline, wandb_records):
    """A 4-job multirun through the CLI, read back from its offline W&B files: named by the swept
    overrides only, tagged with them, grouped by the sweep, Hydra choices in the config, one voice
    artifact per run (target in its metadata), metrics.csv beside W&B."""
    from voxinv import cli

    sweep = tmp_path / "sweep"
    argv = ["invert", "-m", "model=tiny", "debug=fast", "steps=1", "device=cpu", "logger=wandb", "eval.which=[]",
            "trainer.enable_progress_bar=false", "seed=1,2", "codes=gumbel,softmax_ste",
            f"hydra.sweep.dir={sweep}"]  # fmt: skip
    assert cli.main(argv) == 0
    names, arts = set(), set()
    for job in ("0", "1", "2", "3"):
        (run_dir,) = (sweep / job / "wandb").glob("offline-run-*")
        w = _wandb_run(run_dir, wandb_records)
        names.add(w["name"])
        assert w["group"] == "sweep"  # the sweep directory (a --config-name sweep: its name)
        assert sorted(w["tags"]) == sorted(w["name"].split(","))
        assert w["config"]["choices"]["codes"] in ("gumbel", "softmax_ste")
        assert w["config"]["choices"]["loss"] == "stft+mel" and "hydra/launcher" not in w["config"]["choices"]
        (voice,) = [a for a in w["artifacts"] if a.type == "voice"]
        arts.add(voice.name)
        assert json.loads(voice.metadata)["target"].startswith("synthetic")
        assert (sweep / job / "metrics.csv").is_file()  # the CSV is kept beside W&B
    assert names == {f"seed={s},codes={c}" for s in (1, 2) for c in ("gumbel", "softmax_ste")}
    assert len(arts) == 4


def test_run_identity_groups_a_default_sweep_dir_by_what_it_sweeps(tmp_path):
    from omegaconf import OmegaConf

    from voxinv.invert.loggers import run_identity

    sweep = tmp_path / "multirun" / "2026-12-07" / "02-55-29"
    sweep.mkdir(parents=True)
    OmegaConf.save(
        {"hydra": {"overrides": {"task": ["model=tiny", "loss=stft,mel", "seed=0,1"]}}}, sweep / "multirun.yaml"
    )
    hc = OmegaConf.create({
        "mode": {"name": "MULTIRUN"}, "sweep": {"dir": str(sweep)}, "job": {"config_name": "config", "override_dirname": "x"},
        "overrides": {"task": ["model=tiny", "loss=mel", "seed=1"]},
    })  # fmt: skip
    ident = run_identity(hc, tmp_path / "0", None, None, ["mine"])
    assert ident == {
        "name": "loss=mel,seed=1",
        "group": "loss,seed 2026-12-07/02-55-29",
        "tags": ["loss=mel", "seed=1", "mine"],
    }
    assert run_identity(hc, tmp_path / "0", "n", "g", [])["group"] == "g"  # settable
