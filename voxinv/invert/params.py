"""Code parameterizations: learnable tensors whose forward pass yields the latent of *discrete* codes.

Every parameterization returns, per step, a :class:`CodeSample`: the decoder latent of valid codes
(one semantic entry, 36 FSQ levels per frame) with straight-through gradients, plus the
straight-through one-hot / FSQ values the backbone prior consumes.

semantic:
* ``gumbel``      — logits ``[B, T, 8192]``; Gumbel-max sample forward, softmax(logits + g)/τ backward.
* ``softmax_ste`` — the same without noise: argmax forward, softmax(logits/τ) backward.
* ``latent``      — a continuous 256-d vector per frame, snapped to its nearest codebook entry
  (straight-through), with a commitment term ``‖z − sg(e)‖²``.
acoustic:
* ``fsq_ste``     — pre-activation ``[B, T, 36]``; tanh → 21 levels, rounded forward, identity backward.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from voxinv.voxtral.codec import fsq_codes, fsq_values
from voxinv.voxtral.ste import fsq_ste, onehot_ste, straight_through

SEMANTIC_KINDS = ("gumbel", "softmax_ste", "latent")


@dataclass
class CodeSample:
    latent: torch.Tensor  # [B, 292, T] decoder input of the discrete codes (straight-through)
    sem_onehot: torch.Tensor  # [B, T, 8192] straight-through one-hot of the semantic codes
    ac_values: torch.Tensor  # [B, T, 36] FSQ values in [-1, 1] (straight-through)
    aux: dict[str, torch.Tensor]  # extra loss terms of the parameterization ([B] each)


class CodeParams(nn.Module):
    """Learnable codes for ``batch`` restarts of a ``n_frames`` clip (``conf/codes/*.yaml`` sets
    ``semantic`` and the init scales; the codec sets ``levels`` and ``n_acoustic``)."""

    def __init__(
        self,
        table: torch.Tensor,  # [8192, 256] semantic codebook (frozen)
        batch: int,
        n_frames: int,
        *,
        semantic: str,
        levels: int,
        n_acoustic: int,
        init_logit_scale: float,
        init_acoustic_std: float,
        generator: torch.Generator | None = None,
    ):
        super().__init__()
        if semantic not in SEMANTIC_KINDS:
            raise ValueError(f"codes.semantic={semantic!r}: choose one of {SEMANTIC_KINDS}")
        self.semantic, self.levels = semantic, levels
        self.register_buffer("table", table.float(), persistent=False)
        V, D = table.shape
        g = generator
        if semantic == "latent":  # random codebook entries + noise, so the start is in-distribution
            idx = torch.randint(0, V, (batch, n_frames), generator=g)
            z = self.table[idx] + 0.1 * self.table.std() * torch.randn(batch, n_frames, D, generator=g)
            self.semantic_latent = nn.Parameter(z)
        else:
            self.semantic_logits = nn.Parameter(init_logit_scale * torch.randn(batch, n_frames, V, generator=g))
        self.acoustic = nn.Parameter(init_acoustic_std * torch.randn(batch, n_frames, n_acoustic, generator=g))

    @property
    def shape(self) -> tuple[int, int]:
        return tuple(self.acoustic.shape[:2])  # (B, T)

    # ---------------------------------------------------------------------------------- forward
    def forward(self, temperature: float = 1.0, noise: torch.Generator | None = None) -> CodeSample:
        aux: dict[str, torch.Tensor] = {}
        if self.semantic == "latent":
            z = self.semantic_latent  # [B, T, 256]
            idx = self._nearest(z.detach())
            e = self.table[idx]
            sem_emb = straight_through(e, z)  # exactly e forward, identity backward
            aux["commit"] = (z - e).pow(2).sum(-1).mean(-1)  # [B]
            # straight-through one-hot (for the prior): softmax of negative squared distances
            soft = (-(torch.cdist(z, self.table).pow(2)) / temperature).softmax(-1)
            sem_onehot = onehot_ste(idx, soft)
        else:
            logits = self.semantic_logits
            if self.semantic == "gumbel":
                # drawn from the module's own generator (checkpointed), on its device (the codes' in a run)
                dev = noise.device if noise is not None else logits.device
                u = torch.rand(logits.shape, generator=noise, device=dev).clamp_(1e-10, 1.0).to(logits.device)
                logits = logits - torch.log(-torch.log(u))  # + Gumbel(0, 1) noise
            probs = (logits / temperature).softmax(-1)  # [B, T, 8192]
            sem_onehot = onehot_ste(probs.argmax(-1), probs)  # forward: exactly one-hot; backward: softmax
            sem_emb = sem_onehot @ self.table  # [B, T, 256]: exactly table[idx] forward
        ac_values = fsq_ste(self.acoustic, self.levels)[1]  # [B, T, 36]
        latent = torch.cat([sem_emb, ac_values], dim=-1).transpose(1, 2)  # [B, 292, T]
        return CodeSample(latent=latent, sem_onehot=sem_onehot, ac_values=ac_values, aux=aux)

    def _nearest(self, z: torch.Tensor) -> torch.Tensor:  # [B, T, 256] -> [B, T]
        B, T, D = z.shape
        return torch.cdist(z.reshape(B * T, D), self.table).argmin(-1).view(B, T)

    # ------------------------------------------------------------------------------- discrete view
    @torch.no_grad()
    def codes(self) -> torch.Tensor:
        """The discrete codes the parameters stand for (no noise): raw ``[B, T, 37]`` int64."""
        if self.semantic == "latent":
            sem = self._nearest(self.semantic_latent)
        else:
            sem = self.semantic_logits.argmax(-1)
        ac = fsq_codes(torch.tanh(self.acoustic), self.levels)
        return torch.cat([sem[..., None], ac], dim=-1)

    @torch.no_grad()
    def set_codes(self, codes: torch.Tensor, logit_margin: float) -> None:
        """Point the parameters at raw codes ``[B, T, 37]`` (warm start / after coordinate descent).

        Semantic logits keep their relative noise but the chosen entry leads by ``logit_margin``;
        acoustic pre-activations sit at the centre of the chosen level's tanh interval.
        """
        codes = codes.to(self.acoustic.device)
        if self.semantic == "latent":
            self.semantic_latent.copy_(self.table[codes[..., 0]])
        else:
            lg = self.semantic_logits
            lg.sub_(lg.mean(-1, keepdim=True))
            lg.clamp_(-1.0, 1.0)
            lg.scatter_(-1, codes[..., :1], logit_margin)
        v = fsq_values(codes[..., 1:].float(), self.levels)
        self.acoustic.copy_(torch.atanh(v.clamp(-1 + 0.5 / (self.levels - 1), 1 - 0.5 / (self.levels - 1))))
