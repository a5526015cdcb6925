"""When an inversion stops improving: the rule the early stop (:class:`voxinv.invert.callbacks.EarlyStop`)
applies and the benchmark report replays on recorded curves (:mod:`voxinv.eval.report.bench`). Plain
Python at the bottom of the package, so the report does not import the inversion (nor Lightning)."""

from __future__ import annotations

from collections.abc import Sequence


def evals_since_improvement(objectives: Sequence[float], min_rel_delta: float) -> int:
    """Evaluations since the last one that beat every earlier objective by more than ``min_rel_delta``
    (relative). The first evaluation counts as an improvement."""
    best, last = float("inf"), 0
    for i, v in enumerate(objectives):
        if i == 0 or v < best - abs(best) * min_rel_delta:
            best, last = v, i
    return len(objectives) - 1 - last
