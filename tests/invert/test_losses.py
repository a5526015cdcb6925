"""Loss terms are per restart ([B]), zero at the target, combined by the weight dict; the
balancer gives each waveform term its weight's share of the gradient whatever its raw scale."""

from __future__ import annotations

import pytest
import torch
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf

from voxinv.invert.losses import Balancer, LossSuite, build_terms
from voxinv.invert.params import CodeSample
from voxinv.paths import CONF_DIR

SR, N, B = 24000, 3 * 1920, 3


def _loss_cfg(name: str) -> dict:
    with initialize_config_dir(config_dir=CONF_DIR, version_base="1.3"):
        return OmegaConf.to_container(compose("config", overrides=[f"loss={name}"]).loss, resolve=True)


def _signals(seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """Target ``[N]`` (a decaying chirp + noise) and ``B`` candidates ``[B, N]``; item 0 is the target."""
    g = torch.Generator().manual_seed(seed)
    t = torch.arange(N) / SR
    x = 0.1 * torch.sin(2 * torch.pi * (150 + 800 * t) * t) * torch.exp(-3 * t) + 0.005 * torch.randn(N, generator=g)
    y = torch.stack([x, x + 0.02 * torch.randn(N, generator=g), 0.5 * x.roll(300)])
    return x, y


def _sample(b: int = B, aux: dict | None = None) -> CodeSample:
    return CodeSample(
        latent=torch.zeros(b, 292, 3),
        sem_onehot=torch.zeros(b, 3, 8192),
        ac_values=torch.zeros(b, 3, 36),
        aux=aux or {},
    )


@pytest.fixture(scope="module")
def suite() -> LossSuite:
    """Every waveform term but the speaker one (that needs resemblyzer: tested in test_run)."""
    cfg = _loss_cfg("recipe")
    cfg["weights"] = {"l1": 0.5, "stft": 1.0, "mel": 2.0, "mfcc": 0.1}
    x, _ = _signals()
    return LossSuite(cfg["weights"], build_terms(cfg, SR, x, None))


def test_terms_are_per_item_and_total_is_weighted(suite):
    x, y = _signals()
    out = suite(y, x, _sample())
    assert set(out) == {"l1", "stft", "mel", "mfcc", "total"}
    for k, v in out.items():
        assert v.shape == (B,) and torch.isfinite(v).all(), k
    want = 0.5 * out["l1"] + 1.0 * out["stft"] + 2.0 * out["mel"] + 0.1 * out["mfcc"]
    torch.testing.assert_close(out["total"], want)
    for k in ("l1", "stft", "mel", "mfcc"):  # zero at the target, positive elsewhere
        assert abs(float(out[k][0])) < 1e-6 and (out[k][1:] > 0).all(), k


def test_items_are_independent(suite):
    """A restart's loss does not depend on the others in the batch (restarts are ranked by it)."""
    x, y = _signals()
    full = suite(y, x, _sample())
    for b in range(B):
        one = suite(y[b : b + 1], x, _sample(1))
        for k in full:
            torch.testing.assert_close(one[k][0], full[k][b], rtol=1e-5, atol=1e-7)


def test_weight_override_and_aux_terms(suite):
    x, y = _signals()
    commit = torch.tensor([1.0, 2.0, 3.0])
    out = suite(y, x, _sample(aux={"commit": commit}), weights={"mel": 3.0, "commit": 0.5})
    torch.testing.assert_close(out["total"], 3.0 * out["mel"] + 0.5 * commit)  # unlisted terms weigh 0
    assert torch.equal(out["commit"], commit)


def test_empty_weights_total_is_zero():
    x, y = _signals()
    out = LossSuite({}, {})(y, x, _sample())
    assert torch.equal(out["total"], torch.zeros(B))


def test_prior_parts_are_summed_and_broadcast():
    class FakePrior(torch.nn.Module):
        consumes = "codes"

        def forward(self, sample):  # one part per item, one scalar
            return {"prior_sem": sample.sem_onehot.sum((-1, -2)), "prior_flow": sample.ac_values.sum() * 0 + 2.0}

    x, y = _signals()
    s = _sample()
    s.sem_onehot[:, :, 0] = torch.tensor([1.0, 2.0, 3.0])[:, None]
    out = LossSuite({"prior": 0.5}, {"prior": FakePrior()})(y, x, s)
    assert torch.equal(out["prior_sem"], torch.tensor([3.0, 6.0, 9.0]))
    assert torch.equal(out["prior_flow"], torch.full((B,), 2.0))
    assert torch.equal(out["prior"], torch.tensor([5.0, 8.0, 11.0]))
    assert torch.equal(out["total"], 0.5 * out["prior"])


def test_unknown_term():
    with pytest.raises(ValueError, match=r"unknown loss terms \['snr'\]"):
        LossSuite({"snr": 1.0}, {})


def test_build_terms_builds_listed_terms_and_needs_speaker_encoder():
    cfg = _loss_cfg("stft+mel")
    x, _ = _signals()
    cfg["weights"] = {"stft": 1.0, "mel": 0.0, "commit": 1.0}  # mel: an info term (weight 0), built too
    assert list(build_terms(cfg, SR, x, None)) == ["stft", "mel", "commit"]
    cfg["weights"] = {"spk": 0.5}
    with pytest.raises(ValueError, match="resemblyzer"):
        build_terms(cfg, SR, x, None)


def test_stft_settings_reach_auraloss():
    cfg = _loss_cfg("recipe")
    cfg["weights"] = {"stft": 1.0}
    x, _ = _signals()
    stft = build_terms(cfg, SR, x, None)["stft"].loss
    assert [m.fft_size for m in stft.stft_losses] == cfg["stft"]["fft_sizes"]
    assert [m.hop_size for m in stft.stft_losses] == [int(n * 0.25) for n in cfg["stft"]["fft_sizes"]]


def _grads(y: torch.Tensor, terms: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    return {k: torch.autograd.grad(v.sum(), y, retain_graph=True)[0] for k, v in terms.items()}


def test_balancer_gives_each_term_its_weight_share():
    x, y0 = _signals()
    terms_m = build_terms(_loss_cfg("l1+stft+mel"), SR, x, None)
    weights = {"l1": 1.0, "mel": 3.0}
    y = y0[1:2].clone().requires_grad_(True)
    terms = {k: terms_m[k](y, x) for k in weights}
    g = _grads(y, terms)
    n = {k: float(v.norm()) for k, v in g.items()}
    assert n["mel"] / n["l1"] > 3 or n["l1"] / n["mel"] > 3  # raw scales differ a lot
    bal = Balancer(total_norm=2.0, ema_decay=0.9)
    seen = bal.backward(y, terms, weights)
    assert seen == pytest.approx(n)
    # first step: bias-corrected EMA = the norm itself, so each term contributes total · w / Σw
    want = g["l1"] * (2.0 * 0.25 / n["l1"]) + g["mel"] * (2.0 * 0.75 / n["mel"])
    torch.testing.assert_close(y.grad, want, rtol=1e-5, atol=1e-9)
    # the shares: the projection of the update on each term's direction is 1:3, unlike plain backward
    share = {k: float((y.grad * g[k]).sum() / n[k]) for k in g}
    plain = sum(weights[k] * g[k] for k in g)
    plain_share = {k: float((plain * g[k]).sum() / n[k]) for k in g}
    cross = float((g["l1"] * g["mel"]).sum() / n["l1"] / n["mel"])
    assert share["l1"] == pytest.approx(0.5 + 1.5 * cross, rel=1e-4)
    assert share["mel"] == pytest.approx(1.5 + 0.5 * cross, rel=1e-4)
    assert abs(plain_share["mel"] / plain_share["l1"] - share["mel"] / share["l1"]) > 0.5


def test_balancer_ema_and_state():
    x, y0 = _signals()
    terms_m = build_terms(_loss_cfg("l1"), SR, x, None)
    bal = Balancer(total_norm=1.0, ema_decay=0.5)
    norms = []
    for scale in (1.0, 3.0):
        y = (scale * y0[1:2]).clone().requires_grad_(True)
        terms = {"l1": terms_m["l1"](y, x), "stft": y.sum()[None]}  # a term weighted 0 is not balanced
        norms.append(bal.backward(y, terms, {"l1": 1.0, "stft": 0.0})["l1"])
        assert set(bal.norms) == {"l1"}
    avg = (0.5 * norms[0] + norms[1]) / 1.5  # bias-corrected EMA after two steps
    g = _grads(y, {"l1": terms_m["l1"](y, x)})["l1"]
    torch.testing.assert_close(y.grad, g / avg, rtol=1e-5, atol=1e-9)
    other = Balancer(total_norm=1.0, ema_decay=0.5)
    other.load_state_dict(bal.state_dict())
    assert other.norms == bal.norms and other.count == 2


def test_the_config_declares_every_term():
    """The terms are the ``loss.<name>`` nodes with a ``_target_``; each class declares what it consumes."""
    from hydra.utils import get_object

    from voxinv.invert.losses import consumes, term_nodes

    nodes = term_nodes(_loss_cfg("stft+mel"))
    kinds = {k: consumes(get_object(v["_target_"])) for k, v in nodes.items()}
    assert kinds == {
        **dict.fromkeys(("l1", "stft", "mel", "mfcc", "spk", "spk_dvec"), "wave"),
        "prior": "codes",
        "commit": "aux",
    }


@pytest.mark.parametrize("w_lin_mag", [0.0, 0.5])
def test_batched_stft_equals_auraloss_per_item(w_lin_mag):
    """One batched STFT per resolution gives, per restart, what auraloss gives for that restart alone."""
    cfg = _loss_cfg("recipe")
    cfg["weights"], cfg["stft"]["w_lin_mag"] = {"stft": 1.0}, w_lin_mag
    x, y = _signals()
    y = y.clone().requires_grad_(True)
    stft = build_terms(cfg, SR, x, None)["stft"]
    got = stft(y, x)  # [B]
    want = torch.stack([stft.loss(y[b : b + 1, None], x[None, None]) for b in range(B)])
    torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-6)
    g_got, g_want = (torch.autograd.grad(v.sum(), y, retain_graph=True)[0] for v in (got, want))
    torch.testing.assert_close(g_got, g_want, rtol=1e-4, atol=1e-7)
    assert float(got[0]) == pytest.approx(0.0, abs=1e-5)


def test_batched_mel_and_mfcc_equal_item_by_item(suite):
    x, y = _signals()
    for name in ("mel", "mfcc"):
        term = suite.terms[name]
        want = torch.cat([term(y[b : b + 1], x) for b in range(B)])
        torch.testing.assert_close(term(y, x), want, rtol=1e-5, atol=1e-6)
