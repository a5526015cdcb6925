"""The codec's building blocks (spec §6): causal (transposed) convolutions with weight norm, SwiGLU
feed-forward, ALiBi sliding-window attention, transformer stages. Names mirror the checkpoint's tensor
names (``conv.weight``, ``attention.wq``, ``feed_forward.w1``…); the backbone and the flow model reuse the
same SwiGLU. Shapes: ``[B, C, T]`` between stages, ``[B, T, C]`` inside a transformer.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from voxinv.voxtral.params import CodecArgs


def _pad1d(x: torch.Tensor, left: int, right: int, mode: str) -> torch.Tensor:
    """F.pad that also reflects inputs shorter than the pad (zero-extends on the right first)."""
    if mode == "reflect":
        extra = max(0, max(left, right) - x.shape[-1] + 1)
        if extra:
            x = F.pad(x, (0, extra))
            return F.pad(x, (left, right), mode)[..., : x.shape[-1] + left + right - extra]
    return F.pad(x, (left, right), mode)


class CausalConv1d(nn.Module):
    """Left-padded conv: pad ``(k-1)·d + 1 - s`` on the left (+ right pad to a whole stride)."""

    def __init__(self, c_in: int, c_out: int, kernel_size: int, stride: int = 1, pad_mode: str = "reflect"):
        super().__init__()
        self.conv = nn.Conv1d(c_in, c_out, kernel_size, stride=stride, bias=False)
        self.pad_mode = pad_mode

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # [B, C_in, T] -> [B, C_out, ceil(T/s)]
        k, s = self.conv.kernel_size[0], self.conv.stride[0]
        pad = k - s
        n_frames = math.ceil((x.shape[-1] - k + pad) / s + 1)
        extra = (n_frames - 1) * s + k - pad - x.shape[-1]
        return self.conv(_pad1d(x, pad, extra, self.pad_mode))


class CausalConvTranspose1d(nn.Module):
    """Transposed conv whose ``k - s`` surplus samples are all trimmed on the right."""

    def __init__(self, c_in: int, c_out: int, kernel_size: int, stride: int):
        super().__init__()
        self.conv = nn.ConvTranspose1d(c_in, c_out, kernel_size, stride=stride, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # [B, C, T] -> [B, C, s·T]
        trim = self.conv.kernel_size[0] - self.conv.stride[0]
        y = self.conv(x)
        return y[..., : y.shape[-1] - trim]


class FeedForward(nn.Module):
    def __init__(self, dim: int, hidden_dim: int):
        super().__init__()
        self.w1 = nn.Linear(dim, hidden_dim, bias=False)
        self.w2 = nn.Linear(hidden_dim, dim, bias=False)
        self.w3 = nn.Linear(dim, hidden_dim, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.w2(F.silu(self.w1(x)) * self.w3(x))


def alibi_slopes(n_heads: int) -> torch.Tensor:
    """Upstream ALiBi slopes: ``r^0 … r^(n-1)``, ``r = 2^(-8/n)`` (1 … 1/128 for 8 heads)."""

    def pow2(n: int) -> list[float]:
        r = 2.0 ** (-8.0 / n)
        return [r**i for i in range(n)]

    if math.log2(n_heads).is_integer():
        return torch.tensor(pow2(n_heads), dtype=torch.float32)
    m = 2 ** math.floor(math.log2(n_heads))
    return torch.tensor(pow2(m) + pow2(2 * m)[::2][: n_heads - m], dtype=torch.float32)


class Attention(nn.Module):
    """Causal sliding-window MHA with ALiBi and qk-norm, computed banded.

    Each query attends to keys ``i-w … i`` only, so scores are ``[B, H, T, w+1]``: memory is
    linear in T and no ``[T, T]`` mask is ever built (the decoder runs thousands of times per
    inversion).
    """

    def __init__(self, args: CodecArgs, window: int):
        super().__init__()
        self.n_heads, self.n_kv_heads, self.head_dim = args.n_heads, args.n_kv_heads, args.head_dim
        self.window = window
        self.wq = nn.Linear(args.dim, args.n_heads * args.head_dim, bias=False)
        self.wk = nn.Linear(args.dim, args.n_kv_heads * args.head_dim, bias=False)
        self.wv = nn.Linear(args.dim, args.n_kv_heads * args.head_dim, bias=False)
        self.wo = nn.Linear(args.n_heads * args.head_dim, args.dim, bias=False)
        self.qk_norm = args.qk_norm
        if args.qk_norm:  # over the full projected width, before the head split
            self.q_norm = nn.RMSNorm(args.n_heads * args.head_dim, eps=args.qk_norm_eps)
            self.k_norm = nn.RMSNorm(args.n_kv_heads * args.head_dim, eps=args.qk_norm_eps)
        offsets = torch.arange(-window, 1, dtype=torch.float32)  # key j - query i, for j = i-w … i
        self.register_buffer("offsets", offsets, persistent=False)
        self.register_buffer("band_bias", alibi_slopes(args.n_heads)[:, None] * offsets, persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # [B, T, D]
        B, T, _ = x.shape
        w, H, Dh = self.window, self.n_heads, self.head_dim
        q, k, v = self.wq(x), self.wk(x), self.wv(x)
        if self.qk_norm:
            q, k = self.q_norm(q), self.k_norm(k)
        q = q.view(B, T, H, Dh).transpose(1, 2)  # [B, H, T, Dh]
        k = k.view(B, T, self.n_kv_heads, Dh).transpose(1, 2)
        v = v.view(B, T, self.n_kv_heads, Dh).transpose(1, 2)
        if self.n_kv_heads != H:
            k = k.repeat_interleave(H // self.n_kv_heads, dim=1)
            v = v.repeat_interleave(H // self.n_kv_heads, dim=1)
        # key/value bands: [B, H, T, w+1, Dh], band slot m holds position i - w + m
        kb = F.pad(k, (0, 0, w, 0)).unfold(2, w + 1, 1).transpose(-1, -2)
        vb = F.pad(v, (0, 0, w, 0)).unfold(2, w + 1, 1).transpose(-1, -2)
        scores = (q.unsqueeze(-2) @ kb.transpose(-1, -2)).squeeze(-2).float() / math.sqrt(Dh)
        scores = scores + self.band_bias[None, :, None, :]  # ALiBi slope·(j - i)
        invalid = (torch.arange(T, device=x.device)[:, None] + self.offsets) < 0  # keys before t=0
        scores = scores.masked_fill(invalid, float("-inf"))
        p = scores.softmax(-1).to(v.dtype)  # [B, H, T, w+1]
        out = (p.unsqueeze(-2) @ vb).squeeze(-2)  # [B, H, T, Dh]
        return self.wo(out.transpose(1, 2).reshape(B, T, H * Dh))


class TransformerBlock(nn.Module):
    def __init__(self, args: CodecArgs, window: int):
        super().__init__()
        self.attention = Attention(args, window)
        self.feed_forward = FeedForward(args.dim, args.hidden_dim)
        self.attention_norm = nn.RMSNorm(args.dim, eps=args.norm_eps)
        self.ffn_norm = nn.RMSNorm(args.dim, eps=args.norm_eps)
        self.layer_scale = args.layer_scale
        if args.layer_scale:
            init = args.layer_scale_init if args.layer_scale_init is not None else 0.1
            self.attention_scale = nn.Parameter(torch.full((args.dim,), float(init)))
            self.ffn_scale = nn.Parameter(torch.full((args.dim,), float(init)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # [B, T, D]
        r = self.attention(self.attention_norm(x))
        h = x + (self.attention_scale * r if self.layer_scale else r)
        r = self.feed_forward(self.ffn_norm(h))
        return h + (self.ffn_scale * r if self.layer_scale else r)


class Transformer(nn.Module):
    """A stage of ``n_layers`` blocks (checkpoint names ``layers.{i}``), run on ``[B, T, D]``."""

    def __init__(self, args: CodecArgs, n_layers: int, window: int):
        super().__init__()
        self.window = window
        self.layers = nn.ModuleList(TransformerBlock(args, window) for _ in range(n_layers))

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # [B, C, T] -> [B, C, T]
        h = x.transpose(1, 2)
        for layer in self.layers:
            h = layer(h)
        return h.transpose(1, 2)


class GQAProjections(nn.Module):
    """The four projections of grouped-query attention (checkpoint names ``wq``, ``wk``, ``wv``, ``wo``),
    shared by the backbone's causal and the flow model's bidirectional attention; ``qkv`` → ``[B, H, L, Dh]``."""

    def __init__(self, dim: int, n_heads: int, n_kv_heads: int, head_dim: int):
        super().__init__()
        self.n_heads, self.n_kv_heads, self.head_dim = n_heads, n_kv_heads, head_dim
        self.wq = nn.Linear(dim, n_heads * head_dim, bias=False)
        self.wk = nn.Linear(dim, n_kv_heads * head_dim, bias=False)
        self.wv = nn.Linear(dim, n_kv_heads * head_dim, bias=False)
        self.wo = nn.Linear(n_heads * head_dim, dim, bias=False)

    def qkv(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:  # [B, L, D] -> 3 × [B, L, H, Dh]
        B, L, _ = x.shape
        q = self.wq(x).view(B, L, self.n_heads, self.head_dim)
        return (
            q,
            self.wk(x).view(B, L, self.n_kv_heads, self.head_dim),
            self.wv(x).view(B, L, self.n_kv_heads, self.head_dim),
        )

    def out(self, o: torch.Tensor) -> torch.Tensor:  # [B, H, L, Dh] -> [B, L, D]
        B, _, L, _ = o.shape
        return self.wo(o.transpose(1, 2).reshape(B, L, self.n_heads * self.head_dim))
