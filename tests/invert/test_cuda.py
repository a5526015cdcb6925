"""The main job on a GPU (skipped without CUDA; ``experiments/gpu_check.sh`` runs them):
the default (deterministic) config runs, bf16 keeps the fp32 quality, the compiled hot path
equals the eager one."""

from __future__ import annotations

import dataclasses

import pytest
import torch
from test_run import cfg_of  # noqa: E402  (tests/ is on sys.path: the directory of the rootdir conftest.py)

import voxinv.run as R

pytestmark = [pytest.mark.cuda, pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")]


@pytest.fixture(autouse=True)
def _env(voxinv_cache, monkeypatch):
    monkeypatch.setenv("VOXINV_CACHE", str(voxinv_cache))


@pytest.mark.parametrize("device", ["cuda", "auto"])
def test_default_deterministic_config_runs_on_cuda(tmp_path, device):
    """trainer.deterministic=true crashed the first backward (reflection_pad1d_backward)."""
    cfg = cfg_of(f"device={device}", "steps=4", "loss=l1+stft+mel")
    assert cfg.trainer.deterministic is True
    m = R.run(cfg, tmp_path / "run")
    assert m["device"].startswith("cuda") and m["steps"] == 4 and m["history"][-1]["step"] == 4


def test_coord_descent_and_speakerless_recipe_on_cuda(tmp_path):
    from test_run import CD_FAST

    m = R.run(cfg_of("device=cuda", "steps=2", *CD_FAST, "loss=l1+stft+mel"), tmp_path / "cd")
    assert m["init"]["kind"] == "coord_descent" and m["steps"] == 2


def test_bf16_keeps_fp32_quality(tmp_path):
    """Same run in bf16 and fp32 (exported objective is the fp32 decode of the codes in both)."""
    common = ["device=cuda", "steps=40", "eval_every=10", "optim.lr=0.05", "target.n_frames=6"]
    f32 = R.run(cfg_of(*common, "model.dtype=float32"), tmp_path / "fp32")
    b16 = R.run(cfg_of(*common, "model.dtype=bfloat16"), tmp_path / "bf16")
    start = f32["history"][0]["objective"]
    assert b16["history"][0]["objective"] == pytest.approx(start, rel=1e-5)  # same start, fp32 evaluation
    gain32, gain16 = start - f32["final"]["total"], start - b16["final"]["total"]
    assert gain32 > 0
    assert gain16 >= 0.8 * gain32, (f32["final"]["total"], b16["final"]["total"])


def test_compiled_hot_path_equals_eager_on_cuda(ckpt, monkeypatch):
    """loop.compile: the compiled decode + waveform losses give the eager values and gradients."""
    from voxinv.invert import module

    monkeypatch.setattr(module._CompiledOnce, "strict", True)  # no silent fallback to eager
    from hydra.utils import instantiate

    from voxinv.invert.clip import Clip
    from voxinv.invert.losses import LossSuite, build_terms
    from voxinv.invert.module import InversionModule
    from voxinv.invert.settings import resolve
    from voxinv.invert.target import synthetic
    from voxinv.voxtral.codec import load_codec

    cfg = cfg_of("device=cuda", "loss=l1+stft+mel", "batch=4")
    dev = torch.device("cuda")
    c = load_codec(ckpt, dtype=torch.float32, device=dev)
    target = synthetic(c, 6, seed=0)
    terms = build_terms(cfg.loss, c.sampling_rate, target.wav.to(dev), None)
    losses = LossSuite(dict(cfg.loss.weights), terms).to(dev)
    table = c.quantizer.semantic_codebook.table.float().cpu()
    g = torch.Generator().manual_seed(0)
    params = instantiate(cfg.codes, _partial_=True)(table, 4, 6, levels=21, n_acoustic=36, generator=g).to(dev)
    out = {}
    for comp in (False, True):
        settings, recipe = resolve(cfg, dev)
        settings = dataclasses.replace(settings, compile=comp, sync_every=10)
        clip = Clip("c", target, losses, params, 0).to(dev)
        m = InversionModule([clip], c, settings, recipe).to(dev)
        lat = params(1.0).latent.detach().requires_grad_(True)
        ((wav, wave),) = m.frozen.wave(lat, [(losses, clip.wav, 0, 4, 0, lat.shape[-1] * c.samples_per_frame)])
        (grad,) = torch.autograd.grad(sum(v.sum() for v in wave.values()), lat)
        out[comp] = (wav.detach(), {k: v.detach() for k, v in wave.items()}, grad)
    torch.testing.assert_close(out[True][0], out[False][0], rtol=1e-4, atol=1e-5)
    for k in out[False][1]:
        torch.testing.assert_close(out[True][1][k], out[False][1][k], rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(out[True][2], out[False][2], rtol=1e-3, atol=1e-6)
