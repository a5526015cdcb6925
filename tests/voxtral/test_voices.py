"""Voice prompts (spec §10): load, END row, voice ↔ codes, register a voice in an overlay directory."""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import pytest
import torch

from voxinv.voxtral.checkpoint import Checkpoint
from voxinv.voxtral.codes import end_frame
from voxinv.voxtral.tiny import TINY_SIZES, random_codes
from voxinv.voxtral.voices import (
    VoiceError,
    codes_to_voice,
    end_row,
    frame_embeddings,
    has_end_row,
    load_voice,
    register_voice,
    voice_to_codes,
)

REAL_ROWS = {
    "ar_male": 67, "casual_female": 214, "casual_male": 147, "cheerful_female": 132, "de_female": 147,
    "de_male": 163, "es_female": 138, "es_male": 208, "fr_female": 97, "fr_male": 97, "hi_female": 86,
    "hi_male": 94, "it_female": 172, "it_male": 168, "neutral_female": 218, "neutral_male": 169,
    "nl_female": 146, "nl_male": 138, "pt_female": 175, "pt_male": 144,
}  # fmt: skip


@pytest.fixture(scope="module")
def ckpt(tiny_dir) -> Checkpoint:
    return Checkpoint(tiny_dir)


@pytest.fixture(scope="module")
def table(ckpt) -> torch.Tensor:
    return ckpt.load("mm_audio_embeddings.audio_codebook_embeddings.")["embeddings.weight"]  # [9088, 256] bf16


def _tree_state(root: Path) -> dict[str, tuple[str, int]]:
    """sha256 + mtime of every file under root (links not followed: the originals are files)."""
    return {
        str(p.relative_to(root)): (hashlib.sha256(p.read_bytes()).hexdigest(), p.stat().st_mtime_ns)
        for p in sorted(root.rglob("*"))
        if p.is_file()
    }


# ------------------------------------------------------------------------------------ voices


def test_tiny_voice_files(ckpt, table):
    for name in ckpt.params.voices:
        v = load_voice(ckpt.path / "voice_embedding" / f"{name}.pt")
        assert v.dtype == torch.bfloat16 and v.shape == (TINY_SIZES["voices"][name] + 1, ckpt.params.backbone.dim)
        assert has_end_row(v, table, ckpt.params.audio)
        assert not has_end_row(v[:-1], table, ckpt.params.audio)


def test_voice_codes_round_trip_exact(ckpt, table):
    """codes → voice → codes recovers the codes exactly on the tiny table (dim 256)."""
    a = ckpt.params.audio
    raw = random_codes(40, torch.Generator().manual_seed(11), ckpt.params)
    voice = codes_to_voice(raw, table, a)
    assert voice.shape == (41, 256) and voice.dtype == torch.bfloat16
    dec = voice_to_codes(voice, table, a)
    assert torch.equal(dec.codes, raw)
    assert dec.max_rel_error < 1e-2  # only bf16 rounding of the summed rows is left
    assert torch.equal(codes_to_voice(dec.codes, table, a), voice)
    # without the END row: same codes
    assert torch.equal(voice_to_codes(voice[:-1], table, a).codes, raw)


def test_shipped_tiny_voices_reembed_bit_exactly(ckpt, table):
    for name in ckpt.params.voices:
        v = load_voice(ckpt.path / "voice_embedding" / f"{name}.pt")
        dec = voice_to_codes(v, table, ckpt.params.audio)
        assert dec.codes.shape == (v.shape[0] - 1, 37)
        assert torch.equal(codes_to_voice(dec.codes, table, ckpt.params.audio), v)


def test_end_row_is_embedding_of_end_frame(ckpt, table):
    a = ckpt.params.audio
    e = end_row(table, a)
    offsets = torch.tensor(a.codebook_offsets)
    want = table.float()[end_frame() + offsets].sum(0)  # semantic row 1 + acoustic EMPTY rows
    assert torch.equal(e, want)
    assert torch.equal(frame_embeddings(end_frame()[None], table, a)[0], e)


def test_voice_without_frames(ckpt, table):
    only_end = end_row(table, ckpt.params.audio)[None].to(torch.bfloat16)
    with pytest.raises(VoiceError, match="no frames"):
        voice_to_codes(only_end, table, ckpt.params.audio)


def test_load_voice_errors(tmp_path):
    with pytest.raises(VoiceError, match="does not exist"):
        load_voice(tmp_path / "nope.pt")
    (tmp_path / "junk.pt").write_bytes(b"junk")
    with pytest.raises(VoiceError, match="cannot read"):
        load_voice(tmp_path / "junk.pt")
    torch.save(torch.zeros(5), tmp_path / "1d.pt")
    with pytest.raises(VoiceError, match=r"\[N, dim\]"):
        load_voice(tmp_path / "1d.pt")
    torch.save(torch.zeros(4, 3, dtype=torch.long), tmp_path / "int.pt")
    with pytest.raises(VoiceError, match="float"):
        load_voice(tmp_path / "int.pt")
    torch.save({"embedding": torch.ones(3, 8)}, tmp_path / "dict.pt")
    assert load_voice(tmp_path / "dict.pt").shape == (3, 8)


# ------------------------------------------------------------------------------ registration


def test_register_voice_overlay(tiny_dir, ckpt, table, tmp_path):
    from mistral_common.protocol.speech.request import SpeechRequest
    from mistral_common.tokens.tokenizers.mistral import MistralTokenizer

    before = _tree_state(tiny_dir)
    raw = random_codes(13, torch.Generator().manual_seed(3), ckpt.params)
    voice = codes_to_voice(raw, table, ckpt.params.audio)  # [14, 256]
    ov = register_voice(tiny_dir, "My_Voice", voice, tmp_path / "overlay")
    assert _tree_state(tiny_dir) == before  # original untouched (content and mtimes)

    params = json.loads((ov / "params.json").read_text())
    voices = params["multimodal"]["audio_tokenizer_args"]["voice"]
    assert voices["my_voice"] == 3 and list(voices)[:3] == list(TINY_SIZES["voices"])
    tekken = json.loads((ov / "tekken.json").read_text())
    assert tekken["audio"]["voice_num_audio_tokens"]["my_voice"] == 14
    assert tekken["audio"]["voice_num_audio_tokens"]["casual_female"] == TINY_SIZES["voices"]["casual_female"] + 1
    saved = torch.load(ov / "voice_embedding" / "my_voice.pt", weights_only=True)
    assert saved.dtype == torch.bfloat16 and torch.equal(saved, voice)
    assert (ov / "consolidated.safetensors").resolve() == (tiny_dir / "consolidated.safetensors").resolve()
    assert (ov / "voice_embedding" / "casual_male.pt").is_file()

    tok = MistralTokenizer.from_file(str(ov / "tekken.json"))
    ids = tok.encode_speech_request(SpeechRequest(input="hello world", voice="my_voice")).tokens
    assert ids.count(ckpt.params.audio.audio_token_id) == 14
    # the overlay is a loadable model directory
    ov_ckpt = Checkpoint(ov)
    assert "my_voice" in ov_ckpt.params.voices


def test_register_accumulates_and_never_writes_through_links(tiny_dir, ckpt, table, tmp_path):
    before = _tree_state(tiny_dir)
    ov = tmp_path / "ov"
    v1 = codes_to_voice(random_codes(5, torch.Generator().manual_seed(1), ckpt.params), table, ckpt.params.audio)
    v2 = codes_to_voice(random_codes(7, torch.Generator().manual_seed(2), ckpt.params), table, ckpt.params.audio)
    register_voice(tiny_dir, "one", v1, ov)
    register_voice(tiny_dir, "two", v2, ov)
    register_voice(tiny_dir, "casual_male", v2, ov)  # replace a preset: the overlay gets its own file
    assert _tree_state(tiny_dir) == before
    params = json.loads((ov / "params.json").read_text())
    voices = params["multimodal"]["audio_tokenizer_args"]["voice"]
    assert {"one", "two", "casual_male"} <= set(voices) and voices["casual_male"] == 1
    counts = json.loads((ov / "tekken.json").read_text())["audio"]["voice_num_audio_tokens"]
    assert counts["one"] == 6 and counts["two"] == 8 and counts["casual_male"] == 8
    assert not os.path.islink(ov / "voice_embedding" / "casual_male.pt")
    assert torch.equal(torch.load(ov / "voice_embedding" / "casual_male.pt", weights_only=True), v2)
    assert not list(ov.rglob("*.tmp"))


def test_register_errors(tiny_dir, tmp_path):
    v = torch.zeros(3, 256)
    with pytest.raises(VoiceError, match="letters, digits"):
        register_voice(tiny_dir, "bad name!", v, tmp_path / "o")
    with pytest.raises(VoiceError, match=r"\[N, dim\]"):
        register_voice(tiny_dir, "x", torch.zeros(3), tmp_path / "o")
    with pytest.raises(VoiceError, match="must differ"):
        register_voice(tiny_dir, "x", v, tiny_dir)
    with pytest.raises(VoiceError, match="tekken.json"):
        (tmp_path / "m").mkdir()
        (tmp_path / "m" / "params.json").write_text("{}")
        register_voice(tmp_path / "m", "x", v, tmp_path / "o2")


# ------------------------------------------------------------------------- real shipped voices


def test_real_voices_load_on_cpu(shared_data):
    vdir = shared_data / "voxtral_voices"
    files = sorted(vdir.glob("*.pt"))
    assert {p.stem for p in files} == set(REAL_ROWS)
    ends = []
    for p in files:
        v = load_voice(p)
        assert v.device.type == "cpu" and v.dtype == torch.bfloat16
        assert v.shape == (REAL_ROWS[p.stem], 3072), p.stem
        end_norm = float(v[-1].float().norm())
        assert abs(end_norm - 14.75) < 0.01, (p.stem, end_norm)
        norms = v[:-1].float().norm(dim=1)
        assert 3.9 < float(norms.min()) and float(norms.max()) < 5.0  # frame rows are 4.0–4.8
        ends.append(v[-1].float())
    ends = torch.stack(ends)
    assert float((ends - ends[0]).abs().max()) <= 0.002  # one END row, bf16-rounded per file
