"""Codec decoder/encoder on the tiny checkpoint: lengths, windowing, weight norm, precision, gradients."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from voxinv.voxtral.checkpoint import Checkpoint
from voxinv.voxtral.codec import (
    VoxtralCodec,
    codec_state_for_checkpoint,
    conv_prefixes,
    fold_weight_norm,
    fsq_codes,
    fsq_position,
    fsq_values,
    load_codec,
    unfold_weight_norm,
)
from voxinv.voxtral.layers import alibi_slopes
from voxinv.voxtral.tiny import random_codes

WN0, WN1 = ".parametrizations.weight.original0", ".parametrizations.weight.original1"


@pytest.fixture(scope="module")
def ckpt(tiny_dir) -> Checkpoint:
    return Checkpoint(tiny_dir)


@pytest.fixture(scope="module")
def codec(ckpt) -> VoxtralCodec:
    return load_codec(ckpt, dtype=torch.float32)


def codes(ckpt: Checkpoint, T: int, B: int = 1, seed: int = 0) -> torch.Tensor:
    """Random raw codes ``[B, 37, T]``."""
    g = torch.Generator().manual_seed(seed)
    return torch.stack([random_codes(T, g, ckpt.params).T for _ in range(B)])


def snr_db(ref: torch.Tensor, x: torch.Tensor) -> float:
    return float(10 * torch.log10(ref.pow(2).mean() / (x - ref).pow(2).mean()))


# ---------------------------------------------------------------------------------- structure


def test_structure_matches_release(codec):
    assert codec.windows == [2, 4, 8, 16]
    assert codec.samples_per_frame == 1920 and codec.sampling_rate == 24000
    assert not codec.has_encoder and codec.dtype == torch.float32
    assert not any(p.requires_grad for p in codec.parameters())
    assert [type(b).__name__ for b in codec.decoder_blocks] == [
        "CausalConv1d",
        "Transformer",
        "CausalConvTranspose1d",
        "Transformer",
        "CausalConvTranspose1d",
        "Transformer",
        "CausalConvTranspose1d",
        "Transformer",
    ]
    assert codec.decoder_blocks[0].pad_mode == "replicate" and codec.output_proj.pad_mode == "reflect"


def test_alibi_slopes_upstream_convention():
    assert alibi_slopes(8).tolist() == [2.0**-i for i in range(8)]  # 1 … 1/128, not 1/2 … 1/256
    assert alibi_slopes(4).tolist() == [1.0, 0.25, 0.0625, 0.015625]
    assert len(alibi_slopes(12)) == 12


# ------------------------------------------------------------------------------------ decoding


@pytest.mark.parametrize("T", [1, 2, 7, 26])
def test_output_length_is_1920_per_frame(codec, ckpt, T):
    with torch.no_grad():
        wav = codec.decode(codes(ckpt, T, B=2))
    assert wav.shape == (2, 1, 1920 * T) and wav.dtype == torch.float32
    assert torch.isfinite(wav).all()


def test_decode_accepts_unbatched_and_batch_is_independent(codec, ckpt):
    c = codes(ckpt, 9, B=3, seed=1)
    with torch.no_grad():
        batch = codec.decode(c)
        single = codec.decode(c[1])  # [37, T]
    assert single.shape == (1, 1, 1920 * 9)
    torch.testing.assert_close(single[0], batch[1], rtol=0, atol=1e-6)


def test_decoder_is_causal_in_frames(codec, ckpt):
    """Changing frame k changes nothing before sample 1920·k (the reflect pad stays inside frame 0)."""
    c = codes(ckpt, 20, seed=2)
    c2 = c.clone()
    c2[:, :, 10] = codes(ckpt, 1, seed=3)[:, :, 0]
    with torch.no_grad():
        a, b = codec.decode(c), codec.decode(c2)
    assert (a[..., : 1920 * 10] - b[..., : 1920 * 10]).abs().max() < 1e-6
    assert (a[..., 1920 * 10 :] - b[..., 1920 * 10 :]).abs().max() > 1e-3


def test_windowed_decode_equals_full(codec, ckpt):
    c = codes(ckpt, 300, seed=4)
    with torch.no_grad():
        full = codec.decode(c)
        win = codec.decode_windowed(c, chunk=60, context=25)
        short = codec.decode_windowed(c[..., :50], chunk=60, context=25)  # ≤ chunk+context: one call
        cut = codec.decode_windowed(c, chunk=60, context=0)  # no context: chunk starts differ
    assert win.shape == full.shape == (1, 1, 1920 * 300)
    assert float((win - full).abs().max()) <= 1e-5
    torch.testing.assert_close(short, full[..., : 1920 * 50], rtol=0, atol=1e-5)
    assert float((cut - full).abs().max()) > 1e-3


def test_bf16_close_to_fp32(ckpt, codec):
    c16 = load_codec(ckpt, dtype=torch.bfloat16)
    assert c16.dtype == torch.bfloat16
    c = codes(ckpt, 20, B=2, seed=5)
    with torch.no_grad():
        ref, x = codec.decode(c), c16.decode(c)
    assert x.dtype == torch.bfloat16 and x.shape == ref.shape
    assert snr_db(ref, x.float()) > 25


def test_decode_latent_is_differentiable(codec, ckpt):
    lat = codec.latent(codes(ckpt, 6, seed=6)).clone().requires_grad_(True)
    assert lat.shape == (1, 292, 6)
    wav = codec.decode_latent(lat)
    wav.pow(2).sum().backward()
    assert lat.grad is not None and torch.isfinite(lat.grad).all() and lat.grad.abs().sum() > 0


def test_latent_layout(codec, ckpt):
    c = codes(ckpt, 4, seed=7)
    lat = codec.latent(c)
    table = codec.quantizer.semantic_codebook.table
    torch.testing.assert_close(lat[0, :256].T, table[c[0, 0]], rtol=0, atol=0)
    torch.testing.assert_close(lat[0, 256:], c[0, 1:].float() / 10 - 1, rtol=0, atol=1e-7)
    q = codec.quantizer.semantic_codebook
    torch.testing.assert_close(table, q.embedding_sum / q.cluster_usage.clamp(min=1e-5)[:, None])


# --------------------------------------------------------------------------------- weight norm


def _wn_pair(shape: tuple[int, ...], seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    v = torch.randn(shape, generator=g)
    return torch.rand((shape[0], 1, 1), generator=g) + 0.5, v


@pytest.mark.parametrize("kind", ["conv", "transpose"])
def test_fold_equals_torch_weight_norm(kind):
    """fold_weight_norm(g, v) == the weight torch's parametrized module computes (dim 0 for both)."""
    conv = nn.Conv1d(12, 6, 3, bias=False) if kind == "conv" else nn.ConvTranspose1d(12, 6, 4, 2, bias=False)
    conv = nn.utils.parametrizations.weight_norm(conv)
    g, v = _wn_pair(tuple(conv.parametrizations.weight.original1.shape), seed=0)
    with torch.no_grad():
        conv.parametrizations.weight.original0.copy_(g)
        conv.parametrizations.weight.original1.copy_(v)
    sd = conv.state_dict()
    assert set(sd) == {"parametrizations.weight.original0", "parametrizations.weight.original1"}
    folded = fold_weight_norm({"c" + WN0: sd["parametrizations.weight.original0"], "c" + WN1: v})
    assert set(folded) == {"c.weight"}
    assert torch.equal(folded["c.weight"], conv.weight.detach())
    # norm over all dims but 0: the input channel for ConvTranspose1d
    norms = folded["c.weight"].flatten(1).norm(dim=1)
    torch.testing.assert_close(norms, g.flatten(), rtol=1e-6, atol=0)


def test_fold_unfold_round_trip(codec):
    state = codec.state_dict()
    prefixes = conv_prefixes(codec)
    assert prefixes == [
        "decoder_blocks.0.conv",
        "decoder_blocks.2.conv",
        "decoder_blocks.4.conv",
        "decoder_blocks.6.conv",
        "output_proj.conv",
    ]
    unfolded = unfold_weight_norm(state, prefixes)
    assert sum(k.endswith(WN0) for k in unfolded) == 5 and not any(k.endswith(".conv.weight") for k in unfolded)
    refolded = fold_weight_norm(unfolded)
    assert refolded.keys() == state.keys()
    for k in state:
        if k.endswith(".conv.weight"):  # v = W exactly; g·v/‖v‖ = W to ≤ 2 ulp (torch's fused kernel rounds)
            assert torch.equal(unfolded[k[: -len(".weight")] + WN1], state[k])
            torch.testing.assert_close(refolded[k], state[k], rtol=3e-7, atol=0)
        else:
            assert torch.equal(refolded[k], state[k]), k
    assert codec_state_for_checkpoint(codec).keys() == unfolded.keys()


def test_checkpoint_stores_weight_norm_and_load_folds_it(ckpt, codec):
    raw = ckpt.load("audio_tokenizer.")
    assert "output_proj.conv.parametrizations.weight.original0" in raw
    assert raw["output_proj.conv.parametrizations.weight.original0"].shape == (240, 1, 1)
    d = ckpt.params.codec.dim
    assert raw["decoder_blocks.2.conv.parametrizations.weight.original1"].shape == (d, d, 4)  # [in, out, k]
    w = torch._weight_norm(
        raw["output_proj.conv.parametrizations.weight.original1"].float(),
        raw["output_proj.conv.parametrizations.weight.original0"].float(),
        0,
    )
    assert torch.equal(codec.output_proj.conv.weight, w)


def test_fold_rejects_unpaired():
    with pytest.raises(KeyError, match="direction"):
        fold_weight_norm({"c" + WN0: torch.ones(2, 1, 1)})
    with pytest.raises(KeyError, match="magnitude"):
        fold_weight_norm({"c" + WN1: torch.ones(2, 1, 1)})


# ------------------------------------------------------------------------------------ encoder


def test_encoder_absent_in_release_format(ckpt, codec):
    with pytest.raises(RuntimeError, match="no codec encoder"):
        load_codec(ckpt, with_encoder=True)
    with pytest.raises(RuntimeError, match="no encoder weights"):
        codec.encode(torch.zeros(1, 1, 1920))


def test_encoder_then_decoder_on_tiny_with_encoder(tiny_dir_encoder):
    codec = load_codec(Checkpoint(tiny_dir_encoder))
    assert codec.has_encoder
    g = torch.Generator().manual_seed(0)
    wav = 0.1 * torch.randn(2, 1, 1920 * 5 + 100, generator=g)  # not a whole number of frames
    with torch.no_grad():
        lat = codec.encode_latent(wav)
        c = codec.encode(wav)
        out = codec.decode(c)
    assert lat.shape == (2, 292, 6) and c.shape == (2, 37, 6) and c.dtype == torch.int64
    assert 0 <= int(c[:, 0].min()) and int(c[:, 0].max()) < 8192
    assert 0 <= int(c[:, 1:].min()) and int(c[:, 1:].max()) <= 20
    assert out.shape == (2, 1, 1920 * 6) and torch.isfinite(out).all()
    # the quantizer's inverse maps: nearest semantic entry, FSQ levels (encode() adds a tanh first)
    q, lat = codec.quantizer, codec.latent(c)
    assert torch.equal(q.semantic_codebook.encode(lat[:, :256]), c[:, 0])
    assert torch.equal(q.fsq_codes(lat[:, 256:]), c[:, 1:])


def test_fsq_maps_are_exact_inverses_at_every_level():
    """One FSQ definition (codec.fsq_values / fsq_position / fsq_codes) for the decoder, the code
    parameters, the searches and the prior: integer and float codes give bit-identical latent values,
    every level's value (and a value just inside its cell) maps back to its level, and out-of-range
    values clamp to the end levels."""
    L = 21
    k = torch.arange(L)  # [21]
    v = fsq_values(k, L)
    assert v.dtype == torch.float32 and torch.equal(v, fsq_values(k.float(), L))
    assert v[0] == -1 and v[-1] == 1 and v[L // 2] == 0
    assert torch.equal(fsq_codes(v, L), k) and torch.equal(fsq_position(v, L).round().long(), k)
    off = fsq_values(k.float(), L) + torch.where(k % 2 == 0, 0.049, -0.049)  # just inside each level's cell
    assert torch.equal(fsq_codes(off, L), k)
    assert fsq_codes(torch.tensor([-3.0, 3.0]), L).tolist() == [0, L - 1]
