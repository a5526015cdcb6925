"""``voxinv.voxtral.ste``: the straight-through estimators shared by the inversion's code parameters and
the encoder's quantizer — forward values exactly the discrete ones, gradients of the surrogate."""

from __future__ import annotations

import torch

from voxinv.voxtral.codec import fsq_codes, fsq_position, fsq_values
from voxinv.voxtral.ste import fsq_ste, onehot_ste, straight_through


def test_straight_through_forward_is_the_value_backward_the_surrogate():
    g = torch.Generator().manual_seed(0)
    value = torch.randn(4, 3, generator=g) * 1e3  # large values: value + (z − z) must add an exact 0
    z = torch.randn(4, 3, generator=g, requires_grad=True)
    out = straight_through(value, z)
    assert torch.equal(out, value)
    w = torch.randn(4, 3, generator=g)
    (out * w).sum().backward()
    assert torch.equal(z.grad, w)


def test_onehot_forward_is_one_hot_backward_the_probabilities():
    g = torch.Generator().manual_seed(1)
    logits = torch.randn(2, 5, 7, generator=g, requires_grad=True)
    probs = logits.softmax(-1)
    idx = probs.argmax(-1)
    out = onehot_ste(idx, probs)
    assert out.dtype == probs.dtype and torch.equal(out, torch.nn.functional.one_hot(idx, 7).float())
    w = torch.randn(2, 5, 7, generator=g)
    (out * w).sum().backward()
    ref = logits.detach().clone().requires_grad_(True)
    (ref.softmax(-1) * w).sum().backward()
    torch.testing.assert_close(logits.grad, ref.grad)


def test_fsq_forward_is_the_codecs_levels_backward_identity_through_rounding():
    g = torch.Generator().manual_seed(2)
    pre = (2 * torch.randn(3, 36, 5, generator=g)).requires_grad_(True)
    q, values = fsq_ste(pre, 21)
    codes = fsq_codes(torch.tanh(pre.detach()), 21)
    assert torch.equal(q.detach().round().long(), codes)
    assert torch.equal(values.detach(), fsq_values(q.detach(), 21))
    torch.testing.assert_close(values.detach(), fsq_values(codes.float(), 21), rtol=0, atol=1e-6)
    values.sum().backward()
    ref = pre.detach().clone().requires_grad_(True)
    fsq_values(fsq_position(torch.tanh(ref), 21), 21).sum().backward()  # the unrounded map
    torch.testing.assert_close(pre.grad, ref.grad)
