"""Differentiable GE2E speaker encoder: parity with resemblyzer, gradients, speaker separation.

Real speech comes from Debian's pocketsphinx-testdata / alsa-utils (`make data` installs them), else the shared
Voxtral sample, else espeak-ng; each test skips cleanly when its inputs are missing.
"""

from __future__ import annotations

import importlib.util
import os
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
import torch

from voxinv.audio import read_audio
from voxinv.speaker import ge2e as spk
from voxinv.speaker.ge2e import SpeakerEncoder, SpeakerEncoderUnavailable, partial_starts, speaker_distance

LIBRIVOX = Path("/usr/share/pocketsphinx/test/data/librivox")
CARDS = Path("/usr/share/pocketsphinx/test/data/cards")
ALSA = Path("/usr/share/sounds/alsa")


def _has(mod: str) -> bool:
    return importlib.util.find_spec(mod) is not None


@pytest.fixture(scope="module")
def encoder() -> SpeakerEncoder:
    try:
        return SpeakerEncoder.load()
    except SpeakerEncoderUnavailable as e:
        pytest.skip(str(e))


@pytest.fixture(scope="module")
def resemblyzer():
    """resemblyzer's own package (its import needs webrtcvad and librosa)."""
    try:
        import resemblyzer
    except ImportError as e:
        pytest.skip(
            f"resemblyzer reference not importable ({e}): pip install --no-deps resemblyzer webrtcvad-wheels librosa"
        )
    return resemblyzer


@pytest.fixture(scope="module")
def speech_clip() -> Path:
    """A real speech recording: LibriVox (pocketsphinx-testdata), else the shared Voxtral TTS sample."""
    clip = LIBRIVOX / "sense_and_sensibility_01_austen_64kb-0870.wav"
    if clip.is_file():
        return clip
    shared = Path(os.environ.get("VOXINV_SHARED", Path(__file__).resolve().parents[2].parent / "shared"))
    alt = shared / "data" / "audio" / "casual_female_tts_sample.wav"
    if alt.is_file():
        return alt
    pytest.skip("no speech clip: apt-get install pocketsphinx-testdata (or provide ../shared)")


def test_mel_filterbank_matches_librosa():
    librosa = pytest.importorskip("librosa")
    enc = SpeakerEncoder()
    fb = librosa.filters.mel(sr=spk.SR, n_fft=spk.N_FFT, n_mels=spk.N_MELS)  # [40, 201]
    np.testing.assert_allclose(enc.mel_fb.numpy(), fb.T, rtol=0, atol=1e-7)


def test_mel_matches_librosa_melspectrogram():
    librosa = pytest.importorskip("librosa")
    g = torch.Generator().manual_seed(0)
    x = 0.1 * torch.randn(12345, generator=g)
    ref = librosa.feature.melspectrogram(
        y=x.numpy(), sr=spk.SR, n_fft=spk.N_FFT, hop_length=spk.HOP, n_mels=spk.N_MELS
    ).T  # [T, 40]
    got = SpeakerEncoder().mel(x[None])[0].numpy()
    assert got.shape == ref.shape == (1 + 12345 // spk.HOP, spk.N_MELS)
    np.testing.assert_allclose(got, ref, rtol=1e-4, atol=1e-6 * ref.max())


def test_partial_starts_match_resemblyzer(resemblyzer):
    for n in [100, 1600, 25_599, 25_600, 25_601, 30_000, 37_920, 48_000, 160_000, 161_234]:
        _, mel_slices = resemblyzer.VoiceEncoder.compute_partial_slices(n, spk.RATE, spk.MIN_COVERAGE)
        assert partial_starts(n) == [s.start for s in mel_slices], n


def test_parity_with_resemblyzer(encoder, resemblyzer, speech_clip):
    """Same preprocessed 16 kHz waveform in both: embeddings agree to float precision."""
    wav = resemblyzer.preprocess_wav(speech_clip)  # resample 16 kHz, −30 dBFS, VAD trim
    ref = resemblyzer.VoiceEncoder("cpu", verbose=False).embed_utterance(wav)
    got = encoder.embed(torch.from_numpy(wav)[None], 16000)[0]
    cos = float(got @ torch.from_numpy(ref))
    assert cos >= 0.9999, cos
    assert abs(float(got.norm()) - 1) < 1e-5


def test_parity_24k_untrimmed_path(encoder, resemblyzer, speech_clip):
    """The loss path (24 kHz in, torch resampling, no VAD) stays close to resemblyzer's full pipeline."""
    ref = resemblyzer.VoiceEncoder("cpu", verbose=False).embed_utterance(resemblyzer.preprocess_wav(speech_clip))
    got = encoder.embed(read_audio(speech_clip, 24000)[None], 24000)[0]
    assert float(got @ torch.from_numpy(ref)) >= 0.98


def test_vad_trim_matches_resemblyzer(resemblyzer, speech_clip):
    from resemblyzer.audio import normalize_volume, trim_long_silences

    x = normalize_volume(read_audio(speech_clip, 16000).numpy(), spk.TARGET_DBFS, increase_only=True)
    ref = trim_long_silences(x)
    got = spk.vad_trim(torch.from_numpy(x)).numpy()
    np.testing.assert_array_equal(got, ref)


def test_batch_equals_single_and_volume_rule():
    torch.manual_seed(0)
    enc = SpeakerEncoder().eval()
    x = 0.05 * torch.randn(3, 40_000)
    batch = enc.embed(x, 24000)
    single = torch.cat([enc.embed(x[i : i + 1], 24000) for i in range(3)])
    torch.testing.assert_close(batch, single, rtol=1e-5, atol=1e-6)
    # quiet input is raised to −30 dBFS (so its scale does not matter), loud input is left as is
    quiet = 1e-3 * torch.randn(1, 20_000)
    torch.testing.assert_close(enc.embed(quiet, 16000), enc.embed(0.5 * quiet, 16000), rtol=1e-4, atol=1e-5)
    loud = SpeakerEncoder.normalize_volume(torch.full((1, 100), 0.5))
    assert torch.equal(loud, torch.full((1, 100), 0.5))


def test_gradient_reaches_waveform():
    torch.manual_seed(0)
    enc = SpeakerEncoder().eval().requires_grad_(False)  # weights do not matter for differentiability
    ref = torch.nn.functional.normalize(torch.rand(256), dim=0)
    wav = (0.05 * torch.randn(2, 24_000 * 2)).requires_grad_(True)
    loss = speaker_distance(enc, wav, ref, 24000)
    loss.backward()
    assert loss.ndim == 0 and 0 <= float(loss.detach()) <= 2
    assert torch.isfinite(wav.grad).all() and (wav.grad.abs().sum(-1) > 0).all()


def test_gradient_with_pretrained_weights(encoder, speech_clip):
    wav = read_audio(speech_clip, 24000)[None, : 24000 * 3]
    ref = encoder.embed(wav, 24000)[0]
    noisy = (wav + 0.1 * wav.std() * torch.randn_like(wav)).requires_grad_(True)  # 20 dB SNR
    d = speaker_distance(encoder, noisy, ref)
    d.backward()
    assert 0 <= float(d.detach()) < 0.2
    assert torch.isfinite(noisy.grad).all() and noisy.grad.abs().sum() > 0


def _espeak(tmp: Path, voice: str, text: str) -> torch.Tensor:
    path = tmp / f"{voice}_{len(list(tmp.iterdir()))}.wav"
    subprocess.run(["espeak-ng", "-v", voice, "-w", str(path), text], check=True, capture_output=True)
    return read_audio(path, 24000)


def test_same_speaker_closer_than_different(encoder, tmp_path):
    """Two clips of one speaker are more alike than either is to other speakers."""
    a1, a2 = (
        LIBRIVOX / "sense_and_sensibility_01_austen_64kb-0870.wav",
        LIBRIVOX / "sense_and_sensibility_01_austen_64kb-0920.wav",
    )
    others = [CARDS / "005.wav", ALSA / "Front_Left.wav"]
    if a1.is_file() and a2.is_file() and any(p.is_file() for p in others):
        same = [read_audio(a1, 24000), read_audio(a2, 24000)]
        diff = [read_audio(p, 24000) for p in others if p.is_file()]
    elif shutil.which("espeak-ng"):
        t1, t2 = "he was not an ill disposed young man", "had he married a more amiable woman he might have been made"
        same = [_espeak(tmp_path, "en-us", t1), _espeak(tmp_path, "en-us", t2)]
        diff = [_espeak(tmp_path, "en-us+f3", t2)]
    else:
        pytest.skip("no multi-speaker speech: apt-get install pocketsphinx-testdata alsa-utils (or espeak-ng)")
    e_same = [encoder.embed(w[None], 24000)[0] for w in same]
    e_diff = [encoder.embed(w[None], 24000)[0] for w in diff]
    s_same = float(SpeakerEncoder.similarity(e_same[0], e_same[1]))
    s_diff = max(float(SpeakerEncoder.similarity(e, d)) for e in e_same for d in e_diff)
    assert s_same > s_diff + 0.05, (s_same, s_diff)


def test_missing_resemblyzer_is_one_clear_line(monkeypatch):
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "resemblyzer" else real(name, *a))
    with pytest.raises(SpeakerEncoderUnavailable, match="pip install --no-deps resemblyzer webrtcvad-wheels"):
        SpeakerEncoder.load()


def test_bad_input_shape():
    with pytest.raises(ValueError, match=r"\[B, N\]"):
        SpeakerEncoder().embed(torch.zeros(1, 1, 16000), 16000)
