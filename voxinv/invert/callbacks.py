"""Lightning callbacks: each evaluation sent once, at its own step, to every logger (+ W&B media), and
a quiet progress bar over optimizer steps."""

from __future__ import annotations

import logging
import sys
from typing import Any

import pytorch_lightning as pl
import torch

from voxinv import rundir
from voxinv.dsp import spectrogram_db
from voxinv.figures import spectrogram_grid
from voxinv.invert import loggers as L
from voxinv.stopping import evals_since_improvement  # its home (the benchmark report replays it); kept here too

log = logging.getLogger("voxinv")


def media_spectrogram(target: torch.Tensor, rec: torch.Tensor, sr: int, title: str = ""):
    """Target and reconstruction spectrograms (1024-point STFT, hop 256: :func:`voxinv.dsp.spectrogram_db`) and
    their difference, drawn by the one spectrogram figure (:func:`voxinv.figures.spectrogram_grid`)."""
    t, r = (spectrogram_db(x, 1024, 256).numpy() for x in (target, rec))
    n = min(t.shape[1], r.shape[1])
    return spectrogram_grid([("target", t, None), ("reconstruction", r, r[:, :n] - t[:, :n])], sr, 256, title)


class EvalLogger(pl.Callback):
    """Receives every evaluation of every clip from :meth:`InversionModule.evaluate` (``on_evaluation``)
    and logs its metrics as ``eval/*`` at the evaluation's step to the clip's loggers (no
    ``log_every_n_steps`` sampling, no epoch aggregation); to W&B also the reconstruction audio and a
    spectrogram comparison every ``media_every`` evaluations (0: never), on the same
    ``trainer/global_step`` axis. Stateless: the media cadence is read from the clip's history (kept in
    checkpoints), so a resumed run continues it."""

    def __init__(self, media_every: int) -> None:
        self.media_every = int(media_every or 0)

    def on_train_start(self, trainer: pl.Trainer, module: pl.LightningModule) -> None:
        # runs before the module's on_train_start (the step-0 evaluation) and after a checkpoint restore
        for clip in getattr(module, "clips", []):
            L.start_at(clip.loggers, int(trainer.global_step), list(clip.history))

    def on_evaluation(self, trainer: pl.Trainer, module: Any, clip: Any, record: dict, audio: torch.Tensor) -> None:
        step = int(record["step"])
        metrics = L.eval_metrics(record)
        for lg in clip.loggers:
            lg.log_metrics(metrics, step=step)
            lg.save()
        n = len(clip.history)  # this evaluation is the n-th of the clip
        if self.media_every and (n - 1) % self.media_every == 0:
            for lg in clip.loggers:
                if L.is_wandb(lg):
                    self._media(lg, module, clip, audio, step, first=n == 1)

    def _media(self, lg, module, clip, audio: torch.Tensor, step: int, first: bool) -> None:
        import wandb

        sr = module.frozen.codec.sampling_rate
        fig = media_spectrogram(clip.wav, audio, sr, f"step {step}")
        media = {
            "media/reconstruction": wandb.Audio(audio.numpy(), sample_rate=sr, caption=f"step {step}"),
            "media/spectrogram": wandb.Image(fig),
        }
        if first:
            media["media/target"] = wandb.Audio(clip.wav.cpu().numpy(), sample_rate=sr, caption="target")
        lg.experiment.log({**media, "trainer/global_step": step})  # the charts' x-axis, not W&B's _step


class StepsBar(pl.callbacks.TQDMProgressBar):
    """One tqdm bar over optimizer steps: ``invert 45/100 [00:02<00:02, loss=…, si_sdr=…]``. No
    validation/sanity bars, no ``v_num``; the last evaluation's SI-SDR (and objective) beside the loss;
    one write per step, created with its total (no ``0/?`` first line). When stdout is not a terminal
    (a log file, a Slurm job) no bar at all: one line per evaluation instead."""

    @property
    def train_description(self) -> str:
        return "invert"

    def init_train_tqdm(self):
        from pytorch_lightning.callbacks.progress.tqdm_progress import Tqdm

        t = self.trainer  # over all steps, also when resumed mid-epoch (Lightning's bar shows "5/?" then)
        return Tqdm(
            desc=self.train_description,
            total=t.max_steps,
            initial=int(t.global_step),
            position=2 * self.process_position,
            disable=self.is_disabled,
            leave=True,
            dynamic_ncols=True,
            file=sys.stdout,
            smoothing=0,
            bar_format=self.BAR_FORMAT,
        )

    def on_train_start(self, trainer: pl.Trainer, *_: Any) -> None:
        if not sys.stdout.isatty():
            self.disable()
        super().on_train_start(trainer, *_)

    def on_train_epoch_start(self, trainer: pl.Trainer, *_: Any) -> None:  # Lightning's renames it "Epoch 0"
        pass

    def on_train_batch_end(self, trainer: pl.Trainer, module: pl.LightningModule, *_: Any) -> None:
        bar = self.train_progress_bar
        n = int(trainer.global_step)
        if bar is not None and not bar.disable and self._should_update(n, bar.total):
            bar.set_postfix(self.get_metrics(trainer, module), refresh=False)
            bar.n = n
            bar.refresh()  # the one write of this step (Lightning's writes twice: count, then postfix)

    def on_evaluation(self, trainer: pl.Trainer, module: Any, clip: Any, record: dict, audio: torch.Tensor) -> None:
        if self.is_disabled and self.train_progress_bar is not None:  # no bar (not a terminal): a line
            sdr = f", SI-SDR {record['si_sdr']:.2f} dB" if "si_sdr" in record else ""
            who = f"{clip.name} " if len(module.clips) > 1 else ""
            log.info("%sstep %d/%d: objective %.4f%s", who, record["step"], trainer.max_steps, record["objective"], sdr)

    def get_metrics(self, trainer: pl.Trainer, module: pl.LightningModule) -> dict:
        m = super().get_metrics(trainer, module)
        m.pop("v_num", None)
        last = [c.history[-1]["si_sdr"] for c in getattr(module, "clips", []) if c.history]
        if last:  # a group: the mean over its clips
            m["si_sdr"] = f"{sum(last) / len(last):.2f}"
        return m


class EarlyStop(pl.Callback):
    """Stop a clip when its discrete objective (``clip.history``, one entry per evaluation) has not
    improved by more than ``min_rel_delta`` for ``patience`` evaluations; the fit ends with its last
    clip. Stateless (read from the history), so a resumed run stops where an uninterrupted one would.

    Not Lightning's ``EarlyStopping``: that checks at validation or epoch end, and an inversion is one
    epoch without a validation loop (it would never fire mid-run); its ``min_delta`` is absolute, the
    objective's scale differs by loss config (a relative threshold is needed); and it stops the whole
    trainer, where each clip of a group stops on its own."""

    def __init__(self, patience: int, min_rel_delta: float):
        self.patience, self.min_rel_delta = int(patience), float(min_rel_delta)

    def on_train_batch_end(self, trainer, module, outputs, batch, batch_idx):
        if self.patience <= 0:
            return
        for clip in module.clips:
            objs = [h["objective"] for h in clip.history]
            done = clip.steps >= trainer.max_steps  # the last step: not an early stop
            if clip.active and objs and not done and evals_since_improvement(objs, self.min_rel_delta) >= self.patience:
                module.stop(clip, "early_stop")


class AtomicCheckpointIO(pl.plugins.io.TorchCheckpointIO):
    """Checkpoints written like every run file (:func:`voxinv.rundir.atomic_write`: a temporary sibling,
    fsync, rename): a full disk or a kill mid-write leaves the last good ``last.ckpt`` in place."""

    def save_checkpoint(self, checkpoint: dict[str, Any], path, storage_options: Any | None = None) -> None:
        rundir.atomic_write(path, lambda tmp: torch.save(checkpoint, tmp))


def stop_reason(trainer: pl.Trainer) -> str | None:
    """Why a fit that returned normally ended before ``max_steps`` for the clips still active:
    ``max_time`` (``+trainer.max_time``, Lightning's Timer); ``None`` when it ran all its steps (an early
    stop is each clip's own: :class:`EarlyStop`)."""
    from pytorch_lightning.callbacks import Timer

    if trainer.max_steps > 0 and trainer.global_step >= trainer.max_steps:
        return None
    for cb in trainer.callbacks:
        if isinstance(cb, Timer) and cb.time_remaining("train") is not None and cb.time_remaining("train") <= 0:
            return "max_time"
    return None
