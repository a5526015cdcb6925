"""``voxinv.encoder.quantize``: the quantizer's forward is the codec's own encode + decode, its gradients
reach the latent, and it is the same discrete point the inversion's code parameters give."""

from __future__ import annotations

import math

import pytest
import torch

from voxinv.encoder.quantize import nn_d2, perplexity, quantize_ste
from voxinv.invert.params import CodeParams


def _latent(table: torch.Tensor, seed: int = 0) -> torch.Tensor:  # [2, 292, 5] near table entries
    g = torch.Generator().manual_seed(seed)
    latent = torch.randn(2, 292, 5, generator=g)
    latent[:, :256] += table[torch.randint(0, table.shape[0], (2, 5), generator=g)].transpose(1, 2)
    return latent


@pytest.mark.parametrize("mode", ["nearest", "softmax"])
def test_quantizer_forward_is_the_codecs(codec, mode):
    table = codec.quantizer.semantic_codebook.table.float()
    latent = _latent(table)
    lq, codes, aux = quantize_ste(latent, table, 21, semantic=mode, tau=1.0, unit=nn_d2(table))
    assert torch.equal(codes, codec.quantizer.encode(latent))
    assert torch.equal(lq, codec.quantizer.decode(codes))
    assert set(aux) == {"commit", "usage"} and 0 <= float(aux["usage"]) <= 1


@pytest.mark.parametrize("mode", ["nearest", "softmax"])
def test_gradients_reach_the_latent(codec, mode):
    table = codec.quantizer.semantic_codebook.table.float()
    latent = _latent(table, 1).requires_grad_(True)
    lq, _, aux = quantize_ste(latent, table, 21, semantic=mode, tau=1.0, unit=nn_d2(table))
    (lq.pow(2).sum() + aux["commit"] + aux["usage"]).backward()
    sem, ac = latent.grad[:, :256], latent.grad[:, 256:]
    assert torch.isfinite(latent.grad).all() and sem.abs().sum() > 0 and ac.abs().sum() > 0
    with pytest.raises(ValueError, match="quantizer.semantic='argmax'"):
        quantize_ste(latent, table, 21, semantic="argmax", tau=1.0, unit=1.0)


def test_same_point_as_the_inversions_code_parameters(codec):
    """One straight-through code (voxinv.voxtral.ste) for both users: a latent-kind CodeParams holding the
    encoder's latent gives the encoder quantizer's latent exactly, forward."""
    table = codec.quantizer.semantic_codebook.table.float()
    latent = _latent(table, 2)
    lq, codes, _ = quantize_ste(latent, table, 21, semantic="nearest", tau=1.0, unit=nn_d2(table))
    p = CodeParams(
        table, 2, 5, semantic="latent", levels=21, n_acoustic=36, init_logit_scale=1.0, init_acoustic_std=1.0
    )
    with torch.no_grad():
        p.semantic_latent.copy_(latent[:, :256].transpose(1, 2))
        p.acoustic.copy_(latent[:, 256:].transpose(1, 2))
    assert torch.equal(p().latent, lq) and torch.equal(p.codes().transpose(1, 2), codes)


def test_nn_d2_and_perplexity():
    table = torch.tensor([[0.0, 0.0], [1.0, 0.0], [3.0, 0.0], [3.0, 2.0]])  # nearest-other d²: 1, 1, 4, 4
    assert nn_d2(table, chunk=3) == pytest.approx(1.0)  # torch's median of an even count: the lower middle
    assert perplexity(torch.tensor([5.0, 5.0, 5.0, 5.0, 0.0])) == pytest.approx(4.0)
    assert perplexity(torch.tensor([0.0, 7.0])) == pytest.approx(1.0)
    assert perplexity(torch.tensor([1.0, 3.0])) == pytest.approx(
        math.exp(-(0.25 * math.log(0.25) + 0.75 * math.log(0.75)))
    )


def test_usage_tau_sees_an_index_collapse():
    """All frames on one entry: at tau = 1 each frame's soft assignment spreads over the table, so the usage
    term (1 − H(batch mean)/log V) barely rises; a sharper ``usage_tau`` sees the collapse. The codes, the
    forward latent and the other terms do not depend on it; usage_tau=None is tau."""
    g = torch.Generator().manual_seed(0)
    table = torch.randn(512, 16, generator=g)
    unit = nn_d2(table)
    collapsed = torch.zeros(1, 16 + 36, 64)
    collapsed[0, :16] = table[0][:, None] + 0.01 * torch.randn(16, 64, generator=g)
    spread = torch.zeros(1, 16 + 36, 64)
    spread[0, :16] = table[torch.randperm(512, generator=g)[:64]].T
    usage = {}
    for name, latent in (("collapsed", collapsed), ("spread", spread)):
        for ut in (None, 1.0, 0.3):
            lq, codes, aux = quantize_ste(latent, table, 21, semantic="softmax", tau=1.0, unit=unit, usage_tau=ut)
            usage[name, ut] = float(aux["usage"])
            if ut is None:
                ref = (lq, codes, aux["commit"])
            assert torch.equal(lq, ref[0]) and torch.equal(codes, ref[1]) and torch.equal(aux["commit"], ref[2])
        assert usage[name, None] == usage[name, 1.0]
    # measured: tau = 1 scores the collapse 0.062 and the spread batch 0.014 (why the CPU runs collapsed with the
    # term at 0.14); usage_tau = 0.3: 0.665 vs 0.198 (the spread batch's floor is 1 − log 64 / log 512 = 0.33)
    gap = {t: usage["collapsed", t] - usage["spread", t] for t in (1.0, 0.3)}
    assert usage["collapsed", 0.3] > 0.5 and gap[0.3] > 5 * gap[1.0], usage
