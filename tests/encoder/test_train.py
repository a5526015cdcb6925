"""``voxinv.encoder.train`` on the tiny model (CPU, 4-frame crops, a few steps): training lowers the
objective, the run writes what it promises, the exported encoder reloads bit-exact through ``load_codec``,
resume continues, Ctrl-C exports the encoder so far, the one Trainer builder, the entry point's alias."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import pytorch_lightning as pl
import torch
from encoder_common import FAST, encoder_cfg, voice
from omegaconf import DictConfig
from pytorch_lightning.callbacks import ModelCheckpoint

from voxinv.encoder import train as TR
from voxinv.encoder.data import list_sources, load_recordings
from voxinv.encoder.module import EncoderModule, build_loss_terms
from voxinv.encoder.network import build_encoder, initial_encoder
from voxinv.voxtral.checkpoint import Checkpoint
from voxinv.voxtral.codec import load_codec
from voxinv.voxtral.models import model_path

pytestmark = pytest.mark.usefixtures("tiny_cache_env")  # VOXINV_CACHE: the session's tiny model


def objective(cfg: DictConfig, codec, encoder, batch: torch.Tensor) -> float:
    module = EncoderModule(cfg, codec, build_loss_terms(cfg.loss, codec.sampling_rate, "cpu"), encoder)
    with torch.no_grad():
        return float(module.losses(batch)[0])


@pytest.fixture(scope="module")
def trained(audio, tmp_path_factory, voxinv_cache):
    mp = pytest.MonkeyPatch()
    mp.setenv("VOXINV_CACHE", str(voxinv_cache))
    cfg = encoder_cfg(audio, "steps=12")
    out = tmp_path_factory.mktemp("enc_run")
    m = TR.train(cfg, out)
    mp.undo()
    return cfg, out, m


def test_training_lowers_the_objective(audio, tmp_path):
    """Fit one fixed 4-frame crop (no gain jitter) with plain SGD: the training objective drops.
    (The tiny decoder is random: its table entries are near-equidistant, and the coloured init puts
    the latent among them, so semantic codes flip at the slightest change and Adam's sign-like first
    steps make the loss jump; SGD's steps scale with the gradient, and at this lr the softmax STE
    keeps the codes for the first steps (measured: 5.933 → 5.824 in 8 steps; the nearest STE flips
    3 of 4 frames per step at lr 1e-3).)"""
    one = tmp_path / "one"
    one.mkdir()
    voice(one / "0.wav", 150.0, 4 * 1920 / 24000, seed=0)
    cfg = encoder_cfg(
        audio,
        f"data.sources=[{one}]",
        "val.sources=[]",
        "data.gain_db=[0,0]",
        "steps=8",
        "optim=sgd",
        "optim.optimizer.momentum=0",
        "optim.lr=2e-4",
        "quantizer.semantic=softmax",
        "optim.grad_clip=0",
        "optim.min_ratio=1",
        "quantizer.commit=0",
        "quantizer.usage=0",
    )
    out = tmp_path / "run"
    m = TR.train(cfg, out)
    codec = load_codec(Checkpoint(model_path(cfg.model)))
    recs = load_recordings(list_sources(cfg.data.sources), codec.sampling_rate, float(cfg.data.peak))
    batch = recs[0].wav[None]  # the crop itself
    before = objective(cfg, codec, initial_encoder(cfg, codec, recs), batch)
    after = objective(cfg, codec, build_encoder(codec.args, str(out / "encoder.safetensors"), 0), batch)
    assert after < 0.99 * before, (before, after)
    assert m["steps"] == 8 and (out / "checkpoints" / "last.ckpt").is_file()


def test_run_outputs(trained):
    cfg, out, m = trained
    assert m["steps"] == 12 and [r["step"] for r in m["val"]] == [4, 8, 12]
    assert 0 < m["step_cpu_s"] and 0 < m["train_cpu_s"] <= m["cpu_time_s"]  # process CPU s of the steps
    assert m["data"]["val_speakers"] == ["heldout"] and "heldout" not in m["data"]["train_speakers"]
    assert {"train/mel", "train/stft", "code/perplexity", "code/ema_perplexity"} <= set(m["train_final"])
    # no index collapse after training: the last batch's 16 frames use many semantic entries
    assert m["train_final"]["code/distinct"] >= 8, m["train_final"]["code/distinct"]
    assert json.loads((out / "metrics.json").read_text())["steps"] == 12
    assert (out / "media" / "val_target.wav").is_file() and (out / "media" / "val_step000012.wav").is_file()
    assert (out / "checkpoints" / "last.ckpt").is_file() and (out / "config.yaml").is_file()


def test_export_reloads_bit_exact(trained):
    cfg, out, m = trained
    path = out / "encoder.safetensors"
    ckpt = Checkpoint(model_path(cfg.model))
    codec = load_codec(ckpt, encoder_path=path)
    assert codec.has_encoder and m["reload_codes_equal"] is True
    # the trained module's state (from the Lightning checkpoint) vs the exported file through load_codec
    state = torch.load(out / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=True)["state_dict"]
    enc = build_encoder(codec.args, None, 0)
    enc.load_state_dict({k[len("encoder.") :]: v for k, v in state.items() if k.startswith("encoder.")})
    x = 0.05 * torch.randn(2, 1, 5 * 1920, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        assert torch.equal(enc(x), codec.encode_latent(x))
    # a decoder-only checkpoint + the file = the same codec as one that carries the file's tensors
    assert not load_codec(ckpt).has_encoder


def test_resume_continues(audio, tmp_path):
    out = tmp_path / "run"
    TR.train(encoder_cfg(audio, "steps=4", "val.sources=[]"), out)
    m = TR.train(encoder_cfg(audio, "steps=6", "resume=true", "val.sources=[]"), out)
    assert m["steps"] == 6
    assert torch.load(out / "checkpoints" / "last.ckpt", weights_only=True)["global_step"] == 6


def test_bad_data_stops_before_anything_is_written(audio, tmp_path):
    with pytest.raises(ValueError, match="also in the training data"):
        TR.train(encoder_cfg(audio, f"val.sources=[{audio / 'train_a'}]"), tmp_path / "c")
    assert not (tmp_path / "c" / "config.yaml").exists()


def test_interrupt_exports_the_encoder_so_far(audio, tmp_path, monkeypatch):
    """Ctrl-C (or SIGTERM, handled alike) during training: the encoder so far is exported, metrics.json says
    why, and the exit status is 130 (README "Exit codes"), not Lightning's 1."""
    step = EncoderModule.training_step

    def ctrl_c_at_3(self, batch, i):
        if self.trainer.global_step == 3:
            raise KeyboardInterrupt
        return step(self, batch, i)

    monkeypatch.setattr(EncoderModule, "training_step", ctrl_c_at_3)
    m = TR.train(encoder_cfg(audio, "steps=12", "val.sources=[]"), tmp_path / "run")
    assert m["stopped"] == "interrupted at step 3; exported the encoder so far" and m["exit_code"] == 130
    assert m["steps"] == 3 and (tmp_path / "run" / "encoder.safetensors").is_file()
    assert json.loads((tmp_path / "run" / "metrics.json").read_text())["exit_code"] == 130


@pytest.mark.parametrize(
    ("overrides", "val_interval", "clip"),
    [((), 4, 1.0), (("val_every=0", "optim.grad_clip=0"), 1.0, None), (("val_every=12",), 1.0, 1.0)],
)
def test_build_trainer_is_the_one_place(audio, tmp_path, overrides, val_interval, clip):
    """The run's Trainer: ModelCheckpoint to <run>/checkpoints and the given callbacks; validation every
    val_every steps (or once per epoch: at the end), gradient clipping off at 0, cfg.trainer passed through."""
    cfg = encoder_cfg(audio, "steps=12", "optim.grad_clip=1.0", *overrides)
    cb = pl.Callback()
    t = TR.build_trainer(cfg, tmp_path, torch.device("cpu"), [], [cb], validate=True)
    ckpt = [c for c in t.callbacks if isinstance(c, ModelCheckpoint)]
    assert len(ckpt) == 1 and Path(ckpt[0].dirpath) == tmp_path / "checkpoints" and ckpt[0].save_last
    assert cb in t.callbacks  # (Lightning runs checkpoint callbacks last)
    assert t.max_steps == 12 and t.val_check_interval == val_interval and t.gradient_clip_val == clip
    assert t.log_every_n_steps == int(FAST["trainer.log_every_n_steps"])
    assert TR.build_trainer(cfg, tmp_path, torch.device("cpu"), [], [], validate=False).limit_val_batches == 0


def test_python_m_voxinv_train_encoder_is_the_package_entry():
    """The documented command stays: ``voxinv.train_encoder.main`` is the package's Hydra entry point."""
    import voxinv.train_encoder as alias

    assert alias.main is TR.main


@pytest.mark.slow
def test_ddp_two_cpu_processes(audio, tmp_path, voxinv_cache):
    """``trainer.devices=2`` on the CPU: Lightning's DDP (gloo) through the Hydra entry point (~1 min)."""
    import os
    import subprocess
    import sys

    out = tmp_path / "ddp"
    env = {**os.environ, "VOXINV_CACHE": str(voxinv_cache), "OMP_NUM_THREADS": "1"}
    args = [f"{k}={v}" for k, v in FAST.items()] + [
        f"data.sources=[{audio / 'train_a'},{audio / 'train_b'}]",
        f"val.sources=[{audio / 'heldout'}]",
        "steps=4",
        "batch_size=2",
        "trainer.devices=2",
        "trainer.strategy=ddp",
        f"hydra.run.dir={out}",
    ]
    r = subprocess.run([sys.executable, "-m", "voxinv.train_encoder", *args], env=env, capture_output=True, text=True)
    assert r.returncode == 0, r.stderr[-2000:]
    m = json.loads((out / "metrics.json").read_text())
    assert m["devices"] == 2 and m["steps"] == 4 and m["reload_codes_equal"] is True
    assert (out / "train_encoder.log").is_file()  # hydra.job.name: the log keeps its name under the alias
