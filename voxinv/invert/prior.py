"""Backbone prior: how plausible a code sequence is as Voxtral speech, differentiable in the codes.

The frozen backbone reads the candidate frames teacher-forced, ``[BOS][BEGIN_AUDIO] frame_0 …
frame_{T-2}`` (positions 0 … T), and its hidden state at position ``1 + t`` — the one that predicts
frame t at generation time (spec §8) — scores frame t twice:

* ``prior_sem``: cross-entropy of the flow head's semantic logits (spec §7.1 masks: [EMPTY_AUDIO]
  and padding rows excluded, [END_AUDIO] kept in the normaliser) against the frame's semantic
  code, mean over frames;
* ``prior_flow``: conditional flow-matching error of the frame's 36 acoustic values: ``τ ~ U(0,1)``,
  ``x0 ~ N(0, I)``, ``x_τ = (1 − τ)·x0 + τ·x1``, MSE between ``V(x_τ, τ, h)`` and ``x1 − x0``
  (the σ_min = 1e-5 of training is negligible and dropped; no CFG, the conditional branch only).

Differentiable inputs (both straight-through in the inversion): ``sem_onehot`` ``[B, T, 8192]``
(over raw semantic codes) enters as ``sem_onehot @ E_sem`` and as the CE target; ``ac_values``
``[B, T, 36]`` in [−1, 1] enter the flow loss directly and the frame embedding through a linear
interpolation between the two adjacent level rows of each codebook's table slice — exact at the
21 levels, so at a discrete point the embedding equals the model's own ``Σ E[code + offset]``.

Cost per call: one backbone forward over ``T + 1`` positions (the last frame is only predicted,
never read, so ``T + 1`` rather than ``T + 2``) plus a backward through it when the loss is
optimised, and one flow-network pass over ``B·T`` 3-token sequences (cheap next to the backbone).
Full size that is a teacher-forced pass of the 3.0 B-parameter decoder: ≈ 6 GFLOP per position
forward, ≈ 18 GFLOP with backward, i.e. ≈ 3.6 TFLOP per step for a 200-frame (16 s) clip, plus
the bf16 weights (6.9 GB backbone + 0.8 GB flow) resident on the device. Measured on the tiny
model (dim 256, 2 layers; CPU, 1 thread, B = 1, T = 100): ≈ 60-80 ms forward + backward
(``tests/invert/test_prior.py::test_prior_cost`` prints it).
All backbone and flow weights are frozen (``requires_grad=False``).
"""

from __future__ import annotations

import os

import torch
import torch.nn.functional as F
from torch import nn

from voxinv.voxtral.backbone import Backbone, default_dtype
from voxinv.voxtral.codec import fsq_position, fsq_values
from voxinv.voxtral.codes import N_SPECIAL
from voxinv.voxtral.flow import AcousticTransformer
from voxinv.voxtral.params import VoxtralParams


class BackbonePrior(nn.Module):
    """Frozen Voxtral backbone + flow head as a loss on (relaxed) codes.

    ``model`` is a model directory / HF id, a :class:`~voxinv.voxtral.checkpoint.Checkpoint`, or a
    loaded :class:`~voxinv.voxtral.tts.VoxtralTTS` (its modules are shared, not copied). With
    ``seed`` set, every call draws the same ``τ`` / ``x0`` (deterministic loss); ``seed=None``
    uses the global RNG; a ``generator`` passed to :meth:`forward` wins over both.
    """

    def __init__(
        self,
        model,
        device: str | torch.device = "cpu",
        dtype: torch.dtype | None = None,
        seed: int | None = 0,
    ) -> None:
        super().__init__()
        from voxinv.voxtral.checkpoint import Checkpoint

        if hasattr(model, "backbone") and hasattr(model, "flow"):  # a VoxtralTTS
            backbone, flow, params = model.backbone, model.flow, model.params
        else:
            ckpt = model if isinstance(model, Checkpoint) else Checkpoint(os.fspath(model))
            dtype = dtype or default_dtype(device)
            backbone = Backbone.from_checkpoint(ckpt, dtype=dtype, device=device)
            flow = AcousticTransformer.from_checkpoint(ckpt, dtype=dtype, device=device)
            params = ckpt.params
        self.backbone: Backbone = backbone.requires_grad_(False).eval()
        self.flow: AcousticTransformer = flow.requires_grad_(False).eval()
        self.params: VoxtralParams = params
        self.seed = seed
        a = params.audio
        self.n_semantic, self.n_acoustic, self.levels = (
            a.semantic_codebook_size,
            a.n_acoustic_codebook,
            a.acoustic_codebook_size,
        )
        self.register_buffer(
            "prefix_ids", torch.tensor([params.bos_token_id, a.begin_audio_token_id]), persistent=False
        )

    # ------------------------------------------------------------------------------------- pieces
    def _tables(self) -> tuple[torch.Tensor, torch.Tensor]:
        """Semantic rows ``[8192, D]`` (raw code c at row c) and acoustic level rows ``[36·21, D]``."""
        emb = self.backbone.mm_audio_embeddings.audio_codebook_embeddings
        sem = emb.slice(0)[N_SPECIAL:]
        ac = torch.cat([emb.slice(k)[N_SPECIAL:] for k in range(1, 1 + self.n_acoustic)])
        return sem, ac

    def frame_embeddings(self, sem_onehot: torch.Tensor, ac_values: torch.Tensor) -> torch.Tensor:
        """Relaxed frame inputs ``[B, T, D]``: ``sem_onehot @ E_sem`` + Σ_k lerp of level rows.

        At one-hot semantics and exact FSQ levels this equals ``backbone.embed_codes`` (model format).
        """
        sem_t, ac_t = self._tables()
        dt = sem_t.dtype
        pos = fsq_position(ac_values.float().clamp(-1, 1), self.levels).clamp(0, self.levels - 1)
        lo = pos.detach().floor().clamp(max=self.levels - 2).long()  # [B, T, 36]
        frac = (pos - lo)[..., None]  # gradient flows through the fractional part
        w = F.one_hot(lo, self.levels) * (1 - frac) + F.one_hot(lo + 1, self.levels) * frac  # [B, T, 36, 21]
        return sem_onehot.to(dt) @ sem_t + w.flatten(-2).to(dt) @ ac_t

    def hidden(self, frames: torch.Tensor) -> torch.Tensor:
        """Frame inputs ``[B, T, D]`` → the hidden that predicts each frame ``[B, T, D]``."""
        B, T, _ = frames.shape
        prefix = self.backbone.embed_tokens(self.prefix_ids)[None].expand(B, -1, -1)
        seq = torch.cat([prefix.to(frames.dtype), frames[:, : T - 1]], dim=1)  # [B, T + 1, D]
        return self.backbone(seq)[:, 1:]

    # ------------------------------------------------------------------------------------ forward
    def forward(
        self,
        sem_onehot: torch.Tensor,  # [B, T, 8192] float, rows sum to 1
        ac_values: torch.Tensor,  # [B, T, 36] float in [-1, 1]
        generator: torch.Generator | None = None,
    ) -> dict[str, torch.Tensor]:
        if sem_onehot.dim() != 3 or sem_onehot.shape[-1] != self.n_semantic:
            raise ValueError(f"sem_onehot must be [B, T, {self.n_semantic}], got {list(sem_onehot.shape)}")
        if ac_values.shape != (*sem_onehot.shape[:2], self.n_acoustic):
            raise ValueError(
                f"ac_values must be [B, T, {self.n_acoustic}] like sem_onehot, got {list(ac_values.shape)}"
            )
        B, T, _ = sem_onehot.shape
        h = self.hidden(self.frame_embeddings(sem_onehot, ac_values))  # [B, T, D]

        logits = self.flow.semantic_logits(h)  # [B, T, 8320] fp32, masked
        logp = logits.log_softmax(-1)[..., N_SPECIAL : N_SPECIAL + self.n_semantic]
        prior_sem = -(sem_onehot.float() * logp).sum(-1).mean()

        if generator is None and self.seed is not None:
            generator = torch.Generator().manual_seed(self.seed)
        tau = torch.rand(B * T, generator=generator).to(h.device)  # drawn on CPU: same on any device
        x0 = torch.randn(B * T, self.n_acoustic, generator=generator).to(h.device)
        x1 = ac_values.reshape(B * T, self.n_acoustic).float()
        x_t = (1 - tau[:, None]) * x0 + tau[:, None] * x1
        v = self.flow.velocity(x_t, self.flow.time_embedding(tau), h.reshape(B * T, -1)).float()
        prior_flow = (v - (x1 - x0)).pow(2).mean()
        return {"prior_sem": prior_sem, "prior_flow": prior_flow}


def codes_to_inputs(
    model_or_raw_codes: torch.Tensor, *, model_format: bool = False, n_semantic: int = 8192, levels: int = 21
) -> tuple[torch.Tensor, torch.Tensor]:
    """Discrete codes ``[B, T, 37]`` (raw, or model format with ``model_format=True``) → the
    ``(sem_onehot, ac_values)`` pair :class:`BackbonePrior` takes (exact one-hot / FSQ levels)."""
    c = model_or_raw_codes.long() - (N_SPECIAL if model_format else 0)
    sem = F.one_hot(c[..., 0], n_semantic).float()
    ac = fsq_values(c[..., 1:].float(), levels)
    return sem, ac
