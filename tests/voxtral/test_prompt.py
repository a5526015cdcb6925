"""Speech prompts (spec §9): layout, placeholders, presets via mistral-common, custom voices."""

from __future__ import annotations

import json
import shutil

import pytest
import torch

from voxinv.voxtral.prompt import (
    PromptError,
    build_prompt,
    load_tokenizer,
    preset_speech_ids,
    resolve_voice,
    special_ids,
    speech_ids,
    voice_num_audio_tokens,
)

TEXT = "Paris is a beautiful city!"


@pytest.fixture(scope="module")
def tok(tiny_dir):
    return load_tokenizer(tiny_dir)


def test_special_ids_are_the_release_ranks(tok):
    assert special_ids(tok) == {"bos": 1, "audio": 24, "begin_audio": 25, "text_to_audio": 36, "audio_to_text": 35}


def test_preset_layout(tok, tiny_dir):
    p = build_prompt(tok, TEXT, "casual_male", tiny_dir)
    n = voice_num_audio_tokens(tok)["casual_male"]
    assert n == 19 and p.voice.shape[0] == n
    text_ids = tok.instruct_tokenizer.tokenizer.encode(TEXT, bos=False, eos=False)
    assert p.ids.tolist() == [1, 25] + [24] * n + [36] + text_ids + [35, 25]
    assert p.ids.tolist() == preset_speech_ids(tok, TEXT, "casual_male")  # mistral-common's own
    assert p.audio_positions.tolist() == list(range(2, 2 + n))
    assert p.text_ids == text_ids and len(p) == n + len(text_ids) + 5
    assert all(i >= 1000 for i in text_ids)  # regular Tekken ids are rank + 1000


def test_custom_voice_file_and_run_dir(tok, tiny_dir, tmp_path):
    v = torch.randn(7, 256).to(torch.bfloat16)
    torch.save(v, tmp_path / "mine.pt")
    p = build_prompt(tok, TEXT, tmp_path / "mine.pt", tiny_dir)
    assert p.voice_name == "mine" and torch.equal(p.voice, v)
    assert p.ids.tolist()[:11] == [1, 25] + [24] * 7 + [36, p.text_ids[0]]
    run = tmp_path / "run1"
    run.mkdir()
    torch.save(v, run / "voice.pt")
    p2 = build_prompt(tok, TEXT, str(run), tiny_dir)
    assert p2.ids.tolist() == p.ids.tolist() and p2.voice_name == "run1"
    p3 = build_prompt(tok, TEXT, v, tiny_dir)  # a tensor
    assert p3.ids.tolist() == p.ids.tolist()
    assert speech_ids(tok, TEXT, 7)[0] == p.ids.tolist()


def test_errors_are_clear(tok, tiny_dir, tmp_path):
    with pytest.raises(PromptError, match="unknown voice 'nobody'"):
        build_prompt(tok, TEXT, "nobody", tiny_dir)
    with pytest.raises(PromptError, match="text is empty"):
        build_prompt(tok, "  ", "casual_male", tiny_dir)
    (tmp_path / "empty_run").mkdir()
    with pytest.raises(PromptError, match="has no voice.pt"):
        resolve_voice(tmp_path / "empty_run")


def test_row_count_mismatch_with_tekken(tmp_path, tiny_dir):
    d = tmp_path / "m"
    shutil.copytree(tiny_dir, d)
    t = json.loads((d / "tekken.json").read_text())
    t["audio"]["voice_num_audio_tokens"]["casual_male"] = 5
    (d / "tekken.json").write_text(json.dumps(t))
    with pytest.raises(PromptError, match="says voice casual_male has 5 rows but its file has 19"):
        build_prompt(load_tokenizer(d), TEXT, "casual_male", d)
