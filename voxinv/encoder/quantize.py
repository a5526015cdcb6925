"""The encoder's quantizer: latent → valid codes with straight-through gradients (the estimators are
:mod:`voxinv.voxtral.ste`, shared with the inversion's code parameters), plus its auxiliary terms and
code-usage statistics."""

from __future__ import annotations

import math

import torch

from voxinv.voxtral.ste import fsq_ste, onehot_ste, straight_through


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
    ``semantic``: ``nearest`` (identity gradient to the latent) or ``softmax`` (the gradient of
    softmax(−d²/(τ·unit)) over the entries). ``usage_tau`` (default ``tau``): the temperature of the usage
    term's assignments only."""
    D = table.shape[1]
    z = latent[:, :D].transpose(1, 2).float()  # [B, T, 256]
    B, T, _ = z.shape
    d2 = torch.cdist(z.reshape(B * T, D), table.float()).pow(2)  # [BT, V]
    idx = d2.argmin(-1)
    e = table.float()[idx].view(B, T, D)
    soft = (-d2 / (tau * unit)).softmax(-1)  # [BT, V]
    if semantic == "nearest":
        sem = straight_through(e, z)  # exactly e forward, identity backward
    elif semantic == "softmax":
        sem = (onehot_ste(idx, soft) @ table.float()).view(B, T, D)  # exactly e forward
    else:
        raise ValueError(f"quantizer.semantic={semantic!r}: expected nearest or softmax")
    q, ac = fsq_ste(latent[:, D:].float(), levels)  # [B, 36, T] level positions (integers forward), values
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
    """exp(entropy) of a code histogram: the number of equally used codes it is worth."""
    p = counts.float() / counts.sum().clamp_min(1e-12)
    return float(torch.exp(-(p * (p + 1e-12).log()).sum()))
