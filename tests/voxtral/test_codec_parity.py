"""Codec decoder parity against vLLM-Omni's ``VoxtralTTSAudioTokenizer`` (the reference, spec §6).

``tests/fixtures/codec_parity_seed0.npz`` holds raw codes and the reference's waveforms for them.
It was made outside this repository (the reference code is not vendored) as follows:

1. ``vllm_omni/model_executor/models/voxtral_tts/voxtral_tts_audio_tokenizer.py`` (+ its sibling
   ``voxtral_tts_audio_generation.py`` for ``FeedForward`` / ``from_nested_dict``) imported with
   inert stand-ins for the ``vllm.*``, ``vllm_omni.platforms`` and ``vllm_omni.quantization``
   imports (no flash-attn, no apex: the SDPA + ``torch.nn.RMSNorm`` path, what runs on CPU);
2. ``make_tiny(dir, seed=0)`` (bf16 tensors); the reference built from its ``params.json``
   (``codec_args`` = ``audio_tokenizer_args``) and loaded the upstream way: ``audio_tokenizer.``
   stripped, ``mm_audio_embeddings.audio_codebook_embeddings.embeddings.weight`` →
   ``audio_token_embedding.embeddings.weight``, ``load_weight`` (which *replaces* the two
   quantizer buffers), every tensor cast to fp32 first (and, for ``wav_a_bf16``, kept bf16 with
   the module in bf16);
3. ``decode(codes, dtype)`` on seeded random raw codes: ``codes_a`` [2, 37, 12] and ``codes_b``
   [1, 37, 30] (fp32), and ``codes_a`` again in bf16.

Measured when the fixture was made: fp32 max |Δ| 2.2e-7 (a) / 1.9e-7 (b); bf16 vs the
reference's bf16: 43.6 dB SNR.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import pytest
import torch

from voxinv.voxtral.checkpoint import Checkpoint
from voxinv.voxtral.codec import load_codec
from voxinv.voxtral.tiny import make_tiny

FIXTURE = Path(__file__).resolve().parents[1] / "fixtures" / "codec_parity_seed0.npz"
TOL_FP32 = 1e-5


@pytest.fixture(scope="module")
def ref() -> dict:
    with np.load(FIXTURE) as f:
        return {k: f[k] for k in f.files}


@pytest.fixture(scope="module")
def model_dir(ref, tmp_path_factory) -> Path:
    args = json.loads(str(ref["make_tiny_args"]))
    assert args == {"seed": 0, "dtype": "bfloat16", "with_encoder": False, "sizes": "TINY_SIZES"}
    d = make_tiny(tmp_path_factory.mktemp("parity") / "model", seed=args["seed"], tekken=False)
    sha = hashlib.sha256((d / "consolidated.safetensors").read_bytes()).hexdigest()
    if sha != str(ref["sha256"]):
        pytest.skip(
            f"make_tiny(seed=0) produced different weights than the fixture (torch {torch.__version__} vs "
            f"{ref['torch_version']}: RNG stream or init changed); regenerate the fixture (see module docstring)"
        )
    return d


def _snr_db(ref: torch.Tensor, x: torch.Tensor) -> float:
    return float(10 * torch.log10(ref.pow(2).mean() / (x - ref).pow(2).mean()))


@pytest.mark.parametrize("which", ["a", "b"])
def test_fp32_matches_vllm_omni(ref, model_dir, which):
    codec = load_codec(Checkpoint(model_dir), dtype=torch.float32)
    codes = torch.from_numpy(ref[f"codes_{which}"].astype(np.int64))
    want = torch.from_numpy(ref[f"wav_{which}"])
    with torch.no_grad():
        got = codec.decode(codes)
    assert got.shape == want.shape == (codes.shape[0], 1, 1920 * codes.shape[-1])
    err = float((got - want).abs().max())
    assert err <= TOL_FP32, f"max |Δ| {err:.3e} vs vLLM-Omni"


def test_bf16_close_to_vllm_omni_bf16(ref, model_dir):
    """Both run bf16; they round differently (we fold weight norm in fp32, attend banded)."""
    codec = load_codec(Checkpoint(model_dir), dtype=torch.bfloat16)
    codes = torch.from_numpy(ref["codes_a"].astype(np.int64))
    want = torch.from_numpy(ref["wav_a_bf16_bits"]).view(torch.bfloat16).float()
    with torch.no_grad():
        got = codec.decode(codes).float()
    assert _snr_db(want, got) > 35
    assert _snr_db(torch.from_numpy(ref["wav_a"]), got) > 35  # and both ≈ 40 dB from fp32
