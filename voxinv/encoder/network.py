"""The trainable encoder: the §11 architecture with weight-normed convs (the release's parametrisation),
its data-dependent initialisation, and the export under the release's tensor names."""

from __future__ import annotations

from pathlib import Path

import torch
from omegaconf import DictConfig
from torch import nn

from voxinv.encoder.data import RandomCrops, Recording
from voxinv.voxtral.codec import CodecEncoder, VoxtralCodec, load_encoder_tensors


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
