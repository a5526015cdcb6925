"""The config resolved once, before the step loop: typed settings and ready-built callables.

:func:`resolve` reads every key the step needs (``steps``, ``eval_every``, ``window``, ``loop``, the loss
weights and ramps, ``optim``, ``schedule``, ``seed``) and builds what the ``_target_`` nodes describe
(the optimizer class, the LR and temperature schedules); :class:`voxinv.invert.module.InversionModule`
receives the result and never sees the DictConfig.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field

import torch
from hydra.utils import instantiate


@dataclass(frozen=True)
class StepSettings:
    """What one optimisation step and its evaluations need to know."""

    steps: int  # optimizer updates
    eval_every: int  # 0: only the last step (and the init) is evaluated
    seed: int
    weights: dict[str, float]  # loss.weights (the objective of an evaluation: all of them, no ramps)
    ramps: dict = field(default_factory=dict)  # schedule.ramps
    grad_clip: float = 0.0  # 0: off
    window_frames: int | None = None  # frames scored per step (None: the whole clip)
    window_context: int = 0
    compile: bool = False  # torch.compile of decode + waveform losses
    compile_mode: str = "default"
    sync_every: int = 1  # host syncs (NaN check, logging) every N steps
    balancer: dict | None = None  # Balancer kwargs when loss.balancer.enabled

    def evaluates(self, step: int) -> bool:
        """Whether the step with 0-based index ``step`` ends with an evaluation (the last always does)."""
        return bool(self.eval_every and (step + 1) % self.eval_every == 0) or step + 1 == self.steps

    def syncs(self, step: int) -> bool:
        e = self.sync_every
        return e == 1 or (step + 1) % e == 0 or step + 1 == self.steps


@dataclass(frozen=True)
class Recipe:
    """The optimisation's ready-built parts (``conf/optim``, ``conf/schedule``)."""

    optimizer: Callable[[Iterable[torch.nn.Parameter]], torch.optim.Optimizer]  # optim.optimizer, _partial_
    lr: Callable[[int, int], float]  # schedule.lr: an LR multiplier f(step, total)
    temperature: Callable[[int, int], float]  # schedule.temperature: τ = f(step, total)


def loop_settings(loop_cfg: Mapping, trainer_cfg: Mapping, device: torch.device) -> dict:
    """The ``loop`` group resolved for ``device``: ``compile`` (bool), ``compile_mode``, ``sync_every`` (int).

    ``auto`` compiles on CUDA only (CPU compile costs minutes of C++ build for no measured gain) and
    syncs with the host every step on CPU (free there: exact NaN stop step) but only every
    ``log_every_n_steps`` on CUDA (each sync stalls the launch queue)."""
    cuda = device.type == "cuda"
    comp, every = loop_cfg["compile"], loop_cfg["sync_every"]
    if comp not in ("auto", True, False):
        raise ValueError(f"loop.compile={comp!r}: expected auto, true or false")
    if every != "auto" and (not isinstance(every, int) or every < 1):
        raise ValueError(f"loop.sync_every={every!r}: expected auto or an integer >= 1")
    return {
        "compile": cuda if comp == "auto" else bool(comp),
        "compile_mode": str(loop_cfg["compile_mode"]),
        "sync_every": (int(trainer_cfg.get("log_every_n_steps", 10)) if cuda else 1) if every == "auto" else every,
    }


def trainer_settings(trainer_cfg, device: torch.device) -> dict:
    """The ``trainer`` group as Trainer arguments for ``device`` (:func:`voxinv.trainer.trainer_kwargs`);
    an inversion runs on one device (``trainer.devices=N``: processes over a manifest's clips)."""
    from voxinv.trainer import trainer_kwargs

    kw = trainer_kwargs(trainer_cfg, device)
    if int(kw.pop("devices", 1)) != 1:  # processes over a manifest's clips (voxinv/invert/manifest.py)
        raise ValueError(f"trainer.devices={trainer_cfg['devices']}: one clip runs on one device; use target=manifest")
    return kw


def resolve(cfg, device: torch.device) -> tuple[StepSettings, Recipe]:
    """``cfg`` (the composed run config) → the step's settings for ``device`` and its built parts."""
    trainer_settings(cfg.trainer, device)  # one device per clip, refused here, before any step
    loop = loop_settings(cfg.loop, cfg.trainer, device)
    bal = cfg.loss.balancer
    settings = StepSettings(
        steps=int(cfg.steps),
        eval_every=int(cfg.eval_every),
        seed=int(cfg.seed),
        weights={k: float(v) for k, v in cfg.loss.weights.items()},
        ramps=_plain(cfg.schedule.get("ramps")) or {},
        grad_clip=float(cfg.optim.grad_clip or 0.0),
        window_frames=None if cfg.window.frames is None else int(cfg.window.frames),
        window_context=int(cfg.window.context),
        balancer=dict(_plain(bal.kwargs)) if bal.enabled else None,
        **loop,
    )
    recipe = Recipe(
        optimizer=instantiate(cfg.optim.optimizer, _convert_="all"),
        lr=instantiate(cfg.schedule.lr),
        temperature=instantiate(cfg.schedule.temperature),
    )
    return settings, recipe


def _plain(node):
    from omegaconf import OmegaConf

    return OmegaConf.to_container(node, resolve=True) if OmegaConf.is_config(node) else node
