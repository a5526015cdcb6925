"""One device and dtype vocabulary for the runner, the CLI verbs and the TTS.

torch is imported inside the functions: the CLI builds its parser (``choices=sorted(DTYPES)``)
without importing torch.
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import torch

DEVICE_NAME = re.compile(r"auto|cpu|cuda(:\d+)?|mps")  # what device= / --device accept
DTYPES = {"float32": "float32", "fp32": "float32", "bfloat16": "bfloat16", "bf16": "bfloat16"}  # name → torch attr


def to_dtype(name: str) -> torch.dtype:
    """``fp32``/``float32``/``bf16``/``bfloat16`` → the torch dtype."""
    import torch

    return getattr(torch, DTYPES[name])


def pick_device(name: str | None = "auto", option: str = "device=") -> torch.device:
    """``auto`` (or ``None``) → CUDA when available, else CPU. An explicit CUDA device without CUDA is
    one clear error naming the option as the user wrote it (``device=`` in configs, ``--device `` in the CLI)."""
    import torch

    from voxinv.voxtral.checkpoint import CheckpointError

    if name in (None, "auto"):
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if not DEVICE_NAME.fullmatch(str(name)):
        raise CheckpointError(f"{option}{name}: not a device; use auto, cpu, cuda or cuda:N")
    dev = torch.device(name)
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise CheckpointError(f"{option}{name}: CUDA is not available here; use {option}cpu")
    return dev
