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
    ("steps=-1", wav(tone()), ["target.path={in}", "steps=-1"], "steps=-1: must be an integer >= 0"),
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
        import voxinv.speaker.ge2e as S

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
    assert p.returncode == 128 + sig, err  # 130 Ctrl-C, 143 SIGTERM: interrupted, not success
    m = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert m["exit_code"] == 128 + sig
    assert m["stopped"].startswith("interrupted during the init (restart 1/1, frame visit ")
    assert m["steps"] == 0 and "interrupted" in m["init"] and "stopped early" in err
    assert load_codes(tmp_path / "run" / "codes.safetensors").shape == (40, 37)


def test_sigterm_during_fit_exports_the_current_codes(tmp_path):
    # early stop off: with eval_every=1 it may end the run (exit 0) before the signal arrives on a loaded machine
    stop_off = "callbacks.early_stop.patience=0"
    p = _spawn(tmp_path, "target=synthetic", "target.n_frames=3", "steps=100000", "checkpoint_every=1", stop_off)
    deadline = time.time() + 240
    while not (tmp_path / "run" / "checkpoints" / "last.ckpt").exists():
        assert p.poll() is None and time.time() < deadline
        time.sleep(0.2)
    p.send_signal(signal.SIGTERM)
    _, err = p.communicate(timeout=240)
    assert p.returncode == 143, err
    m = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert m["stopped"].startswith("interrupted at step ") and 0 < m["steps"] < 100000 and m["exit_code"] == 143


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
    assert m["exit_code"] == 130


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


# ========================================================================= trusted inputs (issue 19)
REPO = Path(R.__file__).resolve().parents[1]


def test_no_torch_load_without_weights_only_in_the_source_tree():
    """Every ``torch.load`` in the project passes ``weights_only=True`` (a pickle never runs code)."""
    import re

    bad = []
    for p in [*REPO.glob("voxinv/**/*.py"), *REPO.glob("experiments/**/*.py"), *REPO.glob("tests/**/*.py")]:
        text = p.read_text()
        if p.name == "test_faults.py":
            text = text.split("# ========================================================================= trusted")[0]
        for m in re.finditer(r"torch\.load\(", text):
            call = text[m.start() : text.find("\n\n", m.start())][:400]
            depth, end = 0, 0
            for i, ch in enumerate(call):
                depth += ch == "("
                depth -= ch == ")"
                if depth == 0 and ch == ")":
                    end = i
                    break
            if "weights_only=True" not in call[: end + 1]:
                bad.append(f"{p.relative_to(REPO)}:{text[: m.start()].count(chr(10)) + 1}")
        unsafe = re.finditer(r'(?<!")weights_only\s*=\s*False(?!")', text)  # in code, not in a quoted message
        bad += [f"{p.relative_to(REPO)}: weights_only=False" for _ in unsafe]
    assert not bad, bad


class _Payload:
    """Unpickling it would create ``marker`` (what a crafted checkpoint does with a shell command)."""

    def __init__(self, marker: Path):
        self.marker = str(marker)

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def evil_pickle(p: Path, marker: Path, **extra) -> Path:
    p.parent.mkdir(parents=True, exist_ok=True)
    torch.save({"state_dict": {}, "global_step": 1, "epoch": 0, "hook": _Payload(marker), **extra}, p)
    return p


def _one_error_line(err: str) -> str:
    lines = [ln for ln in err.splitlines() if ln.strip() and not ln.startswith("[")]
    assert len(lines) == 1 and lines[0].startswith("voxinv: error: "), err
    assert "Traceback" not in err and "weights_only=False" not in err
    return lines[0]


def test_the_malicious_checkpoint_really_runs_code_when_unpickled(tmp_path):
    """The fixture is a real exploit: plain ``torch.load(weights_only=False)`` runs it."""
    marker = tmp_path / "pwned"
    torch.load(evil_pickle(tmp_path / "x.ckpt", marker), weights_only=False)  # the control case
    assert marker.exists()


@pytest.mark.parametrize("how", ["resume=<file>", "resume=true"])
def test_run_resume_never_unpickles_code(how, tmp_path, monkeypatch, capsys):
    marker, run = tmp_path / "pwned", tmp_path / "run"
    if how == "resume=true":  # a run directory of ours whose last.ckpt was replaced
        evil_pickle(run / "checkpoints" / "last.ckpt", marker)
        (run / ".voxinv-run.json").write_text('{"kind": "invert"}')
        arg = "resume=true"
    else:
        arg = f"resume={evil_pickle(tmp_path / 'evil.ckpt', marker)}"
    rc, err = cli_run(monkeypatch, capsys, tmp_path, [*TINY, "target=synthetic", "target.n_frames=3", arg])
    assert rc == 2 and "not a plain tensor file" in _one_error_line(err)
    assert not marker.exists()


@pytest.mark.usefixtures("tiny_cache_env")
@pytest.mark.parametrize("how", ["resume=<file>", "resume=true", "truncated"])
def test_train_encoder_resume_never_unpickles_code(how, tmp_path, monkeypatch, capsys):
    import voxinv.train_encoder as TE

    marker, run = tmp_path / "pwned", tmp_path / "run"
    wav(tone(1.0))(tmp_path / "a.wav")
    says = "not a plain tensor file"
    if how == "truncated":
        data = evil_pickle(tmp_path / "t.ckpt", marker).read_bytes()
        (tmp_path / "t.ckpt").write_bytes(data[: len(data) // 2])
        arg, says = f"resume={tmp_path / 't.ckpt'}", "cannot read it as a Lightning checkpoint"
    elif how == "resume=true":
        evil_pickle(run / "checkpoints" / "last.ckpt", marker)
        (run / ".voxinv-run.json").write_text('{"kind": "train_encoder"}')
        arg = "resume=true"
    else:
        arg = f"resume={evil_pickle(tmp_path / 'evil.ckpt', marker)}"
    argv = ["te", f"hydra.run.dir={run}", "model=tiny", "device=cpu", "steps=2", "batch_size=2"]
    argv += [f"data.sources=[{tmp_path / 'a.wav'}]", "data.crop_frames=4", "encoder.data_init=0", arg]
    monkeypatch.setattr(sys, "argv", argv)
    with pytest.raises(SystemExit) as e:
        TE.main()
    assert e.value.code == 2 and says in _one_error_line(capsys.readouterr().err)
    assert not marker.exists()


@pytest.mark.parametrize(
    "argv",
    [
        ["voice2codes", "--model", "{tiny}", "--voice", "{evil}", "--out", "{tmp}/c.npy"],
        ["voice2wav", "--model", "{tiny}", "--voice", "{evil}", "--out", "{tmp}/o.wav"],
        ["register-voice", "--model", "{tiny}", "--voice-file", "{evil}", "--name", "x", "--out", "{tmp}/ov"],
        ["decode", "--model", "{tiny}", "--codes", "{evil}", "--out", "{tmp}/o.wav"],
        ["tts", "--model", "{tiny}", "--voice", "{evil}", "--text", "hi", "--out", "{tmp}/o.wav", "--device", "cpu"],
    ],
    ids=lambda a: a[0],
)
def test_cli_verbs_never_unpickle_code(argv, tmp_path, tiny_dir, capsys, monkeypatch):
    import logging

    from voxinv import cli

    monkeypatch.setattr(logging.getLogger(), "handlers", [])  # earlier in-process Hydra runs' handlers (closed streams)
    marker = tmp_path / "pwned"
    evil = evil_pickle(tmp_path / "evil.pt", marker)
    assert cli.main([a.format(tiny=tiny_dir, evil=evil, tmp=tmp_path) for a in argv]) == 2
    _one_error_line(capsys.readouterr().err)
    assert not marker.exists()


@pytest.mark.usefixtures("tiny_cache_env")
def test_warm_start_from_a_pickle_never_unpickles_code(tmp_path, monkeypatch, capsys):
    marker = tmp_path / "pwned"
    evil = evil_pickle(tmp_path / "codes.pt", marker)
    args = [*TINY, "target=synthetic", "target.n_frames=3", "init=warm_start", f"init.source={evil}"]
    rc, err = cli_run(monkeypatch, capsys, tmp_path, args)
    assert rc == 2 and not marker.exists()
    _one_error_line(err)


# ---------------------------------------------------------------------- the run directory claim
def _finished_run(d: Path, kind: str = "invert") -> Path:
    """What a finished run leaves (its own files, written by hand: the claim only reads names and the marker)."""
    d.mkdir(parents=True, exist_ok=True)
    (d / ".voxinv-run.json").write_text(json.dumps({"kind": kind}))
    for name in ("metrics.json", "config.yaml", "codes.safetensors", "true_codes.safetensors", "voice.pt"):
        (d / name).write_text("{}" if name.endswith("json") else "old")
    (d / ".hydra").mkdir()
    (d / ".hydra" / "config.yaml").write_text("old")
    return d


def test_a_foreign_directory_is_refused_and_never_deleted(tmp_path, monkeypatch, capsys):
    run = tmp_path / "run"
    (run / "checkpoints").mkdir(parents=True)
    (run / "checkpoints" / "keep.pt").write_text("x")
    rc, err = cli_run(monkeypatch, capsys, tmp_path, [*TINY, "target=synthetic"])
    assert rc == 2 and "is not empty" in _one_error_line(err) and "overwrite=true" in err
    assert sorted(p.name for p in run.rglob("*")) == ["checkpoints", "keep.pt"]  # nothing written, nothing removed
    with pytest.raises(ValueError, match="is not empty"):
        R.run(cfg_of([*TINY, "target=synthetic"]), run)


@pytest.mark.parametrize("where", ["/", "/usr", "~"])
def test_system_and_home_directories_are_refused(where, tmp_path, monkeypatch, capsys):
    d = str(Path(where).expanduser())
    rc, err = cli_run(monkeypatch, capsys, tmp_path, [*TINY, "target=synthetic", f"hydra.run.dir={d}"])
    assert rc == 2 and "refusing to use" in _one_error_line(err)
    assert not Path(d, ".voxinv-run.json").exists() and not Path(d, ".voxinv-run.lock").exists()


@pytest.mark.parametrize("extra", [[], ["resume=true"], ["overwrite=true"]], ids=["plain", "resume", "overwrite"])
def test_a_failed_invocation_leaves_a_finished_run_untouched(extra, tmp_path, monkeypatch, capsys):
    run = _finished_run(tmp_path / "run")
    before = {p: p.read_bytes() for p in run.rglob("*") if p.is_file()}
    rc, err = cli_run(monkeypatch, capsys, tmp_path, [*TINY, f"target.path={tmp_path}/nope.wav", *extra])
    assert rc == 2, err
    _one_error_line(err)
    assert {p: p.read_bytes() for p in run.rglob("*") if p.is_file() and p.name != ".voxinv-run.lock"} == before


def test_reusing_a_finished_run(tmp_path, monkeypatch, capsys):
    """Refused without overwrite; with it the old run's own files go first (no stale true codes beside a
    file target's codes), anything else stays; resume with another optimisation is refused (keys named)."""
    run = _finished_run(tmp_path / "run")
    (run / "notes.txt").write_text("mine")
    wav(tone())(tmp_path / "a.wav")
    args = [*TINY, f"target.path={tmp_path / 'a.wav'}"]
    rc, err = cli_run(monkeypatch, capsys, tmp_path, args)
    assert rc == 2 and "already holds a finished voxinv run" in _one_error_line(err)
    rc, err = cli_run(monkeypatch, capsys, tmp_path, [*args, "overwrite=true"])
    assert rc == 0, err
    assert not (run / "true_codes.safetensors").exists() and (run / "notes.txt").read_text() == "mine"
    m = json.loads((run / "metrics.json").read_text())
    assert "truth" not in m and m["exit_code"] == 0 and m["target"]["frames"] == 7
    assert json.loads((run / ".voxinv-run.json").read_text())["kind"] == "invert"
    config = (run / "config.yaml").read_text()
    rc, err = cli_run(monkeypatch, capsys, tmp_path, [*args, "resume=true", "loss=l1", "optim.lr=0.1", "steps=4"])
    line = _one_error_line(err)
    assert rc == 2 and "config differs" in line and "loss.weights.l1" in line and "optim.lr" in line
    assert "steps" not in line.split("differs")[1].split(";")[0]  # steps may change on resume
    assert (run / "config.yaml").read_text() == config
    rc, err = cli_run(monkeypatch, capsys, tmp_path, [*TINY, "target=synthetic", "resume=true"])
    assert rc == 2 and "target" in _one_error_line(err)


def _hold_lock(d: Path):
    import fcntl

    d.mkdir(parents=True, exist_ok=True)
    fd = os.open(d / ".voxinv-run.lock", os.O_RDWR | os.O_CREAT)
    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    os.write(fd, b"4242")
    return fd


def test_a_directory_in_use_is_refused(tmp_path, monkeypatch, capsys):
    fd = _hold_lock(tmp_path / "run")  # another process's run (a second open file description)
    try:
        rc, err = cli_run(monkeypatch, capsys, tmp_path, [*TINY, "target=synthetic"])
        assert rc == 2 and "in use by another voxinv run (pid 4242)" in _one_error_line(err)
        with pytest.raises(ValueError, match="in use"):
            R.run(cfg_of([*TINY, "target=synthetic"]), tmp_path / "run")
    finally:
        os.close(fd)
    assert sorted(p.name for p in (tmp_path / "run").iterdir()) == [".voxinv-run.lock"]


def test_two_runs_in_the_same_second_get_their_own_directories(tmp_path):
    """The default outputs/<date>/<time>: a taken directory (locked, or holding a run) gets a -1, -2 suffix."""
    from voxinv import rundir
    from voxinv.invert.guard import CheckRunDir

    base = tmp_path / "outputs" / "12-00-00"
    fd = _hold_lock(base)
    _finished_run(Path(f"{base}-1"))
    try:
        with initialize_config_dir(config_dir=R.CONF_DIR, version_base="1.3"):
            cfg = compose("config", overrides=[*TINY, "target=synthetic"], return_hydra_config=True)
        from omegaconf import open_dict

        with open_dict(cfg):
            cfg.hydra.run.dir = str(base)  # as the ${now:} default resolves, not an override
        CheckRunDir("invert").on_run_start(cfg)
        assert cfg.hydra.run.dir == f"{base}-2"
        assert rundir.held(f"{base}-2") is not None
    finally:
        rundir.release(f"{base}-2")
        os.close(fd)


def test_make_tiny_refuses_an_existing_model_directory(tmp_path, capsys):
    from safetensors import safe_open

    from voxinv import cli

    d = tmp_path / "m"
    assert cli.main(["make-tiny", str(d), "--seed", "3"]) == 0
    w = (d / "consolidated.safetensors").read_bytes()
    capsys.readouterr()
    assert cli.main(["make-tiny", str(d), "--seed", "7"]) == 2
    assert "--overwrite" in _one_error_line(capsys.readouterr().err)
    assert (d / "consolidated.safetensors").read_bytes() == w
    assert cli.main(["make-tiny", str(d), "--seed", "7", "--overwrite"]) == 0
    assert (d / "consolidated.safetensors").read_bytes() != w
    with safe_open(str(d / "consolidated.safetensors"), framework="pt") as f:
        assert f.keys()


# --------------------------------------------------------------------------- settings, one line
SETTINGS_BAD = [
    ("batch=0", "batch=0: must be an integer >= 1"),
    ("batch=-1", "batch=-1: must be"),
    ("device=foo", "device=foo: must be auto, cpu, cuda or cuda:N"),
    ("target.n_frames=0", "target.n_frames=0: must be"),
    ("window.context=-1", "window.context=-1: must be"),
    ("window.frames=-10", "window.frames=-10: must be"),
    ("window.frames=0", "window.frames=0: must be an integer >= 1 or null"),
    ("model.dtype=float16", "model.dtype=float16: must be one of"),
    ("optim.lr=1e38", "optim.lr=1e+38: must be a finite number"),
    ("optim.lr=inf", "optim.lr=inf: must be a finite number"),
    ("optim.lr=-1", "optim.lr=-1: must be a finite number in [0, 1000]"),
    ("seed=abc", "seed=abc: must be an integer"),
    ("eval_every=-5", "eval_every=-5: must be"),
    ("target.peak=0", "target.peak=0"),
]


@pytest.mark.parametrize(("override", "says"), SETTINGS_BAD, ids=[c[0] for c in SETTINGS_BAD])
def test_bad_settings_are_one_line_naming_the_key(override, says, tmp_path, monkeypatch, capsys):
    target = ["target.path=x.wav"] if override.startswith("target.peak") else ["target=synthetic"]
    rc, err = cli_run(monkeypatch, capsys, tmp_path, [*TINY, *target, override])
    assert rc == 2 and says in _one_error_line(err)
    assert not (tmp_path / "run").exists()  # checked before anything is written
    with pytest.raises(ValueError, match=says.split(":")[0].replace("+", r"\+")):
        R.run(cfg_of([*TINY, *target, override]), tmp_path / "api")


@pytest.mark.usefixtures("tiny_cache_env")
@pytest.mark.parametrize(
    ("override", "says"),
    [("data.crop_frames=0", "data.crop_frames=0"), ("steps=-1", "steps=-1"), ("batch_size=0", "batch_size=0")],
)
def test_train_encoder_bad_settings(override, says, tmp_path, monkeypatch, capsys):
    import voxinv.train_encoder as TE

    wav(tone(1.0))(tmp_path / "a.wav")
    argv = ["te", f"hydra.run.dir={tmp_path / 'run'}", "model=tiny", "device=cpu", f"data.sources=[{tmp_path}/a.wav]"]
    monkeypatch.setattr(sys, "argv", [*argv, override])
    with pytest.raises(SystemExit) as e:
        TE.main()
    assert e.value.code == 2 and says in _one_error_line(capsys.readouterr().err)
    assert not (tmp_path / "run").exists()


def test_train_encoder_unwritable_run_dir(tmp_path, monkeypatch, capsys):
    import voxinv.train_encoder as TE

    monkeypatch.setattr(sys, "argv", ["te", "hydra.run.dir=/proc/x", "model=tiny"])
    with pytest.raises(SystemExit) as e:
        TE.main()
    assert e.value.code == 2 and "cannot write to hydra.run.dir" in _one_error_line(capsys.readouterr().err)


TTS_OUT = ["tts", "--model", "{tiny}", "--voice", "casual_male", "--text", "a", "--out", "{tmp}/o.wav"]


@pytest.mark.parametrize(
    ("argv", "says"),
    [
        (["decode", "--model", "{tiny}", "--codes", "{c}", "--out", "/proc/x/o.wav"], "--out /proc/x/o.wav"),
        (["voice2codes", "--model", "{tiny}", "--voice", "casual_male", "--out", "/proc/x/c.npy"], "--out"),
        (["tts", "--model", "{tiny}", "--voice", "casual_male", "--text", "a", "--out", "/proc/x/o.wav"], "--out"),
        (["make-tiny", "/proc/x/m"], "cannot write there"),
        (["decode", "--model", "{tiny}", "--codes", "{c}", "--out", "{tmp}/o.wav", "--device", "foo"], "--device foo"),
        ([*TTS_OUT, "--max-frames", "-3"], "--max-frames -3"),
        ([*TTS_OUT, "--max-frames", "0"], "--max-frames 0"),
        (
            ["decode", "--model", "{tiny}", "--codes", "{c}", "--out", "{tmp}/o.wav", "--format", "model"],
            "--format raw",
        ),
        (["voice2wav", "--model", "{tiny}", "--voice", "{w}", "--out", "{tmp}/o.wav"], "is audio, not a voice prompt"),
    ],
    ids=[
        "decode-out",
        "voice2codes-out",
        "tts-out",
        "make-tiny-out",
        "device",
        "max-frames-neg",
        "max-frames-0",
        "format-mismatch",
        "voice2wav-wav",
    ],
)
def test_cli_bad_values(argv, says, tmp_path, tiny_dir, capsys):
    from voxinv import cli

    np.save(tmp_path / "c.npy", np.full((4, 37), 3, dtype=np.int64))
    wav(tone())(tmp_path / "w.wav")
    fmt = {"tiny": tiny_dir, "c": tmp_path / "c.npy", "tmp": tmp_path, "w": tmp_path / "w.wav"}
    assert cli.main([a.format(**fmt) for a in argv]) == 2
    assert says in _one_error_line(capsys.readouterr().err)
    assert not (tmp_path / "o.wav").exists()


# ------------------------------------------------------------------- disk full, export, exit codes
def _enospc(*a, **kw):
    import errno

    raise OSError(errno.ENOSPC, "No space left on device", str(a[0]) if a else None)


def test_disk_full_while_checkpointing_keeps_the_last_good_checkpoint(tmp_path, monkeypatch, capsys):
    from voxinv.invert import callbacks

    real, calls = callbacks.AtomicCheckpointIO.save_checkpoint, []

    def full_after_one(self, checkpoint, path, storage_options=None):
        calls.append(path)
        if len(calls) == 1:
            return real(self, checkpoint, path, storage_options)
        import voxinv.rundir as rd

        rd.atomic_write(path, lambda tmp: (tmp.write_bytes(b"half"), _enospc(tmp)))  # fails mid-write

    monkeypatch.setattr(callbacks.AtomicCheckpointIO, "save_checkpoint", full_after_one)
    args = [
        *TINY,
        "target=synthetic",
        "target.n_frames=3",
        "steps=6",
        "checkpoint_every=2",
        "callbacks.early_stop.patience=0",
    ]
    rc, err = cli_run(monkeypatch, capsys, tmp_path, args)
    run = tmp_path / "run"
    assert rc == 3, err
    assert torch.load(run / "checkpoints" / "last.ckpt", weights_only=True)["global_step"] == 2  # intact
    assert not list(run.rglob("*.tmp"))
    m = json.loads((run / "metrics.json").read_text())  # the export itself had room: the codes so far
    assert m["exit_code"] == 3 and m["stopped"].startswith("failed at step") and "No space left" in m["stopped"]


def test_disk_full_at_export_is_one_line_and_never_looks_finished(tmp_path, monkeypatch, capsys):
    run = _finished_run(tmp_path / "run")
    real = Path.write_bytes

    def full_for_wavs(self, data):  # the WAV writer's own write (write_wav encodes in memory, then writes)
        return _enospc(self) if self.name.startswith(".reconstruction.wav") else real(self, data)

    monkeypatch.setattr(Path, "write_bytes", full_for_wavs)
    rc, err = cli_run(monkeypatch, capsys, tmp_path, [*TINY, "target=synthetic", "target.n_frames=3", "overwrite=true"])
    assert rc == 3 and "No space left on device" in _one_error_line(err)
    assert not (run / "metrics.json").exists()  # removed before the export, written only after all the rest
    assert (run / "checkpoints" / "last.ckpt").is_file()


def test_nan_stop_exits_3(tmp_path, monkeypatch, capsys):
    from voxinv.invert import module

    def nan_now(self, *a, **kw):
        raise module.NonFiniteLoss("non-finite loss at step 1")

    monkeypatch.setattr(module.InversionModule, "training_step", nan_now)
    rc, err = cli_run(monkeypatch, capsys, tmp_path, [*TINY, "target=synthetic", "target.n_frames=3"])
    m = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert rc == 3 and m["exit_code"] == 3 and "non-finite" in m["stopped"], err


def test_umask_is_respected(tmp_path, monkeypatch, capsys):
    umask = os.umask(0o077)  # a person's voice: private when the user asks for it
    try:
        rc, _ = cli_run(monkeypatch, capsys, tmp_path, [*TINY, "target=synthetic", "target.n_frames=3"])
    finally:
        os.umask(umask)
    assert rc == 0
    for name in ("codes.safetensors", "target.wav", "voice.pt", "metrics.json", "config.yaml"):
        assert (tmp_path / "run" / name).stat().st_mode & 0o777 == 0o600, name


def test_write_probes_are_unique_per_process(tmp_path, monkeypatch):
    from voxinv import rundir

    seen, orig = [], Path.write_text

    def spy(self, *a, **kw):
        seen.append(self.name)
        return orig(self, *a, **kw)

    monkeypatch.setattr(Path, "write_text", spy)
    rundir.write_probe(tmp_path)
    rundir.write_probe(tmp_path)
    assert len(set(seen)) == 2 and all(f".{os.getpid()}." in n for n in seen) and not list(tmp_path.iterdir())


def test_a_truncated_generated_tiny_cache_is_regenerated(tmp_path, tiny_dir, monkeypatch):
    from voxinv.voxtral.models import _intact, model_path
    from voxinv.voxtral.tiny import tiny_fingerprint

    monkeypatch.setenv("VOXINV_CACHE", str(tmp_path))
    model_dir(tmp_path / "x", tiny_dir, cut=2).rename(tmp_path / f"tiny-seed0-{tiny_fingerprint()}")
    path = Path(model_path(cfg_of(["model=tiny"]).model))
    assert path == tmp_path / f"tiny-seed0-{tiny_fingerprint()}" and _intact(path / "consolidated.safetensors")
