"""Signal graders: SI-SDR (torchmetrics), multi-resolution STFT (auraloss), multi-scale log-mel, waveform L1.

``mel`` is the one log-mel distance of voxinv: the metric and the ``mel`` loss term
(:mod:`voxinv.invert.losses`) are both :class:`voxinv.dsp.MultiScaleLogMel`, ``log(mel + 1e-5)`` (not a clamp),
so a run's ``mel`` loss with the metric's settings equals its ``mel`` metric.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence

import numpy as np
import torch

# the log-mel definition and its settings live in voxinv.dsp (shared with the loss terms); re-exported here
from voxinv.dsp import MEL_BINS, MEL_FFTS, MEL_HOP_RATIO, MultiScaleLogMel, as_batch, log_mel_l1  # noqa: F401
from voxinv.eval.metrics.common import SR, Audio, equal_length, scalar, to_mono


def si_sdr(ref: Audio, est: Audio) -> float:
    """Scale-invariant SDR in dB (zero-mean), torchmetrics in float64.

    Identical signals saturate at 10·log10(‖ref‖² / ε₆₄) (≈ +170–180 dB for speech), not inf.
    """
    from torchmetrics.functional.audio import scale_invariant_signal_distortion_ratio

    r, e = equal_length(ref, est, "si_sdr")
    return scalar(scale_invariant_signal_distortion_ratio(torch.from_numpy(e), torch.from_numpy(r), zero_mean=True))


def waveform_l1(ref: Audio, est: Audio) -> float:
    """Mean absolute sample difference."""
    r, e = equal_length(ref, est, "waveform_l1")
    return scalar(np.abs(r - e).mean())


@functools.lru_cache(maxsize=1)
def _mrstft_loss():
    from auraloss.freq import MultiResolutionSTFTLoss

    return MultiResolutionSTFTLoss()  # defaults, see voxinv.eval.metrics


def mrstft_distance(ref: Audio, est: Audio, sr: int = SR) -> float:
    """auraloss multi-resolution STFT loss with its default settings (0 for identical signals)."""
    r, e = to_mono(ref), to_mono(est)
    with torch.no_grad():
        x = torch.from_numpy(e).float()[None, None]  # [1, 1, N]
        y = torch.from_numpy(r).float()[None, None]
        return scalar(_mrstft_loss()(x, y))


def log_mel_distance(
    ref: Audio, est: Audio, sr: int = SR, n_ffts: Sequence[int] = MEL_FFTS, n_mels: int = MEL_BINS
) -> float:
    """:class:`MultiScaleLogMel` of ``est`` against ``ref`` (80 mels, n_fft 512/1024/2048, hop n_fft/4)."""
    return log_mel_l1(to_mono(ref), to_mono(est), sr, n_ffts, n_mels)


def signal_metrics(ref: Audio, est: Audio, sr: int = SR) -> dict[str, float | str | bool]:
    """``si_sdr``, ``mrstft``, ``mel``, ``l1`` on equal-length signals."""
    return {
        "si_sdr": si_sdr(ref, est),
        "mrstft": mrstft_distance(ref, est, sr),
        "mel": log_mel_distance(ref, est, sr),
        "l1": waveform_l1(ref, est),
    }
