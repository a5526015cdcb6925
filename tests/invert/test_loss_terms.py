"""Loss terms register themselves: a ``loss.<name>`` node with a ``_target_`` is a term (a new one needs
no other file), a weight of 0 makes an info term (logged, no gradient, not in the total), waveform terms
take a target ``[N]``, ``[1, N]`` or ``[B, N]``, and an unknown weight is one line naming the known terms."""

from __future__ import annotations

import csv

import pytest
import torch
from fast_config import compose_fast
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf
from test_run import FAST  # the run-level tests' fast settings (tests/ is on sys.path)

import voxinv.run as R
from voxinv.dsp import as_batch
from voxinv.invert.losses import LossSuite, Package, build_terms
from voxinv.invert.params import CodeSample
from voxinv.paths import CONF_DIR

SR, N, B = 24000, 3 * 1920, 3


class NoiseToSignal(torch.nn.Module):
    """A term defined only here: 10·log10(‖y − x‖² / ‖x‖²) per item (dB)."""

    consumes = "wave"

    def __init__(self, eps: float):
        super().__init__()
        self.eps = eps

    def forward(self, y: torch.Tensor, x: torch.Tensor) -> torch.Tensor:  # [B, N], [N] or [B, N] -> [B]
        x = as_batch(x)
        return 10 * torch.log10(((y - x) ** 2).sum(-1) + self.eps) - 10 * torch.log10((x**2).sum(-1) + self.eps)


@pytest.fixture(autouse=True)
def _env(voxinv_cache, monkeypatch):
    monkeypatch.setenv("VOXINV_CACHE", str(voxinv_cache))


def _loss_cfg(*overrides: str) -> dict:
    with initialize_config_dir(config_dir=CONF_DIR, version_base="1.3"):
        return OmegaConf.to_container(compose("config", overrides=list(overrides)).loss, resolve=True)


def _signals() -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    x = 0.1 * torch.randn(N, generator=g)
    return x, torch.stack([x, x + 0.02 * torch.randn(N, generator=g), 0.5 * x.roll(300)])


def _sample() -> CodeSample:
    return CodeSample(torch.zeros(B, 292, 3), torch.zeros(B, 3, 8192), torch.zeros(B, 3, 36), aux={})


def test_a_term_defined_only_in_the_config_runs_an_inversion(tmp_path):
    """The new term's node and weight are overrides: built, trained on, logged and exported like the others."""
    node = f"+loss.nsr={{_target_:{__name__}.NoiseToSignal,eps:1e-8}}"
    cfg = compose_fast(FAST, "loss=stft", node, "+loss.weights.nsr=0.05", "+loss.weights.l1=0")
    out = tmp_path / "run"
    m = R.run(cfg, out)
    final = m["final"]
    assert {"stft", "nsr", "l1"} <= set(final)  # l1: an info term, computed and exported
    assert final["total"] == pytest.approx(final["stft"] + 0.05 * final["nsr"], rel=1e-5)
    assert m["loss_models"] == ["nsr", "stft"]
    with open(out / "metrics.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    logged = {k for r in rows for k, v in r.items() if v != ""}
    assert {"train/nsr", "train/l1", "train/stft"} <= logged


def test_weight_zero_is_an_info_term():
    """Weight 0: the term is built and returned, without a graph, and never enters the total."""
    cfg = _loss_cfg("loss=stft+mel", "+loss.weights.l1=0")
    x, y0 = _signals()
    suite = LossSuite(cfg["weights"], build_terms(cfg, SR, x, None))
    assert set(suite.terms) == {"stft", "mel", "l1"} and suite.info == {"l1"}
    y = y0.clone().requires_grad_(True)
    out = suite(y, x, _sample())
    assert out["l1"].shape == (B,) and not out["l1"].requires_grad and out["stft"].requires_grad
    assert (out["l1"][1:] > 0).all()
    torch.testing.assert_close(out["total"], out["stft"] + out["mel"], rtol=0, atol=0)
    nan = suite(y, x, _sample(), wave={**suite.wave_terms(y, x), "l1": torch.full((B,), float("nan"))})
    assert torch.isfinite(nan["total"]).all()  # a failing info term does not poison the objective


def test_unlisted_terms_are_not_built_and_unknown_weights_name_the_known_terms():
    cfg = _loss_cfg("loss=stft")
    assert set(build_terms(cfg, SR, None, None)) == {"stft"}
    cfg["weights"]["snr"] = 1.0
    with pytest.raises(ValueError, match=r"\['snr'\].*known terms: l1, stft, mel, mfcc, spk, spk_dvec, prior, commit$"):
        build_terms(cfg, SR, None, None)


def test_run_time_values_a_term_needs():
    cfg = _loss_cfg("loss=stft+mel+prior")
    with pytest.raises(ValueError, match="loss 'prior' needs the model checkpoint"):
        build_terms(cfg, SR, None, None)
    cfg = _loss_cfg("loss=spk")
    with pytest.raises(ValueError, match="loss 'spk' needs the GE2E speaker encoder"):
        build_terms(cfg, SR, None, None)


def test_wave_names_in_config_order_without_codes_terms():
    class Codes(torch.nn.Module):
        consumes = "codes"

        def forward(self, sample):
            return sample.latent.sum((-1, -2))

    cfg = _loss_cfg("loss=stft+mel", "+loss.weights.l1=1")  # weights order stft, mel, l1
    x, y = _signals()
    terms = build_terms(cfg, SR, x, None)
    suite = LossSuite({**cfg["weights"], "lat": 1.0}, {**terms, "lat": Codes()})
    assert suite.wave_names == ["l1", "stft", "mel"]  # the config's node order (the balancer's)
    out = suite(y, x, _sample())
    assert list(out) == ["stft", "mel", "l1", "lat", "total"]  # computed in weights order


@pytest.mark.parametrize("name", ["l1", "stft", "mel", "mfcc"])
def test_waveform_terms_broadcast_the_target(name):
    """``[N]`` and ``[1, N]`` targets are one target for every item; ``[B, N]`` one per item."""
    cfg = _loss_cfg("loss=recipe")
    x, y = _signals()
    term = build_terms({**cfg, "weights": {name: 1.0}}, SR, None, None)[name]
    shared = term(y, x)
    assert torch.equal(term(y, x[None]), shared)
    torch.testing.assert_close(term(y, x.expand(B, N)), shared, rtol=1e-6, atol=1e-7)
    xs = torch.stack([x, y[2], y[1]])  # a different target per item
    paired = term(y, xs)
    for b in range(B):
        torch.testing.assert_close(paired[b : b + 1], term(y[b : b + 1], xs[b]), rtol=1e-5, atol=1e-7)


def test_speaker_term_without_a_target_embeds_each_items_own():
    """The encoder trainer's form (no run target): ``x[b]`` is item b's reference; with a target it is that."""
    from voxinv.invert.losses import SpeakerTerm
    from voxinv.speaker.ge2e import SpeakerEncoder, SpeakerEncoderUnavailable

    try:
        enc = SpeakerEncoder.load("cpu")
    except SpeakerEncoderUnavailable as e:
        pytest.skip(str(e))
    g = torch.Generator().manual_seed(1)
    x = 0.1 * torch.randn(2, SR, generator=g)
    y = x + 0.05 * torch.randn(2, SR, generator=g)
    paired = SpeakerTerm(enc, SR)(y, x)
    for b in range(2):
        one = SpeakerTerm(enc, SR, target=x[b])(y[b : b + 1], x[b])
        torch.testing.assert_close(paired[b : b + 1], one, rtol=1e-5, atol=1e-6)


class NeedsAPackage(NoiseToSignal):
    needs = (Package("voxinv_no_such_package", "pip install voxinv-no-such-package"),)


@pytest.mark.parametrize("weight", ["1.0", "0"])  # an info term is built, so its packages are needed too
def test_the_preflight_reads_each_terms_needs(weight, monkeypatch):
    import importlib.util

    from voxinv.invert.guard import missing_packages
    from voxinv.invert.losses import MissingPackage
    from voxinv.speaker.ge2e import SpeakerEncoderUnavailable

    node = f"+loss.nsr={{_target_:{__name__}.NeedsAPackage,eps:1e-8}}"
    cfg = compose_fast(FAST, "loss=stft", node, f"+loss.weights.nsr={weight}")
    with pytest.raises(MissingPackage, match="voxinv_no_such_package is not installed: pip install voxinv-no-such"):
        missing_packages(cfg)
    missing_packages(compose_fast(FAST, "loss=stft", node))  # not listed in loss.weights: not needed
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda n, *a: None if n == "resemblyzer" else real(n, *a))
    with pytest.raises(SpeakerEncoderUnavailable, match="pip install --no-deps resemblyzer"):
        missing_packages(compose_fast(FAST, "loss=stft", f"+loss.weights.spk={weight}"))
