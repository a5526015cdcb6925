"""CodeParams: the forward latent is exactly the latent of discrete codes, set_codes/codes round
trip, straight-through gradients reach every parameter, Gumbel noise comes from its own generator."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from hydra.utils import instantiate
from omegaconf import OmegaConf

from voxinv.invert.params import SEMANTIC_KINDS, CodeParams
from voxinv.paths import CONF_DIR
from voxinv.voxtral.checkpoint import Checkpoint
from voxinv.voxtral.codec import load_codec

B, T = 2, 5


@pytest.fixture(scope="module")
def codec(tiny_dir):
    return load_codec(Checkpoint(tiny_dir), dtype=torch.float32)


@pytest.fixture(scope="module")
def table(codec) -> torch.Tensor:  # [8192, 256]
    return codec.quantizer.semantic_codebook.table.float()


def _params(table, kind: str, seed: int = 0, **kw) -> CodeParams:
    """``conf/codes/<kind>.yaml`` (``kw`` overrides its settings) for the tiny codec's 21 levels × 36."""
    make = instantiate(OmegaConf.load(Path(CONF_DIR) / "codes" / f"{kind}.yaml"), _partial_=True, **kw)
    return make(table, B, T, levels=21, n_acoustic=36, generator=torch.Generator().manual_seed(seed))


def _random_codes(g: torch.Generator) -> torch.Tensor:  # raw [B, T, 37], extremes included
    c = torch.cat([torch.randint(0, 8192, (B, T, 1), generator=g), torch.randint(0, 21, (B, T, 36), generator=g)], -1)
    c[0, 0, 1:], c[0, 1, 1:], c[1, 0, 0], c[1, 1, 0] = 0, 20, 0, 8191
    return c


def _discrete_latent(codec, codes: torch.Tensor) -> torch.Tensor:  # [B, T, 37] -> [B, 292, T]
    return codec.quantizer.decode(codes.transpose(1, 2), torch.float32)


@pytest.mark.parametrize("kind", ["softmax_ste", "latent"])
@pytest.mark.parametrize("tau", [1.0, 0.3])
def test_forward_latent_is_exactly_the_codes_latent(codec, table, kind, tau):
    p = _params(table, kind)
    s = p(tau)
    assert s.latent.shape == (B, 292, T)
    assert torch.equal(s.latent, _discrete_latent(codec, p.codes()))
    # the prior's inputs are exactly the same discrete point
    assert torch.equal(s.sem_onehot, torch.nn.functional.one_hot(p.codes()[..., 0], 8192).float())
    assert torch.equal(s.ac_values, codec.quantizer.fsq_values(p.codes()[..., 1:]).float())


def test_gumbel_latent_is_a_valid_code(codec, table):
    p = _params(table, "gumbel")
    s = p(1.0, noise=torch.Generator().manual_seed(3))
    sem = s.sem_onehot.argmax(-1)  # the noisy sample, [B, T]
    assert torch.equal(s.sem_onehot, torch.nn.functional.one_hot(sem, 8192).float())
    sampled = torch.cat([sem[..., None], p.codes()[..., 1:]], -1)
    assert torch.equal(s.latent, _discrete_latent(codec, sampled))
    assert (sem != p.codes()[..., 0]).any()  # the noise does change the draw (logits ~ N(0, 1))


def test_gumbel_noise_comes_from_the_given_generator(table):
    p = _params(table, "gumbel")
    a = p(1.0, noise=torch.Generator().manual_seed(7)).latent
    b = p(1.0, noise=torch.Generator().manual_seed(7)).latent
    c = p(1.0, noise=torch.Generator().manual_seed(8)).latent
    assert torch.equal(a, b) and not torch.equal(a, c)
    g = torch.Generator().manual_seed(7)
    p(1.0, noise=g)
    state = g.get_state()
    d1 = p(1.0, noise=g).latent
    g.set_state(state)  # what a resumed run does
    assert torch.equal(p(1.0, noise=g).latent, d1)


@pytest.mark.parametrize("kind", SEMANTIC_KINDS)
def test_set_codes_round_trip(table, kind):
    p = _params(table, kind)
    codes = _random_codes(torch.Generator().manual_seed(1))
    p.set_codes(codes, logit_margin=5.0)
    got = p.codes()
    assert got.dtype == torch.int64 and got.shape == (B, T, 37)
    assert torch.equal(got, codes)
    if kind != "latent":  # the chosen entry leads by the margin; the others keep bounded noise
        lg = p.semantic_logits
        assert torch.all(lg.gather(-1, codes[..., :1]) == 5.0)
        assert lg.max(-1).values.eq(5.0).all() and lg.min() >= -1.0


@pytest.mark.parametrize("kind", SEMANTIC_KINDS)
def test_codes_are_valid_after_random_init(table, kind):
    c = _params(table, kind, init_acoustic_std=3.0).codes()  # saturating pre-activations
    assert c.shape == (B, T, 37)
    assert c[..., 0].min() >= 0 and c[..., 0].max() < 8192
    assert c[..., 1:].min() >= 0 and c[..., 1:].max() <= 20
    assert _params(table, kind).shape == (B, T)


def test_straight_through_gradients_softmax(table):
    tau = 0.5
    p = _params(table, "softmax_ste")
    w = torch.randn(B, 292, T, generator=torch.Generator().manual_seed(2))
    (p(tau).latent * w).sum().backward()
    # semantic: the gradient of the relaxed embedding softmax(logits/τ) @ table
    logits = p.semantic_logits.detach().clone().requires_grad_(True)
    ((logits / tau).softmax(-1) @ table * w[:, :256].transpose(1, 2)).sum().backward()
    torch.testing.assert_close(p.semantic_logits.grad, logits.grad, rtol=1e-5, atol=1e-9)
    # acoustic: identity through the rounding, so d/da of the tanh map: w · (1 − tanh²(a))
    a = p.acoustic.detach()
    torch.testing.assert_close(p.acoustic.grad, w[:, 256:].transpose(1, 2) * (1 - torch.tanh(a) ** 2))


def test_straight_through_gradients_latent(table):
    p = _params(table, "latent")
    w = torch.randn(B, 292, T, generator=torch.Generator().manual_seed(2))
    s = p(1.0)
    (s.latent * w).sum().backward()
    assert torch.equal(p.semantic_latent.grad, w[:, :256].transpose(1, 2))  # identity to the vector
    a = p.acoustic.detach()
    torch.testing.assert_close(p.acoustic.grad, w[:, 256:].transpose(1, 2) * (1 - torch.tanh(a) ** 2))
    # commitment term [B] pulls the vector to its entry; the one-hot carries gradient too
    assert s.aux["commit"].shape == (B,) and (s.aux["commit"] > 0).all()
    p.zero_grad()
    s = p(1.0)
    (s.aux["commit"].sum() + (s.sem_onehot * torch.randn_like(s.sem_onehot)).sum()).backward()
    assert p.semantic_latent.grad.abs().sum() > 0


def test_straight_through_gradients_gumbel(table):
    p = _params(table, "gumbel")
    s = p(1.0, noise=torch.Generator().manual_seed(0))
    (s.latent.pow(2).sum() + s.sem_onehot.sum(-1).pow(2).sum()).backward()
    for q in (p.semantic_logits, p.acoustic):
        assert q.grad is not None and torch.isfinite(q.grad).all() and q.grad.abs().sum() > 0


def test_set_codes_latent_is_a_stationary_point(codec, table):
    """After set_codes the latent parameterisation sits exactly on its entries (commit = 0)."""
    p = _params(table, "latent")
    p.set_codes(_random_codes(torch.Generator().manual_seed(4)), logit_margin=5.0)
    assert torch.equal(p(1.0).aux["commit"], torch.zeros(B))


def test_unknown_semantic_kind(table):
    with pytest.raises(ValueError, match="codes.semantic='onehot'"):
        CodeParams(table, 1, 2, semantic="onehot", levels=21, n_acoustic=36, init_logit_scale=1, init_acoustic_std=0.1)
