"""Anytime refinement (voxinv.invert.refine): the worst frames are found and repaired, and the
callback composes, runs after the gradient phase and exports only what improves the objective."""

from __future__ import annotations

import pytest
import torch
from fast_config import compose_fast
from hydra.utils import instantiate

from voxinv.invert.refine import RefineWorst, frame_losses, worst_frames
from voxinv.invert.target import synthetic
from voxinv.run import run

FAST = {
    "model": "tiny",
    "target": "synthetic",
    "device": "cpu",
    "target.n_frames": "4",
    "steps": "3",
    "eval_every": "2",
    "checkpoint_every": "100",
    "eval.which": "[]",
    "init": "random",
    "trainer.enable_progress_bar": "false",
}


pytestmark = pytest.mark.usefixtures("tiny_cache_env")  # VOXINV_CACHE: the session's tiny model


def _refine_cfg():
    return compose_fast(FAST, "callbacks/refine=worst_frames").callbacks.refine


def test_frame_losses_point_at_the_corrupted_frames(codec):
    """True codes with frame 4 of 6 replaced: the frames before it stay exact (the decoder is causal) and
    the two worst are frame 4 and the one after it, into which the error spreads."""
    score = instantiate(_refine_cfg().loss)
    tg = synthetic(codec, 6, seed=4)
    assert frame_losses(codec, score, tg.wav, tg.codes).max() < 1e-3  # the truth decodes to the target
    bad = tg.codes.clone()
    bad[4] = synthetic(codec, 1, seed=99).codes[0]
    loss = frame_losses(codec, score, tg.wav, bad)
    assert loss.shape == (6,) and loss[:4].max() < 1e-3 and loss[4] > 0.1
    assert worst_frames(loss, 2) == [4, 5]  # in time order
    assert worst_frames(loss, 99) == list(range(6))  # k is capped at T


def test_refine_repairs_the_worst_frame(codec):
    """One coordinate-descent visit on the frame the ranking picks (the corrupted last one) brings its
    loss down and leaves the other frames alone."""
    from voxinv.invert.init import coord_descent

    tg = synthetic(codec, 5, seed=2)
    bad = tg.codes.clone()
    bad[4] = synthetic(codec, 1, seed=7).codes[0]
    cb = _refine_cfg()
    score = instantiate(cb.loss)
    before = frame_losses(codec, score, tg.wav, bad)
    visit = worst_frames(before, 1)
    assert visit == [4]
    search = {k: cb[k] for k in ("shortlist", "context", "lookahead", "gn_steps", "acoustic_passes", "batch_size")}
    new, st = coord_descent(codec, tg.wav, bad, loss=score, sweeps=1, progress=False, frames=visit, **search)
    after = frame_losses(codec, score, tg.wav, new)
    assert st["changed"] > 0 and torch.equal(new[:4], bad[:4])  # only frame 4 visited
    assert after[4] < 0.5 * before[4]


def test_refine_callback_in_a_run(tmp_path):
    """``callbacks/refine=worst_frames``: the rounds are evaluations after the last step (marked in the
    history); the exported codes are the best by the objective over all evaluations, refine included."""
    cfg = compose_fast(FAST, "callbacks/refine=worst_frames", "callbacks.refine.frames=2")
    m = run(cfg, tmp_path / "run")
    hist = m["history"]
    rounds = [h for h in hist if "refine_round" in h]
    assert 1 <= len(rounds) <= 2 and rounds[0]["refine_round"] == 1
    assert all(h["step"] == 3 for h in rounds)  # after the gradient phase's last step
    grad = [h for h in hist if "refine_round" not in h]
    best = min(hist, key=lambda h: h["objective"])
    assert m["final"]["total"] == pytest.approx(best["objective"], rel=1e-5)
    assert m["final"]["total"] <= min(h["objective"] for h in grad) + 1e-6  # never worse than the gradient phase
    assert all(h["eval_s"] <= h["wall_s"] for h in hist)


def test_refine_settings_are_checked():
    with pytest.raises(ValueError, match="frames=0"):
        RefineWorst(
            frames=0,
            rounds=1,
            shortlist=8,
            context=4,
            lookahead=1,
            gn_steps=1,
            acoustic_passes=0,
            batch_size=8,
            loss=None,
        )
