"""Voxtral backbone (spec §4.1, §8): the Mistral decoder that turns prompt + audio frames into the
hidden states the flow head reads.

Own implementation on the checkpoint's layout: attribute names mirror the tensor names
(``layers.{i}.attention.wq``, ``feed_forward.w1``, ``attention_norm``, ``ffn_norm``, ``norm``,
``mm_audio_embeddings.tok_embeddings``, ``mm_audio_embeddings.audio_codebook_embeddings.embeddings``),
so loading is ``ckpt.load("")`` minus the other components. RoPE rotates **interleaved pairs**
``(x[2i], x[2i+1])`` — Mistral's native layout, the checkpoint as stored (no q/k permutation).
GQA via SDPA, RMSNorm computed in fp32 (as vLLM / HF do), SwiGLU, no biases. The tied LM head is
never used by TTS and is not built.

Memory of the release (bf16): 26 layers 6.05 GB + text embedding 0.81 GB + audio table 0.056 GB
= 6.91 GB (:func:`weight_bytes`); KV cache 104 KiB per position (26 layers × 2 × 8 heads × 128 × 2 B).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from voxinv.voxtral.codes import AudioCodebookEmbeddings
from voxinv.voxtral.layers import FeedForward, GQAProjections  # the same SwiGLU (w1 gate, w2 down, w3 up)
from voxinv.voxtral.params import AudioModelArgs, BackboneArgs, VoxtralParams

OTHER_PREFIXES = ("acoustic_transformer.", "audio_tokenizer.")


def default_dtype(device: str | torch.device) -> torch.dtype:
    """bf16 on accelerators (what the release was served in), fp32 on CPU."""
    return torch.float32 if torch.device(device).type == "cpu" else torch.bfloat16


class RMSNorm(nn.Module):
    """RMSNorm computed in fp32, cast back before the weight multiply (vLLM / HF Mistral order)."""

    def __init__(self, dim: int, eps: float):
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        xf = x.float()
        xf = xf * torch.rsqrt(xf.pow(2).mean(-1, keepdim=True) + self.eps)
        return xf.to(x.dtype) * self.weight


class KVCache:
    """Preallocated keys/values ``[n_layers, B, n_kv_heads, max_len, head_dim]``.

    Positions ``[start, start + L)`` are written by a forward call; attention reads ``[0, start + L)``.
    """

    def __init__(
        self,
        n_layers: int,
        batch: int,
        n_kv_heads: int,
        head_dim: int,
        max_len: int,
        *,
        dtype: torch.dtype,
        device: str | torch.device,
    ) -> None:
        shape = (n_layers, batch, n_kv_heads, max_len, head_dim)
        self.k = torch.zeros(shape, dtype=dtype, device=device)
        self.v = torch.zeros(shape, dtype=dtype, device=device)
        self.max_len = max_len

    def update(self, layer: int, start: int, k: torch.Tensor, v: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Store ``k, v`` ``[B, Hkv, L, Dh]`` at ``start`` and return all keys/values up to it."""
        end = start + k.shape[2]
        if end > self.max_len:
            raise RuntimeError(f"KV cache holds {self.max_len} positions, asked for {end}: build a larger cache")
        self.k[layer, :, :, start:end] = k
        self.v[layer, :, :, start:end] = v
        return self.k[layer, :, :, :end], self.v[layer, :, :, :end]

    @property
    def nbytes(self) -> int:
        return self.k.numel() * self.k.element_size() * 2


class Attention(GQAProjections):
    def __init__(self, args: BackboneArgs):
        super().__init__(args.dim, args.n_heads, args.n_kv_heads, args.head_dim)

    def forward(
        self,
        x: torch.Tensor,  # [B, L, D]
        cos: torch.Tensor,  # [L, Dh/2] fp32
        sin: torch.Tensor,
        start_pos: int,
        cache: KVCache | None,
        layer: int,
    ) -> torch.Tensor:
        L = x.shape[1]
        q, k, v = self.qkv(x)
        q, k = apply_rope(q, cos, sin).transpose(1, 2), apply_rope(k, cos, sin).transpose(1, 2)
        v = v.transpose(1, 2)  # [B, H(kv), L, Dh]
        if cache is not None:
            k, v = cache.update(layer, start_pos, k, v)
        S = k.shape[2]
        if L == 1:  # one new position attends to everything before it
            out = F.scaled_dot_product_attention(q, k, v, enable_gqa=True)
        elif S == L:  # plain causal (no earlier positions)
            out = F.scaled_dot_product_attention(q, k, v, is_causal=True, enable_gqa=True)
        else:  # chunk after cached positions: query i sees keys ≤ S - L + i
            mask = torch.arange(S, device=x.device)[None, :] <= torch.arange(S - L, S, device=x.device)[:, None]
            out = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, enable_gqa=True)
        return self.out(out)


def rope_tables(head_dim: int, theta: float, positions: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """cos/sin ``[L, head_dim/2]`` (fp32) for integer ``positions`` ``[L]``."""
    inv_freq = 1.0 / theta ** (torch.arange(0, head_dim, 2, dtype=torch.float32, device=positions.device) / head_dim)
    ang = positions.float()[:, None] * inv_freq[None, :]
    return ang.cos(), ang.sin()


def apply_rope(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """Rotate interleaved pairs ``(x[2i], x[2i+1])`` of ``x`` ``[B, L, H, Dh]`` (fp32 math)."""
    xf = x.float().unflatten(-1, (-1, 2))  # [B, L, H, Dh/2, 2]
    a, b = xf[..., 0], xf[..., 1]
    c, s = cos[None, :, None, :], sin[None, :, None, :]
    return torch.stack((a * c - b * s, a * s + b * c), dim=-1).flatten(-2).to(x.dtype)


class TransformerBlock(nn.Module):
    def __init__(self, args: BackboneArgs):
        super().__init__()
        self.attention = Attention(args)
        self.feed_forward = FeedForward(args.dim, args.hidden_dim)
        self.attention_norm = RMSNorm(args.dim, args.norm_eps)
        self.ffn_norm = RMSNorm(args.dim, args.norm_eps)

    def forward(self, x, cos, sin, start_pos, cache, layer) -> torch.Tensor:  # [B, L, D]
        h = x + self.attention(self.attention_norm(x), cos, sin, start_pos, cache, layer)
        return h + self.feed_forward(self.ffn_norm(h))


class MMAudioEmbeddings(nn.Module):
    """``mm_audio_embeddings.*``: text embedding (also the unused tied head) + audio-code table."""

    def __init__(self, args: BackboneArgs, audio: AudioModelArgs):
        super().__init__()
        self.tok_embeddings = nn.Embedding(args.vocab_size, args.dim)
        self.audio_codebook_embeddings = AudioCodebookEmbeddings(audio, args.dim)


class Backbone(nn.Module):
    """The Mistral decoder. ``forward(embeds [B, L, D], start_pos, cache)`` → final-norm hidden ``[B, L, D]``."""

    def __init__(self, args: BackboneArgs, audio: AudioModelArgs):
        super().__init__()
        if not args.causal or args.use_biases:
            raise NotImplementedError("only the released causal, bias-free backbone is supported")
        self.args = args
        self.layers = nn.ModuleList(TransformerBlock(args) for _ in range(args.n_layers))
        self.norm = RMSNorm(args.dim, args.norm_eps)
        self.mm_audio_embeddings = MMAudioEmbeddings(args, audio)

    @property
    def dtype(self) -> torch.dtype:
        return self.norm.weight.dtype

    @property
    def device(self) -> torch.device:
        return self.norm.weight.device

    def embed_tokens(self, ids: torch.Tensor) -> torch.Tensor:
        """Text token ids ``[...]`` → ``[..., D]``."""
        return self.mm_audio_embeddings.tok_embeddings(ids)

    def embed_codes(self, model_codes: torch.Tensor) -> torch.Tensor:
        """Model-format frames ``[..., 37]`` → summed code embeddings ``[..., D]`` (the frame's input)."""
        return self.mm_audio_embeddings.audio_codebook_embeddings(model_codes)

    def new_cache(self, max_len: int, batch: int = 1) -> KVCache:
        a = self.args
        return KVCache(a.n_layers, batch, a.n_kv_heads, a.head_dim, max_len, dtype=self.dtype, device=self.device)

    def forward(self, embeds: torch.Tensor, start_pos: int = 0, cache: KVCache | None = None) -> torch.Tensor:
        """``embeds`` ``[B, L, D]`` at positions ``start_pos … start_pos + L - 1`` → hidden ``[B, L, D]``.

        Without a cache the call sees only its own ``L`` positions (``start_pos`` still sets RoPE).
        """
        L = embeds.shape[1]
        pos = torch.arange(start_pos, start_pos + L, device=embeds.device)
        cos, sin = rope_tables(self.args.head_dim, self.args.rope_theta, pos)
        h = embeds.to(self.dtype)
        for i, layer in enumerate(self.layers):
            h = layer(h, cos, sin, start_pos, cache, i)
        return self.norm(h)

    @classmethod
    def from_checkpoint(
        cls,
        ckpt,  # voxinv.voxtral.checkpoint.Checkpoint
        *,
        dtype: torch.dtype | None = None,
        device: str | torch.device = "cpu",
    ) -> Backbone:
        """Build from a checkpoint reading only backbone tensors (cast tensor by tensor to ``dtype``)."""
        from voxinv.voxtral.checkpoint import check_state

        dtype = dtype or default_dtype(device)
        p: VoxtralParams = ckpt.params
        tensors = ckpt.load("", dtype=dtype, skip=OTHER_PREFIXES)
        with torch.device("meta"):
            model = cls(p.backbone, p.audio)
        check_state({k: v.shape for k, v in model.state_dict().items()}, tensors, where="backbone")
        model.load_state_dict(tensors, assign=True)
        # non-persistent buffer created on meta: rebuild it
        emb = model.mm_audio_embeddings.audio_codebook_embeddings
        emb.offsets = torch.tensor(p.audio.codebook_offsets)
        return model.to(device).eval().requires_grad_(False)


def weight_bytes(params: VoxtralParams, dtype: torch.dtype = torch.bfloat16) -> dict[str, int]:
    """Bytes of each component's weights in ``dtype`` (from the manifest, nothing loaded)."""
    from voxinv.voxtral.tiny import manifest

    size = torch.empty((), dtype=dtype).element_size()
    out = {"backbone_layers": 0, "text_embedding": 0, "audio_table": 0, "flow": 0, "codec": 0}
    for name, shape in manifest(params).items():
        n = math.prod(shape) * size
        if name.startswith("acoustic_transformer."):
            out["flow"] += n
        elif name.startswith("audio_tokenizer."):
            out["codec"] += n
        elif name.startswith("mm_audio_embeddings.tok_embeddings"):
            out["text_embedding"] += n
        elif name.startswith("mm_audio_embeddings.audio_codebook_embeddings"):
            out["audio_table"] += n
        else:
            out["backbone_layers"] += n
    out["backbone"] = out["backbone_layers"] + out["text_embedding"] + out["audio_table"]
    return out


def kv_bytes_per_position(args: BackboneArgs, dtype: torch.dtype = torch.bfloat16) -> int:
    """KV-cache bytes per sequence position (all layers, keys + values)."""
    return 2 * args.n_layers * args.n_kv_heads * args.head_dim * torch.empty((), dtype=dtype).element_size()
