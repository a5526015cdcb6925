"""``voxinv`` command line: verbs on the tiny checkpoint, one-line errors with exit code 2, extensions."""

from __future__ import annotations

import importlib.machinery
import json
import os
import subprocess
import sys
import types
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch

from voxinv import cli
from voxinv.voxtral.checkpoint import DEFAULT_REPO, Checkpoint
from voxinv.voxtral.codec import load_codec
from voxinv.voxtral.codes import end_frame, load_codes, save_codes, to_model
from voxinv.voxtral.tiny import random_codes

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def ckpt(tiny_dir) -> Checkpoint:
    return Checkpoint(tiny_dir)


def run(*argv: str) -> int:
    return cli.main([str(a) for a in argv])


def test_decode_writes_24k_mono_float32(tiny_dir, ckpt, tmp_path, capsys):
    raw = random_codes(17, torch.Generator().manual_seed(0), ckpt.params)
    save_codes(tmp_path / "c.safetensors", raw)
    assert (
        run(
            "decode",
            "--model",
            tiny_dir,
            "--codes",
            tmp_path / "c.safetensors",
            "--out",
            tmp_path / "o.wav",
            "--device",
            "cpu",
        )
        == 0
    )
    info = sf.info(str(tmp_path / "o.wav"))
    assert (info.samplerate, info.channels, info.frames, info.subtype) == (24000, 1, 1920 * 17, "FLOAT")
    wav, _ = sf.read(str(tmp_path / "o.wav"), dtype="float32")
    with torch.no_grad():
        ref = load_codec(ckpt).decode(raw.T[None]).reshape(-1).numpy()
    np.testing.assert_array_equal(wav, ref)  # fp32 decode, written as computed
    assert "17 frames" in capsys.readouterr().out


def test_decode_model_format_and_long_input(tiny_dir, ckpt, tmp_path):
    """Model-format codes (+2, END row) via --format model; > 275 frames goes through windowed decode."""
    raw = random_codes(300, torch.Generator().manual_seed(1), ckpt.params)
    np.save(tmp_path / "m.npy", torch.cat([to_model(raw), end_frame()[None]]).numpy())
    assert (
        run(
            "decode",
            "--model",
            tiny_dir,
            "--codes",
            tmp_path / "m.npy",
            "--format",
            "model",
            "--out",
            tmp_path / "o.wav",
            "--device",
            "cpu",
        )
        == 0
    )
    wav, sr = sf.read(str(tmp_path / "o.wav"), dtype="float32")
    assert sr == 24000 and wav.shape == (1920 * 300,)
    with torch.no_grad():
        ref = load_codec(ckpt).decode(raw.T[None]).reshape(-1).numpy()
    assert np.abs(wav - ref).max() <= 1e-5


def test_decode_bf16(tiny_dir, ckpt, tmp_path):
    raw = random_codes(5, torch.Generator().manual_seed(2), ckpt.params)
    np.save(tmp_path / "c.npy", raw.numpy())
    assert (
        run(
            "decode",
            "--model",
            tiny_dir,
            "--codes",
            tmp_path / "c.npy",
            "--out",
            tmp_path / "o.wav",
            "--dtype",
            "bf16",
            "--device",
            "cpu",
        )
        == 0
    )
    assert sf.info(str(tmp_path / "o.wav")).frames == 1920 * 5


def test_voice2codes_and_voice2wav(tiny_dir, ckpt, tmp_path, capsys):
    assert run("voice2codes", "--model", tiny_dir, "--voice", "casual_male", "--out", tmp_path / "c.safetensors") == 0
    out = capsys.readouterr().out
    assert "residual" in out and "18 frames" in out
    codes = load_codes(tmp_path / "c.safetensors")
    assert codes.shape == (18, 37)
    voice_pt = tiny_dir / "voice_embedding" / "neutral_female.pt"
    assert (
        run(
            "voice2wav",
            "--model",
            tiny_dir,
            "--voice",
            voice_pt,
            "--out",
            tmp_path / "v.wav",
            "--codes-out",
            tmp_path / "v.npy",
            "--device",
            "cpu",
        )
        == 0
    )
    assert sf.info(str(tmp_path / "v.wav")).frames == 1920 * 30
    assert np.load(tmp_path / "v.npy").shape == (30, 37)


def test_make_tiny_and_register_voice(tmp_path, capsys):
    d = tmp_path / "m"
    assert run("make-tiny", d, "--seed", "3", "--dtype", "fp32") == 0
    assert (d / "consolidated.safetensors").is_file() and (d / "tekken.json").is_file()
    assert (
        run(
            "register-voice",
            "--model",
            d,
            "--voice-file",
            d / "voice_embedding" / "casual_male.pt",
            "--name",
            "Alice",
            "--out",
            tmp_path / "ov",
        )
        == 0
    )
    assert "registered voice 'alice'" in capsys.readouterr().out
    tekken = json.loads((tmp_path / "ov" / "tekken.json").read_text())
    assert tekken["audio"]["voice_num_audio_tokens"]["alice"] == 19
    # a voice without END row is registered with a warning
    torch.save(torch.zeros(4, 256, dtype=torch.bfloat16), tmp_path / "noend.pt")
    assert (
        run(
            "register-voice",
            "--model",
            d,
            "--voice-file",
            tmp_path / "noend.pt",
            "--name",
            "bob",
            "--out",
            tmp_path / "ov",
        )
        == 0
    )
    assert "not the END frame" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("argv", "match"),
    [
        (
            ["decode", "--model", "{tmp}/nope", "--codes", "{tmp}/c.npy", "--out", "{tmp}/o.wav"],
            "huggingface-cli download",
        ),
        (["decode", "--model", "{tiny}", "--codes", "{tmp}/missing.npy", "--out", "{tmp}/o.wav"], "does not exist"),
        (["decode", "--model", "{tiny}", "--codes", "{tmp}/bad.npy", "--out", "{tmp}/o.wav"], "transpose it"),
        (
            ["voice2codes", "--model", "{tiny}", "--voice", "nobody", "--out", "{tmp}/c.safetensors"],
            "unknown voice 'nobody'",
        ),
        (["voice2wav", "--model", "{tiny}", "--voice", "{tmp}/missing.pt", "--out", "{tmp}/o.wav"], "does not exist"),
        (
            [
                "register-voice",
                "--model",
                "{tiny}",
                "--voice-file",
                "{tmp}/wide.pt",
                "--name",
                "x",
                "--out",
                "{tmp}/ov",
            ],
            "backbone dim",
        ),
        (
            ["decode", "--model", "{tmp}/notvoxtral", "--codes", "{tmp}/c.npy", "--out", "{tmp}/o.wav"],
            "not a Voxtral TTS",
        ),
    ],
)
def test_errors_are_one_line_exit_2(tiny_dir, tmp_path, capsys, argv, match):
    np.save(tmp_path / "c.npy", np.zeros((4, 37), dtype=np.int64))
    np.save(tmp_path / "bad.npy", np.zeros((37, 4), dtype=np.int64))
    torch.save(torch.zeros(3, 7), tmp_path / "wide.pt")
    (tmp_path / "notvoxtral").mkdir()
    (tmp_path / "notvoxtral" / "params.json").write_text('{"dim": 8}')
    (tmp_path / "notvoxtral" / "consolidated.safetensors").write_bytes(b"")
    argv = [a.format(tmp=tmp_path, tiny=tiny_dir) for a in argv]
    assert cli.main(argv) == 2
    err = capsys.readouterr().err
    assert err.startswith("voxinv: error: ") and err.count("\n") == 1 and "Traceback" not in err
    assert match in err


def test_usage_errors_exit_2(capsys):
    with pytest.raises(SystemExit) as e:
        cli.main([])
    assert e.value.code == 2
    with pytest.raises(SystemExit) as e:
        cli.main(["decode", "--codes", "x.npy"])  # --out missing
    assert e.value.code == 2
    assert "--out" in capsys.readouterr().err


def test_defaults():
    args = cli.build_parser().parse_args(["decode", "--codes", "c.npy", "--out", "o.wav"])
    assert args.model == DEFAULT_REPO and args.dtype == "fp32" and args.format is None and args.device == "auto"


def test_python_dash_m_and_entry_point():
    env = {**os.environ, "PYTHONPATH": str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", "")}
    r = subprocess.run(
        [sys.executable, "-m", "voxinv", "--help"], capture_output=True, text=True, env=env, cwd=REPO, timeout=120
    )
    assert r.returncode == 0
    for verb in ("decode", "voice2codes", "voice2wav", "make-tiny", "register-voice"):
        assert verb in r.stdout
    tomllib = pytest.importorskip("tomllib")  # Python ≥ 3.11
    scripts = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["scripts"]
    assert scripts["voxinv"] == "voxinv.cli:main"


# --------------------------------------------------------------------------------- extensions


def _fake_module(name: str, **attrs) -> types.ModuleType:
    m = types.ModuleType(name)
    m.__spec__ = importlib.machinery.ModuleSpec(name, None)
    for k, v in attrs.items():
        setattr(m, k, v)
    return m


def test_extension_verb_is_registered_and_dispatched(monkeypatch, capsys):
    from voxinv.voxtral.codes import CodesError

    def add_cli(sub):
        p = sub.add_parser("tts", help="text to speech")
        p.add_argument("--text", required=True)
        p.set_defaults(
            func=lambda a: print(f"tts:{a.text}") if a.text != "fail" else (_ for _ in ()).throw(CodesError("bad"))
        )

    monkeypatch.setitem(sys.modules, "voxinv_fake_tts", _fake_module("voxinv_fake_tts", add_cli=add_cli))
    monkeypatch.setattr(cli, "EXTENSIONS", ("voxinv_fake_tts", "voxinv_absent_module", "voxinv_absent_pkg.tts"))
    assert cli.main(["tts", "--text", "hi"]) == 0
    assert capsys.readouterr().out == "tts:hi\n"
    assert cli.main(["tts", "--text", "fail"]) == 2  # extension errors get the same one-line treatment
    assert capsys.readouterr().err == "voxinv: error: bad\n"


def test_extension_import_errors_propagate(monkeypatch, tmp_path):
    (tmp_path / "voxinv_broken_ext.py").write_text("import voxinv_dependency_that_is_not_installed\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setattr(cli, "EXTENSIONS", ("voxinv_broken_ext",))
    with pytest.raises(ModuleNotFoundError, match="voxinv_dependency_that_is_not_installed"):
        cli.main(["make-tiny", str(tmp_path / "x")])


def test_tts_extension_in_tree():
    """If voxinv.voxtral.tts exists it must provide add_cli and register a 'tts' verb."""
    if importlib.util.find_spec("voxinv.voxtral.tts") is None:
        pytest.skip("voxinv.voxtral.tts not written yet")
    mod = importlib.import_module("voxinv.voxtral.tts")
    if not hasattr(mod, "add_cli"):
        pytest.skip("voxinv.voxtral.tts has no add_cli yet")
    assert "tts" in cli.build_parser().format_help()
