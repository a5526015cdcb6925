"""``voxinv.encoder.module``: the loss terms (batched, each crop against its own reconstruction), the
objective the module minimises, and what Lightning owns (the encoder only)."""

from __future__ import annotations

import pytest
import torch
from encoder_common import encoder_cfg
from hydra import compose, initialize_config_dir

from voxinv.encoder.module import EncoderModule, build_loss_terms, paired_terms
from voxinv.encoder.network import build_encoder
from voxinv.paths import CONF_DIR


def test_paired_terms_batched_equal_crop_by_crop():
    """One batched call per term with a paired target ``[B, N]`` = each crop against its own target."""
    from voxinv.invert.losses import build_terms

    with initialize_config_dir(config_dir=CONF_DIR, version_base="1.3"):
        loss = compose("train_encoder", overrides=["model=tiny", "+loss.weights.l1=0.5", "+loss.weights.mfcc=0.1"]).loss
    terms = build_terms({**loss, "weights": dict(loss.weights)}, 24000, None, None)
    assert set(terms) == {"l1", "stft", "mel", "mfcc"}
    g = torch.Generator().manual_seed(0)
    x, y = 0.1 * torch.randn(3, 4800, generator=g), 0.1 * torch.randn(3, 4800, generator=g)
    batched = paired_terms(terms, y, x)
    for name, term in terms.items():
        one_by_one = torch.cat([term(y[b : b + 1], x[b]) for b in range(3)])
        torch.testing.assert_close(batched[name], one_by_one, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize(
    ("override", "says"),
    [("+loss.weights.prior=1.0", "supports the waveform loss terms"), ("loss.balancer.enabled=true", "balancer")],
)
def test_unsupported_loss_settings_are_one_clear_error(audio, override, says):
    with pytest.raises(ValueError, match=says):
        build_loss_terms(encoder_cfg(audio, override).loss, 24000, "cpu")


def test_objective_and_what_lightning_owns(audio, codec):
    cfg = encoder_cfg(audio, "+loss.weights.l1=0.5")
    terms = build_loss_terms(cfg.loss, codec.sampling_rate, "cpu")
    module = EncoderModule(cfg, codec, terms, build_encoder(codec.args, None, 0))
    # the frozen decoder and the loss terms sit outside Lightning: parameters and checkpoint = the encoder's
    assert {n.split(".", 1)[0] for n, _ in module.named_parameters()} == {"encoder"}
    assert {k.split(".", 1)[0] for k in module.state_dict()} == {"encoder", "usage_ema"}
    x = 0.05 * torch.randn(2, 4 * 1920, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        total, logged, codes, y = module.losses(x)
        lq, codes2, aux = module(x)
        wave = {k: v.mean() for k, v in paired_terms(terms, codec.decode_latent(lq)[:, 0].float(), x).items()}
    q = cfg.quantizer
    expected = sum(module.weights[k] * wave[k] for k in wave) + q.commit * aux["commit"] + q.usage * aux["usage"]
    torch.testing.assert_close(total, expected)
    assert set(logged) == {"stft", "mel", "l1", "commit", "usage"} and torch.equal(codes, codes2)
    assert y.shape == x.shape and codes.shape == (2, 37, 4)


def test_info_term_is_logged_not_trained_on(audio, codec):
    """``loss.weights.<term>=0`` in the encoder trainer: computed and logged, outside the objective."""
    cfg = encoder_cfg(audio, "+loss.weights.l1=0")
    terms = build_loss_terms(cfg.loss, codec.sampling_rate, "cpu")
    module = EncoderModule(cfg, codec, terms, build_encoder(codec.args, None, 0))
    x = 0.05 * torch.randn(2, 4 * 1920, generator=torch.Generator().manual_seed(0))
    total, logged, _, _ = module.losses(x)
    assert "l1" in logged and not logged["l1"].requires_grad and float(logged["l1"]) > 0
    q = cfg.quantizer
    want = logged["stft"] + logged["mel"] + q.commit * logged["commit"] + q.usage * logged["usage"]
    torch.testing.assert_close(total, want)
