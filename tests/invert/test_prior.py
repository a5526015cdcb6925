"""Backbone prior: gradients reach both inputs, exact embeddings at discrete points, the semantic
term prefers the model's own codes, deterministic with a seed, cost on the tiny model."""

from __future__ import annotations

import time

import pytest
import torch

from voxinv.invert.prior import BackbonePrior, codes_to_inputs
from voxinv.voxtral.tts import VoxtralTTS


@pytest.fixture(scope="module")
def tts(tiny_dir) -> VoxtralTTS:
    return VoxtralTTS.from_pretrained(tiny_dir, device="cpu", with_codec=False)


@pytest.fixture(scope="module")
def prior(tts) -> BackbonePrior:
    return BackbonePrior(tts, seed=0)


def _random_codes(T: int, g: torch.Generator) -> torch.Tensor:  # raw [T, 37]
    return torch.cat([torch.randint(0, 8192, (T, 1), generator=g), torch.randint(0, 21, (T, 36), generator=g)], 1)


def test_builds_from_model_dir_frozen(tiny_dir):
    p = BackbonePrior(tiny_dir)
    assert not any(q.requires_grad for q in p.parameters())
    assert p.prefix_ids.tolist() == [1, 25]


def test_relaxed_embedding_is_exact_at_levels(prior, tts):
    raw = _random_codes(9, torch.Generator().manual_seed(0))
    raw[0, 1:] = 20  # top level: interpolation must still land on the last row
    raw[1, 1:] = 0
    sem, ac = codes_to_inputs(raw[None])
    e = prior.frame_embeddings(sem, ac)
    torch.testing.assert_close(e, tts.backbone.embed_codes(raw[None] + 2), atol=1e-5, rtol=1e-5)
    # halfway between two levels = mean of the two rows' contributions
    ac_mid = ac.clone()
    ac_mid[0, 2, 5] += 0.05  # half a level step (0.1)
    raw_up = raw.clone()
    raw_up[2, 6] += 1
    want = (tts.backbone.embed_codes(raw[None] + 2) + tts.backbone.embed_codes(raw_up[None] + 2)) / 2
    torch.testing.assert_close(prior.frame_embeddings(sem, ac_mid)[0, 2], want[0, 2], atol=1e-5, rtol=1e-5)


def test_gradients_reach_both_inputs(prior):
    g = torch.Generator().manual_seed(1)
    sem = torch.softmax(torch.randn(2, 6, 8192, generator=g), -1).requires_grad_()
    ac = (torch.rand(2, 6, 36, generator=g) * 2 - 1).requires_grad_()
    out = prior(sem, ac)
    assert set(out) == {"prior_sem", "prior_flow"} and all(v.dim() == 0 for v in out.values())
    (out["prior_sem"] + out["prior_flow"]).backward()
    assert sem.grad is not None and sem.grad.abs().sum() > 0 and torch.isfinite(sem.grad).all()
    assert ac.grad is not None and ac.grad.abs().sum() > 0 and torch.isfinite(ac.grad).all()
    # each term alone also reaches the other input through the backbone
    sem.grad = ac.grad = None
    prior(sem, ac)["prior_flow"].backward()
    assert sem.grad.abs().sum() > 0
    sem.grad = ac.grad = None
    prior(sem, ac)["prior_sem"].backward()
    assert ac.grad.abs().sum() > 0


def test_seeded_calls_are_deterministic(prior, tts):
    raw = _random_codes(5, torch.Generator().manual_seed(2))
    sem, ac = codes_to_inputs(raw[None])
    a, b = prior(sem, ac), prior(sem, ac)
    assert torch.equal(a["prior_flow"], b["prior_flow"]) and torch.equal(a["prior_sem"], b["prior_sem"])
    c = BackbonePrior(tts, seed=None)(sem, ac)
    assert not torch.equal(a["prior_flow"], c["prior_flow"])


def test_semantic_term_prefers_generated_codes(prior, tts):
    T = 24
    gen = tts.generate_codes("The quick brown fox jumps over the lazy dog.", "casual_female", seed=0, max_frames=T)
    assert not gen.ended
    own = prior(*codes_to_inputs(gen.codes[None], model_format=True))
    g = torch.Generator().manual_seed(3)
    for _ in range(3):
        rnd = prior(*codes_to_inputs(_random_codes(T, g)[None]))
        assert own["prior_sem"] < rnd["prior_sem"] - 1.0  # ≈ 5.7 vs ≈ 9.2 nats on the tiny model


def test_prior_cost(prior, capsys):
    """One forward + backward at T = 100 frames (T + 1 backbone positions) on the tiny model."""
    T = 100
    sem = torch.softmax(torch.randn(1, T, 8192), -1).requires_grad_()
    ac = (torch.rand(1, T, 36) * 2 - 1).requires_grad_()
    times = []
    for _ in range(3):
        t0 = time.perf_counter()
        out = prior(sem, ac)
        (out["prior_sem"] + out["prior_flow"]).backward()
        times.append(time.perf_counter() - t0)
    with capsys.disabled():
        print(
            f"\n[prior] tiny model, T={T}: forward+backward {min(times) * 1e3:.1f} ms ({torch.get_num_threads()} threads)"
        )
    assert min(times) < 5.0


def test_bad_shapes(prior):
    with pytest.raises(ValueError, match="sem_onehot must be"):
        prior(torch.zeros(1, 3, 100), torch.zeros(1, 3, 36))
    with pytest.raises(ValueError, match="ac_values must be"):
        prior(torch.zeros(1, 3, 8192), torch.zeros(1, 4, 36))
