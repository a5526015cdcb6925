"""Perceptual graders: wide-band PESQ and (e)STOI (torchmetrics over pesq / pystoi), DNSMOS (speechmos).

DNSMOS stays on speechmos: torchmetrics' DNSMOS downloads its ONNX models from GitHub at first use,
speechmos ships the same models inside its wheel (offline).
"""

from __future__ import annotations

import numpy as np
import torch

from voxinv.eval.metrics.common import SR, Audio, MetricError, Unavailable, need, resample, scalar, to_mono, try_metric


def pesq_wb(ref: Audio, est: Audio, sr: int = SR) -> float:
    """Wide-band PESQ (MOS-LQO, ≈ 1.0–4.64) after resampling both signals to 16 kHz."""
    need("pesq")
    from torchmetrics.functional.audio import perceptual_evaluation_speech_quality

    r, e = resample(to_mono(ref), sr, 16000), resample(to_mono(est), sr, 16000)
    try:
        return scalar(perceptual_evaluation_speech_quality(torch.from_numpy(e), torch.from_numpy(r), 16000, "wb"))
    except Exception as ex:  # pesq raises NoUtterancesError etc. on silence
        raise MetricError(f"PESQ failed: {type(ex).__name__}: {ex}") from ex


def stoi(ref: Audio, est: Audio, sr: int = SR, extended: bool = False) -> float:
    """(e)STOI (pystoi, which resamples to 10 kHz internally); ≈ 1 for identical signals."""
    need("pystoi")
    from torchmetrics.functional.audio import short_time_objective_intelligibility

    r, e = to_mono(ref), to_mono(est)
    return scalar(short_time_objective_intelligibility(torch.from_numpy(e), torch.from_numpy(r), sr, extended))


def dnsmos(wav: Audio, sr: int = SR) -> dict[str, float]:
    """Non-intrusive DNSMOS P.835 (``ovrl``/``sig``/``bak``) + P.808 (``p808``), speechmos models at 16 kHz.

    Clips shorter than 9 s are looped to 9 s by speechmos.
    """
    need("onnxruntime")
    try:
        from speechmos import dnsmos as _dnsmos
    except ImportError as e:
        raise Unavailable(f"speechmos not usable ({e}); pip install speechmos onnxruntime librosa") from e
    x = resample(to_mono(wav), sr, 16000)
    peak = np.abs(x).max()
    if peak > 1:  # speechmos rejects samples outside [-1, 1]
        x = x / peak
    out = _dnsmos.run(x, sr=16000)
    return {k: scalar(out[f"{k}_mos"]) for k in ("ovrl", "sig", "bak", "p808")}


def perceptual_metrics(ref: Audio, est: Audio, sr: int = SR) -> dict[str, float | str | bool]:
    """``pesq``, ``stoi``, ``estoi``, ``dnsmos_*`` (est) and ``dnsmos_*_target``; missing ones → ``*_skipped``."""
    out: dict[str, float | str | bool] = {}
    try_metric(out, "pesq", pesq_wb, ref, est, sr)
    try_metric(out, "stoi", stoi, ref, est, sr)
    try_metric(out, "estoi", stoi, ref, est, sr, extended=True)
    try_metric(out, "dnsmos", lambda: {f"dnsmos_{k}": v for k, v in dnsmos(est, sr).items()})
    if "dnsmos_ovrl" in out:
        out.update({f"dnsmos_{k}_target": v for k, v in dnsmos(ref, sr).items()})
    return out
