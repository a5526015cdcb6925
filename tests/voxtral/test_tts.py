"""Generation loop (spec §8): determinism contract, KV cache vs full forward, END stop, decode, CLI."""

from __future__ import annotations

import pytest
import torch

from voxinv.voxtral.codes import END_AUDIO
from voxinv.voxtral.tts import VoxtralTTS, synthesize_eval

TEXT = "Paris is a beautiful city!"


@pytest.fixture(scope="module")
def tts(tiny_dir) -> VoxtralTTS:
    return VoxtralTTS.from_pretrained(tiny_dir, device="cpu")


def test_loads_fp32_on_cpu(tts):
    assert tts.backbone.dtype == torch.float32 and tts.flow.dtype == torch.float32
    assert tts.sampling_rate == 24000


def test_same_seed_same_codes(tts):
    a = tts.generate_codes(TEXT, "casual_male", seed=3, max_frames=10)
    b = tts.generate_codes(TEXT, "casual_male", seed=3, max_frames=10)
    c = tts.generate_codes(TEXT, "casual_male", seed=4, max_frames=10)
    assert torch.equal(a.codes, b.codes)
    assert a.codes.shape == (10, 37) and not a.ended
    assert torch.equal(a.codes[0, 0], c.codes[0, 0])  # frame 0's semantic code depends on the prompt only
    assert not torch.equal(a.codes[:, 1:], c.codes[:, 1:])  # the noise does the rest


def test_one_randn_per_frame(tts):
    n = 7
    tts.generate_codes(TEXT, "casual_male", seed=11, max_frames=n)
    after = torch.get_rng_state()
    torch.manual_seed(11)
    for _ in range(n):
        torch.randn(1, 36)
    assert torch.equal(after, torch.get_rng_state())


def test_kv_cache_loop_matches_full_forward(tts):
    g = tts.generate_codes(TEXT, "casual_female", seed=0, max_frames=12, return_hidden=True)
    p = tts.prompt(TEXT, "casual_female")
    bb = tts.backbone
    seq = torch.cat([tts.prompt_embeds(p), bb.embed_codes(g.codes[:-1])[None]], dim=1)
    with torch.no_grad():
        full = bb(seq)[0, len(p) - 1 :]
    assert (full - g.hidden).abs().max() <= 1e-5


def test_stops_at_end_and_decodes(tts, monkeypatch):
    calls = {"n": 0}
    orig = tts.flow.semantic_code

    def end_on_fourth(h):
        calls["n"] += 1
        code = orig(h)
        return torch.full_like(code, END_AUDIO) if calls["n"] == 4 else code

    monkeypatch.setattr(tts.flow, "semantic_code", end_on_fourth)
    g = tts.generate_codes(TEXT, "casual_male", seed=0, max_frames=20)
    assert g.ended and g.codes.shape == (4, 37) and g.n_audio_frames == 3
    assert g.codes[-1].tolist() == [1] + [2] * 36  # the flow's END frame
    assert (g.codes[:-1, 0] > 1).all()
    wav = tts.decode(g.codes)
    assert wav.shape == (3 * 1920,) and wav.dtype == torch.float32 and torch.isfinite(wav).all()
    calls["n"] = 0
    g2 = tts.generate_codes(TEXT, "casual_male", seed=0, max_frames=6, stop_at_end=False)
    assert not g2.ended and g2.codes.shape == (6, 37) and g2.codes[3, 0] == END_AUDIO


def test_generate_and_custom_voice(tts):
    from voxinv.voxtral.voices import codes_to_voice

    codes, wav = tts.generate(TEXT, "neutral_female", seed=1, max_frames=5)
    assert codes.shape[1] == 37 and wav.shape == (len(codes) * 1920,)
    table = tts.backbone.mm_audio_embeddings.audio_codebook_embeddings.embeddings.weight
    voice = codes_to_voice(codes - 2, table, tts.params.audio)  # a "cloned" voice from generated codes
    g = tts.generate_codes(TEXT, voice, seed=1, max_frames=3)
    assert g.prompt_len == len(voice) + len(tts.prompt(TEXT, voice).text_ids) + 5
    with pytest.raises(ValueError, match="width 64"):
        tts.generate_codes(TEXT, torch.randn(4, 64), max_frames=2)


def test_synthesize_eval(tts):
    wavs = synthesize_eval(tts, "casual_female", ["Hello world.", "The quick brown fox."], seed=0, max_frames=4)
    assert len(wavs) == 2 and all(w.dim() == 1 and len(w) == 4 * 1920 for w in wavs)


def test_bf16_generation_runs(tiny_dir):
    tts16 = VoxtralTTS.from_pretrained(tiny_dir, device="cpu", dtype=torch.bfloat16, with_codec=False)
    assert tts16.backbone.dtype == torch.bfloat16 and tts16.flow.dtype == torch.bfloat16
    g = tts16.generate_codes(TEXT, "casual_male", seed=0, max_frames=4, return_hidden=True)
    assert g.codes.shape == (4, 37) and g.codes[:, 1:].min() >= 2 and g.codes[:, 1:].max() <= 22
    assert torch.isfinite(g.hidden).all()
