"""The one metric-format table: header, number format, direction and meaning of every reported metric.

Used by ``python -m voxinv.eval`` (its terminal table: :data:`EVAL_COLUMNS`) and by the sweep report
(:mod:`voxinv.eval.report`: tables, plots, winners).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

AC_LEVELS = 21  # acoustic FSQ levels: chance accuracy 100/21 %
SEM_ENTRIES = 8192  # semantic codebook entries: chance accuracy 100/8192 %
AC_CHANCE = 100.0 / AC_LEVELS
SEM_CHANCE = 100.0 / SEM_ENTRIES
CHANCE = {"code_ac_acc": AC_CHANCE, "code_sem_acc": SEM_CHANCE}  # % of codes right by guessing


@dataclass(frozen=True)
class Metric:
    key: str
    header: str
    fmt: str
    higher_better: bool
    doc: str

    def format(self, v: float) -> str:
        return self.fmt.format(v)


METRICS: tuple[Metric, ...] = (
    Metric("si_sdr", "SI-SDR dB", "{:.2f}", True, "scale-invariant SDR of the exported reconstruction"),
    Metric("mel", "mel", "{:.4f}", False, "multi-scale log-mel L1 (80 mels, n_fft 512/1024/2048)"),
    Metric("mrstft", "MRSTFT", "{:.3f}", False, "auraloss multi-resolution STFT distance (defaults)"),
    Metric("pesq", "PESQ", "{:.2f}", True, "wide-band PESQ (MOS-LQO, 16 kHz)"),
    Metric("stoi", "STOI", "{:.3f}", True, "short-time objective intelligibility"),
    Metric("estoi", "eSTOI", "{:.3f}", True, "extended STOI"),
    Metric("dnsmos_ovrl", "DNSMOS", "{:.2f}", True, "non-intrusive DNSMOS P.835 overall quality"),
    Metric("spk_sim", "spk", "{:.3f}", True, "speaker similarity (cosine) by a grader the loss did not use"),
    Metric("spk_ge2e", "spk GE2E", "{:.3f}", True, "speaker similarity by resemblyzer's GE2E (self-graded: loss spk)"),
    Metric("spk_dvec", "spk dvec", "{:.3f}", True, "speaker similarity by the d-vector (self-graded: loss spk_dvec)"),
    Metric("wer", "WER", "{:.2f}", False, "word error rate of the reconstruction's transcript"),
    Metric("cer", "CER", "{:.2f}", False, "character error rate of the reconstruction's transcript"),
    Metric("code_sem_acc", "sem%", "{:.1f}", True, "semantic codes equal to the true ones (chance 0.01 %)"),
    Metric("code_ac_acc", "ac%", "{:.1f}", True, "acoustic codes equal to the true ones (chance 4.8 %)"),
    Metric("code_emb_cos", "embcos", "{:.3f}", True, "cosine of the codes' summed embeddings to the true ones"),
    Metric("objective", "objective", "{:.4g}", False, "the run's own loss of the exported codes (per-loss scale)"),
    Metric("wall_s", "wall s", "{:.1f}", False, "run wall time (init + steps + export)"),
    Metric("init_s", "init s", "{:.1f}", False, "initialisation time (coordinate descent; 0 for random)"),
    Metric("compute_s", "compute s", "{:.1f}", False, "wall s + the warm-start source run's wall s"),
    Metric("si_sdr_gain_per_s", "ΔSI-SDR/s", "{:.2f}", True, "(SI-SDR − random-codes SI-SDR) / compute s"),
    Metric("ac_gain_per_s", "Δac%/s", "{:.2f}", True, "(ac% − 100/21) / compute s"),
)
METRIC = {m.key: m for m in METRICS}

# python -m voxinv.eval: the headline columns of a full evaluation, in print order
EVAL_COLUMNS = (
    "si_sdr",
    "mrstft",
    "mel",
    "pesq",
    "stoi",
    "estoi",
    "dnsmos_ovrl",
    "spk_sim",
    "spk_ge2e",
    "spk_dvec",
    "wer",
    "cer",
    "code_sem_acc",
    "code_ac_acc",
    "code_emb_cos",
)
# the sweep report's table columns, in order (those no configuration has are dropped)
REPORT_COLUMNS = (
    "si_sdr",
    "mel",
    "mrstft",
    "code_sem_acc",
    "code_ac_acc",
    "objective",
    "wall_s",
    "init_s",
    "compute_s",
    "si_sdr_gain_per_s",
    "ac_gain_per_s",
)


def fmt(key: str, v: object) -> str:
    """``v`` in ``key``'s format; ``-`` for a missing / non-numeric / NaN value."""
    if not isinstance(v, int | float) or isinstance(v, bool) or math.isnan(v):
        return "-"
    return METRIC[key].format(v) if key in METRIC else f"{v:.4g}"
