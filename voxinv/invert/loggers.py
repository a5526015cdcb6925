"""Experiment loggers (``conf/logger/*.yaml`` → ``hydra.utils.instantiate``) that survive a resume.

- :class:`CSVLogger`: ``<run dir>/metrics.csv``, appended across resumes (Lightning's deletes it).
- :func:`wandb_logger`: a W&B run whose id is kept in ``<run dir>/wandb-run-id`` so a resumed run
  continues the same W&B run (``resume="allow"``); offline without credentials, never prompts. Its
  transaction log is flushed every second (a SIGKILL loses at most the last second), and a resumed
  run replays what the checkpoint and metrics.csv know but W&B may have lost (:func:`replay`).
- :func:`build_loggers`: every entry of the ``logger`` node (``logger=many`` or ``logger=[csv,wandb]``),
  with the CSV logger always among them.

The end-of-run record every logger gets: :mod:`voxinv.invert.final`.
"""

from __future__ import annotations

import csv
import logging
import os
import sys
import time
import uuid
import warnings
from pathlib import Path
from typing import Any

from hydra.experimental.callback import Callback as HydraCallback
from pytorch_lightning.loggers import CSVLogger as _PLCSVLogger
from pytorch_lightning.loggers import Logger
from pytorch_lightning.loggers.csv_logs import ExperimentWriter
from pytorch_lightning.loggers.logger import rank_zero_experiment

from voxinv import rundir

log = logging.getLogger("voxinv")
WANDB_ID_FILE = "wandb-run-id"


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

    def rows(self) -> list[dict]:
        """The rows on disk, as written (an empty cell is ``""``)."""
        self.save()
        if not self._fs.isfile(self.metrics_file_path):
            return []
        with self._fs.open(self.metrics_file_path, "r", newline="") as f:
            return list(csv.DictReader(f))

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
        hc = HydraConfig.get()
    except ValueError:  # not under @hydra.main (tests, notebooks)
        return None
    # compose() (tiny_sweep, tests) leaves a HydraConfig without a run mode behind: not a Hydra job
    return hc if hc.mode is not None else None


def in_multirun() -> bool:
    hc = _hydra_job()
    return hc is not None and hc.mode.name == "MULTIRUN"


def offline_sync_hint(run_dirs: list[Path], pattern: str | None = None) -> str | None:
    """The ``wandb sync`` line for the offline W&B runs under ``run_dirs`` (None when there are none)."""
    found = [d for r in run_dirs for d in sorted((Path(r) / "wandb").glob("offline-run-*"))]
    if not found:
        return None
    what = pattern or " ".join(str(d) for d in found)
    return f"[voxinv] W&B offline ({len(found)} run{'s' * (len(found) > 1)}): upload with `wandb sync {what}`"


class SweepSummary(HydraCallback):
    """Hydra callback: a multirun ends with one block (jobs' own deploy / sync lines are left out):
    where the runs are, the report command, the deploy command and, when W&B ran offline, ``wandb sync``."""

    def on_multirun_end(self, config: Any, **kwargs: Any) -> None:
        from omegaconf import OmegaConf

        sweep = Path(str(OmegaConf.select(config, "hydra.sweep.dir")))
        runs = sorted({p.parent for p in sweep.glob(f"*/{rundir.METRICS}")})
        lines = [f"[voxinv] sweep: {len(runs)} run(s) in {sweep}; report: python -m voxinv.report {sweep}"]
        if runs:
            lines.append(
                f"[voxinv] deploy one: voxinv register-voice --model <model> --voice-file {sweep}/<job>/{rundir.VOICE} "
                "--name my_voice --out OVERLAY_DIR"
            )
        hint = offline_sync_hint(runs, f"{sweep}/*/wandb/offline-run-*")
        if hint:
            lines.append(hint)
        print("\n".join(lines), file=sys.stderr)


def sweep_overrides(hc: Any) -> list[str]:
    """The keys a multirun sweeps (``seed=0,1``, ``hydra.sweeper.params``, Optuna's ranges): read from the
    sweep's ``multirun.yaml`` (what Hydra's launcher saved, in any process), parsed by Hydra's own parser.
    Empty outside a multirun."""
    from hydra.core.override_parser.overrides_parser import OverridesParser
    from omegaconf import OmegaConf

    if hc is None or hc.mode.name != "MULTIRUN":
        return []
    f = Path(hc.sweep.dir) / "multirun.yaml"
    spec = list(hc.overrides.task)
    params = dict(OmegaConf.select(hc, "sweeper.params", default=None) or {})
    if f.is_file():
        saved = OmegaConf.load(f)
        spec = list(OmegaConf.select(saved, "hydra.overrides.task", default=None) or spec)
        params = dict(OmegaConf.select(saved, "hydra.sweeper.params", default=None) or params)
    spec += [f"{k}={v}" for k, v in params.items()]
    try:
        parsed = OverridesParser.create().parse_overrides(spec)
    except Exception:  # a spec Hydra itself accepted but this version's parser does not: no sweep keys
        return []
    return list(dict.fromkeys(o.get_key_element().lstrip("+~") for o in parsed if o.is_sweep_override()))


def job_choices(hc: Any) -> dict[str, str]:
    """``hydra.runtime.choices`` without Hydra's own groups: ``{"loss": "stft+mel", "schedule": "default", …}``."""
    if hc is None:
        return {}
    return {k: str(v) for k, v in hc.runtime.choices.items() if not k.startswith("hydra/") and v is not None}


def run_identity(hc: Any, out: Path, name: str | None, group: str | None, tags: list[str]) -> dict:
    """What names a W&B run on the dashboard: ``name`` (the swept overrides of this job, ``codes=gumbel,seed=1``;
    outside a sweep the job's overrides, else the run directory's name), ``group`` (a multirun: the sweep,
    its ``--config-name`` or its directory, ``seed,codes 2026-12-07/02-55-29`` for Hydra's default
    time-of-day directory), ``tags`` (the swept ``key=value`` pairs of this job, then the configured tags)."""
    swept = sweep_overrides(hc)
    mine = {}
    if hc is not None:
        for o in hc.overrides.task:
            k, _, v = o.partition("=")
            mine[k.lstrip("+~")] = v
    own = [f"{k}={mine[k]}" for k in swept if k in mine]
    if name is None:
        name = ",".join(own) if own else ((hc.job.override_dirname if hc else "") or out.name)
    if group is None and hc is not None and hc.mode.name == "MULTIRUN":
        sweep = Path(hc.sweep.dir)
        if hc.job.config_name != "config":
            group = hc.job.config_name
        elif len(sweep.name) == 8 and sweep.name.count("-") == 2 and sweep.name.replace("-", "").isdigit():
            group = f"{','.join(swept) or 'sweep'} {sweep.parent.name}/{sweep.name}"  # Hydra's default dir
        else:
            group = sweep.name
    return {"name": name, "group": group, "tags": list(dict.fromkeys([*(t[:64] for t in own), *tags]))}


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
    flush_every_s: float = 1.0,
    concurrent: bool = False,
) -> Logger:
    """A :class:`~pytorch_lightning.loggers.WandbLogger` that resumes the run directory's W&B run.

    Named, grouped and tagged by :func:`run_identity`; the config holds the run config and the Hydra
    choices (``choices.loss``, ``choices.schedule``, …). ``mode: auto`` is online when credentials
    exist, else offline (``wandb sync`` later). Offline, a resume moves the run's earlier offline
    directories to ``wandb/superseded/`` (the new one gets everything replayed: :func:`replay`), so
    ``wandb sync <run dir>/wandb/offline-run-*`` uploads the run once. ``flush_every_s``: how often
    wandb-core writes its transaction log to disk (its default, 15 s, lost up to 15 s of evaluations
    to a SIGKILL; wandb has no per-record flush call). ``concurrent``: one of several runs open together
    in this process (the clips of a ``target=manifest`` group: a W&B run each)."""
    import wandb
    from pytorch_lightning.loggers import WandbLogger

    out = Path(save_dir)
    if mode == "auto":
        env = os.environ.get("WANDB_MODE", "")
        if env in ("online", "offline", "disabled"):  # asking wandb.login offline only prints a warning
            mode = env
        else:
            mode = "online" if wandb.login(prompt=False, verify=False) else "offline"  # never prompts
    hc = _hydra_job()
    ident = run_identity(hc, out, name, group, list(tags))
    config = dict(run_config or {})
    if hc is not None:
        config["choices"] = job_choices(hc)
    if wandb.run is not None and not concurrent:  # left open by a job of this multirun that raised: close it
        wandb.finish(exit_code=1)
    id_file = out / WANDB_ID_FILE
    if resume and id_file.is_file():
        run_id = id_file.read_text().strip()
        if mode == "offline":
            _supersede_offline(out / "wandb", run_id)
    else:
        run_id = uuid.uuid4().hex[:8]  # W&B's id format: 8 lowercase hex/alnum
        out.mkdir(parents=True, exist_ok=True)
        id_file.write_text(run_id + "\n")
    lg = WandbLogger(
        project=project,
        entity=entity,
        group=ident["group"],
        name=ident["name"],
        save_dir=str(out),
        mode=mode,
        tags=ident["tags"],
        config=config,
        id=run_id,
        resume="allow",
        log_model=False,
        **({"reinit": "create_new"} if concurrent else {}),  # runs side by side, none of them wandb.run
        # offline, wandb's own lines (where the data is, `wandb online`, `wandb leet`) are left out: the
        # run's summary (or the sweep's end) prints the one `wandb sync` line that matters
        settings=wandb.Settings(
            quiet=True, silent=mode == "offline", x_transaction_log_flush_interval=float(flush_every_s)
        ),
    )
    # Lightning passes anonymous=None, which this wandb answers with a deprecation line on every run
    lg._wandb_init.pop("anonymous", None)
    if resume:  # a killed segment's wandb-core can hold the run id a few seconds after its process died
        for attempt in range(60):
            try:
                lg.experiment  # noqa: B018 (starts the W&B run now)
                break
            except Exception as e:
                if "in use" not in str(e) or attempt == 59:
                    raise
                lg._experiment = None
                time.sleep(1.0)
    return lg


def _supersede_offline(wandb_dir: Path, run_id: str) -> None:
    """Move the offline directories of ``run_id`` to ``wandb/superseded/``: a resumed segment replays
    their content into a new one, and two directories of one id would be synced as two segments whose
    ``_step`` both start at 0."""
    old = sorted(wandb_dir.glob(f"offline-run-*-{run_id}"))
    if not old:
        return
    dest = wandb_dir / "superseded"
    dest.mkdir(parents=True, exist_ok=True)
    for d in old:
        d.rename(dest / d.name)
    log.info(
        "W&B offline: %d earlier segment(s) of run %s moved to %s (replayed into the new one)", len(old), run_id, dest
    )


def build_loggers(cfg: Any, resume: bool, concurrent: bool = False) -> list[Logger]:
    """Every entry of ``cfg.logger`` (``conf/logger/<name>.yaml``, one package each: ``logger=[csv,wandb]``
    or ``logger=many`` compose several) instantiated, given what it accepts of: ``run_config`` (the
    resolved run config), ``resume`` (whether this run continues a checkpoint) and ``concurrent`` (other
    clips' runs are open in this process: a group of clips). The CSV logger is
    always among them, first: metrics.csv is what the report and a W&B replay read."""
    import inspect

    from hydra.utils import get_object, instantiate
    from omegaconf import OmegaConf

    extra = {"run_config": OmegaConf.to_container(cfg, resolve=True), "resume": resume, "concurrent": concurrent}
    loggers: list[Logger] = []
    for lc in (cfg.get("logger") or {}).values():
        if lc is None:  # logger.<name>=null drops one
            continue
        params = inspect.signature(get_object(lc._target_)).parameters
        loggers.append(instantiate(lc, _partial_=True)(**{k: v for k, v in extra.items() if k in params}))
    if not any(isinstance(lg, CSVLogger) for lg in loggers):
        loggers.append(CSVLogger(save_dir=str(cfg.paths.output_dir)))
    loggers.sort(key=lambda lg: not isinstance(lg, CSVLogger))  # stable: the CSV first, then as configured
    return loggers


def is_wandb(logger: Logger) -> bool:
    return type(logger).__name__ == "WandbLogger"


def wandb_of(loggers: list[Logger]) -> Logger | None:
    """The W&B logger among ``loggers``, if any."""
    return next((lg for lg in loggers if is_wandb(lg)), None)


def start_at(loggers: list[Logger], step: int, history: list[dict]) -> None:
    """Training (re)starts at ``step``: the CSV drops rows past it (a fresh run, 0, starts empty); a
    resumed W&B run gets back what it may have lost (:func:`replay`)."""
    rows: list[dict] = []
    for lg in loggers:
        if isinstance(lg, CSVLogger):
            lg.start_at(step)
            if step > 0:
                rows = lg.experiment.rows()
    if step > 0:
        for lg in loggers:
            if is_wandb(lg):
                replay(lg, step, history, rows)


def eval_metrics(record: dict) -> dict[str, float]:
    """An evaluation record (a ``metrics.json`` history entry) as the ``eval/*`` metrics every logger gets."""
    return {f"eval/{k}": float(v) for k, v in record.items() if k not in ("step", "restart", *rundir.CLOCK_KEYS)}


def replay(lg: Logger, step: int, history: list[dict], csv_rows: list[dict]) -> int:
    """Log again, in step order, what a resumed run had logged up to ``step`` and W&B may not hold:
    every evaluation of the checkpoint's ``history`` and the training rows of metrics.csv. Offline,
    all of it: the resumed segment is a new offline directory (:func:`wandb_logger` moved the earlier
    ones aside), which then holds the whole run, each evaluation once, for one ``wandb sync``. Online,
    only what lies past the last ``trainer/global_step`` in the server's summary (a SIGKILL can lose
    the last second). Media of earlier segments are not replayed (the checkpoint holds no audio).
    Returns the number of steps logged."""
    run = lg.experiment
    last = None if run.offline else run.summary.get("trainer/global_step")
    known = int(last) if isinstance(last, int | float) else -1
    rows: dict[int, dict[str, float]] = {}
    skip = ("step", "eval/", "final/", "best/")  # evaluations come from the history (the checkpoint's)
    for r in csv_rows:
        s = int(float(r["step"]))
        vals = {k: float(v) for k, v in r.items() if v not in ("", None) and not k.startswith(skip)}
        if known < s <= step and vals:
            rows.setdefault(s, {}).update(vals)
    for h in history:
        if known < int(h["step"]) <= step:
            rows.setdefault(int(h["step"]), {}).update(eval_metrics(h))
    for s in sorted(rows):
        lg.log_metrics(rows[s], step=s)
    if rows:
        log.info("W&B: replayed %d logged steps up to step %d into run %s", len(rows), step, run.id)
    return len(rows)
