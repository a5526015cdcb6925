"""Metric suite: how close a reconstruction is to its target, and who graded it.

Every metric takes mono waveforms (torch or numpy, ``[N]`` or ``[1, N]``/``[1, 1, N]``) at a
sample rate ``sr`` and returns plain floats. Optional graders (PESQ, STOI, DNSMOS, speaker models,
ASR engines) raise :class:`Unavailable` when their package or weights are missing; the ``*_metrics``
groups and :func:`evaluate_pair` turn that into a ``<key>_skipped: <reason>`` entry, never a 0.

Key names (flat ``dict[str, float | str | bool]``, JSON-ready):

* signal: ``si_sdr`` (dB), ``mrstft`` (auraloss ``MultiResolutionSTFTLoss()`` defaults: FFT
  1024/2048/512, hop 120/240/50, win 600/1200/240, spectral convergence + L1 log-magnitude),
  ``mel`` (mean L1 of natural-log magnitude mel, 80 mels, n_fft 512/1024/2048, hop n_fft/4, averaged
  over scales), ``l1`` (mean |ref − est|).
* perceptual: ``pesq`` (wide-band, 16 kHz), ``stoi``, ``estoi`` (pystoi, 10 kHz internally),
  ``dnsmos_{ovrl,sig,bak,p808}`` of the estimate and ``dnsmos_*_target`` of the reference
  (speechmos ONNX models, 16 kHz; non-intrusive).
* speaker: ``spk_sim_<grader>`` (cosine of utterance embeddings), ``spk_sim_<grader>_model``,
  ``spk_sim_<grader>_self_graded``; headline ``spk_sim`` / ``spk_sim_model`` /
  ``spk_sim_self_graded`` = the strongest grader available that the loss did not use.
* asr: ``wer_<engine>`` (est vs reference text), ``wer_<engine>_target`` (target vs reference text,
  only when the text is given), ``asr_<engine>_est`` / ``asr_<engine>_target`` (transcripts),
  ``wer_<engine>_model``; ``wer_ref`` = ``"given"`` or ``"asr(target)"``; headline ``wer`` /
  ``wer_model``.
* codes (:func:`code_recovery`): ``code_sem_acc``, ``code_ac_acc``, ``code_frame_acc`` (%),
  ``code_ac_mae`` (levels), ``code_emb_cos``, ``code_emb_rel_err`` (with the audio-code table).
* bookkeeping: ``sr``, ``n_samples``, ``trimmed_samples``.
"""

from __future__ import annotations

import functools
import os
import re
import unicodedata
from collections.abc import Iterable, Sequence

import numpy as np
import torch

SR = 24000
FRAME_SECONDS = 0.08  # one codec frame (1920 samples at 24 kHz): the length slack we tolerate
ALL_GROUPS = ("signal", "perceptual", "speaker", "asr")

# Graders: name → what is recorded as the grading model.
SPK_GRADERS = {
    "resemblyzer": "resemblyzer-ge2e",
    "wavlm": "microsoft/wavlm-base-plus-sv",
    "ecapa": "speechbrain/spkrec-ecapa-voxceleb",
}
SPK_PREFERENCE = ("wavlm", "ecapa", "resemblyzer")  # headline: strongest independent grader first
# Loss names that use the same weights as a grader (the inversion's `spk` loss is a torch port of
# resemblyzer's GE2E encoder): a grader listed here is marked self-graded for such runs.
SELF_GRADING_LOSSES = {
    "resemblyzer": frozenset({"spk", "ge2e", "resemblyzer", "spk_ge2e"}),
    "wavlm": frozenset({"wavlm", "spk_wavlm"}),
    "ecapa": frozenset({"ecapa", "spk_ecapa"}),
}
ASR_ENGINES = ("pocketsphinx", "whisper")


class MetricError(ValueError):
    """Inputs a metric cannot compare (lengths, shapes)."""


class Unavailable(RuntimeError):
    """An optional grader whose package or weights are missing: recorded as skipped."""


# --------------------------------------------------------------------------- inputs


def to_mono(x: torch.Tensor | np.ndarray, name: str = "audio") -> np.ndarray:
    """Any ``[N]`` / ``[1, N]`` / ``[1, 1, N]`` waveform → float64 numpy ``[N]``."""
    a = x.detach().cpu().double().numpy() if isinstance(x, torch.Tensor) else np.asarray(x, dtype=np.float64)
    if a.ndim > 1:
        if int(np.prod(a.shape[:-1])) != 1:
            raise MetricError(f"{name} must be mono [N], got shape {list(a.shape)}: average the channels first")
        a = a.reshape(-1)
    if a.ndim != 1 or a.size == 0:
        raise MetricError(f"{name} is empty")
    if not np.isfinite(a).all():
        raise MetricError(f"{name} contains NaN/inf samples")
    return a


def align(
    ref: torch.Tensor | np.ndarray, est: torch.Tensor | np.ndarray, sr: int, max_diff: int | None = None
) -> tuple[np.ndarray, np.ndarray, int]:
    """Trim to the shorter when lengths differ by less than one frame (80 ms); else raise.

    Returns ``(ref, est, trimmed_samples)``.
    """
    r, e = to_mono(ref, "reference"), to_mono(est, "estimate")
    tol = int(round(sr * FRAME_SECONDS)) if max_diff is None else max_diff
    diff = abs(len(r) - len(e))
    if diff >= max(tol, 1):
        raise MetricError(
            f"reference has {len(r)} samples, estimate {len(e)} ({diff / sr * 1000:.0f} ms apart, "
            f"limit {tol} samples): pass recordings of the same utterance at the same sample rate"
        )
    n = min(len(r), len(e))
    return r[:n], e[:n], diff


def _resample(x: np.ndarray, sr: int, sr_out: int) -> np.ndarray:
    from voxinv.audio import resample

    return resample(torch.from_numpy(x).float(), sr, sr_out).double().numpy()


def _f(x) -> float:
    return float(np.asarray(x, dtype=np.float64))


# --------------------------------------------------------------------------- signal


def si_sdr(ref: torch.Tensor | np.ndarray, est: torch.Tensor | np.ndarray) -> float:
    """Scale-invariant SDR in dB (zero-mean; identical signals give ≈ +200 dB, not inf)."""
    r, e = to_mono(ref), to_mono(est)
    if len(r) != len(e):
        raise MetricError(f"si_sdr needs equal lengths, got {len(r)} and {len(e)}: use align() first")
    r, e = r - r.mean(), e - e.mean()
    alpha = (e @ r) / max(r @ r, 1e-20)
    target = alpha * r
    noise = e - target
    return _f(10 * np.log10(max(target @ target, 1e-20) / max(noise @ noise, 1e-20)))


def waveform_l1(ref: torch.Tensor | np.ndarray, est: torch.Tensor | np.ndarray) -> float:
    """Mean absolute sample difference."""
    r, e = to_mono(ref), to_mono(est)
    if len(r) != len(e):
        raise MetricError(f"waveform_l1 needs equal lengths, got {len(r)} and {len(e)}: use align() first")
    return _f(np.abs(r - e).mean())


@functools.lru_cache(maxsize=1)
def _mrstft_loss():
    from auraloss.freq import MultiResolutionSTFTLoss

    return MultiResolutionSTFTLoss()  # defaults, see module docstring


def mrstft_distance(ref: torch.Tensor | np.ndarray, est: torch.Tensor | np.ndarray, sr: int = SR) -> float:
    """auraloss multi-resolution STFT loss with its default settings (0 for identical signals)."""
    r, e = to_mono(ref), to_mono(est)
    with torch.no_grad():
        x = torch.from_numpy(e).float()[None, None]  # [1, 1, N]
        y = torch.from_numpy(r).float()[None, None]
        return _f(_mrstft_loss()(x, y))


@functools.lru_cache(maxsize=8)
def _mel(sr: int, n_fft: int, n_mels: int):
    import torchaudio

    return torchaudio.transforms.MelSpectrogram(
        sample_rate=sr, n_fft=n_fft, hop_length=n_fft // 4, n_mels=n_mels, power=1.0, center=True
    )


def log_mel_distance(
    ref: torch.Tensor | np.ndarray,
    est: torch.Tensor | np.ndarray,
    sr: int = SR,
    n_ffts: Sequence[int] = (512, 1024, 2048),
    n_mels: int = 80,
) -> float:
    """Mean L1 between ``log(max(mel, 1e-5))`` of magnitude mel spectrograms, averaged over scales."""
    r, e = to_mono(ref), to_mono(est)
    x = torch.from_numpy(np.stack([r, e])).float()  # [2, N]
    out = []
    with torch.no_grad():
        for n in n_ffts:
            m = _mel(sr, n, n_mels)(x).clamp_min(1e-5).log()  # [2, n_mels, frames]
            out.append((m[0] - m[1]).abs().mean())
    return _f(torch.stack(out).mean())


def signal_metrics(
    ref: torch.Tensor | np.ndarray, est: torch.Tensor | np.ndarray, sr: int = SR
) -> dict[str, float | str | bool]:
    """``si_sdr``, ``mrstft``, ``mel``, ``l1`` on equal-length signals."""
    return {
        "si_sdr": si_sdr(ref, est),
        "mrstft": mrstft_distance(ref, est, sr),
        "mel": log_mel_distance(ref, est, sr),
        "l1": waveform_l1(ref, est),
    }


# --------------------------------------------------------------------------- perceptual


def _need(module: str, pip: str | None = None):
    import importlib

    try:
        return importlib.import_module(module)
    except ImportError as e:
        raise Unavailable(f"{module} not installed (pip install {pip or module})") from e


def pesq_wb(ref: torch.Tensor | np.ndarray, est: torch.Tensor | np.ndarray, sr: int = SR) -> float:
    """Wide-band PESQ (MOS-LQO, ≈ 1.0–4.64) after resampling both signals to 16 kHz."""
    pesq = _need("pesq").pesq
    r, e = _resample(to_mono(ref), sr, 16000), _resample(to_mono(est), sr, 16000)
    try:
        return _f(pesq(16000, r, e, "wb"))
    except Exception as ex:  # pesq raises NoUtterancesError etc. on silence
        raise MetricError(f"PESQ failed: {type(ex).__name__}: {ex}") from ex


def stoi(ref: torch.Tensor | np.ndarray, est: torch.Tensor | np.ndarray, sr: int = SR, extended: bool = False) -> float:
    """(e)STOI via pystoi, which resamples to 10 kHz internally; ≈ 1 for identical signals."""
    _stoi = _need("pystoi").stoi
    r, e = to_mono(ref), to_mono(est)
    return _f(_stoi(r, e, sr, extended=extended))


def dnsmos(wav: torch.Tensor | np.ndarray, sr: int = SR) -> dict[str, float]:
    """Non-intrusive DNSMOS P.835 (``ovrl``/``sig``/``bak``) + P.808 (``p808``), speechmos models at 16 kHz.

    Clips shorter than 9 s are looped to 9 s by speechmos.
    """
    _need("onnxruntime")
    try:
        from speechmos import dnsmos as _dnsmos
    except ImportError as e:
        raise Unavailable(f"speechmos not usable ({e}); pip install speechmos onnxruntime librosa") from e
    x = _resample(to_mono(wav), sr, 16000)
    peak = np.abs(x).max()
    if peak > 1:  # speechmos rejects samples outside [-1, 1]
        x = x / peak
    out = _dnsmos.run(x, sr=16000)
    return {k: _f(out[f"{k}_mos"]) for k in ("ovrl", "sig", "bak", "p808")}


def _try(out: dict, key: str, fn, *args, **kw) -> None:
    """Run one optional metric; missing grader → ``<key>_skipped``, failure on this input → ``<key>_error``."""
    try:
        val = fn(*args, **kw)
    except Unavailable as e:
        out[f"{key}_skipped"] = str(e)
        return
    except MetricError as e:
        out[f"{key}_error"] = str(e)
        return
    if isinstance(val, dict):
        out.update(val)
    else:
        out[key] = val


def perceptual_metrics(
    ref: torch.Tensor | np.ndarray, est: torch.Tensor | np.ndarray, sr: int = SR
) -> dict[str, float | str | bool]:
    """``pesq``, ``stoi``, ``estoi``, ``dnsmos_*`` (est) and ``dnsmos_*_target``; missing ones → ``*_skipped``."""
    out: dict[str, float | str | bool] = {}
    _try(out, "pesq", pesq_wb, ref, est, sr)
    _try(out, "stoi", stoi, ref, est, sr)
    _try(out, "estoi", stoi, ref, est, sr, extended=True)
    _try(out, "dnsmos", lambda: {f"dnsmos_{k}": v for k, v in dnsmos(est, sr).items()})
    if "dnsmos_ovrl" in out:
        out.update({f"dnsmos_{k}_target": v for k, v in dnsmos(ref, sr).items()})
    return out


# --------------------------------------------------------------------------- speaker


def _hf_local(repo_id: str, env: str) -> tuple[str, str]:
    """``(local dir, recorded model name)`` of a HF model: ``$env`` if set, else the HF cache.

    Never downloads (``local_files_only``), whatever ``HF_HUB_OFFLINE`` says.
    """
    path = os.environ.get(env)
    if path:
        if not os.path.isdir(path):
            raise Unavailable(f"${env}={path} is not a directory")
        return path, path
    try:
        from huggingface_hub import snapshot_download

        return snapshot_download(repo_id, local_files_only=True), repo_id
    except Exception as e:
        raise Unavailable(f"{repo_id} not in the local HF cache (set ${env} to a local copy)") from e


@functools.lru_cache(maxsize=1)
def _resemblyzer():
    _need("webrtcvad", "webrtcvad-wheels")
    enc = _need("resemblyzer", "--no-deps resemblyzer webrtcvad-wheels")
    return enc.VoiceEncoder("cpu", verbose=False), enc.preprocess_wav


@functools.lru_cache(maxsize=1)
def _wavlm():
    path, name = _hf_local(SPK_GRADERS["wavlm"], "VOXINV_WAVLM_SV")
    from transformers import AutoFeatureExtractor, WavLMForXVector

    fe = AutoFeatureExtractor.from_pretrained(path, local_files_only=True)
    model = WavLMForXVector.from_pretrained(path, local_files_only=True).eval()
    return fe, model, name


@functools.lru_cache(maxsize=1)
def _ecapa():
    _need("speechbrain")
    path, name = _hf_local(SPK_GRADERS["ecapa"], "VOXINV_ECAPA")
    try:
        from speechbrain.inference.speaker import EncoderClassifier
    except ImportError:  # speechbrain < 1.0
        from speechbrain.pretrained import EncoderClassifier
    return EncoderClassifier.from_hparams(source=path, savedir=path, run_opts={"device": "cpu"}), name


def spk_model(grader: str) -> str:
    """What is recorded as the grading model (a local path when ``$VOXINV_WAVLM_SV``/``$VOXINV_ECAPA`` is set)."""
    if grader == "wavlm":
        return _wavlm()[2]
    if grader == "ecapa":
        return _ecapa()[1]
    return SPK_GRADERS[grader]


def speaker_embedding(wav: torch.Tensor | np.ndarray, sr: int = SR, grader: str = "resemblyzer") -> np.ndarray:
    """Unit-norm utterance embedding from ``grader`` (``resemblyzer`` | ``wavlm`` | ``ecapa``)."""
    x = to_mono(wav)
    if np.sqrt((x**2).mean()) < 1e-4:  # below -80 dBFS: graders return NaN or noise-floor artefacts
        raise MetricError("audio is silent (RMS < -80 dBFS): no speaker to embed")
    if grader == "resemblyzer":
        enc, preprocess = _resemblyzer()
        # preprocess: resample to 16 kHz, normalise volume, cut silences (webrtcvad)
        emb = enc.embed_utterance(preprocess(x.astype(np.float32), source_sr=sr))
    elif grader == "wavlm":
        fe, model, _ = _wavlm()
        x16 = _resample(x, sr, 16000).astype(np.float32)
        with torch.no_grad():
            inputs = fe(x16, sampling_rate=16000, return_tensors="pt")
            emb = model(**inputs).embeddings[0].numpy()
    elif grader == "ecapa":
        model, _ = _ecapa()
        x16 = torch.from_numpy(_resample(x, sr, 16000)).float()[None]
        with torch.no_grad():
            emb = model.encode_batch(x16).reshape(-1).numpy()
    else:
        raise MetricError(f"unknown speaker grader {grader!r}: choose from {sorted(SPK_GRADERS)}")
    emb = np.asarray(emb, dtype=np.float64)
    return emb / max(np.linalg.norm(emb), 1e-12)


def speaker_similarity(
    a: torch.Tensor | np.ndarray, b: torch.Tensor | np.ndarray, sr: int = SR, grader: str = "resemblyzer"
) -> float:
    """Cosine similarity of the two utterances' speaker embeddings (1 = same embedding)."""
    return _f(speaker_embedding(a, sr, grader) @ speaker_embedding(b, sr, grader))


def is_self_graded(grader: str, loss_models: Iterable[str] = ()) -> bool:
    """Whether ``grader`` shares weights with a loss the run optimized (its score is then biased)."""
    return bool(SELF_GRADING_LOSSES.get(grader, frozenset()) & {m.lower() for m in loss_models})


def speaker_metrics(
    ref: torch.Tensor | np.ndarray,
    est: torch.Tensor | np.ndarray,
    sr: int = SR,
    graders: Sequence[str] = ("resemblyzer", "wavlm", "ecapa"),
    loss_models: Iterable[str] = (),
) -> dict[str, float | str | bool]:
    """``spk_sim_<grader>`` for each available grader and the headline ``spk_sim`` (see module doc)."""
    loss_models = set(loss_models)
    out: dict[str, float | str | bool] = {}
    for g in graders:
        key = f"spk_sim_{g}"
        try:
            out[key] = speaker_similarity(ref, est, sr, g)
        except Unavailable as e:
            out[f"{key}_skipped"] = str(e)
            continue
        except MetricError as e:
            out[f"{key}_error"] = str(e)
            continue
        out[f"{key}_model"] = spk_model(g)
        out[f"{key}_self_graded"] = is_self_graded(g, loss_models)
    done = [g for g in SPK_PREFERENCE if f"spk_sim_{g}" in out]
    if done:
        best = next((g for g in done if not out[f"spk_sim_{g}_self_graded"]), done[0])
        out["spk_sim"] = out[f"spk_sim_{best}"]
        out["spk_sim_model"] = out[f"spk_sim_{best}_model"]
        out["spk_sim_self_graded"] = out[f"spk_sim_{best}_self_graded"]
    return out


# --------------------------------------------------------------------------- intelligibility

_PUNCT = re.compile(r"[^\w\s']|_")


def normalize_text(text: str) -> str:
    """Lowercase, drop punctuation (apostrophes inside words kept), collapse whitespace; digits as is."""
    t = unicodedata.normalize("NFKC", text).lower().replace("’", "'")
    t = _PUNCT.sub(" ", t)
    t = " ".join(w.strip("'") for w in t.split())
    return " ".join(t.split())


def edit_distance(ref: Sequence, hyp: Sequence) -> int:
    """Levenshtein distance (substitutions, insertions, deletions all cost 1)."""
    prev = list(range(len(hyp) + 1))
    for i, r in enumerate(ref, 1):
        cur = [i] + [0] * len(hyp)
        for j, h in enumerate(hyp, 1):
            cur[j] = min(prev[j] + 1, cur[j - 1] + 1, prev[j - 1] + (r != h))
        prev = cur
    return prev[-1]


def wer(ref_text: str, hyp_text: str) -> float:
    """Word error rate after :func:`normalize_text`; empty reference → 0 if the hypothesis is empty, else 1."""
    r, h = normalize_text(ref_text).split(), normalize_text(hyp_text).split()
    if not r:
        return 0.0 if not h else 1.0
    return edit_distance(r, h) / len(r)


@functools.lru_cache(maxsize=1)
def _sphinx():
    ps = _need("pocketsphinx")
    return ps.Decoder()  # default config: bundled US-English acoustic model, LM and dictionary


def _whisper_local() -> str:
    """A Whisper model directory: ``$VOXINV_WHISPER``, else the largest openai/whisper-* in the HF cache."""
    path = os.environ.get("VOXINV_WHISPER")
    if path:
        if not os.path.isdir(path):
            raise Unavailable(f"$VOXINV_WHISPER={path} is not a directory")
        return path
    try:
        from huggingface_hub import scan_cache_dir, snapshot_download

        repos = [r for r in scan_cache_dir().repos if r.repo_id.startswith("openai/whisper-")]
    except Exception as e:
        raise Unavailable("no HF cache with an openai/whisper-* model (set $VOXINV_WHISPER)") from e
    for r in sorted(repos, key=lambda r: -r.size_on_disk):
        try:
            return snapshot_download(r.repo_id, local_files_only=True)
        except Exception:
            continue
    raise Unavailable("no openai/whisper-* model in the local HF cache (set $VOXINV_WHISPER)")


@functools.lru_cache(maxsize=1)
def _whisper():
    path = _whisper_local()
    from transformers import pipeline

    return pipeline("automatic-speech-recognition", model=path, device="cpu"), path


def asr_model(engine: str) -> str:
    """What is recorded as the ASR model of ``engine``."""
    if engine == "pocketsphinx":
        return "pocketsphinx-en-us"
    if engine == "whisper":
        p = _whisper()[1]
        return "openai/" + p.split("models--openai--")[1].split("/")[0] if "models--openai--" in p else p
    raise MetricError(f"unknown ASR engine {engine!r}: choose from {list(ASR_ENGINES)}")


def transcribe(wav: torch.Tensor | np.ndarray, sr: int = SR, engine: str = "pocketsphinx") -> str:
    """Transcript of ``wav`` (pocketsphinx: English only; whisper: language auto-detected)."""
    x16 = _resample(to_mono(wav), sr, 16000)
    if engine == "pocketsphinx":
        dec = _sphinx()
        pcm = (np.clip(x16, -1, 1) * 32767).astype(np.int16).tobytes()  # 16 kHz int16 PCM
        dec.start_utt()
        dec.process_raw(pcm, full_utt=True)
        dec.end_utt()
        hyp = dec.hyp()
        return hyp.hypstr if hyp is not None else ""
    if engine == "whisper":
        pipe, _ = _whisper()
        # > 30 s needs Whisper's own long-form (timestamped) generation
        res = pipe({"raw": x16.astype(np.float32), "sampling_rate": 16000}, return_timestamps=len(x16) > 30 * 16000)
        return str(res["text"]).strip()
    raise MetricError(f"unknown ASR engine {engine!r}: choose from {list(ASR_ENGINES)}")


def asr_metrics(
    ref: torch.Tensor | np.ndarray,
    est: torch.Tensor | np.ndarray,
    sr: int = SR,
    ref_text: str | None = None,
    engines: Sequence[str] = ASR_ENGINES,
) -> dict[str, float | str | bool]:
    """WER of the estimate per engine, against ``ref_text`` or, when unknown, the same engine's transcript of ``ref``."""
    out: dict[str, float | str | bool] = {"wer_ref": "given" if ref_text is not None else "asr(target)"}
    for eng in engines:
        try:
            hyp_t = transcribe(ref, sr, eng)
            model = asr_model(eng)
        except Unavailable as e:
            out[f"wer_{eng}_skipped"] = str(e)
            continue
        hyp_e = transcribe(est, sr, eng)
        out[f"asr_{eng}_target"], out[f"asr_{eng}_est"] = hyp_t, hyp_e
        out[f"wer_{eng}_model"] = model
        if ref_text is not None:
            out[f"wer_{eng}"] = wer(ref_text, hyp_e)
            out[f"wer_{eng}_target"] = wer(ref_text, hyp_t)
        else:
            out[f"wer_{eng}"] = wer(hyp_t, hyp_e)
    for eng in ("whisper", "pocketsphinx"):  # headline: the stronger engine available
        if f"wer_{eng}" in out:
            out["wer"], out["wer_model"] = out[f"wer_{eng}"], out[f"wer_{eng}_model"]
            break
    return out


# --------------------------------------------------------------------------- codes


def code_recovery(
    est_codes: torch.Tensor | np.ndarray,
    true_codes: torch.Tensor | np.ndarray,
    table: torch.Tensor | None = None,
    audio_args=None,
) -> dict[str, float]:
    """Agreement of raw ``[T, 37]`` codes with the ground truth.

    ``code_sem_acc`` / ``code_ac_acc`` / ``code_frame_acc``: exact-match % (semantic column,
    acoustic entries, whole frames); ``code_ac_mae``: mean |level error| of acoustic codes. With the
    audio-code ``table`` (``[rows, dim]``; ``audio_args`` an ``AudioModelArgs``, default the
    release's): ``code_emb_cos`` = mean cosine between the frames' summed embeddings
    (``voices.frame_embeddings`` of model-format codes) and ``code_emb_rel_err`` = mean
    ‖e_est − e_true‖ / ‖e_true‖ — what a voice prompt built from the codes would differ by.
    """
    est = torch.as_tensor(np.asarray(est_codes) if not isinstance(est_codes, torch.Tensor) else est_codes).long()
    true = torch.as_tensor(np.asarray(true_codes) if not isinstance(true_codes, torch.Tensor) else true_codes).long()
    if est.dim() != 2 or est.shape != true.shape:
        raise MetricError(
            f"codes must both be [T, 37] with the same T, got {list(est.shape)} and {list(true.shape)}: "
            "compare a reconstruction with the codes of the same clip"
        )
    ac_err = (est[:, 1:] - true[:, 1:]).abs().double()
    out = {
        "code_sem_acc": 100 * _f((est[:, 0] == true[:, 0]).double().mean()),
        "code_ac_acc": 100 * _f((ac_err == 0).double().mean()),
        "code_frame_acc": 100 * _f((est == true).all(1).double().mean()),
        "code_ac_mae": _f(ac_err.mean()),
    }
    if table is not None:
        from voxinv.voxtral.codes import to_model
        from voxinv.voxtral.params import AudioModelArgs
        from voxinv.voxtral.voices import frame_embeddings

        args = audio_args or AudioModelArgs()
        e_est = frame_embeddings(to_model(est), table, args)  # [T, dim] fp32
        e_true = frame_embeddings(to_model(true), table, args)
        out["code_emb_cos"] = _f(torch.nn.functional.cosine_similarity(e_est, e_true, dim=-1).mean())
        out["code_emb_rel_err"] = _f(((e_est - e_true).norm(dim=-1) / e_true.norm(dim=-1).clamp_min(1e-12)).mean())
    return out


# --------------------------------------------------------------------------- all together


def csv_list(s: str) -> tuple[str, ...]:
    return tuple(x.strip() for x in s.split(",") if x.strip())


def evaluate_pair(
    ref: torch.Tensor | np.ndarray,
    est: torch.Tensor | np.ndarray,
    sr: int = SR,
    *,
    which: Iterable[str] = ALL_GROUPS,
    ref_text: str | None = None,
    loss_models: Iterable[str] = (),
    spk_graders: Sequence[str] = ("resemblyzer", "wavlm", "ecapa"),
    asr_engines: Sequence[str] = ASR_ENGINES,
    max_len_diff: int | None = None,
) -> dict[str, float | str | bool]:
    """Metrics of ``est`` against reference ``ref`` for the groups in ``which``.

    Lengths within one frame (80 ms) are trimmed to the shorter (``trimmed_samples``); more raises.
    ``loss_models`` names the run's loss terms (e.g. ``{"spk", "stft"}``) to flag self-graded scores.
    """
    which = tuple(csv_list(which) if isinstance(which, str) else which)
    bad = [w for w in which if w not in ALL_GROUPS]
    if bad:
        raise MetricError(f"unknown metric group(s) {bad}: choose from {list(ALL_GROUPS)}")
    r, e, trimmed = align(ref, est, sr, max_len_diff)
    out: dict[str, float | str | bool] = {"sr": sr, "n_samples": len(r), "trimmed_samples": trimmed}
    if "signal" in which:
        out.update(signal_metrics(r, e, sr))
    if "perceptual" in which:
        out.update(perceptual_metrics(r, e, sr))
    if "speaker" in which:
        out.update(speaker_metrics(r, e, sr, spk_graders, loss_models))
    if "asr" in which:
        out.update(asr_metrics(r, e, sr, ref_text, asr_engines))
    return out


def ceiling_metrics(
    target: torch.Tensor | np.ndarray, resynth: torch.Tensor | np.ndarray, sr: int = SR, **kw
) -> dict[str, float | str | bool]:
    """In-gamut ceiling: metrics of ``target`` vs its best in-gamut reconstruction.

    ``resynth`` is e.g. the codec decode of the target's true codes, or encode→decode of a real
    recording; no inversion can beat these numbers through the frozen decoder. ``kw`` as
    :func:`evaluate_pair`.
    """
    return {"ceiling": "in_gamut", **evaluate_pair(target, resynth, sr, **kw)}


def same_speaker_ceiling(
    rec_a: torch.Tensor | np.ndarray,
    rec_b: torch.Tensor | np.ndarray,
    sr: int = SR,
    graders: Sequence[str] = ("resemblyzer", "wavlm", "ecapa"),
    sr_b: int | None = None,
) -> dict[str, float | str | bool]:
    """Speaker similarity between two *different* recordings of one speaker (any lengths).

    Only the speaker metrics are meaningful here: a clone scoring at this level is as close as the
    speaker is to themself. Never self-graded (no inversion involved).
    """
    b = to_mono(rec_b)
    if sr_b is not None and sr_b != sr:
        b = _resample(b, sr_b, sr)
    return {"ceiling": "same_speaker", **speaker_metrics(rec_a, b, sr, graders, ())}
