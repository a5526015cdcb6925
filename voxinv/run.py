"""Hydra entry point: compose → build → initialise → fit → export → evaluate.

python -m voxinv.run loss=stft+spk target.path=me.wav       # clone a recording (released model)
python -m voxinv.run experiment=demo                         # make demo: a real voice on the proxy codec, ≈1 min
python -m voxinv.run experiment=oracle                       # the tiny oracle: known codes recovered exactly
python -m voxinv.run model=tiny target=preset target.voice=casual_male
python -m voxinv.run -m model=tiny target=synthetic seed=0,1,2 codes=gumbel,softmax_ste   # sweeps
"""

from __future__ import annotations

import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING

import hydra

from voxinv.paths import CONF_DIR  # also voxinv.run.CONF_DIR for existing callers

if TYPE_CHECKING:
    from omegaconf import DictConfig

# Lightning, torch and the rest are imported inside run(): `--help`, `--cfg job` and a bad override are
# answered by Hydra before any of them is needed (importing Lightning alone takes seconds)


# Hydra plugins behind optional conf/hydra options: (override prefix, option names, module, pip package)
PLUGINS = (
    ("hydra/sweeper=", ("optuna", "voxinv_optuna"), "hydra_plugins.hydra_optuna_sweeper", "hydra-optuna-sweeper"),
    (
        "hydra/launcher=",
        ("submitit_slurm", "submitit_local", "voxinv_slurm"),
        "hydra_plugins.hydra_submitit_launcher",
        "hydra-submitit-launcher",
    ),
)


def missing_plugin(argv: list[str]) -> str | None:
    """One line naming the plugin an override of ``argv`` needs and how to install it, or ``None``."""
    import importlib.util

    for arg in argv:
        for prefix, names, module, package in PLUGINS:
            if arg.startswith(prefix) and arg[len(prefix) :] in names:
                try:
                    found = importlib.util.find_spec(module) is not None
                except ModuleNotFoundError:
                    found = False
                if not found:
                    return f"{arg} needs the {package} plugin: pip install {package} (or pip install -e .[sweeps])"
    return None


def groups_help() -> str:
    """The config groups and their options (``*``: the default), for ``--help`` (a resolver in the help
    template: listed from conf/, so it never goes stale; ``_``-prefixed files are shared parts, not options)."""
    import yaml

    conf = Path(CONF_DIR)
    defaults = {}
    for d in yaml.safe_load((conf / "config.yaml").read_text())["defaults"]:
        if isinstance(d, dict):
            defaults.update({k: v for k, v in d.items() if isinstance(v, str)})
    lines = []
    for group in sorted(p.parent.relative_to(conf).as_posix() for p in conf.rglob("*.yaml") if p.parent != conf):
        if group.startswith("hydra") or any(ln.startswith(f"  {group}:") for ln in lines):
            continue
        opts = sorted(p.stem for p in (conf / group).glob("*.yaml") if not p.stem.startswith("_"))
        shown = [f"{o}*" if defaults.get(group) == o else o for o in opts]
        lines.append(f"  {group}: {', '.join(shown)}")
    return "\n".join(lines)


def _register_help() -> None:
    from omegaconf import OmegaConf

    if not OmegaConf.has_resolver("voxinv_groups"):
        OmegaConf.register_new_resolver("voxinv_groups", groups_help)


def run(cfg: DictConfig, out: Path) -> dict:
    """Everything one inversion does; returns metrics.json's content.

    Ctrl-C or SIGTERM at any point after the code parameters exist (the init included) exports the
    best codes so far and says so in metrics.json ``stopped``; before that, :class:`guard.RunInterrupted`."""
    from hydra.core.hydra_config import HydraConfig

    from voxinv import rundir
    from voxinv.invert import guard

    t_start = time.time()
    mine = rundir.held(out) is None  # else Hydra's callback claimed it (and released at the job's end)
    # the settings, the run directory (lock + marker) and the inputs, before any model is fetched
    claim = guard.preflight(cfg, out, "invert", hydra_written=HydraConfig.initialized())
    try:
        return _run(cfg, out, claim.cache["source"], t_start)
    finally:
        if mine:
            claim.release()


def _run(cfg: DictConfig, out: Path, source, t_start: float) -> dict:
    import pytorch_lightning as pl
    from hydra.utils import instantiate
    from omegaconf import OmegaConf

    from voxinv import rundir
    from voxinv.invert import guard
    from voxinv.invert.export import evaluate, export, finish
    from voxinv.invert.fit import build, fit
    from voxinv.invert.init import initialise
    from voxinv.voxtral.device import pick_device
    from voxinv.voxtral.models import load_model

    if source.kind == "manifest":  # many clips (voxinv/invert/manifest.py): one run directory per clip
        from voxinv.invert.manifest import run_manifest

        return run_manifest(cfg, out, source)
    cfg.paths.output_dir = str(out)  # the run directory (Hydra's, or the caller's) for paths.*
    rundir.atomic_write(out / rundir.CONFIG, OmegaConf.to_yaml(cfg, resolve=True))
    pl.seed_everything(int(cfg.seed), workers=True, verbose=False)
    device = pick_device(cfg.device)
    with guard.sigterm_as_interrupt():
        with guard.nothing_to_export():
            model = load_model(cfg.model, device)
            job = build(cfg, out, model, source, device)
        try:
            resume = guard.resume_checkpoint(cfg, out)
            if resume is None:
                job.init = initialise(instantiate(cfg.init), job.params, model.eval_codec, job.target, model.ckpt)
            if "interrupted" in job.init:
                job.stopped = (
                    f"interrupted during the init ({job.init['interrupted']}); exported the codes found so far"
                )
                job.exit_code = guard.interrupt_code()
            else:
                fit([job], resume)
        except KeyboardInterrupt:
            job.stopped = "interrupted before fitting; exported the initial codes"
            job.exit_code = guard.interrupt_code()
        with guard.uninterrupted():
            metrics = export(job, t_start)
    evaluate(cfg, out, metrics, model.eval_codec)
    finish(job, metrics, t_start)
    return metrics


@contextmanager
def errors_in_run_log() -> Iterator[None]:
    """An error that ends the run is also written to the run's log file (Hydra's ``<run dir>/run.log``):
    the console gets it from the CLI (one line, or the traceback of a bug), the log file would not."""
    import logging
    import traceback

    try:
        yield
    except Exception as e:
        files = [h for h in logging.getLogger().handlers if isinstance(h, logging.FileHandler)]
        if files:
            rec = logging.LogRecord(
                "voxinv", logging.ERROR, __file__, 0, "run failed: %s: %s", (type(e).__name__, e), None
            )
            rec.exc_text = "".join(traceback.format_exception(e)).rstrip()
            for h in files:
                h.handle(rec)
        raise


@hydra.main(version_base="1.3", config_path=CONF_DIR, config_name="config")
def _hydra_main(cfg: DictConfig) -> float:
    from hydra.core.hydra_config import HydraConfig
    from hydra.types import RunMode

    from voxinv import rundir
    from voxinv.invert import guard

    out = Path(HydraConfig.get().runtime.output_dir)
    try:
        with guard.exit_on_bad_input(), errors_in_run_log():
            metrics = run(cfg, out)
    finally:
        rundir.release(out)
    code = int(metrics.get("exit_code") or 0)
    if code and HydraConfig.get().mode == RunMode.RUN:  # a sweep goes on to its next job
        sys.exit(code)  # interrupted 128 + signal, failed 3 (README "Exit codes"); metrics.json says why
    return float(metrics["final"]["total"])  # the sweep objective (Optuna)


def main() -> float | None:
    """``python -m voxinv.run [overrides]``: Hydra's app, after the checks Hydra would answer with a traceback."""
    miss = missing_plugin(sys.argv[1:])
    if miss:
        print(f"voxinv: error: {miss}", file=sys.stderr)
        sys.exit(2)
    _register_help()
    return _hydra_main()


if __name__ == "__main__":
    main()
