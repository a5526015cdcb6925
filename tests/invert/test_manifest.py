"""``target=manifest`` on the tiny model (CPU): a clip inverted in a padded group equals the clip
inverted alone (same seed: same codes, metrics to float rounding), one run directory per clip plus the
summary, bad rows recorded and skipped, bad manifests one line, and 2 processes (DDP launcher, gloo)
give the same clips as 1 (the DDP test is ``slow``)."""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch
from fast_config import compose_fast

import voxinv.run as R
from voxinv.invert.manifest import SUMMARY_CSV, SUMMARY_JSON
from voxinv.invert.rows import ManifestError, read_manifest, shard_rows
from voxinv.voxtral.codes import load_codes

SR = 24000
FAST = {
    "model": "tiny",
    "device": "cpu",
    "steps": "4",
    "eval_every": "2",
    "eval.which": "[]",
    "init": "random",
    "window.frames": "null",
    "trainer.enable_progress_bar": "false",
    "trainer.log_every_n_steps": "1",
    "target.max_seconds": "null",
}
FILES = (
    "codes.safetensors",
    "reconstruction.wav",
    "target.wav",
    "voice.pt",
    "metrics.json",
    "config.yaml",
    "metrics.csv",
)


@pytest.fixture(autouse=True)
def _env(voxinv_cache, monkeypatch):
    monkeypatch.setenv("VOXINV_CACHE", str(voxinv_cache))


def clip(path: Path, seconds: float, f0: float) -> Path:
    t = np.arange(int(SR * seconds)) / SR
    x = 0.1 * np.sin(2 * np.pi * f0 * t) * (1 + 0.5 * np.sin(2 * np.pi * 3 * t))
    x = x + 0.01 * np.random.default_rng(int(f0)).standard_normal(t.size)
    sf.write(path, x.astype(np.float32), SR)
    return path


@pytest.fixture
def clips(tmp_path) -> Path:
    """Three clips (8, 4, 6 frames: the group pads the shorter ones) and clips.csv naming them."""
    d = tmp_path / "data"
    d.mkdir()
    for name, s, f0 in (("long", 0.64, 150), ("short", 0.32, 220), ("mid", 0.48, 180)):
        clip(d / f"{name}.wav", s, f0)
    (d / "clips.csv").write_text("path,speaker,text\nlong.wav,a,one\nshort.wav,b,two\nmid.wav,a,\n")
    return d


def run_manifest(out: Path, manifest: Path, *overrides: str) -> dict:
    cfg = compose_fast(FAST, "target=manifest", f"target.path={manifest}", *overrides)
    return R.run(cfg, out)


def run_alone(out: Path, audio: Path, *overrides: str) -> dict:
    cfg = compose_fast(FAST, "target=file", f"target.path={audio}", *overrides)
    return R.run(cfg, out)


def same_clip(a: Path, b: Path) -> None:
    """Same codes, metrics to float rounding (batched kernels round differently)."""
    assert torch.equal(load_codes(a / "codes.safetensors"), load_codes(b / "codes.safetensors"))
    ma, mb = (json.loads((d / "metrics.json").read_text()) for d in (a, b))
    assert ma["final"] == pytest.approx(mb["final"], rel=1e-4, abs=1e-6)
    assert ma["signal"]["si_sdr"] == pytest.approx(mb["signal"]["si_sdr"], abs=1e-3)
    assert ma["best_step"] == mb["best_step"] and ma["steps"] == mb["steps"]
    oa = [(h["step"], h["restart"]) for h in ma["history"]]
    assert oa == [(h["step"], h["restart"]) for h in mb["history"]]
    assert [h["objective"] for h in ma["history"]] == pytest.approx([h["objective"] for h in mb["history"]], rel=1e-4)


def test_padded_batch_decode_equals_alone(codec):
    """The decoder is causal: a clip right-padded to a longer partner decodes to the same samples."""
    spf, g = codec.samples_per_frame, torch.Generator().manual_seed(0)
    other = torch.randn(1, 292, 9, generator=g)
    for T in (1, 2, 5):
        lat = torch.randn(1, 292, T, generator=g)
        with torch.no_grad():
            alone = codec.decode_latent(lat)[0, 0]
            for fill in (0.0, 3.0):  # whatever the pad holds
                padded = torch.nn.functional.pad(lat, (0, 9 - T), value=fill)
                both = codec.decode_latent(torch.cat([padded, other]))[0, 0, : T * spf]
                assert torch.allclose(both, alone, atol=1e-5), (T, fill)


def test_clip_in_group_equals_clip_alone(tmp_path, clips):
    """The short clip, padded in a group with longer partners (2 restarts each, Gumbel noise, per-clip
    best restart), equals the short clip inverted alone with target=file, same seed."""
    # SGD with an active clip: any change of a clip's gradient (its scale, a shared norm) changes its codes
    o = ("batch=2", "codes=gumbel", "optim=sgd", "optim.lr=200", "optim.grad_clip=0.5")
    m = run_manifest(tmp_path / "group", clips / "clips.csv", "target.clips_per_call=3", *o)
    assert [r["status"] for r in m["rows"]] == ["done"] * 3
    base = tmp_path / "group"
    for r in m["rows"]:
        d = base / r["run_dir"]
        for f in FILES:
            assert (d / f).is_file(), (d, f)
        man = json.loads((d / "metrics.json").read_text())["manifest"]
        assert man["row"] == r["row"] and len(man["group"]) == 3  # all three shared the decoder calls
    assert (base / "clips/00001-long/target.txt").read_text() == "one\n"
    assert not (base / "clips/00003-mid/target.txt").exists()
    alone = tmp_path / "alone"
    run_alone(alone, clips / "short.wav", *o)
    same_clip(base / "clips/00002-short", alone)
    # the summary lists every row
    s = json.loads((base / SUMMARY_JSON).read_text())
    assert s["status"] == {"done": 3} and [c["row"] for c in s["clips"]] == [1, 2, 3]
    assert (base / SUMMARY_CSV).read_text().count("\n") == 4


def test_bad_rows_recorded_and_skipped(tmp_path, clips, monkeypatch, capsys):
    """A missing and an unreadable clip: each one line naming its row; the good clip is exported; exit 2."""
    (clips / "junk.wav").write_text("not audio")
    (clips / "bad.csv").write_text("path\nshort.wav\nnope.wav\njunk.wav\n")
    monkeypatch.setattr(
        sys,
        "argv",
        ["voxinv.run", f"hydra.run.dir={tmp_path / 'run'}", "target=manifest", f"target.path={clips / 'bad.csv'}"]
        + [f"{k}={v}" for k, v in FAST.items()],
    )
    with pytest.raises(SystemExit) as e:
        R.main()
    assert e.value.code == 2
    err = [ln for ln in capsys.readouterr().err.splitlines() if ln.startswith("voxinv: error:")]
    assert any("row 2" in ln and "nope.wav" in ln and "does not exist" in ln for ln in err), err
    assert any("row 3" in ln and "junk.wav" in ln and "cannot read" in ln for ln in err), err
    assert "2 of 3 clips failed" in err[-1]
    s = json.loads((tmp_path / "run" / SUMMARY_JSON).read_text())
    assert [c["status"] for c in s["clips"]] == ["done", "error", "error"]
    assert (tmp_path / "run" / s["clips"][0]["run_dir"] / "codes.safetensors").is_file()


@pytest.mark.parametrize(
    ("content", "says"),
    [(None, "does not exist"), ("file,speaker\na.wav,x\n", "no `path` column"), ("path\n", "has no rows")],
)
def test_bad_manifest_is_one_line(tmp_path, content, says):
    p = tmp_path / "m.csv"
    if content is not None:
        p.write_text(content)
    with pytest.raises(ManifestError, match=says):
        read_manifest(p)


def test_jsonl_and_sharding(tmp_path):
    p = tmp_path / "m.jsonl"
    p.write_text("".join(json.dumps({"path": f"c{i}.wav", "speaker": "s"}) + "\n" for i in range(7)))
    rows = read_manifest(p)
    assert [r.path for r in rows] == [str(tmp_path / f"c{i}.wav") for i in range(7)] and rows[0].speaker == "s"
    parts = [shard_rows(rows, k, 2, r, 2) for k in range(2) for r in range(2)]
    assert sorted(r.row for p_ in parts for r in p_) == list(range(1, 8))  # every row once
    assert [r.row for r in parts[0]] == [1, 5] and [r.row for r in parts[1]] == [3, 7]


def _cli(tmp_path: Path, out: Path, *args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(Path(R.__file__).parents[1]), "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "-m", "voxinv.run", f"hydra.run.dir={out}", *[f"{k}={v}" for k, v in FAST.items()], *args]
    return subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=tmp_path, timeout=600)


@pytest.mark.slow
def test_two_processes_equal_one(tmp_path, clips, voxinv_cache):
    """trainer.devices=2 (Lightning's DDP launcher, gloo, CPU): each process fits its own clips; every
    clip equals the 1-process run's, rank 0 writes the summary of all rows."""
    o = ("target=manifest", f"target.path={clips / 'clips.csv'}", "steps=3")
    one = _cli(tmp_path, tmp_path / "one", *o, "target.clips_per_call=3")  # one group of three
    assert one.returncode == 0, one.stderr[-3000:]
    two = _cli(tmp_path, tmp_path / "two", *o, "target.clips_per_call=2", "trainer.devices=2")  # {long, mid} | {short}
    assert two.returncode == 0, two.stderr[-3000:]
    s1, s2 = (json.loads((tmp_path / d / SUMMARY_JSON).read_text()) for d in ("one", "two"))
    assert [c["rank"] for c in s2["clips"]] == [0, 1, 0] and {c["rank"] for c in s1["clips"]} == {0}
    for c in s1["clips"]:
        same_clip(tmp_path / "one" / c["run_dir"], tmp_path / "two" / c["run_dir"])
    assert not list((tmp_path / "two" / "parts").glob("*-rank*"))  # merged into the shard's part


def test_shards_share_one_summary(tmp_path, clips):
    """Two array shards (target.shard=0,1) into one output directory: each writes its rows' run
    directories and its part; the second to finish writes the summary of all rows."""
    o = ("steps=1", "eval_every=1", f"target.output_dir={tmp_path / 'shared'}", "target.num_shards=2")
    a = run_manifest(tmp_path / "job0", clips / "clips.csv", "target.shard=0", *o)
    assert [r["row"] for r in a["rows"]] == [1, 3] and not (tmp_path / "shared" / SUMMARY_JSON).exists()
    b = run_manifest(tmp_path / "job1", clips / "clips.csv", "target.shard=1", *o)
    assert [r["row"] for r in b["rows"]] == [2]
    s = json.loads((tmp_path / "shared" / SUMMARY_JSON).read_text())
    assert [(c["row"], c["shard"], c["status"]) for c in s["clips"]] == [(1, 0, "done"), (2, 1, "done"), (3, 0, "done")]


def test_clip_target_is_what_target_file_composes(tmp_path):
    """Each clip's target node is target=file's (its group file, not a hand-built copy) with the
    manifest's read settings: rerunning a clip alone composes the same node."""
    from omegaconf import OmegaConf

    from voxinv.invert.manifest import clip_config
    from voxinv.invert.rows import Row

    read = ("target.trim=false", "target.trim_db=-30", "target.peak=0.5", "target.max_seconds=3")
    cfg = compose_fast(FAST, "target=manifest", "target.path=m.csv", f"paths.output_dir={tmp_path}", *read)
    row = Row(row=1, path=str(tmp_path / "a.wav"), name="a")
    alone = compose_fast(FAST, "target=file", f"target.path={tmp_path / 'a.wav'}", *read)
    got = clip_config(cfg, row, tmp_path).target
    assert OmegaConf.to_container(got) == OmegaConf.to_container(alone.target, resolve=True)


def test_devices_need_a_manifest():
    from voxinv.invert.settings import trainer_settings

    with pytest.raises(ValueError, match="target=manifest"):
        trainer_settings({"devices": 2, "deterministic": True}, torch.device("cpu"))
    assert "devices" not in trainer_settings({"devices": 1}, torch.device("cpu"))


def test_refuses_a_resume_path(tmp_path, clips):
    """A manifest run resumes in its own directory (resume=true); a checkpoint path is one line, before
    any model is loaded. Callbacks, loggers, the balancer and voice registration all apply per clip."""
    from voxinv.invert.manifest import check_settings

    base = ("target=manifest", f"target.path={clips / 'clips.csv'}")
    with pytest.raises(ManifestError, match="resumes in its own directory"):
        check_settings(compose_fast(FAST, *base, f"resume={tmp_path / 'x.ckpt'}"))
    for ok in ([], ["resume=true"], ["callbacks/refine=worst_frames", "loss.balancer.enabled=true"]):
        check_settings(compose_fast(FAST, *base, *ok))


def test_group_has_every_single_clip_feature(tmp_path, clips, wandb_offline, wandb_records):
    """Refinement, the gradient balancer, W&B (one offline run per clip, named after it, grouped by the
    manifest run) and voice registration in a group of three: the short clip still equals the short clip
    inverted alone with the same features."""
    from test_loggers import _wandb_run

    ov = tmp_path / "ov"
    o = ("batch=2", "codes=gumbel", "callbacks/refine=worst_frames", "callbacks.refine.rounds=1")
    o += ("loss=stft+mel+balanced", "logger=many", f"export.register={{name: v, overlay: {ov}}}")
    m = run_manifest(tmp_path / "group", clips / "clips.csv", "target.clips_per_call=3", *o)
    assert [r["status"] for r in m["rows"]] == ["done"] * 3
    alone = tmp_path / "alone"
    run_alone(alone, clips / "short.wav", *o)
    same_clip(tmp_path / "group/clips/00002-short", alone)
    ids = set()
    for r in m["rows"]:
        d = tmp_path / "group" / r["run_dir"]
        hist = json.loads((d / "metrics.json").read_text())["history"]
        assert [h.get("refine_round") for h in hist][-1] == 1  # refined after its last step
        assert torch.equal(
            torch.load(ov / "voice_embedding" / f"v-{d.name}.pt", weights_only=True),
            torch.load(d / "voice.pt", weights_only=True),
        )
        (run_dir,) = (d / "wandb").glob("offline-run-*")
        w = _wandb_run(run_dir, wandb_records)
        assert (
            w["name"] == d.name
            and w["group"] == "manifest group"
            and w["id"] == (d / "wandb-run-id").read_text().strip()
        )
        assert [h["trainer/global_step"] for h in w["history"] if "eval/objective" in h] == [h["step"] for h in hist]
        assert w["summary"]["final/loss_total"] == pytest.approx(
            json.loads((d / "metrics.json").read_text())["final"]["total"]
        )
        ids.add(w["id"])
        rows = list(csv.DictReader(open(d / "metrics.csv")))  # its own training scalars, every logged step
        assert sorted(int(x["step"]) for x in rows if x.get("loss")) == [0, 1, 2, 3], rows
        assert all(float(x["train/lr"]) > 0 for x in rows if x.get("loss"))
    assert len(ids) == 3  # a run per clip


def test_resumed_group_equals_uninterrupted(tmp_path, clips, monkeypatch):
    """A manifest run killed in the middle of its first group ({long, mid}), resumed with resume=true in
    the same directory: the group continues from its checkpoint, every clip equals the uninterrupted run's."""
    import voxinv.invert.callbacks as C

    o = ("target.clips_per_call=2", "steps=4", "checkpoint_every=2", "codes=gumbel", "batch=2")
    run_manifest(tmp_path / "whole", clips / "clips.csv", *o)

    class Killed(C.EvalLogger):
        def on_train_batch_end(self, trainer, *args):
            if trainer.global_step >= 3:
                raise RuntimeError("killed")

    with monkeypatch.context() as mp:
        mp.setattr(C, "EvalLogger", Killed)
        with pytest.raises(RuntimeError, match="killed"):
            run_manifest(tmp_path / "cut", clips / "clips.csv", *o)
    ck = torch.load(tmp_path / "cut/clips/00001-long/checkpoints/last.ckpt", weights_only=True)
    assert ck["global_step"] == 2 and [c["name"] for c in ck["voxinv"]["clips"]] == ["00001-long", "00003-mid"]
    m = run_manifest(tmp_path / "cut", clips / "clips.csv", *o, "resume=true")
    assert [r["status"] for r in m["rows"]] == ["done"] * 3
    for r in m["rows"]:
        same_clip(tmp_path / "whole" / r["run_dir"], tmp_path / "cut" / r["run_dir"])
