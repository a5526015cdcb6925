"""What guards a run: the settings table (every numeric setting checked at compose time, one line
naming the key), input checks before any model is fetched, the run directory claim (lock + marker,
:func:`voxinv.rundir.claim`), the resume checkpoint and config, Ctrl-C / SIGTERM handling (an
interrupt exports the best codes so far; outputs are never half-written), exit codes, and the Hydra
callback that does all of this before Hydra writes into the run directory."""

from __future__ import annotations

import logging
import math
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

from hydra.experimental.callback import Callback
from hydra.utils import get_method, instantiate
from omegaconf import DictConfig, OmegaConf, open_dict, read_write

from voxinv import rundir
from voxinv.eval.formats import group_packages, pip_name
from voxinv.invert.target import TargetSource

log = logging.getLogger("voxinv")


# ------------------------------------------------------------------------------------ inputs
def check_inputs(cfg: DictConfig, out: Path) -> TargetSource:
    """Everything that can be checked before any model is resolved (no download for a bad input):
    steps, optional packages of the chosen losses (and graders: a warning), the run directory, and
    the target (``target=file``: the recording is read and validated). Returns the target source
    (``conf/target``, instantiated) whose ``build`` makes the target once the model is loaded."""
    validate(cfg, "invert")
    if not any(float(w) > 0 for w in (cfg.loss.get("weights") or {}).values()):
        raise ValueError(
            "the loss has no term with a weight > 0 (loss=_base_ holds the terms' settings, it is not a loss): "
            "pick a loss option (python -m voxinv.run --help) or set loss.weights.<term>=<weight>"
        )
    missing_packages(cfg)
    try:
        rundir.write_probe(out)
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

    from voxinv.invert.losses import check_needs
    from voxinv.speaker.ge2e import INSTALL_HINT

    check_needs(cfg.loss)  # each chosen term's declared needs (one line naming the install command)
    need = group_packages()  # the metric registry: eval group → its graders' packages
    miss = sorted({m for g in cfg.eval.which for m in need.get(g, []) if importlib.util.find_spec(m) is None})
    if miss:
        hint = " ".join(pip_name(m) for m in miss if m != "resemblyzer")
        log.warning(
            "eval.which=%s: %s not installed, those metrics will be skipped (pip install %s%s)",
            list(cfg.eval.which),
            ", ".join(miss),
            hint,
            f"; {INSTALL_HINT}" if "resemblyzer" in miss else "",
        )


# ------------------------------------------------------------------------------ settings table
def _int(lo: int | None = None, hi: int | None = None, null: bool = False):
    def rule(v):
        if v is None:
            return null
        if isinstance(v, bool) or not isinstance(v, int) and not (isinstance(v, str) and v.lstrip("-").isdigit()):
            return False
        return (lo is None or int(v) >= lo) and (hi is None or int(v) <= hi)

    what = "an integer" + (f" >= {lo}" if lo is not None else "") + (f" <= {hi}" if hi is not None else "")
    return rule, what + (" or null" if null else "")


def _num(lo: float, hi: float, *, lo_open: bool = True, null: bool = False):
    def rule(v):
        if v is None:
            return null
        try:
            x = float(v)
        except (TypeError, ValueError):
            return False
        return math.isfinite(x) and (x > lo if lo_open else x >= lo) and x <= hi

    return rule, f"a finite number in {'(' if lo_open else '['}{lo:g}, {hi:g}]" + (" or null" if null else "")


def _choice(*names: str, also=None):
    def rule(v):
        return str(v) in names or (also is not None and also(v))

    return rule, "one of " + ", ".join(names)


def _device_name(v) -> bool:
    from voxinv.voxtral.device import DEVICE_NAME

    return bool(DEVICE_NAME.fullmatch(str(v)))


_DEVICE = (_device_name, "auto, cpu, cuda or cuda:N")
_DTYPE = _choice("float32", "fp32", "bfloat16", "bf16")
_LR = _num(0.0, 1e3, lo_open=False)  # Adam's default 0.2, SGD's 1.0; 0 keeps the init's codes; beyond 1e3 is a typo
_PEAK = _num(0.0, 1.0, null=True)
# key → (rule, what it must be). A key the config does not have (another target kind) is skipped.
SETTINGS: dict[str, dict[str, tuple]] = {
    "invert": {
        "seed": _int(0),
        "steps": _int(0),
        "batch": _int(1),
        "device": _DEVICE,
        "eval_every": _int(0),
        "checkpoint_every": _int(0),
        "model.dtype": _DTYPE,
        "optim.lr": _LR,
        "optim.grad_clip": _num(0.0, 1e9, lo_open=False),
        "window.frames": _int(1, null=True),
        "window.context": _int(0),
        "target.n_frames": _int(1),
        "target.peak": _PEAK,
        "target.max_seconds": _num(0.0, 1e7, null=True),
        "target.max_frames": _int(1, null=True),
        "loop.sync_every": _choice("auto", also=lambda v: _int(1)[0](v)),
        "trainer.log_every_n_steps": _int(1),
    },
    "train_encoder": {
        "seed": _int(0),
        "steps": _int(1),
        "batch_size": _int(1),
        "device": _DEVICE,
        "val_every": _int(0),
        "checkpoint_every": _int(1),
        "model.dtype": _DTYPE,
        "export.dtype": _DTYPE,
        "optim.lr": _LR,
        "optim.grad_clip": _num(0.0, 1e9, lo_open=False),
        "optim.warmup": _int(0),
        "data.crop_frames": _int(1),
        "data.peak": _PEAK,
        "data.workers": _int(0),
        "val.n_crops": _int(1),
    },
}


def validate(cfg: DictConfig, kind: str) -> None:
    """Every setting of :data:`SETTINGS` ``[kind]`` that ``cfg`` has: ``ValueError`` naming the key."""
    for key, (rule, what) in SETTINGS[kind].items():
        v = OmegaConf.select(cfg, key, default="<absent>")
        if isinstance(v, str) and v == "<absent>":
            continue
        if not rule(v):
            extra = " (steps=0 runs only the init and exports its codes)" if key == "steps" and kind == "invert" else ""
            raise ValueError(f"{key}={v}: must be {what}{extra}")


# -------------------------------------------------------------------------- the run directory
# resume=true continues the optimisation the checkpoint belongs to: these must be the same. The rest may
# change on resume: steps (continue further), eval_every, checkpoint_every, device, loop, logger,
# callbacks, trainer, eval, export, paths, resume, overwrite.
RESUME_MUST_MATCH = {
    "invert": ("model", "target", "codes", "init", "loss", "schedule", "optim", "seed", "batch", "window"),
    "train_encoder": ("model", "loss", "optim", "seed", "batch_size", "data", "encoder", "quantizer"),
}


def _flat(x, prefix: str = "") -> dict:
    if isinstance(x, dict):
        out = {}
        for k, v in x.items():
            out.update(_flat(v, f"{prefix}{k}."))
        return out or {prefix[:-1]: {}}
    return {prefix[:-1]: x}


def resume_differences(cfg: DictConfig, out: Path, kind: str) -> list[str]:
    """The keys of :data:`RESUME_MUST_MATCH` whose value differs from the run's ``config.yaml``."""
    old_path = out / rundir.CONFIG
    if not old_path.is_file():
        return []
    old = OmegaConf.load(old_path)
    diff = []
    for key in RESUME_MUST_MATCH[kind]:
        a, b = OmegaConf.select(old, key), OmegaConf.select(cfg, key)
        fa = _flat({key: OmegaConf.to_container(a, resolve=True) if OmegaConf.is_config(a) else a})
        fb = _flat({key: OmegaConf.to_container(b, resolve=True) if OmegaConf.is_config(b) else b})
        diff += sorted(k for k in fa.keys() | fb.keys() if fa.get(k, "<absent>") != fb.get(k, "<absent>"))
    return diff


def _flag(cfg: DictConfig, key: str) -> bool:
    v = OmegaConf.select(cfg, key, default=False)
    return v not in (False, None, "false", "False")


def preflight(
    cfg: DictConfig, out: Path, kind: str = "invert", *, hydra_written: bool = True, inputs: Callable | None = None
) -> rundir.Claim:
    """Everything that happens before a run writes anything: the settings table, the run directory
    claim (refused: one line), the inputs (``inputs(cfg)`` → ``claim.cache["inputs"]``; by default
    :func:`check_inputs` → ``"source"``), a resume's config against the run's own; then the old run's files go
    (``overwrite=true``) and the marker is written. Idempotent within a process (Hydra's callback runs
    it before Hydra writes ``.hydra/``; the run calls it again). ``hydra_written``: Hydra has already
    written this run's ``.hydra/`` and log (a multirun job): an overwrite keeps them."""
    validate(cfg, kind)
    if _rank() > 0:  # a process Lightning started for rank > 0: rank 0 holds the directory
        c = rundir.Claim(Path(out).absolute(), kind, None, "rank")
        _check(c, cfg, out, inputs)
        c.prepared = True
        return c
    c = rundir.claim(out, kind, resume=_flag(cfg, "resume"), overwrite=_flag(cfg, "overwrite"))
    if c.prepared:
        return c
    try:
        _check(c, cfg, out, inputs)
        if c.state == "resume":
            diff = resume_differences(cfg, out, kind)
            if diff:
                raise ValueError(
                    f"resume=true: the config differs from the run in {out} in {', '.join(diff)}; resume with the "
                    "same settings (only steps, eval_every, checkpoint_every, device, loop, logger, callbacks, "
                    "trainer, eval and export may change) or pass overwrite=true / a new hydra.run.dir"
                )
        c.prepare(keep_hydra=hydra_written)
    except BaseException:
        c.release()
        raise
    return c


def _check(c: rundir.Claim, cfg: DictConfig, out: Path, inputs: Callable | None) -> None:
    if inputs is None:
        c.cache["source"] = check_inputs(cfg, out)
    else:
        c.cache["inputs"] = inputs(cfg)


def _rank() -> int:
    """This process's rank among the processes Lightning started (rank > 0 re-runs the command: rank 0 claims)."""
    import os

    return int(os.environ.get("LOCAL_RANK", 0) or 0) + int(os.environ.get("NODE_RANK", 0) or 0)


class CheckRunDir(Callback):
    """Hydra callback: before Hydra writes into the run directory, :func:`preflight` (bad settings, bad
    inputs, a directory in use or holding something else: one line, exit 2). With the default
    ``outputs/<date>/<time>`` run directory, a directory taken in the same second gets a ``-1``, ``-2``
    … suffix instead. A sweep directory must be creatable and writable."""

    def __init__(self, kind: str = "invert", inputs: str | None = None) -> None:
        self.kind, self.inputs = kind, get_method(inputs) if inputs else None  # inputs: the run's check (dotted path)

    def on_run_start(self, config: DictConfig, **kwargs) -> None:
        if _rank() > 0:
            return
        base = str(config.hydra.run.dir)
        with exit_on_bad_input():
            validate(config, self.kind)  # bad settings: nothing is created
            if rundir.dangerous(Path(base)):
                rundir.claim(base, self.kind)  # the one-line refusal
        _writable_or_exit(base, "hydra.run.dir")
        chosen = any(str(o).startswith("hydra.run.dir=") for o in OmegaConf.select(config, "hydra.overrides.hydra"))
        for n in range(100):
            d = base if n == 0 else f"{base}-{n}"
            with exit_on_bad_input():
                try:
                    preflight(config, Path(d), self.kind, hydra_written=False, inputs=self.inputs)
                except rundir.RunDirError:
                    if chosen or n == 99 or not Path(d).exists():
                        raise
                    continue  # the default outputs/<date>/<time>: taken in the same second
            if d != base:
                with read_write(config), open_dict(config):
                    config.hydra.run.dir = d
                log.info("run directory %s was taken: using %s", base, d)
            return

    def on_multirun_start(self, config: DictConfig, **kwargs) -> None:
        _writable_or_exit(OmegaConf.select(config, "hydra.sweep.dir"), "hydra.sweep.dir")


def _writable_or_exit(path: str, key: str) -> None:
    d = Path(str(path))
    try:
        rundir.write_probe(d)
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


# -------------------------------------------------------------------------------- exit codes
# The exit status of a run (README "Exit codes"): 0 finished (also an early stop by max_time / early_stop),
# 2 bad input (nothing run), 3 failed (non-finite loss, disk full: the last good codes / checkpoint kept),
# 128 + signal when interrupted (130 Ctrl-C, 143 SIGTERM; the codes so far are exported).
EXIT_OK, EXIT_BAD_INPUT, EXIT_FAILED = 0, 2, 3
_signals: list[int] = []  # the signals received during this process's runs (the last one decides)
DISK_ERRNOS = {"ENOSPC", "EDQUOT", "EROFS", "EIO"}  # writing failed: the run fails (one line), its outputs stay valid


def interrupt_code() -> int:
    """128 + the last signal received (Ctrl-C = SIGINT when none was recorded)."""
    import signal

    return 128 + (_signals[-1] if _signals else int(signal.SIGINT))


def disk_error(e: BaseException) -> bool:
    import errno

    return isinstance(e, OSError) and e.errno in {getattr(errno, n) for n in DISK_ERRNOS if hasattr(errno, n)}


def disk_message(e: OSError) -> str:
    where = f" writing {e.filename}" if e.filename else ""
    return (
        f"{e.strerror or e}{where}: free some space; the last good checkpoint is kept (resume=true with the same "
        "hydra.run.dir continues from it) and metrics.json is only written once an export is complete"
    )


# -------------------------------------------------------------------------------- interrupts
class RunInterrupted(KeyboardInterrupt):
    """Ctrl-C / SIGTERM before any codes existed: nothing to export."""


@contextmanager
def exit_on_bad_input() -> Iterator[None]:
    """The command line's answer: bad input is one line and exit 2 (no traceback; bugs still raise
    with one), a full disk one line and exit 3, an interrupt before any codes existed 128 + signal."""
    from voxinv.audio import AudioError
    from voxinv.speaker.dvector import DVectorUnavailable
    from voxinv.speaker.ge2e import SpeakerEncoderUnavailable
    from voxinv.voxtral.checkpoint import CheckpointError

    bad = (CheckpointError, AudioError, FileNotFoundError, ValueError, SpeakerEncoderUnavailable, DVectorUnavailable)
    try:
        yield
    except bad as e:
        print(f"voxinv: error: {e}", file=sys.stderr)
        sys.exit(EXIT_BAD_INPUT)
    except OSError as e:
        if not disk_error(e):
            raise
        print(f"voxinv: error: {disk_message(e)}", file=sys.stderr)
        sys.exit(EXIT_FAILED)
    except RunInterrupted as e:
        print(f"voxinv: {e}", file=sys.stderr)
        sys.exit(interrupt_code())


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
        _signals.append(signum)  # the exit status names it (interrupt_code)
        raise KeyboardInterrupt(f"signal {signum}")

    _signals.clear()
    old_term, old_int = signal.signal(signal.SIGTERM, to_interrupt), signal.signal(signal.SIGINT, to_interrupt)
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
