"""Several clips optimised together: one padded decoder call per step, everything else per clip.

A clip inverted in a group must come out as it would alone (same seed → same codes). What makes that
hold, and what would break it:

* **The decoder is causal** (left-padded convolutions, causal windowed attention): zero-padding a
  short clip's latent on the right to the group's longest clip leaves its own samples unchanged
  (tests/invert/test_batch.py checks it), so the padded tail is simply cut off the decode — it enters
  no loss and sends no gradient.
* **Losses per clip, on the clip's own samples.** Each clip keeps its own :class:`LossSuite` (its
  speaker reference) and is scored on ``wav[:, :L_c]`` against its own target: no norm, mean or
  STFT frame ever spans two clips. The step's loss is the SUM over clips of each clip's mean over its
  restarts, so each clip's parameters get exactly the gradient of its own single-clip loss.
* **Per-clip state**: each clip has its own :class:`CodeParams` (own generator, own Adam state: Adam
  and SGD are per element), its own noise generator, gradient clipping by its own norm (a global
  norm would couple clips), its own NaN watch, evaluations, best codes and early stop. A clip that
  stops (early stop, non-finite loss) leaves the decoder call and keeps its optimizer state frozen
  (no gradient: the optimizer skips it).

Per-clip state lives in an :class:`InversionModule` per clip (its evaluation, best-restart tracking,
NaN watch and export are the single-clip code); :class:`ClipGroupModule` only runs the shared step.
Not supported in a group (a one-line error): the gradient balancer (its EMA is over the batch).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass, field

import pytorch_lightning as pl
import torch
import torch.nn.functional as F
from torch import nn

from voxinv.invert import schedule
from voxinv.invert.callbacks import evals_since_improvement
from voxinv.invert.module import InversionModule, _Frozen
from voxinv.invert.window import window_of

log = logging.getLogger("voxinv")


@dataclass(eq=False)  # hashed by identity (a dict key per step)
class Clip:
    """One clip of a group: its per-clip module (params, target, losses, history, best) and its fate."""

    module: InversionModule
    steps: int = 0  # optimizer updates this clip received
    active: bool = True  # still optimised (False after its early stop, a non-finite loss or an interrupt)
    stopped: str | None = None  # metrics.json ``stopped``: a non-finite loss or an interrupt (as a single-clip run)
    info: dict = field(default_factory=dict)


def early_stop_settings(cfg) -> tuple[int, float]:
    """(patience, min_rel_delta) of ``callbacks.early_stop`` (patience 0: off; the callback removed: off)."""
    es = cfg.callbacks.get("early_stop")
    if es is None:
        return 0, 0.0
    return int(es.patience), float(es.min_rel_delta)


class ClipGroupModule(pl.LightningModule):
    """The shared step of a group of clips (see the module docstring)."""

    def __init__(self, cfg, codec, clips: Sequence[Clip]):
        super().__init__()
        if cfg.loss.balancer.enabled:
            raise ValueError(
                "loss.balancer.enabled=true is not supported with target=manifest (its EMA spans the batch)"
            )
        self.automatic_optimization = False
        self.cfg, self.clips = cfg, list(clips)
        self.frozen = _Frozen(codec=codec)  # not a submodule: never in the optimizer, checkpoint or summary
        self.params = nn.ModuleList([c.module.params for c in self.clips])  # what the optimizer and .to() see
        self.patience, self.min_rel_delta = early_stop_settings(cfg)

    def active(self) -> list[Clip]:
        return [c for c in self.clips if c.active]

    def on_train_start(self) -> None:
        for c in self.clips:
            c.module.to(self.device)
            if not c.module.history:  # the init is a candidate too
                c.module.evaluate(0, log=False)

    def training_step(self, batch, batch_idx):
        cfg, step = self.cfg, self.global_step
        total_steps = int(cfg.steps)
        opt, lr_sched = self.optimizers(), self.lr_schedulers()
        every = self.clips[0].module.loop["sync_every"]
        sync = every == 1 or (step + 1) % every == 0 or step + 1 == total_steps
        active = self.active()
        if not active:
            self.trainer.should_stop = True
            return

        # 1. sample each clip's codes; its window (the whole clip when it fits); pad to the longest; one decode
        tau = self.clips[0].module.tau_schedule(step, total_steps)  # one schedule config for all clips
        win = cfg.window
        samples, windows = [], []
        for c in active:
            m = c.module
            s = m.params(tau, noise=m._noise_on(m.target.device))  # each clip's own noise stream
            samples.append(s)
            # (latent [B, 292, T'] with left context, target [L], context samples to cut)
            windows.append(window_of(step, s.latent, m.target, win.frames, win.context))
        t_max = max(lat.shape[-1] for lat, _, _ in windows)
        latent = torch.cat([F.pad(lat, (0, t_max - lat.shape[-1])) for lat, _, _ in windows])  # [ΣB, 292, t_max]
        # [ΣB, t_max · spf]; the decoder is causal: each clip's pad only follows its own samples
        decoded = self.frozen.codec.decode_latent(latent)[:, 0].float()

        # 2. per clip: its own samples (cut the left context and the pad), its own loss terms [B]
        weights = schedule.loss_weights(step, cfg.loss.weights, cfg.schedule.get("ramps"))
        total, row, logged = 0.0, 0, {}
        for c, s, (lat, target, cut) in zip(active, samples, windows):
            m, B = c.module, lat.shape[0]
            wav = decoded[row : row + B, cut : lat.shape[-1] * self.frozen.codec.samples_per_frame]  # [B, L]
            row += B
            losses = m.frozen.losses
            terms = losses(wav, target, s, weights, wave=losses.wave_terms(wav, target))
            loss = terms["total"].mean()  # over this clip's restarts, as a single-clip run
            m._watch(step, loss, terms)
            if sync and not bool(m._finite["ok"]):
                f = m._finite
                bad = ", ".join(k for k, ok in zip(f["names"], f["terms_ok"].tolist()) if not ok)
                c.active = False
                c.stopped = (
                    f"non-finite loss at step {int(f['step'])} (terms: {bad}); kept the last codes with a finite loss"
                )
                log.error("stopping clip %s: %s", c.info.get("name"), c.stopped)
                continue
            total = total + loss
            logged[c] = (loss, terms)

        # 3. backward of the sum (each clip's parameters get its own loss's gradient), per-clip clip, step
        opt.zero_grad(set_to_none=True)
        if torch.is_tensor(total):
            self.manual_backward(total)
        if cfg.optim.grad_clip:
            for c in logged:  # by each clip's own norm, as a single-clip run clips
                torch.nn.utils.clip_grad_norm_(list(c.module.params.parameters()), float(cfg.optim.grad_clip))
        opt.step()  # a clip without gradients (stopped) is skipped by the optimizer
        lr_sched.step()
        for c in logged:
            c.steps = step + 1

        # 4. log the mean over clips; evaluate each clip; per-clip early stop
        if sync and logged:
            self.log("loss", torch.stack([v[0].detach() for v in logged.values()]).mean(), prog_bar=True)
            self.log_dict(
                {"train/lr": lr_sched.get_last_lr()[0], "train/temperature": tau, "train/clips": float(len(logged))}
            )
        ev = int(cfg.eval_every)
        if (ev and (step + 1) % ev == 0) or step + 1 == total_steps:
            for c in logged:
                c.module.evaluate(step + 1, log=False)
                objs = [h["objective"] for h in c.module.history]
                if self.patience > 0 and evals_since_improvement(objs, self.min_rel_delta) >= self.patience:
                    c.active = False  # as the EarlyStop callback ends a single-clip run (not a "stopped" run)
        if not self.active():
            self.trainer.should_stop = True

    def configure_optimizers(self):
        # the single-clip optimizer and schedule over every clip's parameters (per-element: no coupling)
        return InversionModule.configure_optimizers(self)


def fit_group(cfg, codec, clips: Sequence[Clip], device: torch.device, root: str) -> tuple[str | None, int]:
    """Fit ``clips`` together for ``cfg.steps`` steps; returns (why the group stopped early, steps run)."""
    from hydra.utils import instantiate

    from voxinv.invert.loggers import quiet_lightning
    from voxinv.invert.module import Steps, trainer_settings

    module = ClipGroupModule(cfg, codec, clips)
    quiet_lightning()
    tcfg = {k: v for k, v in cfg.trainer.items() if k != "devices"}
    bar = tcfg.get("enable_progress_bar", True)
    callbacks = [instantiate(cfg.callbacks.progress_bar)] if bar and cfg.callbacks.get("progress_bar") else []
    trainer = pl.Trainer(
        max_steps=int(cfg.steps),
        max_epochs=-1,
        logger=False,
        callbacks=callbacks,
        enable_checkpointing=False,
        default_root_dir=root,
        accelerator="gpu" if device.type == "cuda" else "cpu",
        devices=[device.index or 0] if device.type == "cuda" else 1,
        **trainer_settings(tcfg, device),
    )
    loader = torch.utils.data.DataLoader(Steps(int(cfg.steps)), batch_size=None, shuffle=False)
    t0, cpu0 = time.time(), time.process_time()
    stopped = None
    try:
        trainer.fit(module, loader)
    except SystemExit:  # Lightning answers Ctrl-C with sys.exit(1): export what there is instead
        if not trainer.interrupted:
            raise
    if trainer.interrupted:
        stopped = f"interrupted at step {trainer.global_step}; exported the current codes"
        for c in clips:
            if c.active:
                c.active, c.stopped = False, stopped
    for c in clips:
        c.info["group_wall_s"] = round(time.time() - t0, 3)
        c.info["group_cpu_s"] = round(time.process_time() - cpu0, 3)  # this process's CPU time (all threads)
    return stopped, int(trainer.global_step)
