"""Step → value schedules: learning-rate factor, Gumbel/softmax temperature, loss-weight ramps."""

from __future__ import annotations

import math
from collections.abc import Mapping

# The `schedule` group builds `lr` and `temperature` with hydra.utils.instantiate (`_partial_: true`):
# each is one of the functions below with its settings bound, called as f(step, total).


def warmup_cosine(step: int, total: int, warmup: int, min_ratio: float) -> float:
    """LR multiplier: linear warmup over ``warmup`` steps, then cosine from 1 to ``min_ratio`` at ``total`` (held after)."""
    if warmup > 0 and step < warmup:
        return (step + 1) / warmup
    span = max(1, total - warmup)
    p = min(1.0, (step - warmup) / span)
    return min_ratio + (1 - min_ratio) * 0.5 * (1 + math.cos(math.pi * p))


def warmup_constant(step: int, total: int, warmup: int) -> float:
    """LR multiplier: linear warmup over ``warmup`` steps, then 1."""
    if warmup > 0 and step < warmup:
        return (step + 1) / warmup
    return 1.0


def constant(step: int, total: int, value: float) -> float:
    """``value`` at every step (temperature)."""
    return value


def exp_decay(step: int, total: int, start: float, end: float, decay: float) -> float:
    """``start · decay^step`` floored at ``end`` (the public recipe's temperature)."""
    return max(end, start * decay**step)


def cosine(step: int, total: int, start: float, end: float) -> float:
    """``start`` → ``end`` over the run (cosine), then held (temperature annealing)."""
    p = min(1.0, step / max(1, total))
    return end + (start - end) * 0.5 * (1 + math.cos(math.pi * p))


def ramp(step: int, start: int = 0, length: int = 0) -> float:
    """0 before ``start``, then linear to 1 over ``length`` steps (a term entering late)."""
    if step < start:
        return 0.0
    if length <= 0:
        return 1.0
    return min(1.0, (step - start + 1) / length)


def loss_weights(step: int, weights: Mapping[str, float], ramps: Mapping[str, Mapping] | None) -> dict[str, float]:
    ramps = ramps or {}
    unknown = set(ramps) - set(weights)
    if unknown:
        raise ValueError(f"schedule.ramps names {sorted(unknown)} which are not in loss.weights {sorted(weights)}")
    return {k: float(w) * (ramp(step, **ramps[k]) if k in ramps else 1.0) for k, w in weights.items()}
