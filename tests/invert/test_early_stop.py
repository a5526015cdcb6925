"""Early stop on the discrete objective (``callbacks.early_stop.patience``): the rule, and a run that uses it."""

from __future__ import annotations

import pytest
from hydra import compose, initialize_config_dir

import voxinv.run as R
from voxinv.invert.callbacks import evals_since_improvement


def test_evals_since_improvement():
    assert evals_since_improvement([3.0], 0.0) == 0
    assert evals_since_improvement([3.0, 2.0, 1.0], 0.0) == 0
    assert evals_since_improvement([3.0, 2.0, 2.5, 2.0], 0.0) == 2  # equal is no improvement
    assert evals_since_improvement([3.0, 2.0, 1.999], 0.01) == 1  # below the relative threshold
    assert evals_since_improvement([3.0, 2.0, 1.9], 0.01) == 0


def _cfg(*extra: str):
    overrides = [
        "model=tiny",
        "target=synthetic",
        "target.n_frames=3",
        "init=random",
        "device=cpu",
        "steps=8",
        "eval_every=1",
        "checkpoint_every=1000",
        "eval.which=[]",
        "trainer.enable_progress_bar=false",
        "optim.lr=0.0",  # nothing moves: the objective never improves after the first evaluation
        *extra,
    ]
    with initialize_config_dir(config_dir=R.CONF_DIR, version_base="1.3"):
        return compose("config", overrides=overrides)


@pytest.mark.usefixtures("tiny_cache_env")
def test_run_stops_when_the_objective_stalls(tmp_path):
    m = R.run(_cfg("callbacks.early_stop.patience=3"), tmp_path / "a")
    # evaluations at steps 0 (start), 1, 2, 3: three without improvement → stop after step 3
    assert m["steps"] == 3 and [h["step"] for h in m["history"]] == [0, 1, 2, 3]  # no extra evaluation at the stop
    assert m["stopped"] == "early_stop"  # recorded, not silent
    off = R.run(_cfg("callbacks.early_stop.patience=0"), tmp_path / "b")
    assert off["steps"] == 8 and off["stopped"] is None
