"""``target=manifest``: invert every clip of a CSV/JSONL manifest, several clips per decoder call,
sharded over processes (``trainer.devices=N``) and over jobs (``target.shard`` / ``target.num_shards``).

Layout under ``target.output_dir`` (the run directory by default)::

    clips/<row>-<name>/     one run directory per clip: exactly what a single-clip run writes
                            (voxinv/rundir.py) + metrics.json "manifest" (row, speaker, text, group)
    parts/shard<k>of<n>.json   the records of shard k (written by its rank 0 when its ranks are done)
    summary.json, summary.csv  every row: done / error, its run directory and final metrics
                               (written once every shard's part exists: by the last shard to finish)

Rows are numbered from 1 (the first data row). Row r belongs to shard ``(r - 1) % num_shards``, and
within a shard the j-th row to process ``j % N``. A process fits its rows in groups of
``target.clips_per_call`` (longest first, so a group pads little), all of a group in one
:class:`~voxinv.invert.module.InversionModule` (one decoder call per step, everything else per clip).

Processes: ``trainer.devices=N`` has Lightning's launcher (Fabric, DDP, gloo) start N processes
(one per GPU on CUDA). They share no parameter and synchronise no gradient — DDP's gradient averaging
would mix different clips' codes — each fits its own rows with a one-device Trainer, and the only
collective is the barrier after which rank 0 writes the shard's part. Clips come out the same whatever
the process count (tests/invert/test_manifest.py).

Every feature of a single-clip run applies per clip: callbacks (early stop, ``callbacks/refine``), the
``logger`` group (each clip its own metrics.csv and, with ``logger=wandb``, its own W&B run named after
the clip and grouped by the manifest run), the gradient balancer, ``export.register`` (each clip's voice
as ``<name>-<row>-<name>``). ``resume=true`` in the same directory keeps the exported clips and
continues an interrupted group from its checkpoint (in its first clip's ``checkpoints/``).

Bad input: a missing or unparsable manifest, or one without a ``path`` column, stops the run before
anything is loaded (one line, exit 2). A clip that cannot be used (missing, unreadable, silent, too
short) is recorded in the summary (status ``error`` with the reason) and skipped: the other clips are
still inverted and exported, then the run exits 2 naming the failed rows.
"""

from __future__ import annotations

import json
import logging
import re
import sys
import time
from collections import Counter
from datetime import timedelta
from pathlib import Path

import torch
from omegaconf import DictConfig, OmegaConf

from voxinv import rundir
from voxinv.invert.rows import ManifestError, Row, read_manifest, shard_rows
from voxinv.invert.target import TargetSource
from voxinv.paths import CONF_DIR

log = logging.getLogger("voxinv")
SUMMARY_JSON, SUMMARY_CSV, PARTS, CLIPS = "summary.json", "summary.csv", "parts", "clips"


class ManifestTarget(TargetSource):
    """``target=manifest`` (conf/target/manifest.yaml): :meth:`check` reads the manifest and the shard
    settings before any model is loaded; the clips are built one by one by :func:`run_manifest`."""

    def __init__(
        self,
        kind: str,
        path: str | None,
        trim: bool,
        trim_db: float,
        peak: float | None,
        max_seconds: float | None,
        clips_per_call: int,
        shard: int,
        num_shards: int,
        output_dir: str | None,
    ):
        super().__init__(kind)
        self.path, self.read = path, {"trim": trim, "trim_db": trim_db, "peak": peak, "max_seconds": max_seconds}
        self.clips_per_call, self.shard, self.num_shards = int(clips_per_call), int(shard), int(num_shards)
        self.output_dir = Path(str(output_dir)) if output_dir else None  # None: the run directory
        self.rows: list[Row] = []

    def check(self) -> None:
        n, k, cpc = self.num_shards, self.shard, self.clips_per_call
        if n < 1 or not 0 <= k < n:
            raise ManifestError(f"target.shard={k} target.num_shards={n}: need 0 <= shard < num_shards")
        if cpc < 1:
            raise ManifestError(f"target.clips_per_call={cpc}: must be >= 1")
        self.rows = read_manifest(self.path)

    def build(self, codec, ckpt):
        raise ValueError("target=manifest has no single target: run it with voxinv.run (one run directory per clip)")


def check_settings(cfg: DictConfig) -> None:
    """What a manifest run refuses (one line each)."""
    if int(cfg.trainer.get("devices", 1)) < 1:
        raise ManifestError(f"trainer.devices={cfg.trainer.devices}: must be >= 1")
    if cfg.resume not in (False, None, "false", True, "true"):
        raise ManifestError(
            f"resume={cfg.resume}: a manifest run resumes in its own directory (resume=true with the same "
            "hydra.run.dir / target.output_dir): finished clips are kept, a group's checkpoint continues"
        )


# ------------------------------------------------------------------------------------- processes
def launch(cfg: DictConfig) -> tuple[torch.device, int, int, object]:
    """(device, rank, world size, barrier) of this process; ``trainer.devices=N > 1`` starts the other
    N-1 processes first (Lightning's launcher re-runs this command with their rank in the environment)."""
    from voxinv.voxtral.device import pick_device

    devices = int(cfg.trainer.get("devices", 1))
    device = pick_device(cfg.device)
    if devices == 1:
        return device, 0, 1, lambda: None
    from lightning_fabric import Fabric
    from lightning_fabric.strategies import DDPStrategy
    from lightning_utilities.core.rank_zero import rank_zero_only

    # gloo on every device: the one collective is a barrier, which may wait for hours on the slowest rank
    strategy = DDPStrategy(process_group_backend="gloo", timeout=timedelta(days=7))
    fabric = Fabric(accelerator="cuda" if device.type == "cuda" else "cpu", devices=devices, strategy=strategy)
    fabric.launch()
    rank_zero_only.rank = 0  # every rank is an independent run writing its own clips' files (their CSV logs too)
    return fabric.device, fabric.global_rank, fabric.world_size, fabric.barrier


# ------------------------------------------------------------------------------------------ run
def run_manifest(cfg: DictConfig, out: Path, source: ManifestTarget) -> dict:
    """Invert this process's rows of the manifest (``source``, checked); returns {"final": {"total":
    mean over the clips}, "rows": their records} (rank 0: its shard's rows, other ranks: their own)."""
    check_settings(cfg)
    rows = source.rows
    cfg.paths.output_dir = str(out)
    base = source.output_dir or out
    _writable(base)
    t = cfg.target
    shard, n_shards = source.shard, source.num_shards
    device, rank, world, barrier = launch(cfg)
    if rank == 0:
        rundir.atomic_write(out / rundir.CONFIG, OmegaConf.to_yaml(cfg, resolve=True))
    mine = shard_rows(rows, shard, n_shards, rank, world)
    log.info(
        "manifest %s: %d rows; shard %d/%d, process %d/%d: %d rows",
        t.path,
        len(rows),
        shard,
        n_shards,
        rank,
        world,
        len(mine),
    )
    from voxinv.invert.guard import sigterm_as_interrupt

    with sigterm_as_interrupt():  # SIGTERM (a scheduler's) like Ctrl-C: the groups done so far stay exported
        records = invert_rows(cfg, mine, base, device) if mine else []
    for r in records:
        r.update(shard=shard, rank=rank)
    parts = base / PARTS
    rundir.write_json(parts / f"shard{shard}of{n_shards}-rank{rank}of{world}.json", records)
    barrier()  # every rank of this shard has written its part
    if rank == 0:
        merged = []
        for r in range(world):
            f = parts / f"shard{shard}of{n_shards}-rank{r}of{world}.json"
            merged += _read_list(f)
        merged.sort(key=lambda r: r["row"])
        rundir.write_json(parts / f"shard{shard}of{n_shards}.json", merged)
        for r in range(world):
            (parts / f"shard{shard}of{n_shards}-rank{r}of{world}.json").unlink(missing_ok=True)
        summary = write_summary(base, rows, n_shards, str(t.path))
        failed = [r for r in merged if r["status"] != "done"]
        done = [r["final_total"] for r in merged if r["status"] == "done"]
        print(
            f"[voxinv] manifest shard {shard}/{n_shards}: {len(merged) - len(failed)} of {len(merged)} clips inverted → "
            f"{base / CLIPS}"
            + (f"; summary: {base / SUMMARY_JSON}" if summary else "; summary when every shard is done"),
            file=sys.stderr,
        )
        if failed:
            raise ManifestError(
                f"{len(failed)} of {len(merged)} clips failed ("
                + "; ".join(f"row {r['row']} ({r['path']}): {r['error']}" for r in failed[:3])
                + ("; …" if len(failed) > 3 else "")
                + f"); the other clips are exported; see {parts / f'shard{shard}of{n_shards}.json'}"
            )
        return {"final": {"total": sum(done) / len(done) if done else float("nan")}, "rows": merged}
    return {"final": {"total": float("nan")}, "rows": records}


def _read_list(path: Path) -> list:
    import json

    return json.loads(path.read_text())


def _writable(d: Path) -> None:
    try:
        rundir.write_probe(d)  # a probe name of its own per process: shards share this directory
    except OSError as e:
        raise ManifestError(f"target.output_dir={d} is not writable ({e.strerror})") from None


def _duration(path: str) -> float:
    """Seconds of a file from its header (ordering only; an unreadable file sorts last and fails on load)."""
    try:
        import soundfile as sf

        return float(sf.info(path).duration)
    except Exception:
        return -1.0


def invert_rows(cfg: DictConfig, rows: list[Row], base: Path, device: torch.device) -> list[dict]:
    """This process's rows, longest first, ``clips_per_call`` at a time; one record per row (``resume``:
    the rows exported before are read back, not inverted again)."""
    from voxinv.voxtral.models import load_model

    model = load_model(cfg.model, device)
    order = sorted(rows, key=lambda r: -_duration(r.path) if r.path else 1.0)
    cpc = int(cfg.target.clips_per_call)
    records: dict[int, dict] = {}
    if cfg.resume in (True, "true"):  # a resumed manifest run: the clips exported before are kept
        for r in order:
            m = rundir.metrics_path(base / CLIPS / r.dirname)
            if m.is_file():
                records[r.row] = _record(r, base, "done", metrics=json.loads(m.read_text()))
        order = [r for r in order if r.row not in records]
        if records:
            log.info("resume: %d clips already exported, %d to invert", len(records), len(order))
    interrupted = None
    i = 0
    while i < len(order):
        if interrupted:
            for r in order[i:]:
                records[r.row] = _record(r, base, "interrupted", error=f"not inverted ({interrupted})")
            break
        clips, start = [], i
        try:
            while i < len(order) and len(clips) < cpc:  # a failed row does not take a place in the group
                r = order[i]
                i += 1
                try:
                    clips.append(prepare_clip(cfg, r, base, model, device))
                except (ValueError, OSError) as e:  # AudioError, FileNotFoundError, … : this row only
                    msg = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
                    where = f"manifest row {r.row} ({r.path or 'no path'})"
                    print(f"voxinv: error: {where}: {msg}; skipped", file=sys.stderr)
                    records[r.row] = _record(r, base, "error", error=msg)
        except KeyboardInterrupt:  # during a clip's read or init: this group and the rest are not inverted
            interrupted, i = "interrupted while preparing a group", start
            for r in order[start:]:
                records.setdefault(r.row, _record(r, base, "interrupted", error=f"not inverted ({interrupted})"))
            break
        if clips:
            interrupted = fit_and_export(cfg, clips, base, device, records)
    return [records[r.row] for r in rows]


def prepare_clip(cfg: DictConfig, row: Row, base: Path, model, device: torch.device):
    """The clip as a single-clip run builds it (same seed, target, losses, parameters, init): its job."""
    import pytorch_lightning as pl
    from hydra.utils import instantiate

    from voxinv.invert.fit import build
    from voxinv.invert.init import initialise

    if not row.path:
        raise ValueError("the row has no path")
    ccfg = clip_config(cfg, row, base)
    source = instantiate(ccfg.target)
    source.check()  # reads the recording: AudioError for this row only
    t0 = time.time()
    pl.seed_everything(int(cfg.seed), workers=True, verbose=False)  # as a single-clip run starts
    out = Path(ccfg.paths.output_dir)
    out.mkdir(parents=True, exist_ok=True)
    rundir.atomic_write(out / rundir.CONFIG, OmegaConf.to_yaml(ccfg, resolve=True))
    job = build(ccfg, out, model, source, device)
    # (also on resume: a group's checkpoint, when it is used, replaces these codes)
    job.init = initialise(instantiate(ccfg.init), job.params, model.eval_codec, job.target, model.ckpt)
    if "interrupted" in job.init:
        raise KeyboardInterrupt(job.init["interrupted"])
    return row, job, t0


def clip_config(cfg: DictConfig, row: Row, base: Path) -> DictConfig:
    """The config of this clip as a single-clip run (``target=file``): rerunning it alone gives the same
    codes. Its W&B run is named after the clip and grouped by the manifest run; a registered voice is
    ``<export.register.name>-<row>-<name>``."""
    d = OmegaConf.to_container(cfg, resolve=True)
    d["target"] = file_target(d["target"], row.path)
    out = base / CLIPS / row.dirname
    d["paths"] = {**d["paths"], "output_dir": str(out), "checkpoint_dir": str(out / rundir.CHECKPOINTS)}
    d["trainer"] = {k: v for k, v in d["trainer"].items() if k != "devices"}
    for lg in (d.get("logger") or {}).values():
        if lg and "save_dir" in lg:
            lg["save_dir"] = str(out)
        if lg and str(lg.get("_target_", "")).endswith("wandb_logger"):
            lg["name"], lg["group"] = lg.get("name") or row.dirname, lg.get("group") or f"manifest {base.name}"
    cb = (d.get("callbacks") or {}).get("checkpoint")
    if cb:  # the group's checkpoint: in its first clip's directory
        cb["dirpath"] = str(out / rundir.CHECKPOINTS)
    reg = (d.get("export") or {}).get("register")
    if reg:
        reg["name"] = re.sub(r"[^A-Za-z0-9_-]", "_", f"{reg['name']}-{row.dirname}")
    return OmegaConf.create(d)


def file_target(manifest_target: dict, path: str) -> dict:
    """``target=file``'s node (``conf/target/file.yaml``, the group ``target=manifest`` extends) with the
    manifest's read settings and one row's ``path``: what ``target=file path=<row>`` composes to."""
    node = OmegaConf.to_container(OmegaConf.load(Path(CONF_DIR) / "target" / "file.yaml"))
    return {**node, **{k: manifest_target[k] for k in node if k not in ("_target_", "kind", "path")}, "path": path}


def fit_and_export(cfg, group: list, base: Path, device: torch.device, records: dict) -> str | None:
    """Fit one group (its clips' jobs in one :func:`~voxinv.invert.fit.fit`), export every clip of it
    (also when interrupted); returns the interrupt, if any."""
    from voxinv.invert.fit import fit
    from voxinv.invert.guard import uninterrupted

    jobs = [job for _, job, _ in group]
    names = [job.out.name for job in jobs]
    log.info("group of %d clips: %s", len(jobs), ", ".join(names))
    t0, cpu0 = time.time(), time.process_time()
    fit(jobs, group_resume(cfg, jobs))
    took = {"group_fit_s": round(time.time() - t0, 3), "group_fit_cpu_s": round(time.process_time() - cpu0, 3)}
    with uninterrupted():
        for r, job, t_start in group:
            try:
                m = export_clip(r, job, t_start, names, took)
            except (ValueError, OSError) as e:
                msg = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
                print(f"voxinv: error: manifest row {r.row} ({r.path}): export failed: {msg}", file=sys.stderr)
                records[r.row] = _record(r, base, "error", error=f"export failed: {msg}")
                continue
            records[r.row] = _record(r, base, "done", metrics=m)
    trainer = jobs[0].trainer
    return f"interrupted at step {trainer.global_step}" if trainer is not None and trainer.interrupted else None


def group_resume(cfg: DictConfig, jobs: list) -> str | None:
    """``resume=true``: the group's checkpoint (in its first clip's directory) when it holds these clips."""
    from voxinv.invert.guard import check_resume_file
    from voxinv.voxtral.checkpoint import load_plain

    p = jobs[0].out / rundir.LAST_CKPT
    if cfg.resume not in (True, "true") or not p.is_file():
        return None
    check_resume_file(str(p))
    held = [c.get("name") for c in load_plain(p)["voxinv"]["clips"]]
    if held != [j.out.name for j in jobs]:
        log.warning("resume: %s holds clips %s, not this group's: starting the group afresh", p, held)
        return None
    return str(p)


def export_clip(r: Row, job, t_start: float, group: list[str], took: dict) -> dict:
    """The single-clip run's files for one clip of a group (+ metrics.json "manifest")."""
    from voxinv.invert.export import evaluate, export, finish

    out = job.out
    m = export(job, t_start)
    man = {"row": r.row, "speaker": r.speaker, "text": r.text, "group": group, **took}
    m["manifest"] = rundir.merge_metrics(out, "manifest", man)["manifest"]
    if r.text:
        rundir.atomic_write(out / rundir.TARGET_TEXT, r.text + "\n")
    evaluate(job.cfg, out, m, job.model.eval_codec)
    finish(job, m)  # voice registration, the loggers' final record, the summary line
    return m


def _record(r: Row, base: Path, status: str, metrics: dict | None = None, error: str | None = None) -> dict:
    rec = {"row": r.row, "name": r.name, "path": r.path, "speaker": r.speaker, "status": status, "error": error}
    rec["run_dir"] = str(Path(CLIPS) / r.dirname) if status == "done" else None
    if metrics:
        s = metrics["signal"]
        rec.update(
            frames=metrics["target"]["frames"],
            seconds=round(metrics["target"]["seconds"], 3),
            final_total=metrics["final"]["total"],
            si_sdr=s["si_sdr"],
            mel=s["mel"],
            best_step=metrics["best_step"],
            steps=metrics["steps"],
            stopped=metrics["stopped"],
        )
        if "truth" in metrics:
            rec["code_sem_acc"] = metrics["truth"]["code_sem_acc"]
    return rec


def write_summary(base: Path, rows: list[Row], n_shards: int, manifest: str) -> bool:
    """summary.json + summary.csv over every shard, once every shard's part exists (under a lock on the
    directory, so of shards finishing together one writes it); False while shards are missing."""
    import pandas as pd

    parts = [base / PARTS / f"shard{k}of{n_shards}.json" for k in range(n_shards)]
    with rundir._locked(base):
        if not all(p.is_file() for p in parts):
            return False
        recs = sorted((r for p in parts for r in _read_list(p)), key=lambda r: r["row"])
        counts = dict(Counter(r["status"] for r in recs))
        rundir.write_json(
            base / SUMMARY_JSON,
            {"manifest": manifest, "rows": len(rows), "status": counts, "shards": n_shards, "clips": recs},
        )
        rundir.atomic_write(base / SUMMARY_CSV, pd.DataFrame(recs).to_csv(index=False))
    return True
