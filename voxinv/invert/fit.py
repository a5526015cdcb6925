"""One target's inversion from the config: :func:`build` (target, loss suite, code parameters), then
:func:`fit` (gradient refinement with Lightning) after the init; :mod:`voxinv.invert.export` writes it."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import torch
from hydra.utils import instantiate
from omegaconf import DictConfig

from voxinv.invert.losses import LossSuite
from voxinv.invert.params import CodeParams
from voxinv.invert.target import Target, TargetSource
from voxinv.voxtral.models import Model

if TYPE_CHECKING:
    import pytorch_lightning as pl

    from voxinv.invert.module import InversionModule

log = logging.getLogger("voxinv")


@dataclass
class Inversion:
    """What :func:`build` makes for one target and initialise / :func:`fit` / export fill in."""

    cfg: DictConfig
    out: Path  # the run directory
    device: torch.device
    model: Model
    target: Target
    losses: LossSuite
    params: CodeParams
    init: dict  # what the init did (metrics.json ``init``)
    module: InversionModule | None = None  # set by fit (export makes one when fitting never started)
    trainer: pl.Trainer | None = None
    stopped: str | None = None  # why it stopped early (metrics.json ``stopped``)
    exit_code: int = 0  # the process's exit status (guard.EXIT_*: interrupted 128 + signal, failed 3)


def build(cfg: DictConfig, out: Path, model: Model, source: TargetSource, device: torch.device) -> Inversion:
    """The target (from ``source``, the instantiated ``target`` group), its loss suite and the code parameters."""
    target = source.build(model.eval_codec, model.ckpt)
    log.info(
        "target %s: %d frames (%.2f s)", target.name, target.n_frames, target.wav.numel() / model.codec.sampling_rate
    )
    losses = build_losses(cfg, model, target, device)
    params = build_params(cfg, model.codec, target)
    return Inversion(cfg, out, device, model, target, losses, params, init={"kind": cfg.init.kind})


def build_losses(cfg: DictConfig, model: Model, target: Target, device: torch.device) -> LossSuite:
    """The loss suite (speaker encoder and backbone prior only when weighted)."""
    from voxinv.invert.losses import build_terms

    weights = dict(cfg.loss.weights)
    spk = None
    if weights.get("spk", 0) > 0:
        from voxinv.invert.speaker import SpeakerEncoder

        spk = SpeakerEncoder.load(device)
    prior = None
    if weights.get("prior", 0) > 0:
        from voxinv.invert.prior import BackbonePrior

        prior = BackbonePrior(model.ckpt, device=device, **cfg.loss.prior)
    terms = build_terms(cfg.loss, model.codec.sampling_rate, target.wav.to(device), spk)
    return LossSuite(weights, terms, prior).to(device)


def build_params(cfg: DictConfig, codec, target: Target) -> CodeParams:
    """The ``codes`` group instantiated for ``cfg.batch`` restarts of the target."""
    # salted: a synthetic target seeded by the same `seed` must not share draws with the random start
    g = torch.Generator().manual_seed(int(cfg.seed) + 1_000_003)
    table = codec.quantizer.semantic_codebook.table.float().cpu()
    make = instantiate(cfg.codes, _partial_=True)  # the codes group's settings; the rest from the codec
    levels, n_acoustic = codec.args.acoustic_codebook_size, codec.args.acoustic_dim
    return make(table, int(cfg.batch), target.n_frames, levels=levels, n_acoustic=n_acoustic, generator=g)


def make_module(job: Inversion):
    """A new InversionModule of the job (the step loop resolved for its device)."""
    from voxinv.invert.module import InversionModule, loop_settings

    cfg, m = job.cfg, job.model
    loop = loop_settings(cfg.loop, cfg.trainer, job.device)
    return InversionModule(cfg, m.codec, job.target, job.losses, job.params, eval_codec=m.eval_codec, loop=loop)


def fit(job: Inversion, resume: str | None) -> None:
    """Gradient refinement with Lightning (``resume``: a checkpoint to continue); sets ``job.module``,
    ``job.trainer`` and ``job.stopped`` (why it stopped early, or ``None``)."""
    import pytorch_lightning as pl

    from voxinv.invert.callbacks import AtomicCheckpointIO, stop_reason
    from voxinv.invert.guard import EXIT_FAILED, check_resume_file, disk_error, disk_message, interrupt_code
    from voxinv.invert.loggers import build_loggers, quiet_lightning
    from voxinv.invert.module import NonFiniteLoss, Steps, trainer_settings

    cfg, device = job.cfg, job.device
    module = make_module(job)
    quiet_lightning()
    loggers = build_loggers(cfg, resume=resume is not None)
    bar = cfg.trainer.get("enable_progress_bar", True)
    callbacks = [instantiate(c) for k, c in cfg.callbacks.items() if c is not None and (bar or k != "progress_bar")]
    trainer = pl.Trainer(
        max_steps=int(cfg.steps),
        max_epochs=-1,
        logger=loggers,
        callbacks=callbacks,
        accelerator="gpu" if device.type == "cuda" else "cpu",
        devices=1,
        plugins=[AtomicCheckpointIO()],
        **trainer_settings(cfg.trainer, device),
    )
    loader = torch.utils.data.DataLoader(Steps(int(cfg.steps)), batch_size=None, shuffle=False)
    if resume is not None:
        check_resume_file(resume)
    stopped = None
    try:
        trainer.fit(module, loader, ckpt_path=resume, weights_only=True)
    except NonFiniteLoss as e:
        stopped = f"{e}; kept the last codes with a finite loss"
        job.exit_code = EXIT_FAILED
        log.error("stopping: %s", stopped)
    except OSError as e:  # a full disk while checkpointing: the previous checkpoint is intact (atomic writes)
        if not disk_error(e):
            raise
        stopped, job.exit_code = f"failed at step {trainer.global_step}: {disk_message(e)}", EXIT_FAILED
        log.error("stopping: %s", stopped)
    except SystemExit:  # Lightning answers Ctrl-C with sys.exit(1): export what there is instead
        if not trainer.interrupted:
            raise
    if trainer.interrupted and stopped is None:
        stopped = f"interrupted at step {trainer.global_step}; exported the current codes"
        job.exit_code = interrupt_code()
    stopped = stopped or stop_reason(trainer)
    evaluate_at_stop(module, trainer)
    if stopped in STOP_MESSAGES:
        log.warning("stopped at step %d of %d: %s", trainer.global_step, int(cfg.steps), STOP_MESSAGES[stopped])
    job.module, job.trainer, job.stopped = module, trainer, stopped


# metrics.json ``stopped`` for a fit that ended before its steps without an error or a signal
STOP_MESSAGES = {
    "max_time": "trainer.max_time reached",
    "early_stop": "early stop, the objective stopped improving (callbacks.early_stop)",
}


def evaluate_at_stop(module: InversionModule, trainer: pl.Trainer) -> None:
    """Every stop between evaluations (max_time, a signal) evaluates the current codes, logged like any
    evaluation, so the export is never older than the stop. Not after a non-finite loss: the current
    codes are the bad ones (the export scores the last finite ones)."""
    from voxinv.invert.guard import uninterrupted

    step = int(trainer.global_step)
    if module.nonfinite or (module.history and module.history[-1]["step"] == step):
        return
    with uninterrupted():
        module.evaluate(step)
