"""``make demo`` = ``experiment=demo``: the shipped LibriVox clip cloned on the proxy codec; its summary
names the outputs, scores the clone against the proxy encoder's own codes, and says what the proxy is."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import soundfile as sf
import torch
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf

import voxinv.run as R
from voxinv import rundir

REPO = Path(__file__).resolve().parents[1]
CLIP = REPO / "assets" / "demo" / "librivox_ss01_0880.flac"
DEBIAN_SOURCE = Path("/usr/share/pocketsphinx/test/data/librivox/sense_and_sensibility_01_austen_64kb-0880.wav")


def _cfg(*overrides: str):
    with initialize_config_dir(config_dir=R.CONF_DIR, version_base="1.3"):
        return compose("config", overrides=["experiment=demo", *overrides])


def test_clip_is_small_documented_and_the_debian_file():
    assert CLIP.is_file() and CLIP.stat().st_size <= 300_000
    readme = (CLIP.parent / "README.md").read_text()
    assert CLIP.name in readme and "public domain" in readme and "pocketsphinx-testdata" in readme
    if not DEBIAN_SOURCE.is_file():
        pytest.skip(f"{DEBIAN_SOURCE} absent (apt-get install pocketsphinx-testdata)")
    ours, sr = sf.read(CLIP, dtype="int16")
    src, sr_src = sf.read(DEBIAN_SOURCE, dtype="int16")
    assert sr == sr_src == 16000 and (ours == src).all()  # lossless copy


def test_demo_config():
    cfg = _cfg()
    assert cfg.model.name == "proxy" and cfg.target.kind == "file" and cfg.init.kind == "random"
    assert (REPO / cfg.target.path).resolve() == CLIP and cfg.eval.reference == "encoder"
    assert cfg.device == "cpu" and cfg.steps == 60
    assert "not intelligible" in cfg.model.note and "model=voxtral" in cfg.model.note


def test_demo_runs_and_says_what_it_measured(tmp_path, monkeypatch, capsys):
    from voxinv.voxtral.proxy import mr_log_mel

    monkeypatch.chdir(REPO)  # target.path is relative to the repository root, as `make demo` runs it
    monkeypatch.setenv("VOXINV_CACHE", str(tmp_path / "cache"))  # the proxy model is generated, offline
    out = tmp_path / "run"
    m = R.run(_cfg("steps=3", "eval_every=3", "trainer.enable_progress_bar=false"), out)
    err = capsys.readouterr().err

    for f in rundir.AUDIO_FILES + (rundir.CODES, rundir.VOICE, rundir.METRICS, rundir.CONFIG):
        assert (out / f).is_file(), f
    assert m["target"]["name"] == "librivox_ss01_0880" and abs(m["target"]["seconds"] - 3.04) < 0.01
    assert m["steps"] == 3 and rundir.read_metrics(out)["reference"] == m["reference"]
    ref = m["reference"]
    clone, enc = ref["clone"], ref["model_encoder"]
    target, rec = (torch.from_numpy(sf.read(out / f, dtype="float32")[0]) for f in rundir.AUDIO_FILES)
    assert clone["mrmel"] == pytest.approx(mr_log_mel(target, rec), abs=1e-6)  # the exported decode, scored
    assert 0.2 < enc["mrmel"] < 1.5 and 0.2 < clone["mrmel"] < 3.0  # log10 units: finite, not degenerate
    for s in (clone["spk"], enc["spk"]):
        assert (s is None and "spk_error" in ref) or -1.0 <= s <= 1.0

    assert "cloned librivox_ss01_0880 (3.04 s of audio) in 3 steps: " in err and " s CPU" in err
    assert f"reconstruction: {out / rundir.RECONSTRUCTION}" in err and f"voice file:     {out / rundir.VOICE}" in err
    shown = re.search(r"clone ([0-9.]+), the codec's own encoder ([0-9.]+)", err)
    assert shown and (float(shown[1]), float(shown[2])) == (round(clone["mrmel"], 3), round(enc["mrmel"], 3))
    closer = "the clone decodes closer to your recording than the codec's own encoder does"
    assert (closer in err) == (clone["mrmel"] < enc["mrmel"])
    assert "speaker similarity (resemblyzer cosine" in err
    assert "[voxinv] note: model=proxy is a small stand-in codec" in err and "model=voxtral" in err


@pytest.mark.usefixtures("tiny_cache_env")
def test_reference_needs_an_encoder(tmp_path, caplog):
    """eval.reference=encoder on a model without one: a warning, the run still exports."""
    with initialize_config_dir(config_dir=R.CONF_DIR, version_base="1.3"):
        cfg = compose(
            "config",
            overrides=[
                "model=tiny",
                "target=synthetic",
                "target.n_frames=2",
                "steps=1",
                "device=cpu",
                "eval.which=[]",
                "eval.reference=encoder",
                "trainer.enable_progress_bar=false",
            ],
        )
    m = R.run(cfg, tmp_path / "run")
    assert "reference" not in m and (tmp_path / "run" / rundir.VOICE).is_file()
    assert "has no codec encoder" in caplog.text


def test_quick_starts_from_the_committed_learned_encoder(tmp_path, monkeypatch):
    """experiment=quick: the learned encoder's one-pass answer on the proxy, then a short refinement."""
    with initialize_config_dir(config_dir=R.CONF_DIR, version_base="1.3"):
        cfg = compose("config", overrides=["experiment=quick", f"target.path={CLIP}", "steps=2", "eval_every=2"])
    assert cfg.model.name == "proxy" and cfg.init.kind == "encoder"
    assert (REPO / cfg.init.path).resolve() == REPO / "assets" / "proxy" / "learned_encoder.safetensors"
    monkeypatch.chdir(REPO)  # init.path is relative to the repository root
    monkeypatch.setenv("VOXINV_CACHE", str(tmp_path / "cache"))
    m = R.run(OmegaConf.merge(cfg, {"trainer": {"enable_progress_bar": False}}), tmp_path / "run")
    assert m["init"]["kind"] == "encoder" and m["steps"] == 2
    assert m["history"][0]["step"] == 0 and m["final"]["total"] <= m["history"][0]["objective"] + 1e-6
