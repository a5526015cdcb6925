"""Learn the missing codec encoder against the frozen decoder (amortised initialisation).

python -m voxinv.train_encoder model=proxy data.sources=[data/encoder/train/manifest.json] \\
    val.sources=[data/encoder/eval/manifest.json]

The §11 encoder (:class:`~voxinv.voxtral.codec.CodecEncoder`, weight-normed convs as in the release)
maps random speech crops to a latent; the quantizer snaps it to *valid codes* with straight-through
gradients (semantic: nearest table entry, or a softmax over distances; acoustic: tanh → 21 FSQ
levels); the frozen decoder of ``model`` decodes them, and the inversion loss suite (``loss=…``)
compares the result with the crop. Only the encoder learns. Outputs in the run directory:
``encoder.safetensors`` (release names, loadable with ``load_codec(ckpt, encoder_path=…)`` and
``init=encoder init.path=…``), ``metrics.json``, ``checkpoints/last.ckpt`` (``resume=true``),
``media/`` (validation audio with the CSV logger; W&B gets audio panels).
"""

from __future__ import annotations

import json
import logging
import math
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import hydra
import pytorch_lightning as pl
import torch
import torch.nn.functional as F
from omegaconf import DictConfig, OmegaConf
from torch import nn

from voxinv import rundir
from voxinv.invert.guard import resume_checkpoint
from voxinv.invert.module import _Frozen
from voxinv.run import CONF_DIR
from voxinv.rundir import write_metrics
from voxinv.voxtral.codec import CodecEncoder, VoxtralCodec, fsq_position, fsq_values, load_encoder_tensors
from voxinv.voxtral.device import pick_device, to_dtype
from voxinv.voxtral.models import model_path

log = logging.getLogger("voxinv")
AUDIO_EXT = (".wav", ".flac", ".ogg", ".mp3", ".aiff", ".aif")

# ------------------------------------------------------------------------------------------------ data


@dataclass
class Recording:
    wav: torch.Tensor  # [N] float32, 24 kHz, peak-normalised
    speaker: str
    name: str


def _manifest_clips(p: Path) -> list[tuple[Path, str, str]]:
    m = json.loads(p.read_text())
    if "clips" not in m:
        raise ValueError(f"{p} is not a clip manifest (no 'clips' list): pass a manifest.json, a folder or audio files")
    out = []
    for c in m["clips"]:
        f = Path(c["path"])
        out.append(
            (f if f.is_absolute() else p.parent / f, str(c.get("speaker", p.parent.name)), str(c.get("id", f.stem)))
        )
    return out


def list_sources(sources, speakers=None, exclude=()) -> list[tuple[Path, str, str]]:
    """``(file, speaker, name)`` of every recording in ``sources`` (manifests, folders, files), filtered."""
    if not sources:
        raise ValueError(
            "data.sources is empty: pass manifest.json files, audio folders or files, e.g. "
            "data.sources=[data/encoder/train/manifest.json] (experiments/encoder_data.py makes one)"
        )
    found: list[tuple[Path, str, str]] = []
    for s in sources:
        p = Path(str(s)).expanduser()
        if p.is_dir():
            found += [(f, f.parent.name, f.stem) for f in sorted(p.rglob("*")) if f.suffix.lower() in AUDIO_EXT]
        elif p.suffix == ".json" and p.is_file():
            found += _manifest_clips(p)
        elif p.is_file():
            found.append((p, p.parent.name, p.stem))
        else:
            raise FileNotFoundError(f"data source {p} does not exist")
    keep = set(speakers) if speakers else None
    found = [r for r in found if (keep is None or r[1] in keep) and r[1] not in set(exclude)]
    if not found:
        raise ValueError(
            f"no recordings left in {list(sources)} after the speaker filters (speakers={speakers}, "
            f"exclude={list(exclude)})"
        )
    return found


def load_recordings(files: list[tuple[Path, str, str]], sr: int, peak: float) -> list[Recording]:
    from voxinv.audio import normalize_peak, read_audio

    return [Recording(normalize_peak(read_audio(f, sr), peak), spk, name) for f, spk, name in files]


class RandomCrops(torch.utils.data.Dataset):
    """Item ``i`` = one crop ``[L]`` drawn by a generator seeded with ``(seed, offset + i)``.

    Recordings are picked in proportion to their length; a crop longer than the recording is
    zero-padded; gain is uniform in dB. Indexed draws make DDP shards disjoint (DistributedSampler
    splits the indices) and let a resumed run continue the same stream (``offset``).
    """

    def __init__(
        self, recs: list[Recording], n: int, length: int, gain_db, min_rms_db: float, seed: int, offset: int = 0
    ):
        self.recs, self.n, self.length = recs, n, length
        self.lo, self.hi = float(gain_db[0]), float(gain_db[1])
        self.min_rms = 10 ** (min_rms_db / 20)
        self.seed, self.offset = seed, offset
        lens = torch.tensor([float(r.wav.numel()) for r in recs])
        self.p = lens / lens.sum()

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, i: int) -> torch.Tensor:
        g = torch.Generator().manual_seed(self.seed * 1_000_003 + self.offset + i)
        for _ in range(10):
            w = self.recs[int(torch.multinomial(self.p, 1, generator=g))].wav
            if w.numel() > self.length:
                s = int(torch.randint(0, w.numel() - self.length + 1, (1,), generator=g))
                x = w[s : s + self.length]
            else:
                x = F.pad(w, (0, self.length - w.numel()))
            if x.pow(2).mean().sqrt() >= self.min_rms:
                break
        gain = 10 ** ((self.lo + (self.hi - self.lo) * float(torch.rand((), generator=g))) / 20)
        return x * gain


def fixed_crops(recs: list[Recording], n: int, length: int) -> torch.Tensor:
    """The first ``length`` samples of up to ``n`` recordings (zero-padded): ``[n, length]``."""
    return torch.stack([F.pad(r.wav[:length], (0, max(0, length - r.wav.numel()))) for r in recs[:n]])


# ------------------------------------------------------------------------------------------ quantizer


def nn_d2(table: torch.Tensor, chunk: int = 1024) -> float:
    """Median squared distance of a table entry to its nearest other entry (the distance unit)."""
    t = table.float()
    best = []
    for s in range(0, t.shape[0], chunk):
        d = torch.cdist(t[s : s + chunk], t).pow(2)
        d[torch.arange(d.shape[0]), s + torch.arange(d.shape[0])] = float("inf")
        best.append(d.min(-1).values)
    return float(torch.cat(best).median().clamp_min(1e-12))


def quantize_ste(
    latent: torch.Tensor,
    table: torch.Tensor,
    levels: int,
    *,
    semantic: str,
    tau: float,
    unit: float,
    usage_tau: float | None = None,
) -> tuple[torch.Tensor, torch.Tensor, dict[str, torch.Tensor]]:
    """Encoder latent ``[B, 292, T]`` → (latent of valid codes ``[B, 292, T]`` with straight-through
    gradients, raw codes ``[B, 37, T]``, aux terms). The forward values are exactly those of
    ``Quantizer.encode`` + ``Quantizer.decode`` (nearest entry; tanh then round to 21 levels).
    ``usage_tau`` (default ``tau``): the temperature of the usage term's assignments only."""
    D = table.shape[1]
    z = latent[:, :D].transpose(1, 2).float()  # [B, T, 256]
    B, T, _ = z.shape
    d2 = torch.cdist(z.reshape(B * T, D), table.float()).pow(2)  # [BT, V]
    idx = d2.argmin(-1)
    e = table.float()[idx].view(B, T, D)
    soft = (-d2 / (tau * unit)).softmax(-1)  # [BT, V]
    if semantic == "nearest":
        sem = e + (z - z.detach())  # exactly e forward, identity backward
    elif semantic == "softmax":
        hard = F.one_hot(idx, table.shape[0]).to(soft.dtype)
        sem = ((hard + (soft - soft.detach())) @ table.float()).view(B, T, D)  # exactly e forward
    else:
        raise ValueError(f"quantizer.semantic={semantic!r}: expected nearest or softmax")
    pre = latent[:, D:].float()  # [B, 36, T]
    scaled = fsq_position(torch.tanh(pre), levels)
    q = scaled + (scaled.round() - scaled).detach()  # integer levels forward, identity backward
    ac = fsq_values(q, levels)
    out = torch.cat([sem.transpose(1, 2), ac], dim=1)  # [B, 292, T]
    codes = torch.cat([idx.view(B, 1, T), q.detach().round().long()], dim=1)  # [B, 37, T]
    # at tau = 1 each frame's soft assignment spreads over hundreds of entries, so its batch mean stays
    # high-entropy while the argmins collapse onto a few: a sharper usage temperature sees the collapse
    mean_p = (soft if usage_tau is None else (-d2 / (usage_tau * unit)).softmax(-1)).mean(0)
    aux = {
        "commit": (z - e.detach()).pow(2).sum(-1).mean() / unit,
        "usage": 1 + (mean_p * (mean_p + 1e-12).log()).sum() / math.log(table.shape[0]),  # 1 − H/log V
    }
    return out, codes, aux


def perplexity(counts: torch.Tensor) -> float:
    p = counts.float() / counts.sum().clamp_min(1e-12)
    return float(torch.exp(-(p * (p + 1e-12).log()).sum()))


# ------------------------------------------------------------------------------------------- encoder


def build_encoder(args, init: str | None, seed: int) -> CodecEncoder:
    """A trainable §11 encoder with weight-normed convs (release parametrisation), seeded or loaded."""
    torch.manual_seed(seed)
    enc = CodecEncoder(args)
    for m in enc.modules():
        if isinstance(m, nn.Conv1d):
            nn.utils.parametrizations.weight_norm(m, name="weight", dim=0)
    if init:
        state = load_encoder_tensors(init)
        missing, unexpected = enc.load_state_dict({k: v.float() for k, v in state.items()}, strict=False)
        if missing or unexpected:
            raise ValueError(
                f"encoder.init={init}: does not fit this model's encoder "
                f"(missing {missing[:3]}, unknown {unexpected[:3]})"
            )
    return enc


@torch.no_grad()
def data_init(enc: CodecEncoder, wav: torch.Tensor, table: torch.Tensor, acoustic_std: float) -> None:
    """Data-dependent weight-norm init (after Salimans & Kingma 2016): each conv's magnitudes ``g``
    are rescaled, in forward order, so that on ``wav [B, N]`` its output has unit std — the last
    conv's acoustic channels ``acoustic_std`` (the tanh's working range), its semantic ones coloured
    to the table's second moment (:func:`color_semantic`). One factor per conv, so a few crops
    suffice. A random encoder otherwise emits a latent ~100× smaller than the table: every frame
    snaps to the entry nearest the origin (collapsed codes) and the acoustic values all sit at the
    middle level."""
    convs = [m for m in enc.modules() if isinstance(m, nn.Conv1d)]
    D = table.shape[1]
    for i, conv in enumerate(convs):
        seen: list[torch.Tensor] = []
        h = conv.register_forward_hook(lambda m, a, o, seen=seen: seen.append(o))
        enc(wav[:, None])
        h.remove()
        o = seen[0]  # [B, C_out, T]
        g = conv.parametrizations.weight.original0  # [C_out, 1, 1]
        if i < len(convs) - 1:
            g.mul_(1 / o.std().clamp_min(1e-8))
        else:
            g[D:].mul_(acoustic_std / o[:, D:].std().clamp_min(1e-8))
            color_semantic(conv, o[:, :D].transpose(1, 2).reshape(-1, D), table)


def _sqrtm(m: torch.Tensor, power: float, eps: float) -> torch.Tensor:
    """``m ** power`` of a symmetric PSD matrix, eigenvalues floored at ``eps`` × the largest."""
    w, q = torch.linalg.eigh(m.double())
    w = w.clamp_min(eps * float(w.max()))
    return (q * w.pow(power)) @ q.T


@torch.no_grad()
def color_semantic(conv: nn.Conv1d, z: torch.Tensor, table: torch.Tensor, eps: float = 1e-2) -> None:
    """Map the last conv's semantic outputs ``z [n, D]`` so their second moment E[z zᵀ] equals the
    table's (E over entries): ``W_sem ← A W_sem`` with ``A = M_e^½ M_z^-½``, folded into the weight-norm
    ``g``/``v`` (the conv has no bias, so the uncentred moment carries the mean too). The table is
    low-rank (the proxy's: effective rank ≈ 9 of 256); an isotropic latent of the right scale lies
    mostly off its span, equally far from every entry, and snaps to a handful of hub entries — index
    collapse before the first step. Coloured, the latent concentrates in the table's span and its
    nearest entries are diverse (proxy, 128 frames: 116 distinct entries at init against 34 for the
    std-only scaling; the true encoder: 109). Both moments' eigenvalues are floored at ``eps`` × the
    largest: M_z's keeps the inverse bounded on a few crops, M_e's leaves a small isotropic part in
    the off-span directions (no direction of the latent starts dead)."""
    D = table.shape[1]
    t = table.double()
    a = _sqrtm(t.T @ t / t.shape[0], 0.5, eps) @ _sqrtm(z.double().T @ z.double() / z.shape[0], -0.5, eps)  # [D, D]
    pw = conv.parametrizations.weight
    w = conv.weight.detach().double()  # [C_out, C_in, k] = g · v / ‖v‖
    w_sem = torch.einsum("od,dik->oik", a, w[:D])
    v = torch.cat([w_sem, w[D:]]).to(pw.original1.dtype)
    g = v.flatten(1).norm(dim=1).view_as(pw.original0)
    pw.original1.copy_(v)
    pw.original0.copy_(g)


def encoder_state(enc: CodecEncoder, dtype: torch.dtype = torch.float32) -> dict[str, torch.Tensor]:
    """Release names (``input_proj.conv.parametrizations.weight.original0`` …), no prefix."""
    return {k: v.detach().to("cpu", dtype).contiguous() for k, v in enc.state_dict().items()}


def save_encoder(enc: CodecEncoder, path: Path, dtype: torch.dtype = torch.float32) -> Path:
    from safetensors.torch import save_file

    save_file(encoder_state(enc, dtype), str(path), metadata={"format": "pt", "producer": "voxinv.train_encoder"})
    return path


# ------------------------------------------------------------------------------------------ module


class PairedSpeaker(nn.Module):
    """``spk`` with a per-crop reference: 1 − cos(GE2E(y_b), GE2E(x_b))."""

    def __init__(self, encoder: nn.Module, sr: int):
        super().__init__()
        self.encoder, self.sr = encoder, sr

    def forward(self, y: torch.Tensor, x: torch.Tensor) -> torch.Tensor:  # [B, N], [B, N] -> [B]
        return 1 - F.cosine_similarity(self.encoder.embed(y, self.sr), self.encoder.embed(x, self.sr), dim=-1)


def build_loss_terms(loss_cfg: DictConfig, sr: int, device) -> dict[str, nn.Module]:
    """The inversion's waveform terms; ``spk`` compares each crop with its own reconstruction."""
    from voxinv.invert.losses import WAVE_TERMS, build_terms

    loss = OmegaConf.to_container(loss_cfg, resolve=True)
    weights = {k: float(w) for k, w in loss["weights"].items() if w > 0}
    other = sorted(set(weights) - set(WAVE_TERMS))
    if other:
        raise ValueError(f"train_encoder supports the waveform loss terms {WAVE_TERMS}; drop {other} from loss.weights")
    if loss["balancer"]["enabled"]:
        raise ValueError("train_encoder does not use the gradient balancer: set loss.balancer.enabled=false")
    terms = build_terms({**loss, "weights": {k: w for k, w in weights.items() if k != "spk"}}, sr, None, None)
    if "spk" in weights:
        from voxinv.invert.speaker import SpeakerEncoder

        terms["spk"] = PairedSpeaker(SpeakerEncoder.load(device), sr)
    return terms


def paired_terms(terms: dict[str, nn.Module], y: torch.Tensor, x: torch.Tensor) -> dict[str, torch.Tensor]:
    """Every term per crop ``[B]``: reconstruction ``y[b]`` against its own crop ``x[b]``, one batched
    call per term (the waveform terms take a paired target ``[B, N]``)."""
    return {name: term(y, x) for name, term in terms.items()}


class EncoderModule(pl.LightningModule):
    """Trainable encoder; the frozen decoder and the loss terms live outside Lightning's state."""

    def __init__(self, cfg: DictConfig, codec: VoxtralCodec, terms: dict[str, nn.Module], encoder: CodecEncoder):
        super().__init__()
        self.cfg = cfg
        self.encoder = encoder
        self.frozen = _Frozen(codec=codec, terms=terms)
        table = codec.quantizer.semantic_codebook.table.float()
        self.register_buffer("table", table.clone(), persistent=False)  # [V, 256]
        self.unit = nn_d2(table)
        self.register_buffer("usage_ema", torch.zeros(table.shape[0]))  # running code histogram
        self.weights = {k: float(w) for k, w in cfg.loss.weights.items() if w > 0}
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
        terms = {k: v.mean() for k, v in paired_terms(self.frozen.terms, y, wav.float()).items()}
        q = self.cfg.quantizer
        total = sum(self.weights[k] * terms[k] for k in terms)
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
        terms = {k: v.mean() for k, v in paired_terms(self.frozen.terms, y, batch.float()).items()}
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


# -------------------------------------------------------------------------------------------- run


def initial_encoder(cfg: DictConfig, codec: VoxtralCodec, recs: list[Recording], fresh: bool = True) -> CodecEncoder:
    """The encoder a run starts from: ``encoder.init`` or a seeded random one (+ data-dependent init
    on its own crop draw when ``fresh``; a resumed run loads its weights from the checkpoint)."""
    d = cfg.data
    encoder = build_encoder(codec.args, cfg.encoder.init, int(cfg.seed))
    if cfg.encoder.init is None and fresh and cfg.encoder.data_init:
        length = int(d.crop_frames) * codec.samples_per_frame
        g = RandomCrops(recs, int(cfg.encoder.data_init), length, d.gain_db, float(d.min_rms_db), int(cfg.seed) + 1)
        data_init(
            encoder,
            torch.stack([g[i] for i in range(len(g))]).to(codec.dtype),
            codec.quantizer.semantic_codebook.table,
            float(cfg.encoder.acoustic_std),
        )
    return encoder


def check_sources(cfg: DictConfig) -> tuple[list, list]:
    """The training and validation files (speaker-disjoint); one-line errors before anything is written."""
    d = cfg.data
    train_files = list_sources(d.sources, d.speakers, d.exclude_speakers)
    val_files = list_sources(cfg.val.sources, cfg.val.speakers, cfg.val.exclude_speakers) if cfg.val.sources else []
    shared = sorted({s for _, s, _ in train_files} & {s for _, s, _ in val_files})
    if shared:
        raise ValueError(
            f"validation speakers {shared} are also in the training data: add them to data.exclude_speakers"
        )
    return train_files, val_files


def train(cfg: DictConfig, out: Path) -> dict:
    """Everything one training run does; returns metrics.json's content."""
    from hydra.core.hydra_config import HydraConfig

    from voxinv.invert.guard import preflight

    t_start, c_start = time.time(), time.process_time()
    mine = rundir.held(out) is None  # else Hydra's callback claimed it
    claim = preflight(cfg, out, "train_encoder", hydra_written=HydraConfig.initialized())
    train_files, val_files = claim.cache["sources"]
    try:
        return _train(cfg, out, train_files, val_files, t_start, c_start)
    finally:
        if mine:
            claim.release()


def _train(cfg: DictConfig, out: Path, train_files, val_files, t_start: float, c_start: float) -> dict:
    from pytorch_lightning.callbacks import ModelCheckpoint

    from voxinv.invert.callbacks import AtomicCheckpointIO
    from voxinv.invert.guard import check_resume_file, interrupt_code, sigterm_as_interrupt
    from voxinv.invert.loggers import build_loggers, wandb_of
    from voxinv.voxtral.checkpoint import Checkpoint, CheckpointError, load_plain
    from voxinv.voxtral.codec import load_codec

    d = cfg.data
    cfg.paths.output_dir = str(out)  # the run directory (Hydra's, or the caller's) for paths.* / logger
    rundir.atomic_write(out / rundir.CONFIG, OmegaConf.to_yaml(cfg, resolve=True))
    pl.seed_everything(int(cfg.seed), workers=True, verbose=False)
    device = pick_device(cfg.device)

    ckpt = Checkpoint(model_path(cfg.model))
    codec = load_codec(ckpt, dtype=to_dtype(cfg.model.dtype), with_encoder=False)  # frozen; moved in on_fit_start
    sr, spf = codec.sampling_rate, codec.samples_per_frame
    recs = load_recordings(train_files, sr, float(d.peak))
    length = int(d.crop_frames) * spf
    world = int(cfg.trainer.devices) if str(cfg.trainer.devices).isdigit() else 1
    resume = resume_checkpoint(cfg, out)
    state = None
    if resume:
        check_resume_file(resume)  # tensors and plain data only: a pickle never runs code here
        state = load_plain(resume)
        if not isinstance(state, dict) or not isinstance(state.get("global_step"), int):
            raise CheckpointError(f"resume={resume}: not a train_encoder checkpoint (no global_step)")
    done = int(state["global_step"]) if state else 0
    n_items = max(0, int(cfg.steps) - done) * int(cfg.batch_size) * world
    crops = RandomCrops(
        recs, n_items, length, d.gain_db, float(d.min_rms_db), int(cfg.seed), offset=done * int(cfg.batch_size) * world
    )
    loader = torch.utils.data.DataLoader(
        crops, batch_size=int(cfg.batch_size), shuffle=False, num_workers=int(d.workers), drop_last=True
    )
    val_loader = None
    if val_files:
        val = fixed_crops(load_recordings(val_files, sr, float(d.peak)), int(cfg.val.n_crops), length)
        val_loader = torch.utils.data.DataLoader(val, batch_size=len(val), shuffle=False)

    terms = build_loss_terms(cfg.loss, sr, "cpu")
    encoder = initial_encoder(cfg, codec, recs, fresh=resume is None)
    module = EncoderModule(cfg, codec, terms, encoder)
    n_params = sum(p.numel() for p in encoder.parameters())
    hours = sum(r.wav.numel() for r in recs) / sr / 3600
    log.info(
        "encoder %.2f M params; %d training recordings (%.2f h, %d speakers); %d validation crops",
        n_params / 1e6,
        len(recs),
        hours,
        len({r.speaker for r in recs}),
        len(val_files[: int(cfg.val.n_crops)]),
    )
    every = int(cfg.val_every)
    loggers = build_loggers(cfg, resume=resume is not None)
    clock = StepClock()
    trainer = pl.Trainer(
        max_steps=int(cfg.steps),
        max_epochs=-1,
        logger=loggers,
        callbacks=[
            ModelCheckpoint(
                dirpath=str(out / "checkpoints"),
                every_n_train_steps=int(cfg.checkpoint_every),
                save_last=True,
                save_top_k=0,
                save_on_train_epoch_end=False,
            ),
            ValMedia(out),
            clock,
        ],
        accelerator="gpu" if device.type == "cuda" else "cpu",
        plugins=[AtomicCheckpointIO()],
        gradient_clip_val=float(cfg.optim.grad_clip) or None,
        val_check_interval=every if (val_loader is not None and 0 < every < int(cfg.steps)) else None,
        check_val_every_n_epoch=None if (val_loader is not None and 0 < every < int(cfg.steps)) else 1,
        num_sanity_val_steps=0,
        limit_val_batches=1.0 if val_loader is not None else 0,
        **cfg.trainer,
    )
    stopped, exit_code = None, 0
    if n_items:
        with sigterm_as_interrupt():  # SIGTERM (schedulers) like Ctrl-C: export the encoder so far, exit 128 + signal
            try:
                trainer.fit(module, loader, val_loader, ckpt_path=resume, weights_only=True)
            except SystemExit:  # Lightning answers Ctrl-C with sys.exit(1)
                if not trainer.interrupted:
                    raise
        if trainer.interrupted:
            stopped, exit_code = (
                f"interrupted at step {trainer.global_step}; exported the encoder so far",
                interrupt_code(),
            )
            log.warning("stopping: %s (resume=true continues from the last checkpoint)", stopped)
    elif resume:
        log.info("resume: %s already holds all %d steps: exporting it", resume, int(cfg.steps))
        module.load_state_dict(state["state_dict"])
        module.on_load_checkpoint(state)
    if not trainer.is_global_zero:
        return {}

    # export, then prove the file loads through load_codec and encodes exactly as trained; metrics.json
    # goes first and comes back last, so a half-exported run never looks finished
    rundir.metrics_path(out).unlink(missing_ok=True)
    enc_path = save_encoder(module.encoder.cpu(), out / "encoder.safetensors", to_dtype(cfg.export.dtype))
    metrics: dict = {
        "encoder": str(enc_path),
        "model": str(ckpt.path),
        "steps": int(trainer.global_step) if n_items else int(cfg.steps),
        "batch_size": int(cfg.batch_size),
        "devices": world,
        "crop_seconds": length / sr,
        "params_M": round(n_params / 1e6, 3),
        "wall_time_s": round(time.time() - t_start, 1),
        "cpu_time_s": round(time.process_time() - c_start, 1),  # this process, this (resumed) session
        "train_cpu_s": round(sum(clock.steps), 1),
        "step_cpu_s": round(sorted(clock.steps)[len(clock.steps) // 2], 4) if clock.steps else None,  # median
        "device": str(device),
        "data": {
            "train_recordings": len(recs),
            "train_hours": round(hours, 3),
            "train_speakers": sorted({r.speaker for r in recs}),
            "val_speakers": sorted({s for _, s, _ in val_files}),
            "excluded_speakers": list(d.exclude_speakers),
        },
        "train_final": {k: float(v) for k, v in trainer.callback_metrics.items() if k.startswith(("train/", "code/"))},
        "code_usage": {
            "ema_perplexity": perplexity(module.usage_ema),
            "ema_distinct": int((module.usage_ema > 1e-3).sum()),
        },
        "val": module.val_records,
        "stopped": stopped,
        "exit_code": exit_code,
    }
    if val_loader is not None:
        reloaded = load_codec(ckpt, encoder_path=enc_path)
        x = next(iter(val_loader))
        with torch.no_grad():
            c1 = reloaded.encode(x[:, None])
            c0 = reloaded.quantizer.encode(module.encoder(x[:, None].to(reloaded.dtype)))
        metrics["reload_codes_equal"] = bool(torch.equal(c0, c1))
    write_metrics(out, metrics)
    if wandb_of(loggers) is not None:
        import wandb

        wandb.finish()
    last = module.val_records[-1] if module.val_records else None
    print(
        f"[voxinv] {enc_path}" + (f" (validation log-mel {last['mel']:.3f} at step {last['step']})" if last else ""),
        file=sys.stderr,
    )
    return metrics


@hydra.main(version_base="1.3", config_path=CONF_DIR, config_name="train_encoder")
def main(cfg: DictConfig) -> None:
    from hydra.core.hydra_config import HydraConfig

    from voxinv.invert.guard import exit_on_bad_input

    out = Path(HydraConfig.get().runtime.output_dir)
    try:
        with exit_on_bad_input():  # bad input: one line, exit 2; a full disk: one line, exit 3
            metrics = train(cfg, out)
    finally:
        rundir.release(out)
    if metrics.get("exit_code"):
        sys.exit(metrics["exit_code"])  # interrupted: 128 + signal (README "Exit codes"); metrics.json says why


if __name__ == "__main__":
    main()
