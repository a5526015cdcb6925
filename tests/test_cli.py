"""``voxinv`` command line: verbs on the tiny checkpoint, one-line errors with exit code 2, the pipeline
verbs passed through, a parser that imports no torch."""

from __future__ import annotations

import json
import os
import subprocess
import sys
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

REPO = Path(__file__).resolve().parents[1]


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
            "hf download",
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
    for verb in ("decode", "voice2codes", "voice2wav", "make-tiny", "register-voice", "tts", "invert", "eval"):
        assert verb in r.stdout
    tomllib = pytest.importorskip("tomllib")  # Python ≥ 3.11
    scripts = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["scripts"]
    assert scripts["voxinv"] == "voxinv.cli:main"


# ------------------------------------------------------------------------------ one command line
def _python(code: str) -> str:
    env = {**os.environ, "PYTHONPATH": str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", "")}
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, cwd=REPO, timeout=120)
    assert r.returncode == 0, r.stderr
    return r.stdout.strip()


def test_building_the_parser_imports_no_torch():
    """``voxinv --help`` must not pay for torch (or any model code): handlers import what they need."""
    out = _python(
        "import sys; from voxinv.cli import build_parser; build_parser().format_help(); "
        "print(sorted(m for m in ('torch', 'numpy', 'hydra', 'pytorch_lightning', 'wandb') if m in sys.modules))"
    )
    assert out == "[]"


def test_version(capsys):
    import voxinv

    with pytest.raises(SystemExit) as e:
        cli.main(["--version"])
    assert e.value.code == 0 and capsys.readouterr().out == f"voxinv {voxinv.__version__}\n"


@pytest.mark.parametrize("verb,prog", [("eval", "python -m voxinv.eval"), ("report", "python -m voxinv.report")])
def test_pipeline_verbs_pass_their_arguments_through(verb, prog, capsys):
    with pytest.raises(SystemExit) as e:
        cli.main([verb, "--help"])  # their own parser answers
    assert e.value.code == 0 and capsys.readouterr().out.startswith(f"usage: {prog}")


def test_train_encoder_is_its_hydra_app(capsys):
    """``voxinv train-encoder <overrides>`` = ``python -m voxinv.train_encoder`` (here: print its config)."""
    argv = list(sys.argv)
    assert cli.main(["train-encoder", "--cfg", "job", "seed=7"]) == 0
    out = capsys.readouterr().out
    assert "seed: 7" in out and "model:" in out and sys.argv == argv


@pytest.mark.usefixtures("tiny_cache_env")
def test_invert_is_the_hydra_app(tmp_path, capsys):
    """``voxinv invert <overrides>`` = ``python -m voxinv.run <overrides>`` (same config, same outputs)."""
    out = tmp_path / "run"
    rc = cli.main(["invert", "model=tiny", "debug=fast", "device=cpu", "trainer.enable_progress_bar=false",
                   f"hydra.run.dir={out}"])  # fmt: skip
    assert rc == 0 and sys.argv[0] != "voxinv invert"  # restored
    m = json.loads((out / "metrics.json").read_text())
    assert m["steps"] == 3 and m["target"]["frames"] == 2 and m["init"] == {"kind": "random"}
    assert (out / ".hydra" / "overrides.yaml").is_file() and (out / "metrics.csv").is_file()
    assert "SI-SDR" in capsys.readouterr().err


def test_tts(tiny_dir, tmp_path, capsys, monkeypatch):
    import voxinv.voxtral.tts as tts

    out, codes = tmp_path / "o.wav", tmp_path / "c.safetensors"
    argv = ["tts", "--model", tiny_dir, "--voice", "casual_female", "--text", "Hi.", "--out", out, "--device", "cpu"]
    assert run(*argv, "--max-frames", 5, "--seed", 2, "--codes-out", codes, "-q") == 0
    wav, sr = sf.read(out)
    assert sr == 24000 and len(wav) == 5 * 1920 and load_codes(codes).shape == (5, 37)
    o = capsys.readouterr()
    assert "stopped at the frame cap 5" in o.out and "tts:" not in o.err  # a random tiny model never says END
    # default: the cap that fits the text (frame_cap), with a progress bar over frames on stderr
    seen = []
    monkeypatch.setattr(tts, "frame_cap", lambda text, rate: seen.append((text, rate)) or 4)
    assert run(*argv) == 0
    assert seen == [("Hi.", 12.5)] and len(sf.read(out)[0]) == 4 * 1920
    o = capsys.readouterr()
    assert "stopped at the frame cap 4" in o.out and "tts: 100%" in o.err and "4/4 [" in o.err


def test_frame_cap_grows_with_the_text_and_is_bounded():
    from voxinv.voxtral.tts import DEFAULT_MAX_FRAMES, frame_cap

    assert frame_cap("", 12.5) == 25 and frame_cap("a" * 40, 12.5) == 150  # 12.5/s · (2 s + 0.25 s/char)
    assert frame_cap("a" * 100_000, 12.5) == DEFAULT_MAX_FRAMES
