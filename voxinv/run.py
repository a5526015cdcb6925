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
from pathlib import Path

import hydra
import pytorch_lightning as pl
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf

from voxinv import rundir
from voxinv.invert import guard
from voxinv.invert.export import evaluate, export, finish
from voxinv.invert.fit import build, fit
from voxinv.invert.init import initialise
from voxinv.voxtral.device import pick_device
from voxinv.voxtral.models import load_model

CONF_DIR = str(Path(__file__).resolve().parent / "conf")  # shipped inside the package (wheel and editable alike)


def run(cfg: DictConfig, out: Path) -> dict:
    """Everything one inversion does; returns metrics.json's content.

    Ctrl-C or SIGTERM at any point after the code parameters exist (the init included) exports the
    best codes so far and says so in metrics.json ``stopped``; before that, :class:`guard.RunInterrupted`."""
    from hydra.core.hydra_config import HydraConfig

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
                fit(job, resume)
        except KeyboardInterrupt:
            job.stopped = "interrupted before fitting; exported the initial codes"
            job.exit_code = guard.interrupt_code()
        with guard.uninterrupted():
            metrics = export(job, t_start)
    evaluate(cfg, out, metrics, model.eval_codec)
    finish(job, metrics, t_start)
    return metrics


@hydra.main(version_base="1.3", config_path=CONF_DIR, config_name="config")
def main(cfg: DictConfig) -> float:
    from hydra.core.hydra_config import HydraConfig
    from hydra.types import RunMode

    out = Path(HydraConfig.get().runtime.output_dir)
    try:
        with guard.exit_on_bad_input():
            metrics = run(cfg, out)
    finally:
        rundir.release(out)
    code = int(metrics.get("exit_code") or 0)
    if code and HydraConfig.get().mode == RunMode.RUN:  # a sweep goes on to its next job
        sys.exit(code)  # interrupted 128 + signal, failed 3 (README "Exit codes"); metrics.json says why
    return float(metrics["final"]["total"])  # the sweep objective (Optuna)


if __name__ == "__main__":
    main()
