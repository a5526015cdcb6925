"""Step → value schedules: learning-rate factor, Gumbel/softmax temperature, loss-weight ramps."""

from __future__ import annotations

import math
from collections.abc import Mapping


def lr_factor(step: int, total: int, warmup: int = 0, min_ratio: float = 0.0, kind: str = "cosine") -> float:
    """Multiplier of the base LR: linear warmup over ``warmup`` steps, then cosine (or constant) decay."""
    if warmup > 0 and step < warmup:
        return (step + 1) / warmup
    if kind == "constant":
        return 1.0
    if kind != "cosine":
        raise ValueError(f"schedule.lr.kind={kind!r}: expected 'cosine' or 'constant'")
    span = max(1, total - warmup)
    p = min(1.0, (step - warmup) / span)
    return min_ratio + (1 - min_ratio) * 0.5 * (1 + math.cos(math.pi * p))


def temperature(
    step: int, total: int, start: float = 1.0, end: float = 1.0, kind: str = "constant", decay: float = 1.0
) -> float:
    """``constant`` (start) · ``exp`` (start·decay^step, floored at end — the public recipe's) ·
    ``cosine`` (start → end over the run)."""
    if kind == "constant":
        return start
    if kind == "exp":
        return max(end, start * decay**step)
    if kind == "cosine":
        p = min(1.0, step / max(1, total))
        return end + (start - end) * 0.5 * (1 + math.cos(math.pi * p))
    raise ValueError(f"schedule.temperature.kind={kind!r}: expected constant, exp or cosine")


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
