"""The encoder's LightningModule: crops → encoder → straight-through codes → frozen decoder → the
inversion's waveform loss terms, each crop against its own reconstruction; and its callbacks."""

from __future__ import annotations

import time
from pathlib import Path

import pytorch_lightning as pl
import torch
from hydra.utils import get_object
from omegaconf import DictConfig, OmegaConf
from torch import nn

from voxinv.encoder.quantize import nn_d2, perplexity, quantize_ste
from voxinv.frozen import Frozen
from voxinv.voxtral.codec import CodecEncoder, VoxtralCodec


def build_loss_terms(loss_cfg: DictConfig, sr: int, device) -> dict[str, nn.Module]:
    """The inversion's loss terms (those ``loss.weights`` lists); each crop is its own target, so only terms
    that consume the waveform serve, and a speaker term embeds each crop as its own reference."""
    from voxinv.invert.losses import Lazy, build_terms, chosen_terms, consumes, term_nodes
    from voxinv.speaker.ge2e import SpeakerEncoder

    loss = OmegaConf.to_container(loss_cfg, resolve=True)
    other = sorted(k for k, (_, cls) in chosen_terms(loss).items() if consumes(cls) != "wave")
    if other:
        wave = [k for k, node in term_nodes(loss).items() if consumes(get_object(node["_target_"])) == "wave"]
        raise ValueError(f"train_encoder supports the waveform loss terms {wave}; drop {other} from loss.weights")
    if loss["balancer"]["enabled"]:
        raise ValueError("train_encoder does not use the gradient balancer: set loss.balancer.enabled=false")
    terms = build_terms(loss, sr, None, Lazy(lambda: SpeakerEncoder.load(device)), device=device)
    return {k: terms[k] for k in loss["weights"]}  # computed in weights order: the gradient's summation order


def paired_terms(
    terms: dict[str, nn.Module], y: torch.Tensor, x: torch.Tensor, info: frozenset[str] = frozenset()
) -> dict[str, torch.Tensor]:
    """Every term per crop ``[B]``: reconstruction ``y[b]`` against its own crop ``x[b]``, one batched
    call per term (the waveform terms take a paired target ``[B, N]``); ``info`` (weight 0): no graph."""
    from voxinv.invert.losses import run_wave_terms

    return run_wave_terms(terms, y, x, list(terms), info)


class EncoderModule(pl.LightningModule):
    """Trainable encoder; the frozen decoder and the loss terms live outside Lightning's state."""

    def __init__(self, cfg: DictConfig, codec: VoxtralCodec, terms: dict[str, nn.Module], encoder: CodecEncoder):
        super().__init__()
        self.cfg = cfg
        self.encoder = encoder
        self.frozen = Frozen(codec=codec, terms=terms)
        table = codec.quantizer.semantic_codebook.table.float()
        self.register_buffer("table", table.clone(), persistent=False)  # [V, 256]
        self.unit = nn_d2(table)
        self.register_buffer("usage_ema", torch.zeros(table.shape[0]))  # running code histogram
        self.weights = {k: float(w) for k, w in cfg.loss.weights.items() if w > 0}
        self.info = frozenset(k for k, w in cfg.loss.weights.items() if w == 0)  # logged, not trained on
        self.val_records: list[dict] = []
        self.val_media: tuple[torch.Tensor, torch.Tensor] | None = None

    def on_fit_start(self) -> None:
        self.frozen.codec.to(self.device)
        for t in self.frozen.terms.values():
            t.to(self.device)

    def forward(self, wav: torch.Tensor):  # [B, N] -> (latent of codes, codes, aux)
        q = self.cfg.quantizer
        latent = self.encoder(wav[:, None])
        return quantize_ste(
            latent,
            self.table,
            self.frozen.codec.args.acoustic_codebook_size,
            semantic=q.semantic,
            tau=float(q.tau),
            unit=self.unit,
            usage_tau=None if q.get("usage_tau") is None else float(q.usage_tau),
        )

    def losses(self, wav: torch.Tensor) -> tuple[torch.Tensor, dict[str, torch.Tensor], torch.Tensor, torch.Tensor]:
        latent_q, codes, aux = self(wav)
        y = self.frozen.codec.decode_latent(latent_q)[:, 0].float()  # [B, N]
        terms = {k: v.mean() for k, v in paired_terms(self.frozen.terms, y, wav.float(), self.info).items()}
        q = self.cfg.quantizer
        total = sum(self.weights[k] * terms[k] for k in self.weights)  # info terms (weight 0) left out
        total = total + float(q.commit) * aux["commit"] + float(q.usage) * aux["usage"]
        return total, {**terms, **aux}, codes, y

    def training_step(self, batch: torch.Tensor, batch_idx: int):
        total, terms, codes, _ = self.losses(batch)
        if not torch.isfinite(total):
            raise FloatingPointError(f"non-finite training loss at step {self.global_step}: {terms}")
        V = self.table.shape[0]
        counts = torch.bincount(codes[:, 0].flatten(), minlength=V).float()
        d = float(self.cfg.quantizer.usage_ema)
        self.usage_ema.mul_(d).add_(counts, alpha=1 - d)
        self.log("loss", total.detach(), prog_bar=True)
        self.log_dict({f"train/{k}": v.detach() for k, v in terms.items()})
        self.log_dict(
            {
                "code/distinct": float((counts > 0).sum()),
                "code/perplexity": perplexity(counts),
                "code/ema_perplexity": perplexity(self.usage_ema),
                "train/lr": self.lr_schedulers().get_last_lr()[0],
            }
        )
        return total

    @torch.no_grad()
    def validation_step(self, batch: torch.Tensor, batch_idx: int):
        """Exact inference path: hard codes (``Quantizer.encode``) → fp32 decode → terms + log-mel."""
        from voxinv.eval.metrics import log_mel_distance

        codec = self.frozen.codec
        codes = codec.quantizer.encode(self.encoder(batch[:, None]))  # [B, 37, T]
        y = codec.decode(codes)[:, 0].float()
        terms = {k: v.mean() for k, v in paired_terms(self.frozen.terms, y, batch.float(), self.info).items()}
        mel = sum(log_mel_distance(batch[b].cpu(), y[b].cpu(), codec.sampling_rate) for b in range(len(batch))) / len(
            batch
        )
        self.log_dict({f"val/{k}": v for k, v in terms.items()}, sync_dist=True)
        self.log("val/mel", mel, sync_dist=True)
        self.log("val/distinct", float(codes[:, 0].unique().numel()), sync_dist=True)
        self.val_records.append(
            {"step": int(self.global_step), "mel": float(mel), **{k: float(v) for k, v in terms.items()}}
        )
        if batch_idx == 0:
            self.val_media = (batch[0].cpu(), y[0].cpu())

    def configure_optimizers(self):
        from hydra.utils import instantiate

        from voxinv.invert.schedule import warmup_cosine

        o = self.cfg.optim  # optim.optimizer: a torch.optim class, _partial_ (conf/optim/*.yaml)
        opt = instantiate(o.optimizer, _convert_="all")(self.encoder.parameters())
        total = int(self.cfg.steps)
        sched = torch.optim.lr_scheduler.LambdaLR(
            opt, lambda s: warmup_cosine(s, total, int(o.warmup), float(o.min_ratio))
        )
        return {"optimizer": opt, "lr_scheduler": {"scheduler": sched, "interval": "step"}}

    def on_save_checkpoint(self, checkpoint: dict) -> None:
        checkpoint["voxinv"] = {"val_records": self.val_records}

    def on_load_checkpoint(self, checkpoint: dict) -> None:
        self.val_records = list(checkpoint.get("voxinv", {}).get("val_records", []))


class StepClock(pl.Callback):
    """Process CPU seconds of each training step (forward, backward, optimizer, logging), this process."""

    def __init__(self):
        self.steps: list[float] = []
        self._t = 0.0

    def on_train_batch_start(self, trainer, module, batch, batch_idx):
        self._t = time.process_time()

    def on_train_batch_end(self, trainer, module, outputs, batch, batch_idx):
        self.steps.append(time.process_time() - self._t)


class ValMedia(pl.Callback):
    """Validation audio (first crop: target + reconstruction): W&B panels, or wav files under media/."""

    def __init__(self, out: Path):
        self.out = out

    def on_validation_epoch_end(self, trainer, module):
        if trainer.sanity_checking or not trainer.is_global_zero or module.val_media is None:
            return
        x, y = module.val_media
        sr, step = module.frozen.codec.sampling_rate, trainer.global_step
        from voxinv.invert.loggers import wandb_of

        wb = wandb_of(trainer.loggers)
        if wb is not None:
            import wandb

            wb.experiment.log(
                {
                    "media/val_target": wandb.Audio(x.numpy(), sample_rate=sr, caption="target"),
                    "media/val_reconstruction": wandb.Audio(y.numpy(), sample_rate=sr, caption=f"step {step}"),
                },
                step=step,
            )
        else:
            from voxinv.audio import write_wav

            (self.out / "media").mkdir(exist_ok=True)
            if step == 0 or not (self.out / "media" / "val_target.wav").exists():
                write_wav(self.out / "media" / "val_target.wav", x, sr)
            write_wav(self.out / "media" / f"val_step{step:06d}.wav", y, sr)
