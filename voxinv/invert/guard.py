"""What guards a run: input checks before any model is fetched, the resume checkpoint, Ctrl-C /
SIGTERM handling (an interrupt exports the best codes so far; outputs are never half-written) and
the Hydra callback that checks the run directory before Hydra writes into it."""

from __future__ import annotations

import logging
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from hydra.experimental.callback import Callback
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf

from voxinv import rundir
from voxinv.invert.target import TargetSource

log = logging.getLogger("voxinv")


# ------------------------------------------------------------------------------------ inputs
def check_inputs(cfg: DictConfig, out: Path) -> TargetSource:
    """Everything that can be checked before any model is resolved (no download for a bad input):
    steps, optional packages of the chosen losses (and graders: a warning), the run directory, and
    the target (``target=file``: the recording is read and validated). Returns the target source
    (``conf/target``, instantiated) whose ``build`` makes the target once the model is loaded."""
    if int(cfg.steps) < 0:
        raise ValueError(f"steps={cfg.steps}: must be >= 0 (steps=0 runs only the init and exports its codes)")
    missing_packages(cfg)
    try:
        _probe(out)
    except OSError as e:
        raise ValueError(
            f"run directory {out} is not writable ({e.strerror}): pass hydra.run.dir=<a writable directory>"
        ) from None
    source = instantiate(cfg.target)
    source.check()
    return source


def missing_packages(cfg: DictConfig) -> None:
    """A loss whose package is missing is an error (one line, the install command); a grader's is a
    warning (its metrics are recorded as skipped)."""
    import importlib.util

    from voxinv.invert.speaker import INSTALL_HINT, weights_path

    weights = dict(cfg.loss.weights)
    ramps = cfg.schedule.get("ramps") or {}
    if weights.get("spk", 0) > 0 or "spk" in ramps:
        weights_path()  # SpeakerEncoderUnavailable names the install command
    if weights.get("spk_dvec", 0) > 0 or "spk_dvec" in ramps:
        from voxinv.invert.dvector import DVectorUnavailable, onnx_path

        onnx_path()  # DVectorUnavailable names the install command
        if importlib.util.find_spec("onnx") is None:
            raise DVectorUnavailable("loss spk_dvec reads the embedder's weights with onnx: pip install onnx")
    need = {"perceptual": ["pesq", "pystoi", "speechmos", "onnxruntime"], "asr": ["pocketsphinx"]}
    need["speaker"] = ["resemblyzer", "webrtcvad"]
    miss = sorted({m for g in cfg.eval.which for m in need.get(g, []) if importlib.util.find_spec(m) is None})
    if miss:
        hint = " ".join("webrtcvad-wheels" if m == "webrtcvad" else m for m in miss if m != "resemblyzer")
        log.warning(
            "eval.which=%s: %s not installed, those metrics will be skipped (pip install %s%s)",
            list(cfg.eval.which),
            ", ".join(miss),
            hint,
            f"; {INSTALL_HINT}" if "resemblyzer" in miss else "",
        )


def _probe(d: Path) -> None:
    """Create ``d`` and write (then remove) a file in it; ``OSError`` when that is not possible."""
    d.mkdir(parents=True, exist_ok=True)
    probe = d / ".voxinv-write-test"
    probe.write_text("")
    probe.unlink()


class CheckRunDir(Callback):
    """Hydra callback: the run (or sweep) directory must be creatable and writable, else one line, exit 2
    (Hydra would otherwise fail with two tracebacks while writing .hydra/)."""

    def on_run_start(self, config: DictConfig, **kwargs) -> None:
        _writable_or_exit(OmegaConf.select(config, "hydra.run.dir"), "hydra.run.dir")

    def on_multirun_start(self, config: DictConfig, **kwargs) -> None:
        _writable_or_exit(OmegaConf.select(config, "hydra.sweep.dir"), "hydra.sweep.dir")


def _writable_or_exit(path: str, key: str) -> None:
    d = Path(str(path))
    try:
        _probe(d)
    except OSError as e:
        print(
            f"voxinv: error: cannot write to {key}={d} ({e.strerror}): pass {key}=<a writable directory>",
            file=sys.stderr,
        )
        sys.exit(2)


# ------------------------------------------------------------------------------------ resume
def resume_checkpoint(cfg: DictConfig, out: Path) -> str | None:
    """The checkpoint ``resume`` names (``true``: ``<run dir>/checkpoints/last.ckpt`` if it exists), or ``None``."""
    r = cfg.resume
    if r in (False, None, "false"):
        return None
    p = out / rundir.LAST_CKPT if r in (True, "true") else Path(str(r))
    if p.is_dir():
        p = p / rundir.LAST_CKPT
    if not p.is_file():
        if r in (True, "true"):
            log.info("resume=true but %s does not exist yet: starting fresh", p)
            return None
        raise FileNotFoundError(f"resume={r}: no checkpoint at {p}")
    return str(p)


def check_resume_file(path: str) -> None:
    """A resume checkpoint may hold tensors and plain data only (nothing that runs code when loaded)."""
    from voxinv.voxtral.checkpoint import CheckpointError, load_plain

    try:
        load_plain(path)
    except ValueError as e:
        raise CheckpointError(f"resume={path}: {e}") from e
    except Exception as e:  # truncated / not a torch file
        raise CheckpointError(f"resume={path}: cannot read it as a Lightning checkpoint ({type(e).__name__})") from e


# -------------------------------------------------------------------------------- interrupts
class RunInterrupted(KeyboardInterrupt):
    """Ctrl-C / SIGTERM before any codes existed: nothing to export."""


@contextmanager
def exit_on_bad_input() -> Iterator[None]:
    """The command line's answer: bad input is one line and exit 2 (no traceback; bugs still raise
    with one), an interrupt before any codes existed exit 130."""
    from voxinv.audio import AudioError
    from voxinv.invert.dvector import DVectorUnavailable
    from voxinv.invert.speaker import SpeakerEncoderUnavailable
    from voxinv.voxtral.checkpoint import CheckpointError

    bad = (CheckpointError, AudioError, FileNotFoundError, ValueError, SpeakerEncoderUnavailable, DVectorUnavailable)
    try:
        yield
    except bad as e:
        print(f"voxinv: error: {e}", file=sys.stderr)
        sys.exit(2)
    except RunInterrupted as e:
        print(f"voxinv: {e}", file=sys.stderr)
        sys.exit(130)


@contextmanager
def nothing_to_export() -> Iterator[None]:
    """An interrupt inside (model, target, losses and code parameters being built) is :class:`RunInterrupted`."""
    try:
        yield
    except KeyboardInterrupt:
        raise RunInterrupted("interrupted before the code parameters existed: nothing to export") from None


@contextmanager
def sigterm_as_interrupt() -> Iterator[None]:
    """SIGTERM (what schedulers send) is handled like Ctrl-C; SIGINT's handler is restored afterwards
    (Lightning ignores SIGINT after the first Ctrl-C)."""
    import signal
    import threading

    if threading.current_thread() is not threading.main_thread():  # signals reach the main thread only
        yield
        return

    def to_interrupt(signum, frame):
        raise KeyboardInterrupt(f"signal {signum}")

    old_term, old_int = signal.signal(signal.SIGTERM, to_interrupt), signal.getsignal(signal.SIGINT)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, old_term)
        signal.signal(signal.SIGINT, old_int)


@contextmanager
def uninterrupted() -> Iterator[None]:
    """Hold Ctrl-C / SIGTERM off while the outputs are written (they are never left half-written)."""
    import signal
    import threading

    if threading.current_thread() is not threading.main_thread():
        yield
        return
    old = {s: signal.signal(s, signal.SIG_IGN) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for s, h in old.items():
            signal.signal(s, h)
