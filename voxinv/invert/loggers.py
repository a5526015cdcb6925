"""Experiment loggers (``conf/logger/*.yaml`` → ``hydra.utils.instantiate``) that survive a resume, and
the end-of-run record every logger gets.

- :class:`CSVLogger`: ``<run dir>/metrics.csv``, appended across resumes (Lightning's deletes it).
- :func:`wandb_logger`: a W&B run whose id is kept in ``<run dir>/wandb-run-id`` so a resumed run
  continues the same W&B run (``resume="allow"``); offline without credentials, never prompts.
- :func:`log_final`: the exported run's final metrics and the best evaluation, written explicitly
  (a last CSV row; the W&B summary), plus the W&B artifact (voice, codes, audio) and comparison table.
"""

from __future__ import annotations

import csv
import logging
import uuid
import warnings
from pathlib import Path
from typing import Any

from pytorch_lightning.loggers import CSVLogger as _PLCSVLogger
from pytorch_lightning.loggers import Logger
from pytorch_lightning.loggers.csv_logs import ExperimentWriter
from pytorch_lightning.loggers.logger import rank_zero_experiment

from voxinv import rundir

log = logging.getLogger("voxinv")
WANDB_ID_FILE = "wandb-run-id"
ARTIFACT_FILES = (rundir.VOICE, rundir.CODES, rundir.RECONSTRUCTION, rundir.METRICS)


def quiet_lightning() -> None:
    """Lightning's INFO banners (GPU/TPU lines, the litlogger tip, "fit stopped") and its own use of a
    deprecated torch pytree API are noise for a one-device optimisation; its warnings still show."""
    for name in ("pytorch_lightning", "lightning.pytorch", "lightning_fabric", "lightning.fabric"):
        logging.getLogger(name).setLevel(logging.WARNING)
    warnings.filterwarnings("ignore", module=r"pytorch_lightning\.utilities\._pytree")
    # the checkpoint holding the state after the step is what resume needs (tests/test_run.py: resume equals an uninterrupted run)
    warnings.filterwarnings("ignore", message="Using ModelCheckpoint with manual optimization")
    # the "data" is one fixed target and empty batches: there is no loader position to restore
    warnings.filterwarnings("ignore", message="You're resuming from a checkpoint that ended before the epoch ended")
    # training scalars every trainer.log_every_n_steps; a run shorter than that still logs every evaluation
    warnings.filterwarnings("ignore", message=r"The number of training batches \(\d+\) is smaller than the logging")


# ------------------------------------------------------------------------------------------- CSV
class _AppendingWriter(ExperimentWriter):
    """Lightning's CSV writer, but an existing ``metrics.csv`` is continued, not deleted."""

    def _check_log_dir_exists(self) -> None:  # Lightning's deletes metrics.csv (and warns)
        self._fs.makedirs(self.log_dir, exist_ok=True)
        if self._fs.isfile(self.metrics_file_path):
            with self._fs.open(self.metrics_file_path, "r", newline="") as f:
                self.metrics_keys = list(csv.DictReader(f).fieldnames or [])

    def keep_until(self, step: int) -> None:
        """Drop the rows logged after ``step`` (a resumed run logs them again) and the previous
        segment's ``final/`` row (it writes its own); ``step < 0``: all rows."""
        self.save()
        if not self._fs.isfile(self.metrics_file_path):
            return
        with self._fs.open(self.metrics_file_path, "r", newline="") as f:
            rows = [
                r
                for r in csv.DictReader(f)
                if int(float(r["step"])) <= step and not any(v for k, v in r.items() if k.startswith("final/"))
            ]
        if not rows:
            self._fs.rm_file(self.metrics_file_path)
            self.metrics_keys = []
            return
        with self._fs.open(self.metrics_file_path, "w", newline="") as f:
            w = csv.DictWriter(f, fieldnames=self.metrics_keys)
            w.writeheader()
            w.writerows(rows)


class CSVLogger(_PLCSVLogger):
    """``<save_dir>/metrics.csv``: one row per ``log_metrics`` call (training scalars every
    ``trainer.log_every_n_steps``, every evaluation at its own step, one ``final/``+``best/`` row)."""

    def __init__(self, save_dir: str) -> None:
        super().__init__(save_dir=save_dir, name="", version="")

    @property
    @rank_zero_experiment
    def experiment(self) -> _AppendingWriter:
        if self._experiment is None:
            self._experiment = _AppendingWriter(log_dir=self.log_dir)
        return self._experiment

    def start_at(self, step: int) -> None:
        """Called when training (re)starts at ``step``: rows past it go; a fresh run (0) starts empty."""
        self.experiment.keep_until(step if step > 0 else -1)


# ------------------------------------------------------------------------------------------ W&B
def _hydra_job() -> Any:
    from hydra.core.hydra_config import HydraConfig

    try:
        return HydraConfig.get()
    except ValueError:  # not under @hydra.main (tests, notebooks)
        return None


def wandb_logger(
    save_dir: str,
    project: str,
    entity: str | None,
    group: str | None,
    name: str | None,
    mode: str,
    tags: list[str],
    run_config: dict | None = None,
    resume: bool = False,
) -> Logger:
    """A :class:`~pytorch_lightning.loggers.WandbLogger` that resumes the run directory's W&B run.

    ``name`` defaults to the job's overrides (``loss=stft+spk,seed=1``; the run directory's name
    without any), ``group`` in a multirun to the sweep (its ``--config-name``, else its directory).
    ``mode: auto`` is online when credentials exist, else offline (``wandb sync`` later)."""
    import wandb
    from pytorch_lightning.loggers import WandbLogger

    out = Path(save_dir)
    if mode == "auto":
        mode = "online" if wandb.login(prompt=False, verify=False) else "offline"  # never prompts
    hc = _hydra_job()
    if name is None:
        name = (hc.job.override_dirname if hc else "") or out.name
    if group is None and hc is not None and hc.mode.name == "MULTIRUN":
        group = hc.job.config_name if hc.job.config_name != "config" else Path(hc.sweep.dir).name
    if wandb.run is not None:  # left open by a job of this multirun that raised: close it as failed
        wandb.finish(exit_code=1)
    id_file = out / WANDB_ID_FILE
    if resume and id_file.is_file():
        run_id = id_file.read_text().strip()
    else:
        run_id = uuid.uuid4().hex[:8]  # W&B's id format: 8 lowercase hex/alnum
        out.mkdir(parents=True, exist_ok=True)
        id_file.write_text(run_id + "\n")
    lg = WandbLogger(
        project=project,
        entity=entity,
        group=group,
        name=name,
        save_dir=str(out),
        mode=mode,
        tags=list(tags),
        config=run_config,
        id=run_id,
        resume="allow",
        log_model=False,
        settings=wandb.Settings(quiet=True),
    )
    # Lightning passes anonymous=None, which this wandb answers with a deprecation line on every run
    lg._wandb_init.pop("anonymous", None)
    return lg


def build_logger(cfg: Any, resume: bool) -> Logger:
    """``conf/logger/<name>.yaml`` instantiated, given what it accepts of: ``run_config`` (the resolved
    run config) and ``resume`` (whether this run continues a checkpoint)."""
    import inspect

    from hydra.utils import get_object, instantiate
    from omegaconf import OmegaConf

    params = inspect.signature(get_object(cfg.logger._target_)).parameters
    extra = {"run_config": OmegaConf.to_container(cfg, resolve=True), "resume": resume}
    return instantiate(cfg.logger, _partial_=True)(**{k: v for k, v in extra.items() if k in params})


def is_wandb(logger: Logger) -> bool:
    return type(logger).__name__ == "WandbLogger"


def start_at(loggers: list[Logger], step: int) -> None:
    for lg in loggers:
        if isinstance(lg, CSVLogger):
            lg.start_at(step)


# ----------------------------------------------------------------------------------- end of run
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

    from voxinv.invert.callbacks import spectrogram_figure

    run = lg.experiment
    run.summary.update(rec)  # explicit: not "whatever was logged last"
    # the deliverable, versioned per target (re-runs of one recording are versions of one artifact)
    target = str((metrics.get("target") or {}).get("name") or "run")
    art = wandb.Artifact(_artifact_name(f"voice-{target}"), type="voice", metadata=rec)
    for f in ARTIFACT_FILES:
        if (out / f).is_file():
            art.add_file(str(out / f))
    run.log_artifact(art, aliases=["latest", f"step-{step}"])
    # one row per run under one key: the workspace shows the runs' rows side by side
    tgt, sr = sf.read(str(out / rundir.TARGET), dtype="float32")
    recon, _ = sf.read(str(out / rundir.RECONSTRUCTION), dtype="float32")
    fig = spectrogram_figure(torch.from_numpy(tgt), torch.from_numpy(recon), sr, run.name or "")
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
