"""The model a run uses (``conf/model``): its directory or repo id, the generated tiny / proxy models
(made once into the cache directory), and the frozen codec decoder(s) loaded from it."""

from __future__ import annotations

import logging
import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from voxinv.voxtral.checkpoint import Checkpoint
from voxinv.voxtral.codec import VoxtralCodec

log = logging.getLogger("voxinv")


@dataclass
class Model:
    ckpt: Checkpoint
    codec: VoxtralCodec  # the decoder optimised through, in model.dtype
    eval_codec: VoxtralCodec  # fp32 (the same object when model.dtype is float32): evaluation and export


def model_path(m: Any) -> str:
    """The model directory / repo id of the ``model`` group; tiny and proxy models are generated once
    into ``m.cache_dir`` (the directory name carries the generator's fingerprint)."""
    if m.path:
        return str(m.path)
    if m.name == "tiny":
        from voxinv.voxtral.tiny import make_tiny, tiny_fingerprint

        path = Path(m.cache_dir).expanduser() / f"tiny-seed{m.tiny_seed}-{tiny_fingerprint()}"
        make = lambda d: make_tiny(d, seed=int(m.tiny_seed))  # noqa: E731
    elif m.name == "proxy":
        from voxinv.voxtral.proxy import assets_dir, make_proxy, proxy_fingerprint

        assets = assets_dir(m.assets)
        path = Path(m.cache_dir).expanduser() / f"proxy-seed{m.tiny_seed}-{proxy_fingerprint(assets)}"
        make = lambda d: make_proxy(d, assets, seed=int(m.tiny_seed))  # noqa: E731
    else:
        raise ValueError("model.path is required (a local directory or a Hugging Face repo id)")
    if (path / "consolidated.safetensors").is_file() and not _intact(path / "consolidated.safetensors"):
        # a generated cache cut short (full disk, killed copy): it is ours to regenerate, not to download
        log.warning("generated model cache %s is truncated or corrupt: regenerating it", path)
        trash = path.with_name(f".{path.name}.corrupt.{os.getpid()}")
        os.replace(path, trash)
        shutil.rmtree(trash, ignore_errors=True)
    if not (path / "consolidated.safetensors").is_file():
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(dir=path.parent, prefix=f".{m.name}-"))
        make(tmp)
        try:
            os.replace(tmp, path)
        except OSError:  # another process made it first
            shutil.rmtree(tmp, ignore_errors=True)
    return str(path)


def _intact(f: Path) -> bool:
    """The safetensors file opens and its header's tensors fit in the file."""
    from safetensors import SafetensorError, safe_open

    try:
        with safe_open(str(f), framework="pt") as h:
            h.keys()
        return True
    except (SafetensorError, OSError):
        return False


def load_model(m: Any, device: torch.device) -> Model:
    """The checkpoint and its frozen codec decoder (+ an fp32 copy for evaluation when optimising in bf16)."""
    from voxinv.voxtral.codec import load_codec
    from voxinv.voxtral.device import to_dtype

    ckpt = Checkpoint(model_path(m))
    dtype = to_dtype(m.dtype)
    codec = load_codec(ckpt, dtype=dtype, device=device)
    eval_codec = codec if dtype == torch.float32 else load_codec(ckpt, dtype=torch.float32, device=device)
    return Model(ckpt, codec, eval_codec)


def released_frame() -> tuple[int, int]:
    """(sampling rate, samples per frame) of the released codec (what a recording is read at before
    any model is loaded)."""
    from voxinv.voxtral.params import CodecArgs

    c = CodecArgs()
    return c.sampling_rate, c.samples_per_frame
