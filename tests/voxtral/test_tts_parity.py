"""Parity with vLLM-Omni on the seed-0 tiny checkpoint (fixtures tests/fixtures/tts_parity_*.npz).

How the fixtures were made (reference code is not in this repo): outside the repo, vLLM-Omni's
``voxtral_tts_audio_generation.py`` / ``voxtral_tts_audio_tokenizer.py`` (fork snapshot 0d8c632,
model files as upstream PR #4527) were imported with inert stand-ins for the ``vllm`` modules;
its ``FlowMatchingAudioTransformer`` (weights through its own ``load_weight``, n_decoding_steps 7)
produced each frame and its ``MultiVocabEmbeddings`` embedded the frame fed back. The backbone
reference is transformers' ``MistralModel`` with the spec §4.6 rename + q/k permutation (vLLM runs
the same HF-Mistral math), recomputed over the whole sequence every frame (no KV cache). Prompt
ids from mistral-common's ``encode_speech_request``. fp32 CPU; ``torch.manual_seed(seed)`` before
the loop and the reference flow's own ``torch.randn(1, 36)`` per frame. Each file stores the
reference codes ``[T, 37]``, the hidden state that produced every frame, the prefill hidden
states, the prompt ids, the sha256 of the tiny safetensors, the ``make_tiny`` arguments and
``tiny_fingerprint()``. If ``make_tiny`` changes, the test skips (sha differs) until the fixtures
are regenerated with the reference harness.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import pytest
import torch

from voxinv.voxtral.tts import VoxtralTTS

FIXTURES = sorted((Path(__file__).resolve().parents[1] / "fixtures").glob("tts_parity_*.npz"))


@pytest.fixture(scope="module")
def tts(tiny_dir) -> VoxtralTTS:
    return VoxtralTTS.from_pretrained(tiny_dir, device="cpu", dtype=torch.float32, with_codec=False)


@pytest.mark.parametrize("fixture", FIXTURES, ids=[f.stem for f in FIXTURES])
def test_matches_vllm_omni(fixture, tts, tiny_dir):
    z = np.load(fixture)
    assert json.loads(str(z["make_tiny_args"])) == {"seed": 0}  # what the tiny_dir fixture uses
    sha = hashlib.sha256((tiny_dir / "consolidated.safetensors").read_bytes()).hexdigest()
    if sha != str(z["weights_sha256"]):
        from voxinv.voxtral.tiny import tiny_fingerprint

        why = "TINY_SIZES changed" if tiny_fingerprint() != str(z["tiny_fingerprint"]) else "other torch RNG?"
        pytest.skip(f"make_tiny(seed=0) wrote different weights ({why}): regenerate {fixture.name}")
    text, voice, seed = str(z["text"]), str(z["voice"]), int(z["seed"])
    ref_codes = torch.from_numpy(z["codes"])
    assert len(ref_codes) >= 12 and (ref_codes[:, 0] != 1).all()  # ≥ 12 real frames, no END

    p = tts.prompt(text, voice)
    assert p.ids.tolist() == z["prompt_ids"].tolist()
    with torch.no_grad():
        prefill = tts.backbone(tts.prompt_embeds(p))[0]
    assert np.abs(prefill.numpy() - z["prefill_hidden"]).max() <= 1e-4

    g = tts.generate_codes(
        text, voice, seed=seed, max_frames=len(ref_codes), cfg_alpha=float(z["cfg_alpha"]), return_hidden=True
    )
    assert np.abs(g.hidden.numpy() - z["hidden"]).max() <= 1e-4
    mismatch = (g.codes != ref_codes).any(1).nonzero().flatten().tolist()
    assert not mismatch, f"codes differ from vLLM-Omni at frames {mismatch}"
