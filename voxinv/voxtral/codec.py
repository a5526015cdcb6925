"""Voxtral codec: quantizer + decoder (released weights) + encoder architecture (not released).

Module and attribute names mirror the checkpoint's ``audio_tokenizer.*`` tensor names, so loading
is a rename table (weight norm ``conv.parametrizations.weight.original{0,1}`` → folded ``conv.weight``);
the building blocks (convolutions, attention, transformer stages) are in :mod:`voxinv.voxtral.layers`.
Math follows spec §6 exactly; shapes: codes ``[B, 37, T]`` (raw, 0-based), latent ``[B, 292, T]``,
waveform ``[B, 1, 1920·T]`` at 24 kHz.
"""

from __future__ import annotations

import os
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from voxinv.voxtral.layers import Attention, CausalConv1d, CausalConvTranspose1d, Transformer, alibi_slopes
from voxinv.voxtral.params import CodecArgs

# ------------------------------------------------------------------------------------------ quantizer


class SemanticCodebook(nn.Module):
    """EMA codebook: the usable table is ``embedding_sum / clamp(cluster_usage, 1e-5)``."""

    EPS = 1e-5

    def __init__(self, size: int, dim: int):
        super().__init__()
        self.register_buffer("cluster_usage", torch.ones(size))
        self.register_buffer("embedding_sum", torch.zeros(size, dim))
        self._cache: tuple[tuple, torch.Tensor] | None = None

    @property
    def table(self) -> torch.Tensor:  # [8192, 256], fp32 math, cached until the buffers change
        key = (
            self.embedding_sum.data_ptr(),
            self.embedding_sum._version,
            self.cluster_usage.data_ptr(),
            self.cluster_usage._version,
            self.embedding_sum.dtype,
        )
        if self._cache is None or self._cache[0] != key:
            es, cu = self.embedding_sum.float(), self.cluster_usage.float()
            self._cache = (key, (es / cu.clamp(min=self.EPS)[:, None]).to(self.embedding_sum.dtype))
        return self._cache[1]

    def decode(self, idx: torch.Tensor) -> torch.Tensor:  # [B, T] -> [B, 256, T]
        return F.embedding(idx, self.table).transpose(1, 2)

    def encode(self, x: torch.Tensor) -> torch.Tensor:  # [B, 256, T] -> [B, T] nearest entry
        B, D, T = x.shape
        flat = x.transpose(1, 2).reshape(B * T, D).float()
        return torch.cdist(flat, self.table.float()).argmin(-1).view(B, T)


def fsq_values(codes: torch.Tensor, levels: int) -> torch.Tensor:
    """FSQ: acoustic integer levels ``0 … levels-1`` → values in [-1, 1] (the decoder's latent)."""
    return codes * 2 / (levels - 1) - 1


def fsq_position(values: torch.Tensor, levels: int) -> torch.Tensor:
    """FSQ: values in [-1, 1] → continuous level position in [0, levels-1] (rounded: the code)."""
    return (values + 1) / 2 * (levels - 1)


def fsq_codes(values: torch.Tensor, levels: int) -> torch.Tensor:
    """FSQ: values (clamped to [-1, 1]) → nearest level ``0 … levels-1`` (round half to even)."""
    return fsq_position(values.clamp(-1, 1), levels).round().long()


class Quantizer(nn.Module):
    """Semantic VQ (first ``semantic_dim`` latent channels) + FSQ over ``acoustic_dim`` channels."""

    def __init__(self, args: CodecArgs):
        super().__init__()
        self.semantic_codebook = SemanticCodebook(args.semantic_codebook_size, args.semantic_dim)
        self.semantic_dim, self.acoustic_dim = args.semantic_dim, args.acoustic_dim
        self.levels = args.acoustic_codebook_size

    def fsq_values(self, codes: torch.Tensor) -> torch.Tensor:
        """Acoustic integer levels 0..20 → values in [-1, 1]."""
        return fsq_values(codes, self.levels)

    def fsq_codes(self, values: torch.Tensor) -> torch.Tensor:
        """Values in [-1, 1] (already squashed) → nearest level 0..20 (round half to even)."""
        return fsq_codes(values, self.levels)

    def decode(self, codes: torch.Tensor, dtype: torch.dtype = torch.float32) -> torch.Tensor:
        """Raw codes ``[B, 37, T]`` → latent ``[B, 292, T]`` (semantic first)."""
        sem = self.semantic_codebook.decode(codes[:, 0]).to(dtype)
        ac = self.fsq_values(codes[:, 1:]).to(dtype)
        return torch.cat([sem, ac], dim=1)

    def encode(self, latent: torch.Tensor) -> torch.Tensor:
        """Encoder latent ``[B, 292, T]`` → raw codes ``[B, 37, T]`` (nearest VQ entry, tanh + FSQ)."""
        sem = self.semantic_codebook.encode(latent[:, : self.semantic_dim])
        ac = self.fsq_codes(torch.tanh(latent[:, self.semantic_dim :].float()))
        return torch.cat([sem[:, None], ac], dim=1)


# -------------------------------------------------------------------------------------------- encoder


def encoder_windows(args: CodecArgs) -> list[int]:
    """Attention window of each encoder stage, then the window the decoder's first stage starts from.

    The window halves after each strided conv (16, 8, 4, 2 for the release; the decoder then
    starts at 2 and doubles back up).
    """
    window, out = args.attn_sliding_window_size, []
    for i in range(len(args.encoder_transformer_lengths)):
        out.append(window)
        if args.half_attn_window_upon_downsampling and args.encoder_convs_strides[i] > 1:
            window //= 2
    return out + [window]


class CodecEncoder(nn.Module):
    """The §11 encoder alone (``input_proj.*``, ``encoder_blocks.*``, release names, no prefix).

    Trained by ``voxinv.train_encoder`` against a frozen decoder; :class:`VoxtralCodec` built
    ``with_encoder=True`` holds the very same modules under the same names.
    """

    def __init__(self, args: CodecArgs):
        super().__init__()
        self.patch_size = args.pretransform_patch_size
        lengths, kernels, strides = (
            args.encoder_transformer_lengths,
            args.encoder_convs_kernels,
            args.encoder_convs_strides,
        )
        windows = encoder_windows(args)
        blocks: list[nn.Module] = []
        for i, n in enumerate(lengths):
            blocks.append(Transformer(args, n, windows[i]))
            last = i == len(lengths) - 1
            if kernels[i] != 1 or strides[i] != 1 or last:
                c_out = args.latent_dim if last else args.dim
                blocks.append(CausalConv1d(args.dim, c_out, kernels[i], strides[i], pad_mode="replicate"))
        self.input_proj = CausalConv1d(self.patch_size, args.dim, args.patch_proj_kernel_size)
        self.encoder_blocks = nn.ModuleList(blocks)

    def forward(self, wav: torch.Tensor) -> torch.Tensor:  # [B, 1, N] -> [B, 292, ceil(N/1920)]
        return run_encoder(self.input_proj, self.encoder_blocks, self.patch_size, wav)


def run_encoder(input_proj: nn.Module, blocks: nn.ModuleList, patch_size: int, wav: torch.Tensor) -> torch.Tensor:
    """Patchify (zero-pad to whole patches) → ``input_proj`` → stages; ``[B, 1, N]`` → ``[B, 292, T]``."""
    pad = (-wav.shape[-1]) % patch_size
    x = F.pad(wav, (0, pad))
    B = x.shape[0]
    x = x.view(B, -1, patch_size).transpose(1, 2)  # [B, 240, N/240]
    x = input_proj(x)
    for block in blocks:
        x = block(x)
    return x


# ---------------------------------------------------------------------------------------------- codec


def _is_conv(m: nn.Module) -> bool:
    return isinstance(m, (CausalConv1d, CausalConvTranspose1d))


class VoxtralCodec(nn.Module):
    """The codec (``audio_tokenizer.*``). Decoder + quantizer are released; the encoder is not.

    Build with ``with_encoder=False`` (default) to allocate only what the release ships.
    """

    def __init__(self, args: CodecArgs, *, with_encoder: bool = False):
        super().__init__()
        if not args.causal or args.channels != 1:
            raise NotImplementedError("only the released causal mono codec is supported")
        self.args = args
        self.patch_size = args.pretransform_patch_size

        # encoder (spec §11): built only if wanted; its strides also fix the decoder's windows
        if with_encoder:
            enc = CodecEncoder(args)  # same attribute names here, so checkpoint names stay top-level
            self.input_proj, self.encoder_blocks = enc.input_proj, enc.encoder_blocks
        window = encoder_windows(args)[-1]

        # decoder (spec §6.2): conv, then per stage a transformer followed by an upsampling conv
        kernels, strides = args.decoder_convs_kernels, args.decoder_convs_strides
        dec: list[nn.Module] = [CausalConv1d(args.latent_dim, args.dim, kernels[0], strides[0], pad_mode="replicate")]
        if args.half_attn_window_upon_downsampling and strides[0] > 1:
            window *= 2
        lengths = args.decoder_transformer_lengths
        for i, n in enumerate(lengths):
            dec.append(Transformer(args, n, window))
            if i + 1 < len(lengths) and (kernels[i + 1] != 1 or strides[i + 1] != 1):
                dec.append(CausalConvTranspose1d(args.dim, args.dim, kernels[i + 1], strides[i + 1]))
                if args.half_attn_window_upon_downsampling and strides[i + 1] > 1:
                    window *= 2
        self.decoder_blocks = nn.ModuleList(dec)
        self.quantizer = Quantizer(args)
        self.output_proj = CausalConv1d(args.dim, self.patch_size, args.patch_proj_kernel_size)

    # ----------------------------------------------------------------------------------- properties
    @property
    def has_encoder(self) -> bool:
        return hasattr(self, "encoder_blocks")

    @property
    def dtype(self) -> torch.dtype:
        return self.output_proj.conv.weight.dtype

    @property
    def samples_per_frame(self) -> int:
        return self.args.samples_per_frame

    @property
    def sampling_rate(self) -> int:
        return self.args.sampling_rate

    @property
    def windows(self) -> list[int]:
        """Attention windows of the decoder stages (2, 4, 8, 16 for the release)."""
        return [b.window for b in self.decoder_blocks if isinstance(b, Transformer)]

    # ------------------------------------------------------------------------------------- decoding
    def latent(self, codes: torch.Tensor) -> torch.Tensor:
        """Raw codes ``[B, 37, T]`` → latent ``[B, 292, T]`` in the decoder's dtype."""
        return self.quantizer.decode(codes, self.dtype)

    def decode_latent(self, latent: torch.Tensor) -> torch.Tensor:
        """Differentiable entry point: latent ``[B, 292, T]`` → waveform ``[B, 1, 1920·T]``."""
        x = latent.to(self.dtype)
        for block in self.decoder_blocks:
            x = block(x)  # convs and transformer stages both take/return [B, C, T]
        x = self.output_proj(x)  # [B, 240, 8T]
        B, H, T8 = x.shape
        return x.transpose(1, 2).reshape(B, 1, T8 * H)  # sample t·240 + h = channel h at step t

    def decode(self, codes: torch.Tensor) -> torch.Tensor:
        """Raw codes ``[B, 37, T]`` (or ``[37, T]``) → waveform ``[B, 1, 1920·T]``."""
        if codes.dim() == 2:
            codes = codes[None]
        return self.decode_latent(self.latent(codes))

    def decode_windowed(self, codes: torch.Tensor, chunk: int = 250, context: int = 25) -> torch.Tensor:
        """Decode long sequences in ``chunk``-frame windows with ``context`` frames of left context.

        The decoder's receptive field is < 25 frames, so with ``context >= 25`` this equals a full
        decode (up to float noise) while peak memory is bounded by ``chunk + context`` frames.
        """
        if codes.dim() == 2:
            codes = codes[None]
        return self.decode_latent_windowed(self.latent(codes), chunk, context)  # latents are per frame

    def decode_latent_windowed(self, latent: torch.Tensor, chunk: int = 250, context: int = 25) -> torch.Tensor:
        """:meth:`decode_latent` of ``[B, 292, T]`` in ``chunk``-frame windows with ``context`` frames of
        left context (see :meth:`decode_windowed`): a plain decode when it fits one window."""
        T, spf = latent.shape[-1], self.samples_per_frame
        if T <= chunk + context:
            return self.decode_latent(latent)
        parts = []
        for s in range(0, T, chunk):
            a = max(0, s - context)
            parts.append(self.decode_latent(latent[..., a : s + chunk])[..., (s - a) * spf :])
        return torch.cat(parts, dim=-1)

    # ------------------------------------------------------------------------------------- encoding
    def encode_latent(self, wav: torch.Tensor) -> torch.Tensor:
        """Waveform ``[B, 1, N]`` → encoder latent ``[B, 292, ceil(N/1920)]`` (architecture only)."""
        if not self.has_encoder:
            raise RuntimeError(
                "this codec has no encoder weights (Mistral did not release them); "
                "use voxinv.run to recover codes by optimization, or load a checkpoint with encoder tensors "
                "(or load_codec(..., encoder_path=encoder.safetensors) from python -m voxinv.train_encoder)"
            )
        return run_encoder(self.input_proj, self.encoder_blocks, self.patch_size, wav.to(self.dtype))

    def encode(self, wav: torch.Tensor) -> torch.Tensor:
        """Waveform ``[B, 1, N]`` → raw codes ``[B, 37, T]``."""
        return self.quantizer.encode(self.encode_latent(wav))


# ------------------------------------------------------------------------------- checkpoint ⇄ module

_WN = (".parametrizations.weight.original0", ".parametrizations.weight.original1")
ENCODER_PREFIXES = ("input_proj.", "encoder_blocks.")


def fold_weight_norm(tensors: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Replace each ``X.parametrizations.weight.original{0,1}`` (g, v) pair by ``X.weight = g·v/‖v‖``.

    The norm runs over all dims but 0 (torch's weight_norm default, also for ConvTranspose1d whose
    dim 0 is the input channel). Computed in fp32, exact up to rounding.
    """
    out: dict[str, torch.Tensor] = {}
    for name, t in tensors.items():
        if name.endswith(_WN[1]):
            continue
        if name.endswith(_WN[0]):
            base = name[: -len(_WN[0])]
            v = tensors.get(base + _WN[1])
            if v is None:
                raise KeyError(f"weight-norm magnitude {name} has no direction tensor {base + _WN[1]}")
            out[base + ".weight"] = torch._weight_norm(v.float(), t.float(), 0)
        else:
            out[name] = t
    orphans = [n for n in tensors if n.endswith(_WN[1]) and n[: -len(_WN[1])] + _WN[0] not in tensors]
    if orphans:
        raise KeyError(f"weight-norm direction without magnitude: {orphans[:3]}")
    return out


def unfold_weight_norm(state: dict[str, torch.Tensor], conv_prefixes: list[str]) -> dict[str, torch.Tensor]:
    """Inverse of :func:`fold_weight_norm` for saving: ``X.weight`` → (g = ‖W‖, v = W)."""
    out = {}
    for name, t in state.items():
        base = name[: -len(".weight")] if name.endswith(".weight") else None
        if base is not None and base in conv_prefixes:
            g = torch.linalg.vector_norm(t.float(), dim=tuple(range(1, t.dim())), keepdim=True)
            out[base + _WN[0]] = g.to(t.dtype)
            out[base + _WN[1]] = t
        else:
            out[name] = t
    return out


def conv_prefixes(codec: VoxtralCodec) -> list[str]:
    """Names of the weight-normed conv modules (``decoder_blocks.0.conv``, ``output_proj.conv``, …)."""
    return [n for n, m in codec.named_modules() if isinstance(m, (nn.Conv1d, nn.ConvTranspose1d))]


def codec_state_for_checkpoint(codec: VoxtralCodec) -> dict[str, torch.Tensor]:
    """The codec's tensors under their checkpoint names (weight norm un-folded, no prefix)."""
    state = {k: v for k, v in codec.state_dict().items()}
    return unfold_weight_norm(state, conv_prefixes(codec))


def load_encoder_tensors(path) -> dict[str, torch.Tensor]:
    """A stand-alone encoder file (``encoder.safetensors``: ``input_proj.*``, ``encoder_blocks.*``,
    no prefix, weight norm as ``parametrizations.weight.original{0,1}``), as ``load_codec`` merges it."""
    from safetensors.torch import load_file

    from voxinv.voxtral.checkpoint import CheckpointError

    p = Path(path).expanduser()
    if not p.is_file():
        raise CheckpointError(
            f"encoder file {p} does not exist; train one with `python -m voxinv.train_encoder` "
            "(it writes encoder.safetensors in its run directory)"
        )
    tensors = load_file(str(p))
    stray = [k for k in tensors if not k.startswith(ENCODER_PREFIXES)]
    if stray or not tensors:
        raise CheckpointError(
            f"{p} is not an encoder file: expected only input_proj.* / encoder_blocks.* tensors"
            + (f", found e.g. {', '.join(stray[:3])}" if stray else ", found none")
        )
    return tensors


def load_codec(
    ckpt,  # voxinv.voxtral.checkpoint.Checkpoint (typed loosely to avoid an import cycle in tiny.py)
    *,
    dtype: torch.dtype = torch.float32,
    device: str | torch.device = "cpu",
    with_encoder: bool | None = None,
    encoder_path: str | os.PathLike | None = None,
) -> VoxtralCodec:
    """Build the codec from a checkpoint, reading only ``audio_tokenizer.*`` tensors.

    ``with_encoder=None`` builds the encoder only if the checkpoint has its tensors (the release
    does not). ``encoder_path`` (an ``encoder.safetensors`` from ``voxinv.train_encoder``) supplies
    the encoder tensors, replacing the checkpoint's own if it has any. The semantic-table buffers
    keep the checkpoint's values exactly (cast to ``dtype``).
    """
    from voxinv.voxtral.checkpoint import check_state

    tensors = ckpt.load("audio_tokenizer.")
    if encoder_path is not None:
        if with_encoder is False:
            raise ValueError("load_codec: encoder_path given with with_encoder=False")
        tensors = {k: v for k, v in tensors.items() if not k.startswith(ENCODER_PREFIXES)}
        tensors.update(load_encoder_tensors(encoder_path))
    has_enc = any(k.startswith(ENCODER_PREFIXES) for k in tensors)
    if with_encoder is None:
        with_encoder = has_enc
    elif with_encoder and not has_enc:
        raise RuntimeError(f"{ckpt.path} has no codec encoder tensors (the release ships only the decoder)")
    if not with_encoder:
        tensors = {k: v for k, v in tensors.items() if not k.startswith(ENCODER_PREFIXES)}
    with torch.device("meta"):
        codec = VoxtralCodec(ckpt.params.codec, with_encoder=with_encoder)
    folded = fold_weight_norm(tensors)
    expected = {k: v.shape for k, v in codec.state_dict().items()}
    check_state(
        expected, folded, where="audio_tokenizer" if encoder_path is None else f"audio_tokenizer + {encoder_path}"
    )
    codec.load_state_dict({k: v.to(dtype) for k, v in folded.items()}, assign=True)
    # non-persistent buffers were created on meta: rebuild them on the real device
    for m in codec.modules():
        if isinstance(m, Attention):
            offsets = torch.arange(-m.window, 1, dtype=torch.float32)
            m.offsets = offsets
            m.band_bias = alibi_slopes(m.n_heads)[:, None] * offsets
    return codec.to(device).eval().requires_grad_(False)
