"""The run-directory contract: atomic writes (the umask's mode, no temporary left), metrics merged without loss,
the run directory claim (lock, marker, refusals, only own files removed)."""

from __future__ import annotations

import json
import multiprocessing as mp
import os
import stat
from pathlib import Path

import pytest
import torch

from voxinv import rundir


def _mode(p: Path) -> int:
    return stat.S_IMODE(p.stat().st_mode)


def test_atomic_write_bytes_text_json_callable(tmp_path: Path) -> None:
    umask = os.umask(0o022)
    try:
        _write_all(tmp_path)
    finally:
        os.umask(umask)


def _write_all(tmp_path: Path) -> None:
    assert rundir.atomic_write(tmp_path / "a" / "b.bin", b"\x00\x01").read_bytes() == b"\x00\x01"  # parents made
    assert rundir.atomic_write(tmp_path / "t.txt", "héllo").read_text() == "héllo"
    rundir.write_json(tmp_path / "j.json", {"x": torch.tensor(1.5), "y": [1, 2]})
    assert json.loads((tmp_path / "j.json").read_text()) == {"x": 1.5, "y": [1, 2]}
    assert (tmp_path / "j.json").read_text().endswith("}\n")
    rundir.atomic_write(tmp_path / "v.pt", lambda p: torch.save(torch.arange(3), p))
    assert torch.equal(torch.load(tmp_path / "v.pt", weights_only=True), torch.arange(3))
    for p in (tmp_path / "a" / "b.bin", tmp_path / "t.txt", tmp_path / "j.json", tmp_path / "v.pt"):
        assert _mode(p) == 0o644, p
    assert not [p for p in tmp_path.rglob("*") if p.name.endswith(".tmp")]


def test_failed_write_keeps_the_old_file(tmp_path: Path) -> None:
    p = rundir.atomic_write(tmp_path / "f.txt", "old")

    def boom(tmp: Path) -> None:
        tmp.write_text("half")
        raise OSError("disk full")

    with pytest.raises(OSError, match="disk full"):
        rundir.atomic_write(p, boom)
    assert p.read_text() == "old" and sorted(x.name for x in tmp_path.iterdir()) == ["f.txt"]


def test_read_and_merge_metrics(tmp_path: Path) -> None:
    assert rundir.read_metrics(tmp_path) == {}  # no file yet
    rundir.write_metrics(tmp_path, {"signal": {"si_sdr": 1.0}})
    merged = rundir.merge_metrics(tmp_path, "eval", {"pesq": 3.0})
    assert merged == {"signal": {"si_sdr": 1.0}, "eval": {"pesq": 3.0}}
    assert rundir.read_metrics(tmp_path / rundir.METRICS) == merged  # a dir or the file itself
    rundir.merge_metrics(tmp_path, "eval", {"pesq": 4.0})  # replaces that key only
    assert rundir.read_metrics(tmp_path)["eval"] == {"pesq": 4.0}
    (tmp_path / rundir.METRICS).write_text("{broken")
    with pytest.raises(rundir.RunDirError, match="not valid JSON"):
        rundir.read_metrics(tmp_path)
    (tmp_path / rundir.METRICS).write_text("[1, 2]")
    with pytest.raises(rundir.RunDirError, match="JSON object"):
        rundir.merge_metrics(tmp_path, "k", 1)


def _merge_many(d: str, worker: int, n: int) -> None:
    for i in range(n):
        rundir.merge_metrics(d, f"w{worker}_{i}", i)


def test_concurrent_merges_lose_nothing(tmp_path: Path) -> None:
    """Processes merging different keys at once: every key survives (read-update-replace is locked)."""
    ctx = mp.get_context("spawn")
    procs = [ctx.Process(target=_merge_many, args=(str(tmp_path), w, 15)) for w in range(3)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(60)
        assert p.exitcode == 0
    assert len(rundir.read_metrics(tmp_path)) == 45


def test_claim_overwrite_removes_only_own_files(tmp_path: Path) -> None:
    d = tmp_path / "run"
    (d / "checkpoints").mkdir(parents=True)
    for name in ("codes.safetensors", "metrics.json", "config.yaml", "checkpoints/last.ckpt", "checkpoints/keep.pt"):
        (d / name).write_text("old")
    (d / "mine.txt").write_text("keep")
    (d / "sub").mkdir()
    (d / "sub" / "metrics.json").write_text("keep")  # same name, not the run's (not at its place)
    with pytest.raises(rundir.RunDirError, match="already holds a finished voxinv run"):  # a run without a marker
        rundir.claim(d, "invert")
    c = rundir.claim(d, "invert", overwrite=True)
    try:
        assert c.state == "overwrite" and (d / "codes.safetensors").exists()  # nothing removed before prepare
        c.prepare()
    finally:
        c.release()
    left = sorted(str(p.relative_to(d)) for p in d.rglob("*"))
    assert left == [
        ".voxinv-run.json",
        ".voxinv-run.lock",
        "checkpoints",
        "checkpoints/keep.pt",
        "mine.txt",
        "sub",
        "sub/metrics.json",
    ]
    assert rundir.read_marker(d)["kind"] == "invert"
    with pytest.raises(rundir.RunDirError, match="holds a voxinv invert run"):
        rundir.claim(d, "train_encoder")
    with rundir.claim(d, "invert", resume=True) as c:
        assert c.state == "resume" and rundir.held(d) is c
    assert rundir.held(d) is None


def test_claim_refuses_the_root_and_home(tmp_path: Path) -> None:
    for d in ("/", "/tmp", str(Path.home())):
        with pytest.raises(rundir.RunDirError, match="refusing to use"):
            rundir.claim(d, "invert")
