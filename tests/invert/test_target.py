"""Targets: synthetic and preset (codes known), and recordings (``target=file``): resampled to
24 kHz mono, trimmed, peak-normalised, padded to whole frames with the pad recorded; bad files
give one clear AudioError (exit code 2 and one ``voxinv: error:`` line from the CLI)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch
import torchaudio.functional as AF
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf

import voxinv.run as R
from voxinv.audio import AudioError
from voxinv.invert import target as T

SPF = 1920
REPO = Path(R.__file__).resolve().parents[1]


@pytest.fixture
def cfg_of(voxinv_cache, monkeypatch):
    monkeypatch.setenv("VOXINV_CACHE", str(voxinv_cache))
    fast = {
        "model": "tiny",
        "target": "synthetic",
        "device": "cpu",
        "steps": "2",
        "eval_every": "0",
        "init": "random",
        "eval.which": "[]",
        "trainer.enable_progress_bar": "false",
    }

    def make(*overrides: str):
        fast.update(o.split("=", 1) for o in overrides)
        with initialize_config_dir(config_dir=R.CONF_DIR, version_base="1.3"):
            return compose("config", overrides=[f"{k}={v}" for k, v in fast.items()])

    return make


def _tone(seconds: float, sr: int, amp: float = 0.3, f0: float = 180.0) -> np.ndarray:
    """A harmonic tone (f0 + 4 harmonics) with a slow vibrato: speech-like enough for the pipeline."""
    t = np.arange(int(round(seconds * sr))) / sr
    phase = 2 * np.pi * (f0 * t + 2.0 * np.sin(2 * np.pi * 5 * t))
    x = sum(np.sin(k * phase) / k for k in range(1, 6))
    return (amp * x / np.abs(x).max()).astype(np.float32)


def _stereo_tone(path: Path, seconds: float = 0.5, sr: int = 16000) -> np.ndarray:
    left = _tone(seconds, sr)
    right = 0.5 * _tone(seconds, sr, f0=220.0)
    sf.write(str(path), np.stack([left, right], 1), sr, subtype="FLOAT")
    return np.stack([left, right], 1)


# ---------------------------------------------------------------------------------- synthetic, preset
def test_synthetic_is_the_decode_of_seeded_codes(codec):
    a, b = T.synthetic(codec, 3, seed=4), T.synthetic(codec, 3, seed=4)
    assert a.n_frames == 3 and a.wav.shape == (3 * SPF,) and a.codes.shape == (3, 37)
    assert torch.equal(a.codes, b.codes) and torch.equal(a.wav, b.wav)
    assert not torch.equal(a.codes, T.synthetic(codec, 3, seed=5).codes)
    assert torch.equal(a.wav, codec.decode(a.codes.T[None])[0, 0])
    assert a.info == {"kind": "synthetic", "seed": 4}


def test_preset(codec, ckpt):
    t = T.preset(codec, ckpt, "neutral_female", max_frames=4)
    assert t.n_frames == 4 and t.codes.shape == (4, 37) and t.wav.shape == (4 * SPF,)
    assert t.info["voice"] == "neutral_female" and t.info["decomposition_rel_error"] < 1e-2
    full = T.preset(codec, ckpt, "neutral_female")
    assert full.n_frames == 30 and torch.equal(full.codes[:4], t.codes)  # tiny voice: 30 frames
    with pytest.raises(AudioError, match="preset voice 'nobody' not found.*casual_female"):
        T.preset(codec, ckpt, "nobody")


# ---------------------------------------------------------------------------------------------- file
def _from_file(path, codec, **kw) -> T.Target:
    """``T.from_file`` with conf/target/file.yaml's reading settings, ``kw`` replacing some."""
    conf = OmegaConf.load(Path(R.CONF_DIR) / "target" / "file.yaml")
    return T.from_file(path, codec, **{k: conf[k] for k in ("trim", "trim_db", "peak", "max_seconds")} | kw)


def test_file_is_resampled_mono_normalised_and_padded(tmp_path, codec):
    path = tmp_path / "tone.wav"
    stereo = _stereo_tone(path)
    t = _from_file(path, codec, peak=0.08)
    mono = AF.resample(torch.from_numpy(stereo.mean(1)), 16000, 24000)
    assert mono.numel() == 12000  # 0.5 s at 24 kHz
    n_frames, pad = 7, 7 * SPF - 12000  # 12000 samples → 6.25 frames → 7, the tail zero-padded
    assert (t.n_frames, t.wav.shape, t.codes) == (n_frames, (n_frames * SPF,), None)
    assert t.info == {"source": str(path), "input_samples": 12000, "trimmed_samples": 0, "pad_samples": pad}
    torch.testing.assert_close(t.wav[:12000], mono * (0.08 / mono.abs().max()), rtol=0, atol=1e-6)
    assert torch.equal(t.wav[12000:], torch.zeros(pad))
    assert float(t.wav.abs().max()) == pytest.approx(0.08)
    assert t.name == "tone"


def test_file_trim_and_limits(tmp_path, codec):
    sr = 24000
    x = np.concatenate([np.zeros(4800), _tone(0.4, sr), np.zeros(9600)]).astype(np.float32)
    sf.write(str(tmp_path / "padded.wav"), x, sr, subtype="FLOAT")
    t = _from_file(tmp_path / "padded.wav", codec)
    kept = t.wav.numel() - t.info["pad_samples"]
    assert t.info["trimmed_samples"] == x.size - kept and abs(kept - 9600) <= 480  # the tone, ±1 trim hop
    t = _from_file(tmp_path / "padded.wav", codec, trim=False, peak=None)
    assert t.info["trimmed_samples"] == 0 and torch.equal(t.wav[: x.size], torch.from_numpy(x))
    with pytest.raises(AudioError, match="max_seconds=0.05 is shorter than one 80 ms frame"):
        _from_file(tmp_path / "padded.wav", codec, max_seconds=0.05)


def test_long_file_keeps_the_window_with_the_most_speech(tmp_path, codec, caplog):
    """Length policy: above max_seconds, the most active max_seconds (whole frames) are kept, and said so."""
    sr = 24000
    rng = np.random.default_rng(0)
    quiet = 0.001 * rng.standard_normal(sr * 2).astype(np.float32)  # -60 dB: not speech-level
    x = np.concatenate([_tone(0.3, sr), quiet, _tone(1.0, sr), quiet, _tone(0.3, sr)])
    sf.write(str(tmp_path / "long.wav"), x, sr, subtype="FLOAT")
    with caplog.at_level("WARNING"):
        t = _from_file(tmp_path / "long.wav", codec, max_seconds=1.0, peak=None)
    assert t.n_frames == 12 and t.info["pad_samples"] == 0  # 1 s → 12 whole 80 ms frames
    a, b = t.info["selected_seconds"]
    assert 2.3 <= a and b <= 3.3 and b - a == pytest.approx(0.96)  # inside the 1 s tone
    assert "target.max_seconds=null inverts the whole file" in caplog.text
    whole = _from_file(tmp_path / "long.wav", codec, max_seconds=None, peak=None)
    assert "selected_seconds" not in whole.info and whole.n_frames == -(-x.size // 1920)


def _garbage(p: Path) -> None:
    p.write_bytes(b"RIFF\x00\x00 definitely not audio " * 10)


def _silent(p: Path) -> None:
    sf.write(str(p), np.zeros(24000, np.float32), 24000)


def _short(p: Path) -> None:  # 50 ms < one 80 ms frame
    sf.write(str(p), _tone(0.05, 24000), 24000)


def _blip(p: Path) -> None:  # 1 s, but only a 40 ms click after trimming
    x = np.zeros(24000, np.float32)
    x[12000:12960] = _tone(0.04, 24000)
    sf.write(str(p), x, 24000)


def _empty(p: Path) -> None:
    sf.write(str(p), np.zeros(0, np.float32), 24000)


def _nan(p: Path) -> None:
    x = _tone(0.3, 24000)
    x[100] = np.nan
    sf.write(str(p), x, 24000, subtype="FLOAT")


BAD = {
    "missing": (None, r"audio file .*missing\.wav does not exist"),
    "garbage": (_garbage, r"cannot read audio .*garbage\.wav .*convert it to WAV/FLAC/OGG"),
    "silent": (_silent, r"audio .*silent\.wav is silent \(RMS .* dBFS"),
    # the file's length, then what trimming left (trim_silence may drop the last partial 20 ms hop)
    "short": (
        _short,
        r"short\.wav is 50 ms long( \(\d+ ms after trimming silence\))?; at least one 80 ms frame \(1920",
    ),
    "blip": (_blip, r"blip\.wav is 1000 ms long \(40 ms after trimming silence\); at least one 80 ms frame"),
    "empty": (_empty, r"empty\.wav holds no samples"),
    "nan": (_nan, r"nan\.wav contains NaN/inf samples"),
}


@pytest.mark.parametrize("case", list(BAD))
def test_bad_file_errors(tmp_path, codec, case):
    write, msg = BAD[case]
    path = tmp_path / f"{case}.wav"
    if write:
        write(path)
    with pytest.raises(AudioError, match=msg) as e:
        _from_file(path, codec)
    assert "\n" not in str(e.value)


def test_file_target_run(tmp_path, cfg_of, codec):
    """target=file end to end: outputs on whole frames, the pad in metrics, no ground-truth keys."""
    wav = tmp_path / "me.wav"
    _stereo_tone(wav)
    out = tmp_path / "run"
    m = R.run(cfg_of("target=file", f"target.path={wav}"), out)
    assert m["target"]["frames"] == 7 and m["target"]["pad_samples"] == 7 * SPF - 12000
    assert m["target"]["input_samples"] == 12000 and m["target"]["name"] == "me"
    assert json.loads((out / "metrics.json").read_text())["target"] == m["target"]
    assert "truth" not in m and not (out / "true_codes.safetensors").exists()
    assert all(np.isfinite(v) for v in m["signal"].values())
    for name in ("reconstruction.wav", "target.wav"):
        x, sr = sf.read(str(out / name), dtype="float32")
        assert sr == 24000 and x.shape == (7 * SPF,), name
    x, _ = sf.read(str(out / "target.wav"), dtype="float32")
    want = _from_file(wav, codec).wav.numpy()
    assert np.array_equal(x, want)


@pytest.mark.parametrize("case", ["missing", "garbage", "silent", "short"])
def test_bad_file_through_run(tmp_path, cfg_of, case):
    write, msg = BAD[case]
    path = tmp_path / f"{case}.wav"
    if write:
        write(path)
    with pytest.raises(AudioError, match=msg):
        R.run(cfg_of("target=file", f"target.path={path}"), tmp_path / "run")


def test_file_target_needs_a_path(tmp_path, cfg_of):
    with pytest.raises(ValueError, match="target=file needs target.path=<audio file>"):
        R.run(cfg_of("target=file"), tmp_path / "run")


def test_cli_bad_input_is_one_line_exit_2(tmp_path, voxinv_cache):
    """``python -m voxinv.run`` on an unreadable file: exit code 2, one ``voxinv: error:`` line, no traceback."""
    bad = tmp_path / "garbage.wav"
    _garbage(bad)
    env = {**os.environ, "VOXINV_CACHE": str(voxinv_cache), "PYTHONWARNINGS": "ignore"}
    p = subprocess.run(
        [sys.executable, "-m", "voxinv.run", "model=tiny", f"target.path={bad}", "device=cpu"]
        + [f"hydra.run.dir={tmp_path / 'run'}"],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    lines = [ln for ln in p.stderr.splitlines() if ln.strip()]
    assert p.returncode == 2, p.stderr
    assert "Traceback" not in p.stderr
    assert len(lines) == 1 and lines[0].startswith("voxinv: error: cannot read audio "), p.stderr
    assert str(bad) in lines[0] and "ffmpeg" in lines[0]


# ------------------------------------------------------------------- long files: speech, not energy
def _speech_then_noise(path: Path, speech_s: float, noise_s: float, sr: int = 48000) -> None:
    """Speech-like sound (experiments/bench_long_recording.py), then white noise at −6 dB RMS, stereo."""
    import importlib.util

    spec = importlib.util.spec_from_file_location(
        "blr", Path(R.CONF_DIR).parents[1] / "experiments" / "bench_long_recording.py"
    )
    blr = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(blr)
    x = blr.speech_like(speech_s, sr)
    noise = np.random.default_rng(1).standard_normal(int(noise_s * sr)) * np.sqrt(np.mean(x[x != 0] ** 2)) * 0.5
    y = np.concatenate([x, noise.astype(np.float32)])
    sf.write(str(path), np.stack([y, y], 1), sr, subtype="PCM_16")


def test_long_file_window_is_chosen_by_voice_activity(tmp_path, codec, caplog):
    """10 s of speech then 20 s of loud noise: the window holds the speech (the energy rule took the noise)."""
    _speech_then_noise(tmp_path / "long.wav", 10.0, 20.0)
    with caplog.at_level("WARNING"):
        t = _from_file(tmp_path / "long.wav", codec, max_seconds=12.0)
    a, b = t.info["selected_seconds"]
    assert t.info["selected_by"] == "vad" and a <= 0.5 and b - a == pytest.approx(12.0)
    assert "by voice activity (webrtcvad)" in caplog.text and "of the file" in caplog.text
    assert t.n_frames == 150 and t.info["input_samples"] == 30 * 24000


def test_long_file_reads_only_the_kept_span(tmp_path, codec, monkeypatch):
    """The whole file is never read at once: only blocks (scan) and the selected span (read_span)."""
    import voxinv.audio as A

    _speech_then_noise(tmp_path / "long.wav", 10.0, 30.0)  # 40 s: longer than one 30 s scan block
    reads = []
    real_read = sf.SoundFile.read

    def spy(self, frames=-1, *a, **kw):
        reads.append(frames)
        return real_read(self, frames, *a, **kw)

    monkeypatch.setattr(sf.SoundFile, "read", spy)
    t = _from_file(tmp_path / "long.wav", codec, max_seconds=12.0)
    assert max(reads) <= 30 * 48000 and 0 < reads[-1] <= (12.0 + 0.1) * 48000, reads  # blocks, then 12 s + margins
    ref = A.resample(torch.from_numpy(sf.read(str(tmp_path / "long.wav"), dtype="float32")[0].mean(1)), 48000, 24000)
    a = int(round(t.info["selected_seconds"][0] * 24000))
    seg = ref[a : a + 12 * 24000]
    got = t.wav * (seg.abs().max() / t.wav.abs().max())
    assert float((got - seg)[2400:-2400].abs().max()) < 2e-3  # the same samples (resampler edges aside)


def test_long_file_without_webrtcvad_falls_back_to_level(tmp_path, codec, monkeypatch, caplog):
    import voxinv.audio as A

    monkeypatch.setattr(A, "vad", lambda mode=3: None)
    _speech_then_noise(tmp_path / "long.wav", 2.0, 4.0)
    with caplog.at_level("WARNING"):
        t = _from_file(tmp_path / "long.wav", codec, max_seconds=2.0)
    assert t.info["selected_by"] == "level" and "webrtcvad is not installed" in caplog.text


def test_stereo_channels_that_cancel_are_not_called_silent(tmp_path, codec, caplog):
    x = _tone(0.5, 24000)
    sf.write(str(tmp_path / "lr.wav"), np.stack([x, -x], 1), 24000, subtype="FLOAT")
    with caplog.at_level("WARNING"):
        t = _from_file(tmp_path / "lr.wav", codec, peak=None)
    assert "channels cancel" in caplog.text and float(t.wav.abs().max()) == pytest.approx(float(np.abs(x).max()))
