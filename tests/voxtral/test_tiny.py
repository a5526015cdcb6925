"""Tiny checkpoints: release format (names, shapes, dtypes, key order, tekken), determinism."""

from __future__ import annotations

import hashlib
import json

import torch
from safetensors import safe_open

from voxinv.voxtral.checkpoint import Checkpoint
from voxinv.voxtral.params import VoxtralParams
from voxinv.voxtral.tiny import REAL_PARAMS, TINY_SIZES, make_tiny, manifest, tiny_params


def _sha(path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _keys(d: dict, prefix: str = "") -> list[str]:
    out = []
    for k, v in d.items():
        out.append(prefix + k)
        if isinstance(v, dict) and k != "voice":
            out += _keys(v, prefix + k + ".")
    return out


def test_release_format(tiny_dir):
    params = json.loads((tiny_dir / "params.json").read_text())
    assert _keys(params) == _keys(REAL_PARAMS)  # same nesting and key order as the release
    assert params == tiny_params()
    p = VoxtralParams.from_json(tiny_dir / "params.json")
    want = manifest(p)
    with safe_open(str(tiny_dir / "consolidated.safetensors"), framework="pt") as f:
        got = {k: tuple(f.get_slice(k).get_shape()) for k in f.keys()}
        dtypes = {f.get_slice(k).get_dtype() for k in f.keys()}
    assert got == want and dtypes == {"BF16"}
    assert len(got) == len(manifest(VoxtralParams.from_dict(REAL_PARAMS))) - 24 * 9  # 2 backbone layers, not 26
    assert sorted(q.stem for q in (tiny_dir / "voice_embedding").glob("*.pt")) == sorted(TINY_SIZES["voices"])


def test_tiny_tekken_loads_in_mistral_common(tiny_dir):
    from mistral_common.protocol.speech.request import SpeechRequest
    from mistral_common.tokens.tokenizers.mistral import MistralTokenizer

    tok = MistralTokenizer.from_file(str(tiny_dir / "tekken.json"))
    for name, n in TINY_SIZES["voices"].items():
        ids = tok.encode_speech_request(SpeechRequest(input="hello there", voice=name)).tokens
        assert ids.count(24) == n + 1  # [AUDIO] placeholders = voice rows incl. END
    counts = json.loads((tiny_dir / "tekken.json").read_text())["audio"]["voice_num_audio_tokens"]
    assert counts == {k: v + 1 for k, v in TINY_SIZES["voices"].items()}


def test_deterministic_per_seed(tiny_dir, tmp_path):
    a = make_tiny(tmp_path / "a", seed=0, tekken=False)
    b = make_tiny(tmp_path / "b", seed=1, tekken=False)
    assert _sha(a / "consolidated.safetensors") == _sha(tiny_dir / "consolidated.safetensors")
    assert _sha(a / "voice_embedding" / "casual_male.pt") == _sha(tiny_dir / "voice_embedding" / "casual_male.pt")
    assert _sha(b / "consolidated.safetensors") != _sha(a / "consolidated.safetensors")
    assert not (a / "tekken.json").exists()


def test_fp32_and_encoder_options(tiny_dir_encoder, tmp_path):
    d = make_tiny(tmp_path / "f", seed=0, dtype=torch.float32, tekken=False)
    with safe_open(str(d / "consolidated.safetensors"), framework="pt") as f:
        assert {f.get_slice(k).get_dtype() for k in f.keys()} == {"F32"}
    names = Checkpoint(tiny_dir_encoder).tensor_names()
    enc = [n for n in names if n.startswith(("audio_tokenizer.encoder_blocks.", "audio_tokenizer.input_proj."))]
    assert len(enc) == 114
    assert "audio_tokenizer.encoder_blocks.7.conv.parametrizations.weight.original1" in names  # k=3 conv → 292


def test_codec_weights_are_sane(tiny_dir):
    """Random init keeps a decode O(0.1–1): not silent, not exploding."""
    from voxinv.voxtral.codec import load_codec
    from voxinv.voxtral.tiny import random_codes

    ck = Checkpoint(tiny_dir)
    codec = load_codec(ck)
    c = random_codes(10, torch.Generator().manual_seed(0), ck.params).T[None]
    with torch.no_grad():
        wav = codec.decode(c)
    peak = float(wav.abs().max())
    assert 0.01 < peak < 5 and float(wav.std()) > 1e-3
