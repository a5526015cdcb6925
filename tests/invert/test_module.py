"""The step loop's device settings (resolved without a GPU), the last step is always evaluated, the
deferred (device-side) NaN watch, and the optional compiled hot path."""

from __future__ import annotations

import csv
import os

import pytest
import pytorch_lightning as pl
import torch
from test_run import _run, cfg_of  # noqa: E402  (tests/ is on sys.path: the directory of the rootdir conftest.py)

import voxinv.run as R
from voxinv.invert.settings import loop_settings, trainer_settings

CUDA, CPU = torch.device("cuda"), torch.device("cpu")


@pytest.fixture(autouse=True)
def _env(voxinv_cache, monkeypatch):
    monkeypatch.setenv("VOXINV_CACHE", str(voxinv_cache))


@pytest.fixture
def restore_torch_flags(monkeypatch):
    """Lightning sets process-wide torch flags and CUBLAS_WORKSPACE_CONFIG: put them back."""
    det, warn = torch.are_deterministic_algorithms_enabled(), torch.is_deterministic_algorithms_warn_only_enabled()
    bench = torch.backends.cudnn.benchmark
    monkeypatch.delenv("CUBLAS_WORKSPACE_CONFIG", raising=False)
    yield
    torch.use_deterministic_algorithms(det, warn_only=warn)
    torch.backends.cudnn.benchmark = bench


def test_default_trainer_is_exactly_deterministic_on_cpu(restore_torch_flags):
    cfg = cfg_of()
    kw = trainer_settings(cfg.trainer, CPU)
    assert kw["deterministic"] is True
    pl.Trainer(accelerator="cpu", devices=1, logger=False, **kw)
    assert torch.are_deterministic_algorithms_enabled() and not torch.is_deterministic_algorithms_warn_only_enabled()


def test_default_trainer_on_cuda_warns_instead_of_crashing(restore_torch_flags):
    """reflection_pad1d_backward has no deterministic CUDA kernel: `deterministic: true` must become
    warn_only on CUDA (checked without a GPU: the resolved kwargs applied by Lightning on CPU)."""
    cfg = cfg_of("device=cuda")
    kw = trainer_settings(cfg.trainer, CUDA)
    assert kw["deterministic"] == "warn"
    assert {k: v for k, v in kw.items() if k != "deterministic"} == {
        k: v
        for k, v in cfg.trainer.items()
        if k not in ("deterministic", "devices", "_target_")  # devices: manifest processes
    }
    pl.Trainer(accelerator="cpu", devices=1, logger=False, **kw)
    assert torch.are_deterministic_algorithms_enabled() and torch.is_deterministic_algorithms_warn_only_enabled()
    assert os.environ["CUBLAS_WORKSPACE_CONFIG"] == ":4096:8"  # deterministic cuBLAS


@pytest.mark.parametrize("value", [False, "warn"])
def test_explicit_deterministic_setting_is_kept(value):
    cfg = cfg_of(f"trainer.deterministic={value}")
    assert trainer_settings(cfg.trainer, CUDA)["deterministic"] == value


def test_loop_settings_per_device():
    cfg = cfg_of("trainer.log_every_n_steps=25")
    assert loop_settings(cfg.loop, cfg.trainer, CPU) == {"compile": False, "compile_mode": "default", "sync_every": 1}
    assert loop_settings(cfg.loop, cfg.trainer, CUDA) == {"compile": True, "compile_mode": "default", "sync_every": 25}
    cfg = cfg_of("loop.compile=false", "loop.sync_every=5")
    assert loop_settings(cfg.loop, cfg.trainer, CUDA) == {"compile": False, "compile_mode": "default", "sync_every": 5}
    for bad in ("loop.compile=maybe", "loop.sync_every=0"):
        with pytest.raises(ValueError, match="loop."):
            loop_settings(cfg_of(bad).loop, cfg.trainer, CPU)


def test_eval_every_zero_evaluates_the_last_step(tmp_path):
    """eval_every=0 is "only at the end": the final codes are a candidate, not only the initial ones."""
    _, m, _ = _run(tmp_path, "e0", "steps=4", "eval_every=0", "optim.lr=0.05")
    assert [h["step"] for h in m["history"]] == [0, 4]
    best = min(m["history"], key=lambda h: h["objective"])
    assert m["best_step"] == best["step"]
    assert m["final"]["total"] == pytest.approx(best["objective"], rel=1e-5)


def test_deferred_nan_watch_reports_the_first_bad_step(tmp_path, monkeypatch):
    """sync_every=3 (the CUDA behaviour): the NaN at step 2 is seen at the sync after it, but the
    message names step 2 and the exported codes are those of step 1, the last finite loss."""
    from voxinv.invert import clip, losses, module

    j, calls = 2, {"n": 0}
    orig = losses.WaveformL1.forward

    def nan_from_step_j(self, y, x):
        out = orig(self, y, x)
        if torch.is_grad_enabled():
            calls["n"] += 1
            if calls["n"] >= j + 1:
                return out * float("nan")
        return out

    seen, evaluated = {}, []
    orig_watch, orig_eval = clip.Clip.watch, module.InversionModule.evaluate

    def watch(self, step, loss, terms):
        seen[step] = self.params.codes().cpu()
        orig_watch(self, step, loss, terms)

    def evaluate(self, c, step, codes=None, log=True):
        if codes is not None:
            evaluated.append(codes)
        return orig_eval(self, c, step, codes, log)

    monkeypatch.setattr(losses.WaveformL1, "forward", nan_from_step_j)
    monkeypatch.setattr(clip.Clip, "watch", watch)
    monkeypatch.setattr(module.InversionModule, "evaluate", evaluate)
    _, m, _ = _run(tmp_path, "nan3", "loss=l1+stft", "steps=8", "eval_every=0", "loop.sync_every=3")
    assert f"non-finite loss at step {j} (terms: l1, total)" in m["stopped"]
    assert m["steps"] == 2  # raised at the first sync after the NaN (step index 2, before its update)
    assert len(evaluated) == 1 and torch.equal(evaluated[0], seen[j - 1])  # the last finite step's codes
    assert not torch.equal(seen[j - 1], seen[0])  # (the test can tell them apart)


def test_logging_every_sync_reaches_the_csv(tmp_path):
    out, m, _ = _run(tmp_path, "log", "steps=6", "loop.sync_every=2", "trainer.log_every_n_steps=2")
    rows = list(csv.DictReader(open(out / "metrics.csv")))
    logged = sorted({int(r["step"]) for r in rows if r.get("loss")})
    assert logged, rows
    assert all(s % 2 == 1 for s in logged)  # steps 1, 3, 5 (0-based global_step at the update)


@pytest.mark.slow
def test_compiled_hot_path_equals_eager(tmp_path, monkeypatch):
    """loop.compile=true (inductor on CPU: needs a C compiler; minutes) gives the eager run's losses."""
    from voxinv.invert import module

    monkeypatch.setattr(module._CompiledOnce, "strict", True)  # no silent fallback to eager
    a = R.run(cfg_of("steps=3", "loop.compile=false", "eval_every=1"), tmp_path / "eager")
    b = R.run(cfg_of("steps=3", "loop.compile=true", "eval_every=1"), tmp_path / "compiled")
    for ha, hb in zip(a["history"], b["history"], strict=True):
        assert hb["objective"] == pytest.approx(ha["objective"], rel=1e-4, abs=1e-5)


def test_failed_compile_warns_once_and_runs_eager(caplog):
    from voxinv.invert.module import _CompiledOnce

    calls = []

    def fn(x):
        calls.append(x)
        return x + 1

    def broken(x):
        raise RuntimeError("no C compiler\nmore")

    c = _CompiledOnce(fn, "default")
    c.compiled = broken  # what a failing first compile looks like to the caller
    with caplog.at_level("WARNING", logger="voxinv"):
        assert c(1) == 2 and c(2) == 3
    assert calls == [1, 2]
    assert [r.getMessage() for r in caplog.records].count(
        "loop.compile: torch.compile failed (RuntimeError: no C compiler); running eager (set loop.compile=false to skip it)"
    ) == 1
    c = _CompiledOnce(fn, "default")
    c.compiled, c.strict = broken, True
    with pytest.raises(RuntimeError, match="no C compiler"):
        c(1)
