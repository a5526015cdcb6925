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
    assert clone["summary"]["spk_sim_self_graded"] is True  # the run's loss used the same GE2E weights
    assert (run_dir / "e2e" / "clone_0.wav").is_file()
    assert json.loads((run_dir / "metrics.json").read_text())["e2e"]["sentences"] == res["sentences"]
    assert "clone" in format_e2e(res)


def test_e2e_missing_files(tmp_path, tiny_dir):
    from voxinv.eval.e2e import main

    assert main([str(tmp_path), "--model", str(tiny_dir)]) == 2
