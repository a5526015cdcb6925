"""Shared by the encoder tests: fast tiny-model settings, synthetic voiced audio, the composed config."""

from __future__ import annotations

from pathlib import Path

import soundfile as sf
import torch
from hydra import compose, initialize_config_dir
from omegaconf import DictConfig

from voxinv.paths import CONF_DIR

FAST = {
    "model": "tiny",
    "device": "cpu",
    "steps": "8",
    "batch_size": "4",
    "data.crop_frames": "4",
    "encoder.data_init": "8",
    "val_every": "4",
    "checkpoint_every": "4",
    "val.n_crops": "2",
    "optim.warmup": "0",
    "trainer.enable_progress_bar": "false",
    "trainer.log_every_n_steps": "1",
}


def voice(path: Path, f0: float, seconds: float, seed: int) -> None:
    """A crude voiced sound: harmonics of a wobbling f0 under a syllable-rate envelope, plus noise."""
    sr = 24000
    g = torch.Generator().manual_seed(seed)
    t = torch.arange(int(seconds * sr)) / sr
    f = f0 * (1 + 0.1 * torch.sin(2 * torch.pi * 3 * t))
    phase = 2 * torch.pi * torch.cumsum(f, 0) / sr
    x = sum(torch.sin(k * phase) / k for k in range(1, 12))
    env = 0.5 + 0.5 * torch.sin(2 * torch.pi * 4 * t).clamp_min(0)
    x = env * x + 0.05 * torch.randn(t.shape, generator=g)
    sf.write(str(path), (0.3 * x / x.abs().max()).numpy(), sr, subtype="FLOAT")


def encoder_cfg(audio: Path, *overrides: str) -> DictConfig:
    """conf/train_encoder.yaml with :data:`FAST`, train_a + train_b for training, heldout for validation."""
    o = dict(FAST)
    o["data.sources"] = f"[{audio / 'train_a'},{audio / 'train_b'}]"
    o["val.sources"] = f"[{audio / 'heldout'}]"
    o.update(x.split("=", 1) for x in overrides)
    with initialize_config_dir(config_dir=CONF_DIR, version_base="1.3"):
        return compose("train_encoder", overrides=[f"{k}={v}" for k, v in o.items()])
