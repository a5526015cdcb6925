"""The real Hydra config composed with a test file's fast settings (shared by the run-level tests)."""

from __future__ import annotations

from collections.abc import Mapping

from hydra import compose, initialize_config_dir
from omegaconf import DictConfig

from voxinv.paths import CONF_DIR


def compose_fast(fast: Mapping[str, str], *overrides: str) -> DictConfig:
    """``fast`` then ``overrides`` (``key=value``; later ones replace earlier ones, also group choices).
    ``target.n_frames`` is dropped when the target is not synthetic (other targets have no such key)."""
    o = dict(fast)
    o.update(x.split("=", 1) for x in overrides)
    if o.get("target", "synthetic") != "synthetic":
        o.pop("target.n_frames", None)
    with initialize_config_dir(config_dir=CONF_DIR, version_base="1.3"):
        return compose("config", overrides=[f"{k}={v}" for k, v in o.items()])
