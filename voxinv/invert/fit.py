"""One target's inversion from the config: :func:`build` (target, loss suite, code parameters, the
resolved settings), then :func:`fit` (gradient refinement with Lightning, one or several clips together)
after the init; :mod:`voxinv.invert.export` writes each."""

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
from voxinv.invert.settings import Recipe, StepSettings, resolve
from voxinv.invert.target import Target, TargetSource
from voxinv.voxtral.models import Model

if TYPE_CHECKING:
    import pytorch_lightning as pl

    from voxinv.invert.clip import Clip
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
    settings: StepSettings  # the config resolved for the step loop (voxinv.invert.settings)
    recipe: Recipe
    clip: Clip | None = None  # its state in the step loop (make_module)
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
    settings, recipe = resolve(cfg, device)
    return Inversion(cfg, out, device, model, target, losses, params, {"kind": cfg.init.kind}, settings, recipe)


def build_losses(cfg: DictConfig, model: Model, target: Target, device: torch.device) -> LossSuite:
    """The loss suite: the terms ``loss.weights`` lists, each from its ``loss.<name>`` node
    (:func:`voxinv.invert.losses.build_terms`; the speaker encoder is loaded only when a term takes it)."""
    from voxinv.invert.losses import Lazy, build_terms
    from voxinv.speaker.ge2e import SpeakerEncoder

    spk = Lazy(lambda: SpeakerEncoder.load(device))
    sr, wav = model.codec.sampling_rate, target.wav.to(device)
    terms = build_terms(cfg.loss, sr, wav, spk, device=device, checkpoint=model.ckpt)
    return LossSuite(dict(cfg.loss.weights), terms).to(device)


def build_params(cfg: DictConfig, codec, target: Target) -> CodeParams:
    """The ``codes`` group instantiated for ``cfg.batch`` restarts of the target."""
    # salted: a synthetic target seeded by the same `seed` must not share draws with the random start
    g = torch.Generator().manual_seed(int(cfg.seed) + 1_000_003)
    table = codec.quantizer.semantic_codebook.table.float().cpu()
    make = instantiate(cfg.codes, _partial_=True)  # the codes group's settings; the rest from the codec
    levels, n_acoustic = codec.args.acoustic_codebook_size, codec.args.acoustic_dim
    return make(table, int(cfg.batch), target.n_frames, levels=levels, n_acoustic=n_acoustic, generator=g)


def make_module(jobs: list[Inversion]) -> InversionModule:
    """The module stepping over ``jobs`` (one per clip, built alike: the settings are the first's); each
    job gets its :class:`~voxinv.invert.clip.Clip`."""
    from voxinv.invert.clip import Clip
    from voxinv.invert.losses import Balancer
    from voxinv.invert.module import InversionModule

    s, m = jobs[0].settings, jobs[0].model
    for j in jobs:
        bal = Balancer(**s.balancer) if s.balancer is not None else None
        j.clip = Clip(j.out.name, j.target, j.losses, j.params, s.seed, out=j.out, balancer=bal)
    return InversionModule([j.clip for j in jobs], m.codec, s, jobs[0].recipe, eval_codec=m.eval_codec)


def fit(jobs: list[Inversion], resume: str | None) -> None:
    """Gradient refinement of ``jobs`` (one per clip: a single run is a group of one) in one Lightning fit
    (``resume``: a checkpoint to continue); sets each job's ``module``, ``trainer``, ``stopped`` (why its
    clip stopped early, or ``None``) and ``exit_code``. Each clip logs to its own loggers (``logger``
    group); a group of one logs through the trainer."""
    from voxinv.invert.callbacks import AtomicCheckpointIO, stop_reason
    from voxinv.invert.guard import EXIT_FAILED, check_resume_file, disk_error, disk_message, interrupt_code
    from voxinv.invert.loggers import build_loggers, quiet_lightning
    from voxinv.invert.module import NonFiniteLoss, Steps
    from voxinv.trainer import build_trainer

    cfg, device, steps = jobs[0].cfg, jobs[0].device, jobs[0].settings.steps
    module = make_module(jobs)
    quiet_lightning()
    for j in jobs:  # several clips: a W&B run each, side by side in this process
        j.clip.loggers = build_loggers(j.cfg, resume=resume is not None, concurrent=len(jobs) > 1)
    bar = cfg.trainer.get("enable_progress_bar", True)
    callbacks = [instantiate(c) for k, c in cfg.callbacks.items() if c is not None and (bar or k != "progress_bar")]
    trainer = build_trainer(
        cfg.trainer,
        device,
        max_steps=steps,
        max_epochs=-1,
        logger=jobs[0].clip.loggers if len(jobs) == 1 else False,
        callbacks=callbacks,
        devices=[device.index or 0] if device.type == "cuda" else 1,
        plugins=[AtomicCheckpointIO()],
    )
    loader = torch.utils.data.DataLoader(Steps(steps), batch_size=None, shuffle=False)
    if resume is not None:
        check_resume_file(resume)
    failed = None  # why every clip still active stopped (an error)
    try:
        trainer.fit(module, loader, ckpt_path=resume, weights_only=True)
    except NonFiniteLoss as e:  # every clip had a non-finite loss: each says so (others: this message)
        failed = f"{e}; kept the last codes with a finite loss"
    except OSError as e:  # a full disk while checkpointing: the previous checkpoint is intact (atomic writes)
        if not disk_error(e):
            raise
        failed = f"failed at step {trainer.global_step}: {disk_message(e)}"
    except SystemExit:  # Lightning answers Ctrl-C with sys.exit(1): export what there is instead
        if not trainer.interrupted:
            raise
    for j in jobs:
        c = j.clip
        if c.active and failed:
            c.stop(failed, EXIT_FAILED)
            log.error("stopping: %s", failed)
        elif c.active and trainer.interrupted:
            c.stop(f"interrupted at step {c.steps}; exported the current codes", interrupt_code())
        elif c.active and c.steps < steps:
            c.stop(stop_reason(trainer))  # max_time; None when something else ended the fit
        evaluate_at_stop(module, c)
        if c.stopped in STOP_MESSAGES:
            who = f"clip {c.name} " if len(jobs) > 1 else ""
            log.warning("%sstopped at step %d of %d: %s", who, c.steps, steps, STOP_MESSAGES[c.stopped])
        j.module, j.trainer, j.stopped, j.exit_code = module, trainer, c.stopped, c.exit_code


# metrics.json ``stopped`` for a fit that ended before its steps without an error or a signal
STOP_MESSAGES = {
    "max_time": "trainer.max_time reached",
    "early_stop": "early stop, the objective stopped improving (callbacks.early_stop)",
}


def evaluate_at_stop(module: InversionModule, clip: Clip) -> None:
    """Every stop between evaluations (max_time, a signal) evaluates the clip's current codes, logged like
    any evaluation, so the export is never older than the stop. Not after a non-finite loss: the current
    codes are the bad ones (the export scores the last finite ones)."""
    from voxinv.invert.guard import uninterrupted

    if clip.nonfinite or (clip.history and clip.history[-1]["step"] == clip.steps):
        return
    with uninterrupted():
        module.evaluate(clip, clip.steps)
