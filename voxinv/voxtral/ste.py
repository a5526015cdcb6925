"""Straight-through estimators of the codec quantizer: forward values exactly those of the discrete codes
(``Quantizer.decode`` of a semantic entry and 36 FSQ levels), gradients of a continuous stand-in.

One home for both users: the inversion's code parameters (:class:`voxinv.invert.params.CodeParams`) and the
learned encoder's quantizer (:func:`voxinv.encoder.quantize.quantize_ste`).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from voxinv.voxtral.codec import fsq_position, fsq_values


def straight_through(value: torch.Tensor, surrogate: torch.Tensor) -> torch.Tensor:
    """Exactly ``value`` forward, ``surrogate``'s gradient backward (``surrogate + (value - surrogate)``
    would round: this form adds an exact zero to ``value``)."""
    return value + (surrogate - surrogate.detach())


def onehot_ste(idx: torch.Tensor, probs: torch.Tensor) -> torch.Tensor:
    """One-hot of ``idx [...]`` forward, ``probs [..., V]``'s gradient backward: ``[..., V]``."""
    return straight_through(F.one_hot(idx, probs.shape[-1]).to(probs.dtype), probs)


def fsq_ste(pre: torch.Tensor, levels: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Acoustic pre-activations → (level positions, rounded forward: ``round(position)`` are the codes;
    FSQ values in [-1, 1] of those levels). tanh → ``levels`` levels, identity gradient through the rounding."""
    scaled = fsq_position(torch.tanh(pre), levels)
    q = scaled + (scaled.round() - scaled).detach()  # integer levels forward, identity backward
    return q, fsq_values(q, levels)
