"""Media logging: target/reconstruction audio and spectrogram comparisons at evaluation steps."""

from __future__ import annotations

import pytorch_lightning as pl
import torch


def spectrogram_figure(target: torch.Tensor, rec: torch.Tensor, sr: int, title: str = ""):
    """Two log-magnitude spectrograms (target above reconstruction) sharing one colour scale."""
    import matplotlib.pyplot as plt

    win = torch.hann_window(1024)
    specs = [
        20 * torch.log10(torch.stft(x.float().cpu(), 1024, 256, window=win, return_complex=True).abs() + 1e-6)
        for x in (target, rec)
    ]
    vmax = max(float(s.max()) for s in specs)
    fig, axes = plt.subplots(2, 1, figsize=(8, 5), sharex=True)
    for ax, s, name in zip(axes, specs, ("target", "reconstruction")):
        ax.imshow(
            s.numpy(),
            origin="lower",
            aspect="auto",
            vmin=vmax - 80,
            vmax=vmax,
            extent=(0, target.numel() / sr, 0, sr / 2000),
        )
        ax.set_ylabel(f"{name}\nkHz")
    axes[-1].set_xlabel("s")
    fig.suptitle(title)
    fig.tight_layout()
    return fig


class MediaLogger(pl.Callback):
    """After each evaluation, send audio + spectrogram comparison to W&B (every ``log_media_every``)."""

    def __init__(self, cfg):
        self.every = int(cfg.logger.get("log_media_every", 0) or 0)
        self.kind = cfg.logger.kind
        self.n_evals = 0

    def on_train_batch_end(self, trainer, module, outputs, batch, batch_idx):
        if self.kind != "wandb" or not self.every or not module.history:
            return
        if getattr(module, "_logged_eval", None) == len(module.history):
            return
        module._logged_eval = len(module.history)
        self.n_evals += 1
        if (self.n_evals - 1) % self.every:
            return
        import matplotlib.pyplot as plt
        import wandb

        sr = module.frozen.codec.sampling_rate
        rec, step = module._eval_audio, module.history[-1]["step"]
        fig = spectrogram_figure(module.target, rec, sr, f"step {step}")
        media = {
            "media/reconstruction": wandb.Audio(rec.numpy(), sample_rate=sr, caption=f"step {step}"),
            "media/spectrogram": wandb.Image(fig),
        }
        if self.n_evals == 1:
            media["media/target"] = wandb.Audio(module.target.cpu().numpy(), sample_rate=sr, caption="target")
        trainer.logger.experiment.log(media, step=trainer.global_step)
        plt.close(fig)


class StepsBar(pl.callbacks.TQDMProgressBar):
    """tqdm bar over optimizer steps (``invert: 45/100 [00:02<00:02, loss=…]``), not over epochs."""

    def on_train_epoch_start(self, trainer, *args) -> None:
        super().on_train_epoch_start(trainer, *args)
        self.train_progress_bar.set_description("invert")
