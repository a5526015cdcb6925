"""Signal graders: SI-SDR (torchmetrics), multi-resolution STFT (auraloss), multi-scale log-mel, waveform L1.

``mel`` is the one log-mel distance of voxinv: the metric and the ``mel`` loss term
(:mod:`voxinv.invert.losses`) are both :class:`MultiScaleLogMel`, ``log(mel + 1e-5)`` (not a clamp),
so a run's ``mel`` loss with the metric's settings equals its ``mel`` metric.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence

import numpy as np
import torch
from torch import nn

from voxinv.eval.metrics.common import SR, Audio, equal_length, scalar, to_mono

MEL_FFTS = (512, 1024, 2048)  # the metric's scales, mel bands and hop: the mel loss's settings in conf/loss/_base_.yaml
MEL_BINS = 80
MEL_HOP_RATIO = 0.25


def as_batch(x: torch.Tensor) -> torch.Tensor:
    """A loss target as a batch: one waveform ``[N]`` → ``[1, N]`` (shared by all items); ``[B, N]`` as is."""
    return x[None] if x.dim() == 1 else x


class MultiScaleLogMel(nn.Module):
    """Mean over scales of mean |log(mel(y) + eps) − log(mel(x) + eps)|: ``y [B, N]``, ``x [N]`` (one
    target) or ``[B, N]`` (one per item) → ``[B]``.

    Magnitude (power 1) mel spectrograms, hop ``n_fft · hop_ratio``, centred frames.
    """

    def __init__(self, sr: int, fft_sizes: Sequence[int], n_mels: int, hop_ratio: float, eps: float = 1e-5):
        super().__init__()
        import torchaudio

        self.mels = nn.ModuleList(
            torchaudio.transforms.MelSpectrogram(
                sample_rate=sr, n_fft=n, hop_length=max(1, int(n * hop_ratio)), n_mels=n_mels, power=1.0
            )
            for n in fft_sizes
        )
        self.eps = eps

    def forward(self, y: torch.Tensor, x: torch.Tensor) -> torch.Tensor:  # [B, N], [N] or [B, N] -> [B]
        out = 0.0
        for mel in self.mels:  # one transform per scale for all restarts; the target without a graph
            with torch.no_grad():
                mx = torch.log(mel(as_batch(x).to(y.dtype)) + self.eps)  # [1 or B, n_mels, frames]
            out = out + (torch.log(mel(y) + self.eps) - mx).abs().mean((-1, -2))
        return out / len(self.mels)


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


@functools.lru_cache(maxsize=8)
def _log_mel(sr: int, n_ffts: tuple[int, ...], n_mels: int) -> MultiScaleLogMel:
    return MultiScaleLogMel(sr, n_ffts, n_mels, MEL_HOP_RATIO)


def log_mel_distance(
    ref: Audio, est: Audio, sr: int = SR, n_ffts: Sequence[int] = MEL_FFTS, n_mels: int = MEL_BINS
) -> float:
    """:class:`MultiScaleLogMel` of ``est`` against ``ref`` (80 mels, n_fft 512/1024/2048, hop n_fft/4)."""
    r, e = to_mono(ref), to_mono(est)
    with torch.no_grad():
        return scalar(
            _log_mel(sr, tuple(n_ffts), n_mels)(torch.from_numpy(e).float()[None], torch.from_numpy(r).float())[0]
        )


def signal_metrics(ref: Audio, est: Audio, sr: int = SR) -> dict[str, float | str | bool]:
    """``si_sdr``, ``mrstft``, ``mel``, ``l1`` on equal-length signals."""
    return {
        "si_sdr": si_sdr(ref, est),
        "mrstft": mrstft_distance(ref, est, sr),
        "mel": log_mel_distance(ref, est, sr),
        "l1": waveform_l1(ref, est),
    }
