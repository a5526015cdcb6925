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
``target.clips_per_call`` (longest first, so a group pads little): :mod:`voxinv.invert.batch`.

Processes: ``trainer.devices=N`` has Lightning's launcher (Fabric, DDP, gloo) start N processes
(one per GPU on CUDA). They share no parameter and synchronise no gradient — DDP's gradient averaging
would mix different clips' codes — each fits its own rows with a one-device Trainer, and the only
collective is the barrier after which rank 0 writes the shard's part. Clips come out the same whatever
the process count (tests/invert/test_manifest.py).

Bad input: a missing or unparsable manifest, or one without a ``path`` column, stops the run before
anything is loaded (one line, exit 2). A clip that cannot be used (missing, unreadable, silent, too
short) is recorded in the summary (status ``error`` with the reason) and skipped: the other clips are
still inverted and exported, then the run exits 2 naming the failed rows.
"""

from __future__ import annotations

import logging
import re
import sys
import time
from collections import Counter
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path

import torch
from omegaconf import DictConfig, OmegaConf

from voxinv import rundir
from voxinv.invert.target import TargetSource

log = logging.getLogger("voxinv")
SUMMARY_JSON, SUMMARY_CSV, PARTS, CLIPS = "summary.json", "summary.csv", "parts", "clips"
FILE_TARGET = "voxinv.invert.target.FileTarget"  # each clip's config: target=file


class ManifestError(ValueError):
    """The manifest (or its settings) cannot be used at all."""


@dataclass
class Row:
    row: int  # 1-based data row
    path: str  # audio file ("" when the row has none)
    name: str  # the run directory's name: <row>-<name>
    speaker: str | None = None
    text: str | None = None

    @property
    def dirname(self) -> str:
        return f"{self.row:05d}-{self.name}"


def read_manifest(path: str | Path) -> list[Row]:
    """The rows of an audio list (:mod:`voxinv.manifests`: ``.csv`` / ``.tsv`` / ``.jsonl`` / ``.json`` with a
    ``path`` column; optional ``speaker``, ``text``, ``name``); relative audio paths are taken relative to
    the manifest's directory."""
    from voxinv.manifests import AudioListError, read_audio_list

    if not path:
        raise ManifestError("target=manifest needs target.path=<a .csv or .jsonl file with a `path` column>")
    try:
        clips = read_audio_list(path)
    except AudioListError as e:
        raise ManifestError(f"{e} (target.path)") from None
    return [
        Row(c.row, c.path, _safe(c.name or (Path(c.path).stem if c.path else "missing")), c.speaker, c.text)
        for c in clips
    ]


def _safe(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "_", name)[:80] or "clip"


def shard_rows(rows: list[Row], shard: int, num_shards: int, rank: int = 0, world: int = 1) -> list[Row]:
    """Row r → shard ``(r - 1) % num_shards``; within the shard the j-th row → process ``j % world``."""
    mine = [r for r in rows if (r.row - 1) % num_shards == shard]
    return mine[rank::world]


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
    if cfg.resume not in (False, None, "false"):
        raise ManifestError(
            "resume is not supported with target=manifest (rerun the failed rows as a smaller manifest)"
        )
    # a group applies these itself (progress bar; early stop per clip; evaluations into each clip's
    # metrics.csv); checkpoints need resume. Any other callback would be silently skipped: refused.
    handled = ("checkpoint", "eval_logger", "progress_bar", "early_stop")
    extra = sorted(k for k, v in cfg.callbacks.items() if v is not None and k not in handled)
    if extra:
        raise ManifestError(
            f"callbacks {', '.join(extra)} are not applied in target=manifest groups: drop them "
            f"({' '.join(f'callbacks.{k}=null' for k in extra)}) or invert those clips one by one"
        )
    other = sorted(k for k, v in (cfg.get("logger") or {}).items() if v is not None and k != "csv")
    if other:
        log.warning("target=manifest logs each clip to its metrics.csv; logger %s is not used", ",".join(other))
    if cfg.export.register:
        raise ManifestError(
            "export.register names one voice: register a manifest's voices one by one (voxinv register-voice)"
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
    """This process's rows, longest first, ``clips_per_call`` at a time; one record per row."""
    from voxinv.voxtral.models import load_model

    model = load_model(cfg.model, device)
    order = sorted(rows, key=lambda r: -_duration(r.path) if r.path else 1.0)
    cpc = int(cfg.target.clips_per_call)
    records: dict[int, dict] = {}
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
    """The clip as a single-clip run builds it (same seed, target, losses, parameters, init)."""
    import pytorch_lightning as pl
    from hydra.utils import instantiate

    from voxinv.invert.batch import Clip
    from voxinv.invert.fit import build, make_module
    from voxinv.invert.init import initialise

    if not row.path:
        raise ValueError("the row has no path")
    ccfg = clip_config(cfg, row, base)
    source = instantiate(ccfg.target)
    source.check()  # reads the recording: AudioError for this row only
    t0 = time.time()
    pl.seed_everything(int(cfg.seed), workers=True, verbose=False)  # as a single-clip run starts
    job = build(ccfg, Path(ccfg.paths.output_dir), model, source, device)
    job.init = initialise(instantiate(ccfg.init), job.params, model.eval_codec, job.target, model.ckpt)
    if "interrupted" in job.init:
        raise KeyboardInterrupt(job.init["interrupted"])
    job.module = make_module(job)  # its evaluation, best restart, NaN watch: the single-clip code
    return Clip(module=job.module, info={"name": row.dirname, "row": row, "job": job, "t0": t0})


def clip_config(cfg: DictConfig, row: Row, base: Path) -> DictConfig:
    """The config of this clip as a single-clip run (``target=file``): rerunning it alone gives the same codes."""
    d = OmegaConf.to_container(cfg, resolve=True)
    t = d["target"]
    keep = ("trim", "trim_db", "peak", "max_seconds")
    d["target"] = {"_target_": FILE_TARGET, "kind": "file", "path": row.path, **{k: t[k] for k in keep}}
    out = base / CLIPS / row.dirname
    d["paths"] = {**d["paths"], "output_dir": str(out), "checkpoint_dir": str(out / rundir.CHECKPOINTS)}
    d["trainer"] = {k: v for k, v in d["trainer"].items() if k != "devices"}
    return OmegaConf.create(d)


def fit_and_export(cfg, clips, base: Path, device: torch.device, records: dict) -> str | None:
    """Fit one group, export every clip of it (also when interrupted); returns the interrupt, if any."""
    from voxinv.invert.batch import fit_group
    from voxinv.invert.guard import uninterrupted

    names = [c.info["name"] for c in clips]
    log.info("group of %d clips: %s", len(clips), ", ".join(names))
    interrupted, _ = fit_group(cfg, clips[0].module.frozen.codec, clips, device, str(base))
    with uninterrupted():
        for c in clips:
            r = c.info["row"]
            try:
                m = export_clip(c, names)
            except (ValueError, OSError) as e:
                msg = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
                print(f"voxinv: error: manifest row {r.row} ({r.path}): export failed: {msg}", file=sys.stderr)
                records[r.row] = _record(r, base, "error", error=f"export failed: {msg}")
                continue
            records[r.row] = _record(r, base, "done", metrics=m)
    return interrupted


@dataclass
class _GroupTrainer:
    """What export / finish read of a single run's trainer, for one clip of a group: its own step
    count and its own logger (``metrics.csv`` in its run directory)."""

    global_step: int
    loggers: list


def export_clip(c, group: list[str]) -> dict:
    """The single-clip run's files for one clip of a group (+ metrics.json "manifest", metrics.csv)."""
    from voxinv.invert.export import evaluate, export, finish
    from voxinv.invert.loggers import CSVLogger

    job, r = c.info["job"], c.info["row"]
    out = job.out
    out.mkdir(parents=True, exist_ok=True)
    rundir.atomic_write(out / rundir.CONFIG, OmegaConf.to_yaml(job.cfg, resolve=True))
    lg = CSVLogger(save_dir=str(out))  # every evaluation at its step, then the final row (finish)
    for h in c.module.history:
        skip = ("step", "restart", *rundir.CLOCK_KEYS)
        lg.log_metrics({f"eval/{k}": float(v) for k, v in h.items() if k not in skip}, step=int(h["step"]))
    job.trainer, job.stopped = _GroupTrainer(c.steps, [lg]), c.stopped
    m = export(job, c.info["t0"])
    man = {"row": r.row, "speaker": r.speaker, "text": r.text, "group": group}
    man.update(group_fit_s=c.info["group_wall_s"], group_fit_cpu_s=c.info["group_cpu_s"])
    m["manifest"] = rundir.merge_metrics(out, "manifest", man)["manifest"]
    if r.text:
        rundir.atomic_write(out / rundir.TARGET_TEXT, r.text + "\n")
    evaluate(job.cfg, out, m)
    finish(job, m)  # the final CSV row, the summary line
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
