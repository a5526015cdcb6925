"""The one Lightning Trainer builder: a ``trainer`` config group (``_target_`` + Trainer arguments)
resolved for a device. Bottom layer (Lightning and Hydra only): inversion and encoder training both use it."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import pytorch_lightning as pl
import torch
from hydra.utils import get_object

DEFAULT_TARGET = "pytorch_lightning.Trainer"


def trainer_kwargs(trainer_cfg: Mapping, device: torch.device) -> dict:
    """The ``trainer`` group as Trainer keyword arguments for ``device`` (``_target_`` left out).

    ``deterministic: true`` means as deterministic as the device allows: on CPU every op is (reruns
    are bit-identical); on CUDA some kernels this decoder needs have no deterministic version
    (``reflection_pad1d_backward``), so it becomes ``"warn"`` — Lightning then calls
    ``torch.use_deterministic_algorithms(True, warn_only=True)`` and sets ``CUBLAS_WORKSPACE_CONFIG``:
    deterministic kernels wherever torch has one, a warning (not a crash) where it has none.
    """
    kw = {k: v for k, v in dict(trainer_cfg).items() if k != "_target_"}
    if kw.get("deterministic") is True and device.type == "cuda":
        kw["deterministic"] = "warn"
    return kw


def build_trainer(trainer_cfg: Mapping, device: torch.device, **kwargs: Any) -> pl.Trainer:
    """``trainer_cfg._target_`` (default :data:`DEFAULT_TARGET`) built with :func:`trainer_kwargs` for
    ``device`` and the accelerator of ``device``; ``kwargs`` (max_steps, logger, callbacks, plugins,
    devices, …) are what the caller decides and win over the config."""
    kw = trainer_kwargs(trainer_cfg, device)
    kw.setdefault("accelerator", "gpu" if device.type == "cuda" else "cpu")
    kw.update(kwargs)
    return get_object(str(dict(trainer_cfg).get("_target_", DEFAULT_TARGET)))(**kw)
