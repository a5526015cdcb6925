"""What every grader family shares: input checks, length alignment, resampling, skip/error recording."""

from __future__ import annotations

import importlib

import numpy as np
import torch

from voxinv.audio import resample as _resample

SR = 24000
FRAME_SECONDS = 0.08  # one codec frame (1920 samples at 24 kHz): the length slack we tolerate

Audio = torch.Tensor | np.ndarray


class MetricError(ValueError):
    """Inputs a metric cannot compare (lengths, shapes)."""


class Unavailable(RuntimeError):
    """An optional grader whose package or weights are missing: recorded as skipped."""


def to_mono(x: Audio, name: str = "audio") -> np.ndarray:
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


def align(ref: Audio, est: Audio, sr: int, max_diff: int | None = None) -> tuple[np.ndarray, np.ndarray, int]:
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


def equal_length(ref: Audio, est: Audio, what: str) -> tuple[np.ndarray, np.ndarray]:
    r, e = to_mono(ref), to_mono(est)
    if len(r) != len(e):
        raise MetricError(f"{what} needs equal lengths, got {len(r)} and {len(e)}: use align() first")
    return r, e


def resample(x: np.ndarray, sr: int, sr_out: int) -> np.ndarray:
    return _resample(torch.from_numpy(x).float(), sr, sr_out).double().numpy()


def scalar(x) -> float:
    return float(np.asarray(x, dtype=np.float64))


def need(module: str, pip: str | None = None):
    """Import an optional grader's package, or raise :class:`Unavailable` saying what to install."""
    try:
        return importlib.import_module(module)
    except ImportError as e:
        raise Unavailable(f"{module} not installed (pip install {pip or module})") from e


def try_metric(out: dict, key: str, fn, *args, **kw) -> None:
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
