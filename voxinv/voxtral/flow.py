"""Flow-matching acoustic transformer (spec §7), checkpoint prefix ``acoustic_transformer.``.

From the backbone's final-norm hidden ``h`` ``[B, D]`` of the position that predicts a frame:

1. semantic code = greedy argmax of ``semantic_codebook_output(h)`` with [EMPTY_AUDIO] and the
   padding rows masked ([END_AUDIO] allowed) — already model format (1 = END, 2.. = code + 2);
2. 36 acoustic values = 7-step Euler integration from ``x0 ~ N(0, I)`` of a velocity network with
   classifier-free guidance (``v = α·v(h) + (1 − α)·v(0)``), quantized to 21 FSQ levels, + 2;
   an END frame gets EMPTY (0) acoustics, i.e. ``[1, 2, …, 2]`` after the shift.

The velocity network runs a 3-token sequence ``[x_t, t, h]`` through bidirectional layers with no
positional encoding and reads token 0. ``x0`` is passed in, so the caller owns the randomness
(:mod:`voxinv.voxtral.tts` draws one ``torch.randn(1, 36)`` per frame).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from voxinv.voxtral.codec import fsq_codes
from voxinv.voxtral.codes import EMPTY_AUDIO, END_AUDIO, N_SPECIAL
from voxinv.voxtral.layers import FeedForward, GQAProjections  # the same SwiGLU (w1 gate, w2 down, w3 up)
from voxinv.voxtral.params import AudioModelArgs, FlowArgs, VoxtralParams


class BidirectionalAttention(GQAProjections):
    """GQA attention over the whole (3-token) sequence: no mask, no positional encoding."""

    def __init__(self, args: FlowArgs):
        super().__init__(args.dim, args.n_heads, args.n_kv_heads, args.head_dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # [B, S, D]
        q, k, v = (t.transpose(1, 2) for t in self.qkv(x))
        return self.out(F.scaled_dot_product_attention(q, k, v, enable_gqa=True))  # kv head ⌊h / (H/Hkv)⌋


class FlowBlock(nn.Module):
    def __init__(self, args: FlowArgs):
        super().__init__()
        self.attention = BidirectionalAttention(args)
        self.feed_forward = FeedForward(args.dim, args.hidden_dim)
        self.attention_norm = nn.RMSNorm(args.dim, eps=args.norm_eps)  # torch RMSNorm, as vLLM
        self.ffn_norm = nn.RMSNorm(args.dim, eps=args.norm_eps)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = x + self.attention(self.attention_norm(x))
        return h + self.feed_forward(self.ffn_norm(h))


class AcousticTransformer(nn.Module):
    """The flow head; attribute names mirror ``acoustic_transformer.*``."""

    def __init__(self, audio: AudioModelArgs):
        super().__init__()
        args = audio.acoustic_transformer_args
        self.args, self.audio = args, audio
        self.n_acoustic = audio.n_acoustic_codebook
        self.levels = audio.acoustic_codebook_size
        self.n_steps = args.n_decoding_steps
        self.input_projection = nn.Linear(self.n_acoustic, args.dim, bias=False)
        self.time_projection = nn.Linear(args.dim, args.dim, bias=False)
        self.llm_projection = nn.Linear(args.input_dim, args.dim, bias=False)
        self.layers = nn.ModuleList(FlowBlock(args) for _ in range(args.n_layers))
        self.norm = nn.RMSNorm(args.dim, eps=args.norm_eps)
        self.semantic_codebook_output = nn.Linear(args.dim, audio.semantic_head_rows, bias=False)
        self.acoustic_codebook_output = nn.Linear(args.dim, self.n_acoustic, bias=False)
        # absent from the checkpoint (spec §4.2): recomputed, exp(-ln(1e4)·i/(dim/2))
        self.register_buffer("inv_freq", self._inv_freq(args.dim), persistent=False)

    @staticmethod
    def _inv_freq(dim: int) -> torch.Tensor:
        return torch.exp(-math.log(10000.0) * torch.arange(dim // 2).float() / (dim // 2))

    @property
    def dtype(self) -> torch.dtype:
        return self.norm.weight.dtype

    # ------------------------------------------------------------------------------------ semantic
    def semantic_logits(self, h: torch.Tensor) -> torch.Tensor:
        """``h`` ``[..., D]`` → masked fp32 logits ``[..., 8320]`` (index = model-format code)."""
        logits = self.semantic_codebook_output(h.to(self.dtype)).float()
        mask = torch.zeros(logits.shape[-1], dtype=torch.bool, device=logits.device)
        mask[EMPTY_AUDIO] = True
        mask[N_SPECIAL + self.audio.semantic_codebook_size :] = True
        return logits.masked_fill(mask, float("-inf"))

    def semantic_code(self, h: torch.Tensor) -> torch.Tensor:
        """Greedy semantic code, model format ``[B]`` (1 = END)."""
        return self.semantic_logits(h).argmax(-1)

    # ------------------------------------------------------------------------------------ acoustic
    def time_embedding(self, t: torch.Tensor) -> torch.Tensor:
        """``t`` ``[B]`` → ``[B, D]`` = cat(cos(t·f), sin(t·f)) (cos first)."""
        ang = t.float()[:, None] * self.inv_freq[None, :]
        return torch.cat((ang.cos(), ang.sin()), dim=-1).to(self.dtype)

    def velocity(self, x: torch.Tensor, temb: torch.Tensor, h: torch.Tensor) -> torch.Tensor:
        """V(x_t, TimeEmb(t), h): ``[B, 36]``, ``[B, D]``, ``[B, D]`` → velocity ``[B, 36]``."""
        dt = self.dtype
        tokens = torch.stack(
            (self.input_projection(x.to(dt)), self.time_projection(temb.to(dt)), self.llm_projection(h.to(dt))),
            dim=1,
        )  # [B, 3, D]
        for layer in self.layers:
            tokens = layer(tokens)
        return self.acoustic_codebook_output(self.norm(tokens)[:, 0])

    def integrate(self, h: torch.Tensor, x0: torch.Tensor, cfg_alpha: float = 1.2) -> torch.Tensor:
        """Euler ODE with CFG from ``x0`` ``[B, 36]`` → continuous values ``[B, 36]`` (model dtype)."""
        dt = self.dtype
        h = h.to(dt)
        B = h.shape[0]
        t_grid = torch.linspace(0, 1, self.n_steps + 1, device=h.device).to(dt)  # bf16-rounded like vLLM
        alpha = torch.tensor(cfg_alpha, dtype=dt, device=h.device)
        h2 = torch.cat([h, torch.zeros_like(h)])  # conditional, unconditional (h zeroed)
        x = x0.to(device=h.device, dtype=dt)
        for i in range(self.n_steps):
            temb = self.time_embedding(t_grid[i].expand(B))
            v = self.velocity(torch.cat([x, x]), torch.cat([temb, temb]), h2)
            v = alpha * v[:B] + (1 - alpha) * v[B:]
            x = x + v * (t_grid[i + 1] - t_grid[i])
        return x

    def quantize(self, x: torch.Tensor, semantic: torch.Tensor) -> torch.Tensor:
        """Values ``[B, 36]`` → model-format acoustic codes ``[B, 36]`` (END frames → EMPTY + 2)."""
        q = fsq_codes(x, self.levels)  # round half to even
        q[semantic == END_AUDIO] = EMPTY_AUDIO
        return q + N_SPECIAL

    def forward(self, h: torch.Tensor, x0: torch.Tensor, cfg_alpha: float = 1.2) -> torch.Tensor:
        """One frame: hidden ``[B, D]`` + noise ``[B, 36]`` → model-format codes ``[B, 37]``."""
        semantic = self.semantic_code(h)
        acoustic = self.quantize(self.integrate(h, x0, cfg_alpha), semantic)
        return torch.cat([semantic[:, None], acoustic], dim=1)

    @classmethod
    def from_checkpoint(
        cls,
        ckpt,  # voxinv.voxtral.checkpoint.Checkpoint
        *,
        dtype: torch.dtype = torch.float32,
        device: str | torch.device = "cpu",
    ) -> AcousticTransformer:
        from voxinv.voxtral.checkpoint import check_state

        p: VoxtralParams = ckpt.params
        tensors = ckpt.load("acoustic_transformer.", dtype=dtype)
        with torch.device("meta"):
            model = cls(p.audio)
        check_state({k: v.shape for k, v in model.state_dict().items()}, tensors, where="acoustic_transformer")
        model.load_state_dict(tensors, assign=True)
        model.inv_freq = cls._inv_freq(p.audio.acoustic_transformer_args.dim)  # buffer was on meta
        return model.to(device).eval().requires_grad_(False)
