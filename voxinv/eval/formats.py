"""The metric registry: every reported metric's key, header, number format, direction, group, packages,
headline flag, the tables it is a column of, and meaning.

The one place a metric is described. Read by ``python -m voxinv.eval`` (its terminal table:
``columns("eval")``), the sweep report (:mod:`voxinv.eval.report`: tables, plots, winners, paired
differences, ceilings), the benchmark report (:mod:`voxinv.eval.report.bench`: ``columns("bench")``) and
the run guard (:func:`voxinv.invert.guard.missing_packages`: :func:`group_packages`). Adding a metric: one
:class:`Metric` entry in :data:`METRICS` (or :func:`register` at run time) and its computation in its
grader family (:mod:`voxinv.eval.metrics`). Imports nothing beyond the standard library.

Views (``Metric.views``: view → column position, ascending; gaps of 10 leave room):

* ``eval``: ``python -m voxinv.eval``'s terminal table;
* ``report`` / ``paired`` / ``per_run``: the sweep report's table, paired differences and per-run table;
* ``curves`` / ``code_curves``: the sweep report's curves.png / code_acc.png panels;
* ``bench`` / ``bench_paired`` / ``bench_graded``: the benchmark report's means table, its paired
  differences, and the independent graders also paired where ``graders.jsonl`` has them;
* ``e2e``: the summary of the end-to-end check (:mod:`voxinv.eval.e2e`: the voice's TTS sentences).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field

AC_LEVELS = 21  # acoustic FSQ levels: chance accuracy 100/21 %
SEM_ENTRIES = 8192  # semantic codebook entries: chance accuracy 100/8192 %
AC_CHANCE = 100.0 / AC_LEVELS
SEM_CHANCE = 100.0 / SEM_ENTRIES

# import name → pip name where they differ (the install hint of a missing grader package)
PIP_NAMES = {"webrtcvad": "webrtcvad-wheels", "faster_whisper": "faster-whisper"}


@dataclass(frozen=True)
class Metric:
    key: str
    header: str  # short column header (terminal and sweep tables)
    fmt: str
    higher_better: bool
    doc: str
    group: str = ""  # grader family (an eval.which group: signal, perceptual, speaker, asr) or codes, clock, …
    packages: tuple[str, ...] = ()  # import names its grader needs (pip name: :func:`pip_name`)
    views: Mapping[str, int] = field(default_factory=dict)  # view → column position (module docstring)
    headline: bool = False  # a "best mean per metric" winner of the sweep report
    title: str = ""  # long header of the benchmark report's markdown (default: header)
    chance: float | None = None  # the value guessing gets (a dashed line on its curve)
    oracle: float | None = None  # the value of the true codes' own decode (the sweep report's ceiling row)
    log_scale: bool = False  # plotted on a log axis

    def format(self, v: float) -> str:
        return self.fmt.format(v)

    @property
    def long(self) -> str:
        return self.title or self.header


METRICS: tuple[Metric, ...] = (
    # signal: the reconstruction against the target waveform
    Metric("si_sdr", "SI-SDR dB", "{:.2f}", True, "scale-invariant SDR of the exported reconstruction",
           group="signal", headline=True, oracle=math.inf,
           views={"eval": 10, "report": 10, "per_run": 10, "paired": 10, "curves": 10, "bench": 110}),
    Metric("mel", "mel", "{:.4f}", False, "multi-scale log-mel L1 (80 mels, n_fft 512/1024/2048)",
           group="signal", headline=True, oracle=0.0, log_scale=True,
           views={"eval": 30, "report": 20, "per_run": 20, "paired": 20, "curves": 20}),
    Metric("mrstft", "MRSTFT", "{:.3f}", False, "auraloss multi-resolution STFT distance (defaults)",
           group="signal", oracle=0.0, log_scale=True, title="MR-STFT",
           views={"eval": 20, "report": 30, "bench": 20, "bench_paired": 20}),
    # perceptual
    Metric("pesq", "PESQ", "{:.2f}", True, "wide-band PESQ (MOS-LQO, 16 kHz)",
           group="perceptual", packages=("pesq",), views={"eval": 40}),
    Metric("stoi", "STOI", "{:.3f}", True, "short-time objective intelligibility",
           group="perceptual", packages=("pystoi",), views={"eval": 50}),
    Metric("estoi", "eSTOI", "{:.3f}", True, "extended STOI",
           group="perceptual", packages=("pystoi",), views={"eval": 60}),
    Metric("dnsmos_ovrl", "DNSMOS", "{:.2f}", True, "non-intrusive DNSMOS P.835 overall quality",
           group="perceptual", packages=("speechmos", "onnxruntime"), title="DNSMOS ovrl",
           views={"eval": 70, "bench": 70, "bench_graded": 40, "e2e": 30}),
    # speaker (held-out grading: :mod:`voxinv.eval.metrics.speaker`)
    Metric("spk_sim", "spk", "{:.3f}", True, "speaker similarity (cosine) by a grader the loss did not use",
           group="speaker", packages=("resemblyzer", "webrtcvad"), views={"eval": 80, "e2e": 10}),
    Metric("spk_ge2e", "spk GE2E", "{:.3f}", True, "speaker similarity by resemblyzer's GE2E (self-graded: loss spk)",
           group="speaker", packages=("resemblyzer", "webrtcvad"),
           views={"eval": 90, "bench": 40, "bench_graded": 10}),
    Metric("spk_dvec", "spk dvec", "{:.3f}", True, "speaker similarity by the d-vector (self-graded: loss spk_dvec)",
           group="speaker", packages=("onnxruntime",), title="spk d-vector",
           views={"eval": 100, "bench": 50, "bench_graded": 20}),
    # asr (the default engine's package)
    Metric("wer", "WER", "{:.2f}", False, "word error rate of the reconstruction's transcript",
           group="asr", packages=("pocketsphinx",), views={"eval": 110, "bench": 60, "bench_graded": 30, "e2e": 20}),
    Metric("cer", "CER", "{:.2f}", False, "character error rate of the reconstruction's transcript",
           group="asr", packages=("pocketsphinx",), views={"eval": 120}),
    # codes (known only for targets made from codes)
    Metric("code_sem_acc", "sem%", "{:.1f}", True, "semantic codes equal to the true ones (chance 0.01 %)",
           group="codes", headline=True, chance=SEM_CHANCE, oracle=100.0,
           views={"eval": 130, "report": 40, "per_run": 30, "paired": 30, "code_curves": 10}),
    Metric("code_ac_acc", "ac%", "{:.1f}", True, "acoustic codes equal to the true ones (chance 4.8 %)",
           group="codes", headline=True, chance=AC_CHANCE, oracle=100.0,
           views={"eval": 140, "report": 50, "per_run": 40, "paired": 40, "code_curves": 20}),
    Metric("code_emb_cos", "embcos", "{:.3f}", True, "cosine of the codes' summed embeddings to the true ones",
           group="codes", views={"eval": 150}),
    # the run itself
    Metric("objective", "objective", "{:.4g}", False, "the run's own loss of the exported codes (per-loss scale)",
           group="objective", views={"report": 60}),
    Metric("wall_s", "wall s", "{:.1f}", False, "run wall time (init + steps + export)",
           group="clock", views={"report": 70, "per_run": 50, "bench": 120, "bench_paired": 50}),
    Metric("init_s", "init s", "{:.1f}", False, "initialisation time (coordinate descent; 0 for random)",
           group="clock", views={"report": 80}),
    Metric("compute_s", "compute s", "{:.1f}", False, "wall s + the warm-start source run's wall s",
           group="clock", views={"report": 90, "per_run": 60, "paired": 50}),
    Metric("si_sdr_gain_per_s", "ΔSI-SDR/s", "{:.2f}", True, "(SI-SDR − random-codes SI-SDR) / compute s",
           group="speed", headline=True, views={"report": 100}),
    Metric("ac_gain_per_s", "Δac%/s", "{:.2f}", True, "(ac% − 100/21) / compute s",
           group="speed", headline=True, views={"report": 110}),
    # the speech benchmark's own scores (runs.jsonl rows of experiments/bench_speech.py)
    Metric("mrmel", "mrmel", "{:.4f}", False, "multi-resolution log-mel L1 in log10 units (eval.json's metric)",
           group="signal", title="MR log-mel", views={"bench": 10, "bench_paired": 10}),
    Metric("spk", "spk", "{:.3f}", True, "resemblyzer GE2E cosine to the target (self-graded where the loss has spk)",
           group="speaker", packages=("resemblyzer", "webrtcvad"), views={"bench": 30, "bench_paired": 30}),
    Metric("env", "env", "{:.3f}", True, "correlation of the frame-energy envelopes",
           group="signal", title="env corr", views={"bench": 80, "bench_paired": 40}),
    Metric("code_sem", "sem%=enc", "{:.1f}", True, "semantic codes equal to the encoder's (diagnostic)",
           group="codes", title="sem % = enc", views={"bench": 90}),
    Metric("code_ac", "ac%=enc", "{:.1f}", True, "acoustic codes equal to the encoder's (diagnostic)",
           group="codes", title="ac % = enc", views={"bench": 100}),
)  # fmt: skip
# THE registry: key → metric (the built-ins above, then any :func:`register`-ed)
METRIC: dict[str, Metric] = {m.key: m for m in METRICS}
# speaker score → the loss terms that use its model: a run with one of them is self-graded on that score
SPEAKER_LOSS = {"spk": frozenset({"spk"}), "spk_ge2e": frozenset({"spk"}), "spk_dvec": frozenset({"spk_dvec"})}


def register(metric: Metric, replace: bool = False) -> Metric:
    """Add ``metric`` to the registry (a plug-in metric); its views show it from then on."""
    if metric.key in METRIC and not replace:
        raise ValueError(f"metric {metric.key!r} is registered already (replace=True to redefine it)")
    METRIC[metric.key] = metric
    return metric


def columns(view: str) -> tuple[str, ...]:
    """The keys of ``view`` (see the module docstring), in column order."""
    have = [(m.views[view], i, k) for i, (k, m) in enumerate(METRIC.items()) if view in m.views]
    return tuple(k for _, _, k in sorted(have))


def headline() -> tuple[str, ...]:
    """The sweep report's headline metrics (one winner each), in registry order."""
    return tuple(k for k, m in METRIC.items() if m.headline)


def chance() -> dict[str, float]:
    """``{key: % right by guessing}`` of the metrics that have a chance level."""
    return {k: m.chance for k, m in METRIC.items() if m.chance is not None}


def group_packages() -> dict[str, list[str]]:
    """``{group: import names its graders need}`` (first-seen order, no repeats)."""
    out: dict[str, list[str]] = {}
    for m in METRIC.values():
        pk = out.setdefault(m.group, [])
        pk += [p for p in m.packages if p not in pk]
    return out


def pip_name(module: str) -> str:
    """The pip name of an import name (``webrtcvad`` → ``webrtcvad-wheels``)."""
    return PIP_NAMES.get(module, module)


def higher_better(key: str, default: bool = True) -> bool:
    """``key``'s direction (``default`` for an unregistered key)."""
    return METRIC[key].higher_better if key in METRIC else default


# import-time snapshots of the views (kept for importers; the consumers read :func:`columns`)
CHANCE = chance()
EVAL_COLUMNS = columns("eval")
REPORT_COLUMNS = columns("report")


def fmt(key: str, v: object) -> str:
    """``v`` in ``key``'s format; ``-`` for a missing / non-numeric / NaN value."""
    if not isinstance(v, int | float) or isinstance(v, bool) or math.isnan(v):
        return "-"
    return METRIC[key].format(v) if key in METRIC else f"{v:.4g}"
