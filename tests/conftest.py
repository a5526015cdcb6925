"""Shared fixtures: one seeded tiny checkpoint per test session, real shared data when present."""

from __future__ import annotations

import logging
import os
import sys
from pathlib import Path

import pytest
import torch

# tiny models = thousands of tiny ops: extra threads only add sync waits (override: VOXINV_TEST_THREADS);
# the same for every process a test starts (voxinv.run subprocesses: with torch's default threads two xdist
# workers' subprocesses oversubscribed 2 cores and one timed out at 240 s in a fresh-clone run)
os.environ["OMP_NUM_THREADS"] = os.environ.get("VOXINV_TEST_THREADS", "1")
torch.set_num_threads(int(os.environ["OMP_NUM_THREADS"]))

REPO = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("VOXINV_SHARED", REPO.parent / "shared"))
SHARED_DATA = SHARED / "data"


@pytest.fixture(scope="session")
def tiny_dir(tmp_path_factory) -> Path:
    """A tiny real-format model directory (decoder only, bf16), seed 0."""
    from voxinv.voxtral.tiny import make_tiny

    return make_tiny(tmp_path_factory.mktemp("tiny") / "model", seed=0)


@pytest.fixture(scope="session")
def tiny_dir_encoder(tmp_path_factory) -> Path:
    """Like ``tiny_dir`` but with codec encoder tensors (seed 1)."""
    from voxinv.voxtral.tiny import make_tiny

    return make_tiny(tmp_path_factory.mktemp("tiny_enc") / "model", seed=1, with_encoder=True, tekken=False)


@pytest.fixture(scope="session")
def voxinv_cache(tmp_path_factory, tiny_dir) -> Path:
    """VOXINV_CACHE for runs with model=tiny: the session's ``tiny_dir`` under the name that
    ``voxinv.voxtral.models.model_path`` looks for, so the tiny model is generated once per session."""
    from voxinv.voxtral.tiny import tiny_fingerprint

    cache = tmp_path_factory.getbasetemp() / "voxinv-cache"
    link = cache / f"tiny-seed0-{tiny_fingerprint()}"
    if not link.exists():
        cache.mkdir(exist_ok=True)
        link.symlink_to(tiny_dir, target_is_directory=True)
    return cache


@pytest.fixture
def tiny_cache_env(voxinv_cache, monkeypatch) -> Path:
    """VOXINV_CACHE set to :func:`voxinv_cache` for one test (``pytest.mark.usefixtures("tiny_cache_env")``)."""
    monkeypatch.setenv("VOXINV_CACHE", str(voxinv_cache))
    return voxinv_cache


@pytest.fixture(scope="session")
def ckpt(tiny_dir):
    """The tiny checkpoint of ``tiny_dir``."""
    from voxinv.voxtral.checkpoint import Checkpoint

    return Checkpoint(tiny_dir)


@pytest.fixture(scope="session")
def codec(ckpt):
    """Its codec decoder in fp32 (frozen)."""
    from voxinv.voxtral.codec import load_codec

    return load_codec(ckpt, dtype=torch.float32)


@pytest.fixture(scope="session")
def table(ckpt) -> torch.Tensor:
    """Its audio-code embedding table ``[9088, dim]``."""
    return ckpt.load("mm_audio_embeddings.audio_codebook_embeddings.")["embeddings.weight"]


@pytest.fixture(scope="session")
def shared_data() -> Path:
    if not SHARED_DATA.is_dir():
        pytest.skip(f"real Voxtral data not present at {SHARED_DATA}")
    return SHARED_DATA


def _wandb_records(path: Path):
    """The ``Record`` protos of an offline ``run-*.wandb`` file, in order (wandb's own proto, read
    through its leveldb-log framing: 32 KiB blocks of [crc u32, length u16, kind u8] chunks)."""
    import struct

    from wandb.proto import wandb_internal_pb2 as pb

    data = Path(path).read_bytes()
    assert data[:4] == b":W&B", f"{path} is not a W&B transaction log"
    pos, buf, block = 7, b"", 32768
    while pos + 7 <= len(data):
        if block - pos % block < 7:  # block trailer
            pos += block - pos % block
            continue
        _crc, n, kind = struct.unpack("<IHB", data[pos : pos + 7])
        chunk, pos = data[pos + 7 : pos + 7 + n], pos + 7 + n
        if kind == 0:
            break
        buf = chunk if kind in (1, 2) else buf + chunk  # FULL/FIRST start, MIDDLE/LAST continue
        if kind in (1, 4):
            r = pb.Record()
            r.ParseFromString(buf)
            yield r


@pytest.fixture
def wandb_records():
    """``wandb_records(path)`` → the records of an offline W&B run file."""
    return _wandb_records


@pytest.fixture
def wandb_offline(tmp_path, monkeypatch):
    """W&B offline, without credentials, with its home, cache and artifacts under ``tmp_path``."""
    pytest.importorskip("wandb")
    for var in ("WANDB_DIR", "WANDB_CACHE_DIR", "WANDB_CONFIG_DIR", "WANDB_DATA_DIR", "WANDB_ARTIFACT_DIR"):
        monkeypatch.setenv(var, str(tmp_path / "wandb-home"))
    monkeypatch.setenv("WANDB_SILENT", "true")
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.delenv("WANDB_API_KEY", raising=False)


@pytest.fixture(autouse=True)
def own_wandb_service(monkeypatch):
    """An in-process W&B run leaves ``WANDB_SERVICE`` in ``os.environ``: the processes later tests start
    would then share this worker's wandb-core, where a SIGKILLed child's run id stays registered and its
    resume fails with "run ID … is in use" (seen in a fresh-clone CI run). Each test starts without it,
    as a user's shell does."""
    monkeypatch.delenv("WANDB_SERVICE", raising=False)


@pytest.fixture(autouse=True)
def restore_logging():
    """A Hydra app run in-process (``voxinv.run.main``, the CLI verbs) configures the root logger: a
    stream handler on the test's captured stdout (closed after the test, so any later record, even at
    interpreter exit, is a ``--- Logging error ---``) and a FileHandler on the run's ``.log`` (an open
    file per test). Every test gets the root logger back as it found it, the added handlers closed."""
    handlers, level = logging.root.handlers[:], logging.root.level
    yield
    for h in logging.root.handlers:
        if h not in handlers:
            h.close()
    logging.root.handlers[:], logging.root.level = handlers, level


@pytest.fixture(autouse=True)
def reset_hydra_config():
    """A Hydra app run in-process leaves its HydraConfig (a process-wide singleton) set: code that asks
    "am I in a Hydra job?" (``voxinv.invert.loggers._hydra_job``) would see a finished job in every later
    test of the same process, which depends on the test order (pytest-xdist changes it)."""
    from hydra.core.hydra_config import HydraConfig

    yield
    HydraConfig.instance().cfg = None


def pytest_unconfigure(config):
    """Libraries imported during the tests (transformers, huggingface_hub, torchmetrics, …) bound their
    stream handlers to the ``sys.stderr`` of that moment (transformers its ``flush`` too): pytest's
    capture, closed right after this hook. Point them at the real stderr, so that what they log at
    interpreter exit is printed, not a ``--- Logging error ---`` traceback."""

    def captured(obj) -> bool:
        return type(obj).__module__.startswith("_pytest.")

    for lg in [logging.root, *logging.root.manager.loggerDict.values()]:
        for h in getattr(lg, "handlers", ()):
            if not isinstance(h, logging.StreamHandler) or isinstance(h, logging.FileHandler):
                continue
            if captured(h.stream):
                h.setStream(sys.__stderr__)
            if captured(getattr(h.__dict__.get("flush"), "__self__", None)):
                h.flush = sys.__stderr__.flush
