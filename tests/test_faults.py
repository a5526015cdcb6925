"""The fault matrix: what a new user can get wrong, and what voxinv answers. Read it as a table.

* ``BAD``: bad input → one line ``voxinv: error: …`` (exit 2) through the CLI (``python -m voxinv.run``,
  in-process) and the same message from the Python API (``voxinv.run.run`` raises). Audio faults run
  with the default ``model=voxtral`` offline: the audio error must come before any model is fetched.
* ``ACCEPTED``: awkward but valid recordings that must load (formats, rates, channels, bit depths).
* Interrupts (Ctrl-C / SIGTERM) at every phase, SIGKILL + resume, steps=0, output file modes,
  corrupt weights and unsafe files in the other CLI verbs.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch
from hydra import compose, initialize_config_dir

import voxinv.run as R
from voxinv.voxtral.codes import load_codes

SR = 24000
TINY = ["model=tiny", "device=cpu", "init=random", "steps=2", "eval_every=1", "eval.which=[]"]
TINY += ["trainer.enable_progress_bar=false"]


def tone(seconds: float = 0.5, sr: int = SR, channels: int = 1) -> np.ndarray:
    t = np.arange(int(seconds * sr)) / sr
    x = 0.3 * sum(np.sin(2 * np.pi * 180 * k * t) / k for k in range(1, 5)).astype(np.float32)
    return np.stack([x] * channels, 1) if channels > 1 else x


# ----------------------------------------------------------------------------- input makers
def wav(x, sr=SR, **kw):
    return lambda p: sf.write(str(p), x, sr, **kw) or p


def raw_bytes(data: bytes):
    def make(p: Path) -> Path:
        p.write_bytes(data)
        return p

    return make


def nan_audio(p: Path) -> Path:
    x = tone()
    x[100] = np.nan
    sf.write(str(p), x, SR, subtype="FLOAT")
    return p


def model_dir(tmp: Path, tiny: Path, *, params: str | None = None, cut: int | None = None) -> Path:
    """A copy of the tiny model with a replaced params.json or a truncated weights file."""
    d = tmp / "model"
    shutil.copytree(tiny, d)
    if params is not None:
        (d / "params.json").write_text(params)
    if cut is not None:
        f = d / "consolidated.safetensors"
        data = f.read_bytes()
        f.unlink()  # the tiny dir may be shared through a hard link: write a new file
        f.write_bytes(data[: len(data) // cut])
    return d


def unsafe_ckpt(p: Path) -> Path:
    torch.save({"state_dict": {}, "hook": print}, p)  # a pickle that references a callable
    return p


# (case, input file maker or None, overrides (with {in}, {tmp}, {tiny}), what the one line says)
BAD = [
    ("missing audio", None, ["target.path={tmp}/nope.wav"], "does not exist"),
    ("empty audio file", raw_bytes(b""), ["target.path={in}"], "cannot read audio"),
    ("not audio", raw_bytes(b"RIFF\x00\x00 not audio " * 20), ["target.path={in}"], "cannot read audio"),
    ("silent audio", wav(np.zeros(SR, np.float32)), ["target.path={in}"], "is silent"),
    ("10 ms audio", wav(tone(0.01)), ["target.path={in}"], "one 80 ms frame"),
    ("NaN audio", nan_audio, ["target.path={in}"], "NaN/inf"),
    ("no target.path", None, [], "needs target.path"),
    ("steps=-1", wav(tone()), ["target.path={in}", "steps=-1"], "steps=-1: must be >= 0"),
    ("max_seconds < 1 frame", wav(tone()), ["target.path={in}", "target.max_seconds=0.01"], "shorter than one 80 ms"),
    ("missing model dir", wav(tone()), ["target.path={in}", "model.path={tmp}/no-model"], "hf download"),
    ("params.json not Voxtral", wav(tone()), ["target.path={in}", "model.path={params}"], "not a Voxtral TTS"),
    ("truncated weights", wav(tone()), ["target.path={in}", "model.path={cut}"], "truncated or corrupt"),
    ("resume: unsafe pickle", unsafe_ckpt, ["model=tiny", "target=synthetic", "resume={in}"], "not a plain tensor"),
    ("resume: no checkpoint", None, ["model=tiny", "target=synthetic", "resume={tmp}/none"], "no checkpoint at"),
    ("spk loss, no resemblyzer", wav(tone()), ["target.path={in}", "loss=stft+spk", "@no-resemblyzer"], "resemblyzer"),
]


def _args(overrides: list[str], tmp: Path, tiny: Path, made: Path | None) -> list[str]:
    out = []
    for o in overrides:
        if "{params}" in o:
            o = o.replace("{params}", str(model_dir(tmp / "p", tiny, params='{"dim": 8}')))
        if "{cut}" in o:
            o = o.replace("{cut}", str(model_dir(tmp / "c", tiny, cut=2)))
        out.append(o.format(tmp=tmp, tiny=tiny, **{"in": made}))
    return out


@pytest.fixture(autouse=True)
def _env(voxinv_cache, monkeypatch):
    monkeypatch.setenv("VOXINV_CACHE", str(voxinv_cache))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")  # model=voxtral must never be fetched here


def _setup(case, maker, overrides, tmp_path, tiny_dir, monkeypatch) -> list[str]:
    made = maker(tmp_path / ("input.ckpt" if maker is unsafe_ckpt else "input.wav")) if maker else None
    if "@no-resemblyzer" in overrides:
        import voxinv.invert.speaker as S

        real = S.importlib.util.find_spec
        monkeypatch.setattr(S.importlib.util, "find_spec", lambda n, *a: None if n == "resemblyzer" else real(n, *a))
    return _args([o for o in overrides if not o.startswith("@")], tmp_path, tiny_dir, made)


def cli_run(monkeypatch, capsys, tmp_path: Path, args: list[str]) -> tuple[int, str]:
    """``python -m voxinv.run ARGS`` in-process: (exit code, stderr)."""
    monkeypatch.setattr(sys, "argv", ["voxinv.run", f"hydra.run.dir={tmp_path / 'run'}", *args])
    try:
        R.main()
        rc = 0
    except SystemExit as e:
        rc = e.code
    return rc, capsys.readouterr().err


def cfg_of(args: list[str]):
    with initialize_config_dir(config_dir=R.CONF_DIR, version_base="1.3"):
        return compose("config", overrides=args)


@pytest.mark.parametrize(("case", "maker", "overrides", "says"), BAD, ids=[c[0] for c in BAD])
def test_bad_input_cli(case, maker, overrides, says, tmp_path, tiny_dir, monkeypatch, capsys):
    args = _setup(case, maker, overrides, tmp_path, tiny_dir, monkeypatch)
    rc, err = cli_run(monkeypatch, capsys, tmp_path, [*TINY[1:], *args])  # model=voxtral unless the case says
    lines = [ln for ln in err.splitlines() if not ln.startswith("[")]  # log lines carry a [time] prefix
    assert rc == 2 and len(lines) == 1 and lines[0].startswith("voxinv: error: "), err
    assert says in lines[0] and "Traceback" not in err
    assert "cannot fetch" not in err  # nothing was downloaded (or tried) for a bad recording


@pytest.mark.parametrize(("case", "maker", "overrides", "says"), BAD, ids=[c[0] for c in BAD])
def test_bad_input_python(case, maker, overrides, says, tmp_path, tiny_dir, monkeypatch):
    args = _setup(case, maker, overrides, tmp_path, tiny_dir, monkeypatch)
    cfg = cfg_of([*TINY[1:], *args])
    with pytest.raises((ValueError, RuntimeError, ImportError, OSError)) as e:  # AudioError, CheckpointError, …
        R.run(cfg, tmp_path / "run")
    assert says in str(e.value) and "weights_only=False" not in str(e.value)


def test_unwritable_run_dir(tmp_path, monkeypatch, capsys):
    (tmp_path / "file").write_text("")  # a file where a directory should be: unwritable even for root
    rc, err = cli_run(monkeypatch, capsys, tmp_path, [*TINY, "target=synthetic", f"hydra.run.dir={tmp_path}/file/x"])
    assert rc == 2 and err.count("\n") == 1 and "cannot write to hydra.run.dir" in err
    with pytest.raises(ValueError, match="is not writable"):
        R.run(cfg_of([*TINY, "target=synthetic"]), tmp_path / "file" / "x")


# ------------------------------------------------------------------------- accepted recordings
ACCEPTED = [
    ("FLAC", "a.flac", wav(tone(), format="FLAC")),
    ("OGG Vorbis", "a.ogg", wav(tone(), format="OGG", subtype="VORBIS")),
    ("MP3", "a.mp3", wav(tone(), format="MP3")),
    ("8 kHz stereo", "a.wav", wav(tone(0.5, 8000, channels=2), 8000)),
    ("48 kHz 24-bit", "a.wav", wav(tone(0.5, 48000), 48000, subtype="PCM_24")),
]


@pytest.mark.parametrize(("case", "name", "maker"), ACCEPTED, ids=[c[0] for c in ACCEPTED])
def test_accepted_recordings(case, name, maker, tmp_path):
    from omegaconf import OmegaConf

    from voxinv.invert.target import load_file

    conf = OmegaConf.load(Path(R.CONF_DIR) / "target" / "file.yaml")  # the reading settings of target=file
    t = load_file(maker(tmp_path / name), SR, 1920, **{k: conf[k] for k in ("trim", "trim_db", "peak", "max_seconds")})
    assert t.n_frames == 7 and t.wav.numel() == 7 * 1920  # 0.5 s, trimmed by at most a hop, padded up
    assert float(t.wav.abs().max()) == pytest.approx(0.08)


def test_accepted_recording_cli_end_to_end(tmp_path, monkeypatch, capsys):
    wav(tone(0.5, 48000, channels=2), 48000, subtype="PCM_24")(tmp_path / "a.wav")
    rc, err = cli_run(monkeypatch, capsys, tmp_path, [*TINY, f"target.path={tmp_path / 'a.wav'}"])
    assert rc == 0, err
    m = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert m["target"]["frames"] == 7 and m["steps"] == 2 and m["stopped"] is None


# ------------------------------------------------------------------------------ run outputs
def test_steps_zero_says_only_the_init_ran(tmp_path, monkeypatch, capsys):
    rc, err = cli_run(monkeypatch, capsys, tmp_path, [*TINY, "target=synthetic", "target.n_frames=3", "steps=0"])
    assert rc == 0
    assert "steps=0: only the init (random) ran; its codes were exported" in err
    assert json.loads((tmp_path / "run" / "metrics.json").read_text())["steps"] == 0


def test_output_modes_and_atomic_config(tmp_path, monkeypatch, capsys):
    umask = os.umask(0o022)
    try:
        rc, _ = cli_run(monkeypatch, capsys, tmp_path, [*TINY, "target=synthetic", "target.n_frames=3"])
    finally:
        os.umask(umask)
    assert rc == 0
    out = tmp_path / "run"
    for name in ("codes.safetensors", "true_codes.safetensors", "voice.pt", "metrics.json", "config.yaml"):
        assert (out / name).stat().st_mode & 0o777 == 0o644, name
    assert not list(out.glob("*.tmp"))


# ----------------------------------------------------------------------- other CLI verbs
@pytest.mark.parametrize(
    ("case", "argv", "says"),
    [
        (
            "decode, truncated weights",
            ["decode", "--model", "{cut}", "--codes", "{c}", "--out", "{tmp}/o.wav"],
            "truncated",
        ),
        (
            "decode, unsafe .pt codes",
            ["decode", "--model", "{tiny}", "--codes", "{pt}", "--out", "{tmp}/o.wav"],
            "plain",
        ),
        (
            "voice2codes, unsafe voice",
            ["voice2codes", "--model", "{tiny}", "--voice", "{pt}", "--out", "{tmp}/c.npy"],
            "plain",
        ),
    ],
    ids=["decode-truncated-weights", "decode-unsafe-pt", "voice2codes-unsafe-voice"],
)
def test_other_verbs(case, argv, says, tmp_path, tiny_dir, capsys):
    from voxinv import cli

    np.save(tmp_path / "c.npy", np.zeros((4, 37), dtype=np.int64))
    fmt = {"cut": model_dir(tmp_path, tiny_dir, cut=2), "c": tmp_path / "c.npy", "tmp": tmp_path, "tiny": tiny_dir}
    fmt["pt"] = unsafe_ckpt(tmp_path / "x.pt")
    assert cli.main([a.format(**fmt) for a in argv]) == 2
    err = capsys.readouterr().err
    assert err.startswith("voxinv: error: ") and err.count("\n") == 1 and says in err
    assert "weights_only=False" not in err


# --------------------------------------------------------------------------------- interrupts
def _spawn(tmp_path: Path, *args: str) -> subprocess.Popen:
    env = {**os.environ, "PYTHONPATH": str(Path(R.__file__).parents[1]), "PYTHONUNBUFFERED": "1"}
    tmp_path.mkdir(parents=True, exist_ok=True)
    cmd = [sys.executable, "-m", "voxinv.run", f"hydra.run.dir={tmp_path / 'run'}", *TINY, *args]
    return subprocess.Popen(cmd, stderr=subprocess.PIPE, text=True, env=env, cwd=tmp_path)


def _signal_when(p: subprocess.Popen, marker: str, sig: int, timeout: float = 240) -> str:
    """Read stderr until ``marker`` shows, send ``sig``; return all stderr after the process ends."""
    seen, t0 = "", time.time()
    while marker not in seen:
        ch = p.stderr.read(1)
        assert ch, f"process ended before {marker!r}:\n{seen[-2000:]}"
        seen += ch
        assert time.time() - t0 < timeout, seen[-2000:]
    time.sleep(0.5)
    p.send_signal(sig)
    _, rest = p.communicate(timeout=timeout)
    return seen + rest


CD = ["init=coord_descent", "init.sweeps=2", "init.context=2", "init.shortlist=4", "init.gn_steps=0"]


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM], ids=["ctrl-c", "sigterm"])
def test_interrupt_during_init_exports_what_it_found(sig, tmp_path):
    p = _spawn(tmp_path, "target=synthetic", "target.n_frames=40", "steps=50", *CD)
    err = _signal_when(p, "coord_descent:", sig)
    assert p.returncode == 0, err
    m = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert m["stopped"].startswith("interrupted during the init (restart 1/1, frame visit ")
    assert m["steps"] == 0 and "interrupted" in m["init"] and "stopped early" in err
    assert load_codes(tmp_path / "run" / "codes.safetensors").shape == (40, 37)


def test_sigterm_during_fit_exports_the_current_codes(tmp_path):
    p = _spawn(tmp_path, "target=synthetic", "target.n_frames=3", "steps=100000", "checkpoint_every=1")
    deadline = time.time() + 240
    while not (tmp_path / "run" / "checkpoints" / "last.ckpt").exists():
        assert p.poll() is None and time.time() < deadline
        time.sleep(0.2)
    p.send_signal(signal.SIGTERM)
    _, err = p.communicate(timeout=240)
    assert p.returncode == 0, err
    m = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert m["stopped"].startswith("interrupted at step ") and 0 < m["steps"] < 100000


def test_interrupt_before_any_codes_says_nothing_was_exported(tmp_path, monkeypatch, capsys):
    def ctrl_c(*a, **kw):
        raise KeyboardInterrupt

    monkeypatch.setattr("voxinv.voxtral.models.load_model", ctrl_c)  # voxinv.run imports it when a run starts
    rc, err = cli_run(monkeypatch, capsys, tmp_path, [*TINY, "target=synthetic"])
    assert rc == 130 and "nothing to export" in err and not (tmp_path / "run" / "metrics.json").exists()


def test_interrupt_before_fitting_exports_the_initial_codes(tmp_path, monkeypatch):
    def ctrl_c(*a, **kw):
        raise KeyboardInterrupt

    monkeypatch.setattr("voxinv.invert.fit.fit", ctrl_c)
    m = R.run(cfg_of([*TINY, "target=synthetic", "target.n_frames=3"]), tmp_path / "run")
    assert m["stopped"] == "interrupted before fitting; exported the initial codes" and m["steps"] == 0


@pytest.mark.slow
def test_sigkill_then_resume_gives_identical_codes(tmp_path):
    args = ["target=synthetic", "target.n_frames=3", "steps=40", "checkpoint_every=5", "eval_every=5"]
    a = _spawn(tmp_path / "a", *args)
    assert a.wait(600) == 0
    b = _spawn(tmp_path / "b", *args)
    deadline = time.time() + 600
    while not (tmp_path / "b" / "run" / "checkpoints" / "last.ckpt").exists():
        assert b.poll() is None and time.time() < deadline
        time.sleep(0.1)
    b.kill()
    b.wait()
    c = _spawn(tmp_path / "b", *args, "resume=true")
    assert c.wait(600) == 0
    ca, cb = (load_codes(tmp_path / x / "run" / "codes.safetensors") for x in ("a", "b"))
    assert torch.equal(ca, cb)
