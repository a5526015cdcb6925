"""``voxinv.audio``: read any soundfile format to mono 24 kHz float32, write the samples exactly,
trim silence, normalise the peak; bad input is one AudioError line that says what to do."""

from __future__ import annotations

import math

import numpy as np
import pytest
import soundfile as sf
import torch

from voxinv.audio import AudioError, check_not_silent, normalize_peak, read_audio, resample, trim_silence, write_wav


def _tone(sr: int, seconds: float, hz: float = 440.0, amp: float = 0.5) -> np.ndarray:
    t = np.arange(int(sr * seconds)) / sr
    return (amp * np.sin(2 * np.pi * hz * t)).astype(np.float32)


def test_write_then_read_is_exact(tmp_path):
    x = torch.from_numpy(_tone(24000, 0.1)) * 3  # beyond ±1: written as computed, no clipping
    p = write_wav(tmp_path / "a" / "x.wav", x)
    assert p == tmp_path / "a" / "x.wav"
    info = sf.info(str(p))
    assert (info.samplerate, info.channels, info.subtype) == (24000, 1, "FLOAT")
    assert torch.equal(read_audio(p), x)
    assert [q.name for q in p.parent.iterdir()] == ["x.wav"]  # atomic: no temporary left


def test_read_mixes_channels_and_resamples(tmp_path):
    left, right = _tone(48000, 0.5, amp=0.2), _tone(48000, 0.5, amp=0.6)
    sf.write(str(tmp_path / "s.flac"), np.stack([left, right], 1), 48000)
    y = read_audio(tmp_path / "s.flac")  # mono, 24 kHz
    assert y.dtype == torch.float32 and y.ndim == 1 and y.numel() == 12000
    # the channel mean of a 440 Hz tone at amplitude 0.4 (FLAC is 16-bit: ≈ 1e-4 quantisation)
    mid = y[2000:10000]
    assert float(mid.abs().max()) == pytest.approx(0.4, abs=5e-3)
    spec = torch.fft.rfft(mid).abs()
    assert int(spec.argmax()) * 24000 / mid.numel() == pytest.approx(440, abs=3)
    assert resample(y, 24000, 24000) is y


@pytest.mark.parametrize(
    "make,match",
    [
        (lambda p: None, "does not exist"),
        (lambda p: p.write_bytes(b"not audio at all"), "cannot read audio .*ffmpeg"),
        (lambda p: sf.write(str(p), np.zeros((0, 1), np.float32), 24000), "holds no samples"),
        (lambda p: sf.write(str(p), np.array([0.1, np.nan], np.float32), 24000, subtype="FLOAT"), "NaN/inf"),
    ],
    ids=["missing", "not-audio", "empty", "nan"],
)
def test_bad_files_are_one_line_errors(tmp_path, make, match):
    p = tmp_path / "bad.wav"
    make(p)
    with pytest.raises(AudioError, match=match) as e:
        read_audio(p)
    assert "\n" not in str(e.value)


def test_trim_silence_keeps_the_loud_part():
    sr = 24000
    x = torch.cat([torch.zeros(sr // 2), torch.from_numpy(_tone(sr, 0.25)), torch.zeros(sr // 4)])
    y = trim_silence(x, sr, threshold_db=-40.0, frame_ms=20.0)
    hop = sr // 50
    assert sr // 2 - hop < x.numel() - y.numel() - sr // 4 <= sr // 2 + hop  # leading silence gone (± a hop)
    assert y.numel() == pytest.approx(sr // 4, abs=2 * hop)
    assert torch.equal(trim_silence(torch.zeros(100), sr), torch.zeros(100))  # all silent: unchanged


def test_normalize_peak_and_silence_checks():
    x = torch.tensor([0.1, -0.4, 0.2])
    assert torch.allclose(normalize_peak(x, 0.08), x * 0.2) and math.isclose(
        float(normalize_peak(x, 0.08).abs().max()), 0.08, rel_tol=1e-6
    )
    with pytest.raises(AudioError, match="all zeros"):
        normalize_peak(torch.zeros(10), 0.08)
    check_not_silent(x)
    with pytest.raises(AudioError, match=r"target is silent \(RMS -\d+ dBFS ≤ -60\): pass a recording"):
        check_not_silent(torch.full((100,), 1e-5), "target")
