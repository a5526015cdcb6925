"""Step → value schedules: LR warmup + cosine/constant, temperature constant/exp/cosine, weight ramps."""

from __future__ import annotations

import math

import pytest

from voxinv.invert.schedule import constant, cosine, exp_decay, loss_weights, ramp, warmup_constant, warmup_cosine


def test_lr_warmup_is_linear_then_cosine_to_min_ratio():
    total, warm, lo = 110, 10, 0.05
    f = warmup_cosine
    assert [f(s, total, warm, lo) for s in range(warm)] == pytest.approx([(s + 1) / warm for s in range(warm)])
    assert f(warm, total, warm, lo) == pytest.approx(1.0)  # cosine starts at the top
    assert f(warm + 50, total, warm, lo) == pytest.approx(lo + (1 - lo) / 2)  # half way
    assert f(total, total, warm, lo) == pytest.approx(lo)
    assert f(10 * total, total, warm, lo) == pytest.approx(lo)  # held at the floor after the run
    s = warm + 17
    assert f(s, total, warm, lo) == pytest.approx(lo + (1 - lo) * 0.5 * (1 + math.cos(math.pi * 17 / 100)))
    vals = [f(s, total, warm, lo) for s in range(warm, total + 1)]
    assert all(a >= b for a, b in zip(vals, vals[1:]))  # monotone decay


def test_lr_without_warmup_and_constant():
    assert warmup_cosine(0, 50, 0, 0.01) == pytest.approx(1.0)
    assert warmup_cosine(50, 50, 0, 0.01) == pytest.approx(0.01)
    assert warmup_cosine(1, 1, 0, 0.2) == pytest.approx(0.2)  # one-step run: no division by zero
    assert [warmup_constant(s, 50, 0) for s in (0, 25, 50)] == [1.0, 1.0, 1.0]
    assert warmup_constant(1, 50, 4) == pytest.approx(0.5)  # warmup applies to constant too


def test_temperature_kinds():
    assert constant(123, 1000, 0.7) == 0.7
    # exp: the public recipe's 1.0 · 0.995^step, floored at 0.5
    assert exp_decay(0, 5000, 1.0, 0.5, 0.995) == 1.0
    assert exp_decay(100, 5000, 1.0, 0.5, 0.995) == pytest.approx(0.995**100)
    floor_step = math.ceil(math.log(0.5) / math.log(0.995))
    assert exp_decay(floor_step, 5000, 1.0, 0.5, 0.995) == 0.5
    assert exp_decay(4999, 5000, 1.0, 0.5, 0.995) == 0.5
    # cosine: start → end over the run, then held
    assert cosine(0, 100, 2.0, 0.3) == pytest.approx(2.0)
    assert cosine(50, 100, 2.0, 0.3) == pytest.approx(1.15)
    assert cosine(100, 100, 2.0, 0.3) == pytest.approx(0.3)
    assert cosine(500, 100, 2.0, 0.3) == pytest.approx(0.3)


def test_ramp():
    assert [ramp(s, start=100, length=50) for s in (0, 99)] == [0.0, 0.0]
    assert ramp(100, 100, 50) == pytest.approx(1 / 50)  # enters at its start step
    assert ramp(124, 100, 50) == pytest.approx(25 / 50)
    assert [ramp(s, 100, 50) for s in (149, 150, 10_000)] == [1.0, 1.0, 1.0]
    assert [ramp(s, 5, 0) for s in (4, 5, 6)] == [0.0, 1.0, 1.0]  # a step function
    assert ramp(0) == 1.0


def test_loss_weights_apply_ramps():
    w = {"stft": 1.0, "mel": 2.0, "spk": 0.5}
    assert loss_weights(0, w, None) == w
    assert loss_weights(0, w, {}) == w
    r = {"spk": {"start": 10, "length": 4}}
    assert loss_weights(3, w, r) == {"stft": 1.0, "mel": 2.0, "spk": 0.0}
    assert loss_weights(11, w, r) == {"stft": 1.0, "mel": 2.0, "spk": pytest.approx(0.25)}
    assert loss_weights(100, w, r)["spk"] == 0.5


def test_loss_weights_unknown_ramp():
    with pytest.raises(ValueError, match=r"schedule.ramps names \['prior', 'spk'\] which are not in loss.weights"):
        loss_weights(0, {"stft": 1.0}, {"spk": {"start": 1}, "prior": {"start": 2}})
