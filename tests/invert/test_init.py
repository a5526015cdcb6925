"""Initialisations: warm-start sources (codes file, run directory, preset voice) and the
coordinate-descent search, which recovers the exact codes of a synthetic clip on the tiny model."""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import pytest
import torch
from hydra.utils import instantiate
from omegaconf import OmegaConf

from voxinv.invert.init import Init, coord_descent, warm_start_codes
from voxinv.invert.target import synthetic
from voxinv.paths import CONF_DIR
from voxinv.voxtral.codes import save_codes
from voxinv.voxtral.voices import load_voice, voice_to_codes


def _codes(T: int, seed: int) -> torch.Tensor:  # raw [T, 37]
    g = torch.Generator().manual_seed(seed)
    return torch.cat([torch.randint(0, 8192, (T, 1), generator=g), torch.randint(0, 21, (T, 36), generator=g)], 1)


# ------------------------------------------------------------------------------------------ warm start
def test_warm_start_from_codes_files(tmp_path):
    c = _codes(5, 0)
    save_codes(tmp_path / "c.safetensors", c)
    np.save(tmp_path / "c.npy", c.numpy())
    torch.save(c, tmp_path / "c.pt")
    for name in ("c.safetensors", "c.npy", "c.pt"):
        assert torch.equal(warm_start_codes(str(tmp_path / name), 5), c), name
    assert torch.equal(warm_start_codes(str(tmp_path / "c.npy"), 3), c[:3])  # longer source: cut
    assert torch.equal(warm_start_codes(str(tmp_path / "c.npy"), 12), torch.cat([c, c, c[:2]]))  # shorter: tiled


def test_warm_start_from_run_directory(tmp_path):
    c = _codes(4, 1)
    save_codes(tmp_path / "run" / "codes.safetensors", c)
    assert torch.equal(warm_start_codes(str(tmp_path / "run"), 4), c)
    (tmp_path / "empty").mkdir()
    with pytest.raises(FileNotFoundError, match="run directory has no codes.safetensors"):
        warm_start_codes(str(tmp_path / "empty"), 4)


def test_warm_start_from_preset_voice(ckpt):
    want = voice_to_codes(
        load_voice(ckpt.path / "voice_embedding" / "casual_male.pt"),
        ckpt.load("mm_audio_embeddings.audio_codebook_embeddings.")["embeddings.weight"],
        ckpt.params.audio,
    ).codes
    n = want.shape[0]
    assert torch.equal(warm_start_codes("casual_male", n, ckpt), want)
    assert torch.equal(warm_start_codes("casual_male", n + 2, ckpt), torch.cat([want, want[:2]]))


def test_warm_start_unknown_source(tmp_path, ckpt):
    for src in ("no_such_voice", str(tmp_path / "missing.safetensors")):
        with pytest.raises(FileNotFoundError, match="neither a codes file, a run directory, nor a preset voice"):
            warm_start_codes(src, 3, ckpt)
    with pytest.raises(FileNotFoundError):
        warm_start_codes("casual_male", 3)  # a voice name needs the model


# ------------------------------------------------------------------------------------ coord descent
def _segment_loss() -> torch.nn.Module:
    """``init.loss`` of conf/init/coord_descent.yaml: what coordinate descent scores a candidate by."""
    return instantiate(OmegaConf.load(Path(CONF_DIR) / "init" / "coord_descent.yaml").loss)


def test_segment_loss():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(1920, generator=g)
    y = torch.stack([x, x + 0.1 * torch.randn(1920, generator=g), torch.zeros(1920)])
    loss = _segment_loss()(y, x)
    assert loss.shape == (3,) and loss[0] == 0 and loss[1] > 0 and loss[2] > loss[1]


def test_coord_descent_keeps_the_truth(codec):
    """Started at the true codes (loss 0) nothing moves."""
    tg = synthetic(codec, 2, seed=3)
    out, st = coord_descent(
        codec,
        tg.wav,
        tg.codes,
        loss=_segment_loss(),
        sweeps=1,
        shortlist=16,
        context=8,
        lookahead=0,
        batch_size=512,
        acoustic_passes=1,
        gn_steps=3,
        progress=False,
    )
    assert torch.equal(out, tg.codes) and st["changed"] == 0 and st["evaluations"] > 0


def test_coord_descent_recovers_exact_codes(codec):
    """From random codes, 2 sweeps recover a 4-frame synthetic clip exactly — with the config's
    Gauss-Newton acoustic steps alone, and with exact coordinate passes alone (slower).

    The frame's semantic entry is found on the 1st sweep or the 2nd (once its acoustic values are
    near); one exact coordinate pass per visit without Gauss-Newton leaves ~30-50 % of the acoustic
    values off by a level or more on this clip, four passes recover them.
    """
    T = 4
    tg = synthetic(codec, T, seed=0)
    start = _codes(T, 100)
    assert (start[:, 0] != tg.codes[:, 0]).all()
    t0 = time.time()
    for gn, passes in ((3, 0), (0, 4)):  # the config default, and exact sweeps only
        out, st = coord_descent(
            codec,
            tg.wav,
            start,
            loss=_segment_loss(),
            sweeps=2,
            shortlist=64,
            context=8,
            lookahead=0,
            batch_size=512,
            gn_steps=gn,
            acoustic_passes=passes,
            progress=False,
        )
        print(f"coord_descent {T} frames gn={gn} passes={passes}: {time.time() - t0:.1f} s, {st}")
        assert torch.equal(out[:, 0], tg.codes[:, 0])
        assert torch.equal(out, tg.codes)
    assert torch.equal(start, _codes(T, 100))  # the input is not modified


# ------------------------------------------------------------------------------- a new init: two places
class ConstantInit(Init):
    """CONTRIBUTING.md's worked example: every frame of every restart starts from one code row."""

    def __init__(self, kind: str, logit_margin: float, semantic: int, acoustic: int):
        super().__init__(kind, logit_margin)
        self.row = torch.tensor([semantic] + [acoustic] * 36)

    def start_codes(self, params, codec, target, ckpt, info):
        info["row"] = self.row.tolist()[:2]
        return self.row.expand(params.shape[0], target.n_frames, 37)


def test_an_init_defined_outside_the_package_runs(tmp_path):
    """An init needs its class and its group node, nothing else: this one lives in a test module and is
    selected by `_target_` overrides of the real config (a YAML file in conf/init/ does the same)."""
    from test_run import _run

    from voxinv.voxtral.codes import load_codes

    node = ("init._target_=test_init.ConstantInit", "init.kind=constant", "+init.semantic=7", "+init.acoustic=10")
    out, m, _ = _run(tmp_path, "run", *node, "steps=0")  # no refinement: the export is the init's codes
    assert m["init"]["kind"] == "constant" and m["init"]["row"] == [7, 10]
    codes = load_codes(out / "codes.safetensors")
    assert (codes[:, 0] == 7).all() and (codes[:, 1:] == 10).all()
