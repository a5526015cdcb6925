"""The run-directory contract: the files an inversion run directory holds, how they are read and written.

Ground floor: imports nothing from voxinv, so every layer (voxtral, eval, invert, run, cli) can use it.

Every file is written atomically (a temporary sibling, fsync, ``os.replace``; mode 0644) so a reader
never sees half a file, and ``metrics.json`` is merged under an exclusive lock on the run directory
so writers of different keys (the run's export, ``python -m voxinv.eval``, ``voxinv.eval.e2e``)
never lose each other's results.
"""

from __future__ import annotations

import json
import os
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

FILE_MODE = 0o644


class RunDirError(ValueError):
    """A run directory file that cannot be used (unparsable, wrong type)."""


# ------------------------------------------------------------------------------------ writing


def atomic_write(path: str | Path, data: bytes | str | Callable[[Path], object]) -> Path:
    """Write ``data`` to ``path`` atomically with mode 0644; parent directories are created.

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
        os.chmod(tmp, FILE_MODE)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return path


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
