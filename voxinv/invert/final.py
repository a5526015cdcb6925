"""The end-of-run record every logger gets (:func:`log_final`): the exported run's final metrics and
the best evaluation, written explicitly (a last CSV row; the W&B summary), plus the W&B artifact
(voice, codes, audio) and the comparison table."""

from __future__ import annotations

from pathlib import Path

from pytorch_lightning.loggers import Logger

from voxinv import rundir
from voxinv.invert.callbacks import media_spectrogram
from voxinv.invert.loggers import is_wandb

ARTIFACT_FILES = (rundir.VOICE, rundir.CODES, rundir.RECONSTRUCTION, rundir.METRICS)


def final_record(metrics: dict) -> dict[str, float]:
    """``final/*``: the exported codes' losses, signal and code metrics; ``best/*``: the evaluation
    they come from (by the discrete objective), with its step."""
    rec: dict[str, float] = {}
    for group in ("final", "signal", "truth"):
        for k, v in (metrics.get(group) or {}).items():
            if isinstance(v, (int, float)):
                rec[f"final/{k if group != 'final' else 'loss_' + k}"] = float(v)
    best = [h for h in metrics.get("history", []) if h["step"] == metrics.get("best_step")]
    if best:
        rec.update({f"best/{k}": float(v) for k, v in best[-1].items() if k not in rundir.CLOCK_KEYS})
    return rec


def log_final(loggers: list[Logger], out: Path, metrics: dict) -> None:
    """Write the end-of-run record to every logger, then close them (W&B: summary, artifact, table)."""
    rec = final_record(metrics)
    step = int(metrics["steps"])
    for lg in loggers:
        if is_wandb(lg):
            _wandb_final(lg, out, metrics, rec, step)
        else:
            lg.log_metrics(rec, step=step)
            lg.save()
        lg.finalize("success" if not metrics.get("stopped") else "interrupted")


def _wandb_final(lg: Logger, out: Path, metrics: dict, rec: dict[str, float], step: int) -> None:
    import matplotlib.pyplot as plt
    import soundfile as sf
    import torch
    import wandb

    run = lg.experiment
    run.summary.update(rec)  # explicit: not "whatever was logged last"
    # the deliverable, one artifact per run (a resumed run adds a version): the configurations of a
    # sweep on one recording are not versions of each other; the target is in the metadata
    target = str((metrics.get("target") or {}).get("name") or "?")
    meta = {**rec, "target": target, "run_name": run.name, "stopped": metrics.get("stopped")}
    art = wandb.Artifact(_artifact_name(f"voice-{run.name or 'run'}-{run.id}"), type="voice", metadata=meta)
    for f in ARTIFACT_FILES:
        if (out / f).is_file():
            art.add_file(str(out / f))
    run.log_artifact(art, aliases=["latest", f"step-{step}"])
    # one row per run under one key: the workspace shows the runs' rows side by side
    tgt, sr = sf.read(str(out / rundir.TARGET), dtype="float32")
    recon, _ = sf.read(str(out / rundir.RECONSTRUCTION), dtype="float32")
    fig = media_spectrogram(torch.from_numpy(tgt), torch.from_numpy(recon), sr, run.name or "")
    keys = sorted(k for k in rec if k.startswith("final/"))
    table = wandb.Table(columns=["run", "target", "reconstruction", "spectrogram", *keys])
    table.add_data(
        run.name,
        wandb.Audio(tgt, sample_rate=sr, caption="target"),
        wandb.Audio(recon, sample_rate=sr, caption="reconstruction"),
        wandb.Image(fig),
        *[rec[k] for k in keys],
    )
    plt.close(fig)
    run.log({"runs/comparison": table, "trainer/global_step": step})
    run.finish()


def _artifact_name(s: str) -> str:
    """W&B artifact names allow letters, digits, ``-``, ``_`` and ``.``."""
    return "".join(c if c.isalnum() or c in "-_." else "_" for c in s)[:128]
