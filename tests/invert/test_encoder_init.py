"""``init=encoder``: the start codes are exactly the encoder's (own encoder or ``init.path``), through
the real ``voxinv.run`` pipeline; a model without an encoder is one clear error."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from fast_config import compose_fast
from omegaconf import DictConfig
from safetensors.torch import save_file

import voxinv.run as R
from voxinv.invert.encoder_init import encoder_codec, encoder_codes
from voxinv.invert.losses import LossSuite, build_terms, discrete_losses
from voxinv.invert.target import build_target
from voxinv.voxtral.checkpoint import Checkpoint, CheckpointError
from voxinv.voxtral.codec import ENCODER_PREFIXES, load_codec
from voxinv.voxtral.codes import load_codes
from voxinv.voxtral.models import model_path

FAST = {
    "model": "tiny",
    "target": "synthetic",
    "device": "cpu",
    "target.n_frames": "3",
    "steps": "2",
    "eval_every": "1",
    "checkpoint_every": "2",
    "eval.which": "[]",
    "init": "encoder",
    "trainer.enable_progress_bar": "false",
}


pytestmark = pytest.mark.usefixtures("tiny_cache_env")  # VOXINV_CACHE: the session's tiny model


def cfg_of(*overrides: str) -> DictConfig:
    return compose_fast(FAST, *overrides)


def start_objective(cfg: DictConfig, codec, wav: torch.Tensor, codes: torch.Tensor) -> float:
    losses = LossSuite(dict(cfg.loss.weights), build_terms(cfg.loss, codec.sampling_rate, wav, None))
    terms, _ = discrete_losses(codec, losses, wav, codes[None], cfg.loss.weights)
    return float(terms["total"][0])


def check_starts_at(out: Path, m: dict, cfg: DictConfig, codec, expected: torch.Tensor) -> None:
    """The step-0 evaluation (the parameters right after the init) scores exactly ``expected``."""
    wav = build_target(cfg.target, codec, None).wav
    assert m["init"]["kind"] == "encoder" and m["history"][0]["step"] == 0
    assert m["history"][0]["objective"] == pytest.approx(start_objective(cfg, codec, wav, expected), abs=1e-6)
    assert load_codes(out / "codes.safetensors").shape == expected.shape


def test_own_encoder_codes_are_the_start(tiny_dir_encoder, tmp_path):
    cfg = cfg_of(f"model.path={tiny_dir_encoder}")
    ckpt = Checkpoint(tiny_dir_encoder)
    codec = load_codec(ckpt)
    wav = build_target(cfg.target, codec, ckpt).wav
    expected = encoder_codes(codec, wav)
    assert torch.equal(expected, codec.encode(wav[None, None])[0].T)
    m = R.run(cfg, tmp_path / "run")
    check_starts_at(tmp_path / "run", m, cfg, codec, expected)
    assert m["init"]["distinct_semantic"] == int(expected[:, 0].unique().numel())


def test_init_path_supplies_the_encoder(tiny_dir_encoder, tmp_path):
    """A decoder-only model (tiny seed 0) + an encoder file (the seed-1 tiny's encoder tensors)."""
    enc = {
        k: v for k, v in Checkpoint(tiny_dir_encoder).load("audio_tokenizer.").items() if k.startswith(ENCODER_PREFIXES)
    }
    path = tmp_path / "encoder.safetensors"
    save_file(enc, str(path))
    cfg = cfg_of(f"init.path={path}")
    ckpt = Checkpoint(model_path(cfg.model))
    with_enc = encoder_codec(ckpt, path)
    codec = load_codec(ckpt)
    wav = build_target(cfg.target, codec, ckpt).wav
    m = R.run(cfg, tmp_path / "run")
    check_starts_at(tmp_path / "run", m, cfg, codec, encoder_codes(with_enc, wav))


def test_no_encoder_is_a_clear_error(tmp_path):
    cfg = cfg_of()  # the decoder-only tiny model, no init.path
    with pytest.raises(CheckpointError, match="has no codec encoder.*init.path"):
        R.run(cfg, tmp_path / "run")
    with pytest.raises(CheckpointError, match="does not exist"):
        R.run(cfg_of(f"init.path={tmp_path / 'missing.safetensors'}"), tmp_path / "run2")


def test_proxy_encoder_codes_are_the_start(tmp_path):
    """The proxy's true encoder (the oracle row of the benchmark): start codes = its codes exactly."""
    if not (Path(R.CONF_DIR) / "model" / "proxy.yaml").is_file():
        pytest.skip("model=proxy is not available in this checkout")
    cfg = cfg_of("model=proxy", "target.n_frames=4", "steps=1")
    try:
        ckpt = Checkpoint(model_path(cfg.model))
    except (FileNotFoundError, CheckpointError) as e:
        pytest.skip(f"proxy assets absent: {e}")
    codec = load_codec(ckpt)
    wav = build_target(cfg.target, codec, ckpt).wav
    expected = encoder_codes(codec, wav)
    m = R.run(cfg, tmp_path / "run")
    check_starts_at(tmp_path / "run", m, cfg, codec, expected)
