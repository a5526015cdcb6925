"""``voxinv.train_encoder`` on the tiny model (CPU, 4-frame crops, a few steps): training lowers the
objective, the exported encoder reloads bit-exact through ``load_codec``, resume continues, the
straight-through quantizer's forward equals the codec's own encode/decode, bad data is one clear error."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import soundfile as sf
import torch
from hydra import compose, initialize_config_dir
from omegaconf import DictConfig
from safetensors import safe_open

import voxinv.train_encoder as TE
from voxinv.run import CONF_DIR
from voxinv.voxtral.checkpoint import Checkpoint
from voxinv.voxtral.codec import ENCODER_PREFIXES, load_codec

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


pytestmark = pytest.mark.usefixtures("tiny_cache_env")  # VOXINV_CACHE: the session's tiny model


def _voice(path: Path, f0: float, seconds: float, seed: int) -> None:
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


@pytest.fixture(scope="module")
def audio(tmp_path_factory) -> Path:
    """Two training speakers (folders) and one held-out speaker."""
    root = tmp_path_factory.mktemp("enc_audio")
    for spk, f0 in (("train_a", 110.0), ("train_b", 210.0), ("heldout", 150.0)):
        (root / spk).mkdir()
        for i in range(2):
            _voice(root / spk / f"{i}.wav", f0 * (1 + 0.05 * i), 1.5, seed=i)
    return root


def cfg_of(audio: Path, *overrides: str) -> DictConfig:
    o = dict(FAST)
    o["data.sources"] = f"[{audio / 'train_a'},{audio / 'train_b'}]"
    o["val.sources"] = f"[{audio / 'heldout'}]"
    o.update(x.split("=", 1) for x in overrides)
    with initialize_config_dir(config_dir=CONF_DIR, version_base="1.3"):
        return compose("train_encoder", overrides=[f"{k}={v}" for k, v in o.items()])


def objective(cfg: DictConfig, codec, encoder, batch: torch.Tensor) -> float:
    terms = TE.build_loss_terms(cfg.loss, codec.sampling_rate, "cpu")
    module = TE.EncoderModule(cfg, codec, terms, encoder)
    with torch.no_grad():
        return float(module.losses(batch)[0])


@pytest.fixture(scope="module")
def trained(audio, tmp_path_factory, voxinv_cache):
    mp = pytest.MonkeyPatch()
    mp.setenv("VOXINV_CACHE", str(voxinv_cache))
    cfg = cfg_of(audio, "steps=12")
    out = tmp_path_factory.mktemp("enc_run")
    m = TE.train(cfg, out)
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
    _voice(one / "0.wav", 150.0, 4 * 1920 / 24000, seed=0)
    cfg = cfg_of(
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
    m = TE.train(cfg, out)
    ckpt = Checkpoint(TE.model_path(cfg.model))
    codec = load_codec(ckpt)
    recs = TE.load_recordings(TE.list_sources(cfg.data.sources), codec.sampling_rate, float(cfg.data.peak))
    batch = recs[0].wav[None]  # the crop itself
    before = objective(cfg, codec, TE.initial_encoder(cfg, codec, recs), batch)
    after = objective(cfg, codec, TE.build_encoder(codec.args, str(out / "encoder.safetensors"), 0), batch)
    assert after < 0.99 * before, (before, after)
    assert m["steps"] == 8 and (out / "checkpoints" / "last.ckpt").is_file()


def test_paired_terms_batched_equal_crop_by_crop():
    """One batched call per term with a paired target ``[B, N]`` = each crop against its own target."""
    from voxinv.invert.losses import build_terms

    with initialize_config_dir(config_dir=CONF_DIR, version_base="1.3"):
        loss = compose("train_encoder", overrides=["model=tiny", "+loss.weights.l1=0.5", "+loss.weights.mfcc=0.1"]).loss
    terms = build_terms({**loss, "weights": dict(loss.weights)}, 24000, None, None)
    assert set(terms) == {"l1", "stft", "mel", "mfcc"}
    g = torch.Generator().manual_seed(0)
    x, y = 0.1 * torch.randn(3, 4800, generator=g), 0.1 * torch.randn(3, 4800, generator=g)
    batched = TE.paired_terms(terms, y, x)
    for name, term in terms.items():
        one_by_one = torch.cat([term(y[b : b + 1], x[b]) for b in range(3)])
        torch.testing.assert_close(batched[name], one_by_one, rtol=1e-5, atol=1e-6)


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
    assert (out / "checkpoints" / "last.ckpt").is_file()


def test_export_reloads_bit_exact(trained):
    cfg, out, m = trained
    path = out / "encoder.safetensors"
    with safe_open(str(path), "pt") as f:
        names = list(f.keys())
    assert names and all(n.startswith(ENCODER_PREFIXES) for n in names)
    assert "input_proj.conv.parametrizations.weight.original0" in names  # release weight-norm names
    ckpt = Checkpoint(TE.model_path(cfg.model))
    codec = load_codec(ckpt, encoder_path=path)
    assert codec.has_encoder and m["reload_codes_equal"] is True
    # the trained module's state (from the Lightning checkpoint) vs the exported file through load_codec
    state = torch.load(out / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=True)["state_dict"]
    enc = TE.build_encoder(codec.args, None, 0)
    enc.load_state_dict({k[len("encoder.") :]: v for k, v in state.items() if k.startswith("encoder.")})
    x = 0.05 * torch.randn(2, 1, 5 * 1920, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        assert torch.equal(enc(x), codec.encode_latent(x))
    # a decoder-only checkpoint + the file = the same codec as one that carries the file's tensors
    assert not load_codec(ckpt).has_encoder


def test_quantizer_forward_is_the_codecs(codec):
    g = torch.Generator().manual_seed(0)
    table = codec.quantizer.semantic_codebook.table.float()
    latent = torch.randn(2, 292, 5, generator=g)
    latent[:, :256] += table[torch.randint(0, 8192, (2, 5), generator=g)].transpose(1, 2)
    for mode in ("nearest", "softmax"):
        lq, codes, aux = TE.quantize_ste(latent, table, 21, semantic=mode, tau=1.0, unit=TE.nn_d2(table))
        assert torch.equal(codes, codec.quantizer.encode(latent))
        assert torch.equal(lq, codec.quantizer.decode(codes))
        assert set(aux) == {"commit", "usage"} and 0 <= float(aux["usage"]) <= 1


def test_usage_tau_sees_an_index_collapse():
    """All frames on one entry: at tau = 1 each frame's soft assignment spreads over the table, so the usage
    term (1 − H(batch mean)/log V) barely rises; a sharper ``usage_tau`` sees the collapse. The codes, the
    forward latent and the other terms do not depend on it; usage_tau=None is tau."""
    g = torch.Generator().manual_seed(0)
    table = torch.randn(512, 16, generator=g)
    unit = TE.nn_d2(table)
    collapsed = torch.zeros(1, 16 + 36, 64)
    collapsed[0, :16] = table[0][:, None] + 0.01 * torch.randn(16, 64, generator=g)
    spread = torch.zeros(1, 16 + 36, 64)
    spread[0, :16] = table[torch.randperm(512, generator=g)[:64]].T
    usage = {}
    for name, latent in (("collapsed", collapsed), ("spread", spread)):
        for ut in (None, 1.0, 0.3):
            lq, codes, aux = TE.quantize_ste(latent, table, 21, semantic="softmax", tau=1.0, unit=unit, usage_tau=ut)
            usage[name, ut] = float(aux["usage"])
            if ut is None:
                ref = (lq, codes, aux["commit"])
            assert torch.equal(lq, ref[0]) and torch.equal(codes, ref[1]) and torch.equal(aux["commit"], ref[2])
        assert usage[name, None] == usage[name, 1.0]
    # measured: tau = 1 scores the collapse 0.062 and the spread batch 0.014 (why the CPU runs collapsed with the
    # term at 0.14); usage_tau = 0.3: 0.665 vs 0.198 (the spread batch's floor is 1 − log 64 / log 512 = 0.33)
    gap = {t: usage["collapsed", t] - usage["spread", t] for t in (1.0, 0.3)}
    assert usage["collapsed", 0.3] > 0.5 and gap[0.3] > 5 * gap[1.0], usage


def _low_rank_table(v: int, d: int, rank: int, seed: int) -> torch.Tensor:
    """A trained-codebook-like table: ``v`` entries in a ``rank``-dim subspace of ``d`` dims
    (decaying spectrum, off-centre mean), as the proxy's (8192 entries, effective rank ≈ 9 of 256)."""
    g = torch.Generator().manual_seed(seed)
    basis = torch.linalg.qr(torch.randn(d, rank, generator=g))[0]  # [d, rank]
    coords = torch.randn(v, rank, generator=g) * (0.8 ** torch.arange(rank))
    return 0.5 * coords @ basis.T + 0.03 * torch.randn(d, generator=g) + 0.005 * torch.randn(v, d, generator=g)


def test_data_init_does_not_collapse_the_semantic_codes(codec):
    """Index collapse at init (the CPU proxy run's cause): a random encoder scaled to the table's std
    emits an isotropic latent, mostly off a low-rank table's span, so every frame snaps to a handful
    of hub entries. ``data_init`` colours it to the table's second moment: the codes of one batch
    spread over many entries. Fails with the std-only init (measured: 81 distinct of 256 frames; coloured: 249)."""
    table = _low_rank_table(8192, 256, 8, seed=0)
    crops = 0.05 * torch.randn(16, 16 * 1920, generator=torch.Generator().manual_seed(1))  # [16, N]
    enc = TE.build_encoder(codec.args, None, 0)
    TE.data_init(enc, crops, table, 0.6)
    with torch.no_grad():
        z = enc(crops[:, None])[:, :256].transpose(1, 2).reshape(-1, 256)  # [256 frames, 256]
    codes = torch.cdist(z, table).argmin(-1)
    assert codes.unique().numel() >= 160, codes.unique().numel()
    # the latent concentrates in the table's 8-dim span (measured 38%; isotropic: 8 / 256 = 3%)
    span = torch.linalg.svd(table - table.mean(0), full_matrices=False).Vh[:8]  # [8, 256]
    centred = z - table.mean(0)
    assert (centred @ span.T).pow(2).sum() > 0.25 * centred.pow(2).sum()


def test_resume_continues(audio, tmp_path):
    out = tmp_path / "run"
    TE.train(cfg_of(audio, "steps=4", "val.sources=[]"), out)
    m = TE.train(cfg_of(audio, "steps=6", "resume=true", "val.sources=[]"), out)
    assert m["steps"] == 6
    assert torch.load(out / "checkpoints" / "last.ckpt", weights_only=True)["global_step"] == 6


def test_bad_data_is_one_clear_error(audio, tmp_path):
    with pytest.raises(ValueError, match="data.sources is empty"):
        TE.train(cfg_of(audio, "data.sources=[]"), tmp_path / "a")
    with pytest.raises(FileNotFoundError, match="does not exist"):
        TE.train(cfg_of(audio, f"data.sources=[{tmp_path / 'nope'}]"), tmp_path / "b")
    with pytest.raises(ValueError, match="also in the training data"):
        TE.train(cfg_of(audio, f"val.sources=[{audio / 'train_a'}]"), tmp_path / "c")
    with pytest.raises(ValueError, match="no recordings left"):
        TE.train(cfg_of(audio, "data.exclude_speakers=[train_a,train_b]"), tmp_path / "d")


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


def test_interrupt_exports_the_encoder_so_far(audio, tmp_path, monkeypatch, voxinv_cache):
    """Ctrl-C (or SIGTERM, handled alike) during training: the encoder so far is exported, metrics.json says
    why, and the exit status is 130 (README "Exit codes"), not Lightning's 1."""
    monkeypatch.setenv("VOXINV_CACHE", str(voxinv_cache))
    step = TE.EncoderModule.training_step

    def ctrl_c_at_3(self, batch, i):
        if self.trainer.global_step == 3:
            raise KeyboardInterrupt
        return step(self, batch, i)

    monkeypatch.setattr(TE.EncoderModule, "training_step", ctrl_c_at_3)
    m = TE.train(cfg_of(audio, "steps=12", "val.sources=[]"), tmp_path / "run")
    assert m["stopped"] == "interrupted at step 3; exported the encoder so far" and m["exit_code"] == 130
    assert m["steps"] == 3 and (tmp_path / "run" / "encoder.safetensors").is_file()
    assert json.loads((tmp_path / "run" / "metrics.json").read_text())["exit_code"] == 130
