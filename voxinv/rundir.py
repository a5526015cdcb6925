"""The run-directory contract: the files an inversion run directory holds, how they are read and written.

Ground floor: imports nothing from voxinv, so every layer (voxtral, eval, invert, run, cli) can use it.

Every file is written atomically (a temporary sibling, fsync, ``os.replace``; the mode the umask
gives) so a reader never sees half a file, and ``metrics.json`` is merged under an exclusive lock on
the run directory so writers of different keys (the run's export, ``python -m voxinv.eval``,
``voxinv.eval.e2e``) never lose each other's results.

A run *claims* its directory (:func:`claim`): a lock file held for the whole run (a second run into
the same directory is refused) and a marker naming the kind of run. A directory that holds anything
else than a run of the same kind is refused unless ``overwrite=true``, and then only the run's own
known files (:data:`OWN_FILES`) are removed: nothing else is ever deleted.
"""

from __future__ import annotations

import errno
import json
import os
import time
from collections.abc import Callable
from contextlib import contextmanager
from pathlib import Path
from typing import Any

# --------------------------------------------------------------------------------- file names
CODES = "codes.safetensors"  # raw 0-based int codes [T, 37]: the best by the discrete objective
TRUE_CODES = "true_codes.safetensors"  # the target's own codes, when known (synthetic / preset targets)
RECONSTRUCTION = "reconstruction.wav"  # 24 kHz float32: the fp32 decode of exactly CODES
TARGET = "target.wav"  # the target as inverted (trimmed, normalised, padded to whole frames)
TARGET_TEXT = "target.txt"  # optional reference transcript for WER
VOICE = "voice.pt"  # deployable voice prompt, bf16 [T+1, 3072] with the END row
METRICS = "metrics.json"  # results; keys merged by their writers ("eval", "e2e", …)
CONFIG = "config.yaml"  # the resolved config
HYDRA_DIR = ".hydra"
HYDRA_CONFIG = f"{HYDRA_DIR}/config.yaml"

# clock readings of a metrics.json ``history`` record (not metrics): wall and process-CPU seconds since
# the module started, and the evaluations' share of each (curves subtract it)
CLOCK_KEYS = ("wall_s", "eval_s", "cpu_s", "eval_cpu_s")
OVERRIDES = f"{HYDRA_DIR}/overrides.yaml"  # the command-line overrides (what names a sweep's configuration)
CHECKPOINTS = "checkpoints"
LAST_CKPT = f"{CHECKPOINTS}/last.ckpt"  # resume with resume=true hydra.run.dir=<same dir>
E2E_DIR = "e2e"  # voxinv.eval.e2e's synthesised sentences
CONFIG_FILES = (CONFIG, HYDRA_CONFIG, "config.json")  # where a run's config may be found, first wins
AUDIO_FILES = (TARGET, RECONSTRUCTION)  # what every finished run holds for evaluation

MARKER = ".voxinv-run.json"  # {"kind": "invert" | "train_encoder", "created": ..., "pid": ...}: a voxinv run
LOCK = ".voxinv-run.lock"  # flock'ed by the process running in the directory (holds its pid)
ENCODER = "encoder.safetensors"  # train_encoder's export
# what a run of each kind writes (glob patterns relative to the run directory): the only files
# overwrite=true removes. Hydra's own files (.hydra/, the job log) are the run's too.
_HYDRA_OWN = (f"{HYDRA_DIR}/config.yaml", f"{HYDRA_DIR}/hydra.yaml", f"{HYDRA_DIR}/overrides.yaml", "*.log")
OWN_FILES = {
    "invert": (
        CODES,
        TRUE_CODES,
        RECONSTRUCTION,
        TARGET,
        VOICE,
        METRICS,
        CONFIG,
        f"{CHECKPOINTS}/*.ckpt",
        "metrics.csv",
        "wandb-run-id",
        "wandb/**",
        f"{E2E_DIR}/**",
        "clips/**",
        "parts/*.json",
        "summary.json",
        "summary.csv",
        *_HYDRA_OWN,
    ),
    "train_encoder": (
        ENCODER,
        METRICS,
        CONFIG,
        f"{CHECKPOINTS}/*.ckpt",
        "metrics.csv",
        "media/*.wav",
        "wandb-run-id",
        "wandb/**",
        *_HYDRA_OWN,
    ),
}
HYDRA_ONLY = {HYDRA_DIR, "run.log", "train_encoder.log"}  # what Hydra writes before the run starts (multirun jobs)


class RunDirError(ValueError):
    """A run directory file that cannot be used (unparsable, wrong type), or a directory a run may not use."""


# ------------------------------------------------------------------------------------ writing


def atomic_write(path: str | Path, data: bytes | str | Callable[[Path], object]) -> Path:
    """Write ``data`` to ``path`` atomically (mode as the umask gives); parent directories are created.

    ``data``: bytes, text (UTF-8), or a function that writes a given path (for writers that only
    take a file name). A crash leaves either the old file or the new one, never a partial one.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")  # per process: concurrent writers never share it
    try:
        if callable(data):
            data(tmp)
        else:
            with open(tmp, "wb") as f:
                f.write(data.encode() if isinstance(data, str) else data)
        with open(tmp, "rb+") as f:
            os.fsync(f.fileno())
        os.chmod(tmp, 0o666 & ~_umask())  # as a plain open() would: some writers (safetensors) force 0600
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return path


def _umask() -> int:
    mask = os.umask(0o022)  # the only portable read is a swap
    os.umask(mask)
    return mask


def _json_default(o: Any) -> Any:
    """numpy / torch scalars → float; anything else JSON cannot hold → its string."""
    try:
        return float(o)
    except (TypeError, ValueError):
        return str(o)


def to_json(obj: Any, indent: int = 2) -> str:
    """The JSON text the run files use (numpy/torch scalars as floats, newline-terminated)."""
    return json.dumps(obj, indent=indent, default=_json_default) + "\n"


def write_json(path: str | Path, obj: Any, indent: int = 2) -> Path:
    """``obj`` as JSON, atomically."""
    return atomic_write(path, to_json(obj, indent))


# ------------------------------------------------------------------------------------ metrics


def metrics_path(path_or_dir: str | Path) -> Path:
    """``metrics.json`` of a run directory, or the given file itself."""
    p = Path(path_or_dir)
    return p / METRICS if p.is_dir() else p


def read_metrics(path_or_dir: str | Path) -> dict:
    """A run's ``metrics.json`` as a dict (``{}`` when there is none); :class:`RunDirError` if unusable."""
    p = metrics_path(path_or_dir)
    if not p.is_file():
        return {}
    try:
        data = json.loads(p.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise RunDirError(f"{p} is not valid JSON ({e}); fix or delete it") from e
    if not isinstance(data, dict):
        raise RunDirError(f"{p} does not hold a JSON object; fix or delete it")
    return data


@contextmanager
def _locked(directory: Path):
    """An exclusive advisory lock on ``directory`` (POSIX ``flock``; a no-op where there is none)."""
    try:
        import fcntl
    except ImportError:  # Windows: no advisory locks; the replace itself stays atomic
        yield
        return
    fd = os.open(directory, os.O_RDONLY)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)  # closing releases the lock


def merge_metrics(path_or_dir: str | Path, key: str, value: Any) -> dict:
    """Set ``metrics.json[key] = value``, keeping every other key; atomic and serialised between
    processes (read, update and replace happen under one lock). Returns the merged metrics."""
    p = metrics_path(path_or_dir)
    p.parent.mkdir(parents=True, exist_ok=True)
    with _locked(p.parent):
        metrics = read_metrics(p)
        metrics[key] = value
        write_json(p, metrics)
    return metrics


def write_metrics(path_or_dir: str | Path, metrics: dict) -> Path:
    """Replace ``metrics.json`` as a whole (the export of a finished run), under the same lock."""
    p = metrics_path(path_or_dir)
    p.parent.mkdir(parents=True, exist_ok=True)
    with _locked(p.parent):
        return write_json(p, metrics)


# ------------------------------------------------------------------------------------ claiming


def write_probe(d: str | Path) -> None:
    """Create ``d`` and write (then remove) a file in it; ``OSError`` when that is not possible. The
    probe's name is unique per process and call, so concurrent probes never race on one file."""
    d = Path(d)
    d.mkdir(parents=True, exist_ok=True)
    probe = d / f".voxinv-write-test.{os.getpid()}.{time.monotonic_ns()}"
    probe.write_text("")
    probe.unlink()


def dangerous(d: Path) -> bool:
    """A directory no run may claim: the file-system root, a top-level system directory, the home directory."""
    d = d.resolve()
    return d == Path(d.anchor) or d.parent == Path(d.anchor) or d == Path.home().resolve()


def own_files(d: Path, kind: str) -> list[Path]:
    """The files under ``d`` that a run of ``kind`` writes (:data:`OWN_FILES`), plus its marker."""
    found = {p for pat in OWN_FILES[kind] for p in d.glob(pat) if p.is_file() or p.is_symlink()}
    return sorted(found | {p for p in (d / MARKER,) if p.is_file()})


def _entries(d: Path) -> list[str]:
    return sorted(e for e in os.listdir(d) if e != LOCK) if d.is_dir() else []


def read_marker(d: Path) -> dict | None:
    """The marker of a voxinv run directory (``None`` when there is none or it is unreadable)."""
    try:
        data = json.loads((d / MARKER).read_text())
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


class Claim:
    """A run directory held by this process (see :func:`claim`); ``release()`` (or process exit) frees it."""

    def __init__(self, path: Path, kind: str, fd: int | None, state: str):
        self.path, self.kind, self.fd, self.state = path, kind, fd, state  # state: fresh | resume | overwrite
        self.prepared = False
        self.cache: dict = {}  # what the preflight found (the target source), reused by the run

    def prepare(self, keep_hydra: bool = False) -> None:
        """Once the inputs are valid: remove the old run's own files (``overwrite``; ``keep_hydra``: not
        Hydra's, when Hydra has already written this run's) and write the marker."""
        if self.prepared:
            return
        if self.state == "overwrite":
            for p in own_files(self.path, self.kind):
                if not (keep_hydra and _hydra_file(p, self.path)):
                    p.unlink(missing_ok=True)
            for sub in sorted((p for p in self.path.rglob("*") if p.is_dir()), key=lambda p: -len(p.parts)):
                try:
                    sub.rmdir()  # only directories the removal left empty (rmdir never removes content)
                except OSError:
                    pass
        if self.state != "resume" or read_marker(self.path) is None:
            marker = {"kind": self.kind, "created": time.strftime("%Y-%m-%dT%H:%M:%S"), "pid": os.getpid()}
            write_json(self.path / MARKER, marker)
        self.prepared = True

    def release(self) -> None:
        _CLAIMS.pop(self.path, None)
        if self.fd is not None and not self.prepared and self.state == "fresh":
            # refused before anything was written (bad input): leave no lock file or empty directory behind
            (self.path / LOCK).unlink(missing_ok=True)
            try:
                self.path.rmdir()
            except OSError:
                pass  # not empty: someone else's files, or Hydra's
        if self.fd is not None:
            os.close(self.fd)  # closing releases the flock
            self.fd = None

    def __enter__(self) -> Claim:
        return self

    def __exit__(self, *exc) -> None:
        self.release()


_CLAIMS: dict[Path, Claim] = {}  # run directories held by this process


def held(d: str | Path) -> Claim | None:
    """This process's claim on ``d``, if any."""
    return _CLAIMS.get(Path(d).absolute())


def release(d: str | Path) -> None:
    """Release this process's claim on ``d`` (a no-op when there is none)."""
    c = held(d)
    if c is not None:
        c.release()


def _hydra_file(p: Path, d: Path) -> bool:
    return p.relative_to(d).parts[0] == HYDRA_DIR or (p.parent == d and p.suffix == ".log")


def _refusal(d: Path, kind: str, resume: bool, overwrite: bool) -> tuple[str | None, str]:
    """(the one-line refusal or None, the claim's state) for directory ``d`` as it is now."""
    entries = _entries(d)
    if not entries or set(entries) <= HYDRA_ONLY and not (d / CONFIG).exists():
        return None, "fresh"
    marker = read_marker(d)
    legacy = marker is None and (d / CONFIG).is_file() and (d / METRICS).is_file() | (d / LAST_CKPT).is_file()
    theirs = marker.get("kind") if marker else (kind if legacy else None)  # legacy: a run from before markers
    if theirs == kind:
        if resume:
            return None, "resume"
        if overwrite:
            return None, "overwrite"
        done = "finished" if (d / METRICS).is_file() else "unfinished"
        return (
            f"run directory {d} already holds a {done} voxinv run: resume=true continues it, overwrite=true replaces "
            "it (only its own files are removed), or pass hydra.run.dir=<a new directory>"
        ), ""
    if overwrite:
        return None, "overwrite"
    what = (
        f"a voxinv {theirs} run"
        if theirs
        else f"{len(entries)} entries that are not a voxinv run (e.g. {entries[0]!r})"
    )
    return (
        f"run directory {d} is not empty, it holds {what}: pass hydra.run.dir=<a new or empty directory>, or "
        "overwrite=true (removes only voxinv's own files, never anything else)"
    ), ""


def claim(d: str | Path, kind: str, *, resume: bool = False, overwrite: bool = False) -> Claim:
    """Claim run directory ``d`` for a run of ``kind`` ("invert" | "train_encoder"); :class:`RunDirError`
    (one line) when it may not be used: a system or home directory, in use by another run (lock), or
    holding anything but a run of this kind (unless ``resume`` of it, or ``overwrite``). Call
    :meth:`Claim.prepare` once the inputs are validated; nothing is removed or written before that
    except the directory itself and its lock file."""
    d = Path(d).absolute()
    if d in _CLAIMS:  # claimed earlier by this process (Hydra's callback, then the run)
        return _CLAIMS[d]
    if dangerous(d):
        raise RunDirError(
            f"refusing to use {d} as a run directory (a system or home directory): pass hydra.run.dir=<a new directory>"
        )
    why, _ = _refusal(d, kind, resume, overwrite)
    if why:
        raise RunDirError(why)
    try:
        write_probe(d)
    except OSError as e:
        raise RunDirError(
            f"run directory {d} is not writable ({e.strerror}): pass hydra.run.dir=<a writable directory>"
        ) from None
    fd = _lock(d)
    why, state = _refusal(d, kind, resume, overwrite)  # again under the lock: a run may have finished meanwhile
    if why:
        if fd is not None:
            os.close(fd)
        raise RunDirError(why)
    c = _CLAIMS[d] = Claim(d, kind, fd, state)
    return c


def _lock(d: Path) -> int | None:
    try:
        import fcntl
    except ImportError:  # Windows: no advisory locks
        return None
    fd = os.open(d / LOCK, os.O_RDWR | os.O_CREAT, 0o666)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError as e:
        holder = os.pread(fd, 32, 0).decode(errors="replace").strip() or "?"
        os.close(fd)
        if e.errno in (errno.EAGAIN, errno.EACCES, errno.EWOULDBLOCK):
            raise RunDirError(
                f"run directory {d} is in use by another voxinv run (pid {holder}): wait for it to finish or pass "
                "hydra.run.dir=<another directory>"
            ) from None
        raise
    os.ftruncate(fd, 0)
    os.pwrite(fd, str(os.getpid()).encode(), 0)
    return fd
