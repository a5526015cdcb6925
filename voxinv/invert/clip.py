"""One clip's inversion state, whatever the group it is optimised in (a single run is a group of one).

A :class:`Clip` holds everything that belongs to one target and nothing that belongs to the step:
its code parameters, loss suite (its own speaker reference), Gumbel-noise generator, device-side NaN
watch, evaluation history, best codes, step count, fate (active / why it stopped / exit code) and its
loggers. :class:`voxinv.invert.module.InversionModule` steps over a list of them; callbacks act on
them (``on_evaluation``, early stop, refinement); export writes one.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path

import torch

from voxinv.invert.losses import Balancer, LossSuite
from voxinv.invert.params import CodeParams
from voxinv.invert.target import Target


@dataclass(eq=False)  # hashed by identity
class Clip:
    name: str
    target: Target
    losses: LossSuite
    params: CodeParams
    seed: int  # the run's seed: the Gumbel noise is seeded seed + 1 (as a single-clip run's)
    out: Path | None = None  # its run directory
    balancer: Balancer | None = None  # gradient balancing of its waveform terms (EMA over its restarts)
    loggers: list = field(default_factory=list)  # its loggers (a group of one: the trainer's)
    wav: torch.Tensor | None = None  # the target [N] on the run's device (set by ``to``)
    history: list[dict] = field(default_factory=list)  # eval records (step, metrics), kept in checkpoints
    best: dict | None = None  # {"objective", "step", "codes" [T, 37]}: what gets exported
    steps: int = 0  # optimizer updates this clip received
    active: bool = True  # still optimised (False after its early stop, a non-finite loss, an interrupt)
    stopped: str | None = None  # metrics.json ``stopped``
    exit_code: int = 0  # guard.EXIT_*
    finite: dict | None = None  # device-side NaN watch (see watch)
    t0: float = field(default_factory=time.time)
    cpu0: float = field(default_factory=time.process_time)
    eval_s: float = 0.0  # seconds spent evaluating: curves can exclude measurement overhead
    eval_cpu_s: float = 0.0
    earlier_wall_s: float = 0.0  # wall seconds of the run's earlier segments (a resume)
    noise: torch.Generator | None = None
    noise_state: tuple[str, torch.Tensor] | None = None  # from a checkpoint, applied in noise_on

    def __post_init__(self) -> None:
        # Gumbel noise: own generator so resume replays it exactly; it lives on the device of the codes
        # (drawn there: no host→device copy in the step), recreated there at the first step (noise_on)
        self.noise = torch.Generator().manual_seed(self.seed + 1)
        self.wav = self.target.wav.float()

    def to(self, device: torch.device) -> Clip:
        self.params.to(device)
        self.wav = self.wav.to(device)
        return self

    def stop(self, reason: str | None, exit_code: int = 0) -> None:
        """No more updates for this clip; ``reason`` goes to metrics.json ``stopped``."""
        self.active, self.stopped = False, reason
        self.exit_code = exit_code or self.exit_code

    def noise_on(self, device: torch.device) -> torch.Generator:
        """The Gumbel-noise generator on ``device`` (seeded ``seed + 1``; a checkpoint's state restored)."""
        if self.noise.device.type != device.type:
            self.noise = torch.Generator(device=device).manual_seed(self.seed + 1)
        if self.noise_state is not None:
            kind, state = self.noise_state
            self.noise_state = None
            if kind != device.type:  # a generator's state is per device type: the noise stream restarts
                raise RuntimeError(
                    f"this checkpoint's Gumbel-noise state is from {kind}, the run is on {device.type}: "
                    f"resume on {kind} (or start a new run)"
                )
            self.noise.set_state(state)
        return self.noise

    # ---------------------------------------------------------------------------- the NaN watch
    def watch(self, step: int, loss: torch.Tensor, terms: dict[str, torch.Tensor]) -> None:
        """Device-side NaN watch, no host sync: ``ok`` stays false from the first non-finite loss on,
        which records its step and per-term finiteness; ``codes`` are the last codes with a finite loss."""
        codes = self.params.codes()  # [B, T, 37]: the codes this step's loss belongs to
        fin = torch.stack([torch.isfinite(v).all() for v in terms.values()])  # [K]
        ok = torch.isfinite(loss)
        f = self.finite
        if f is None or f["names"] != list(terms):
            step_t = torch.tensor(step, device=loss.device)
            self.finite = {"names": list(terms), "ok": ok, "good": ok, "terms_ok": fin, "codes": codes, "step": step_t}
            return
        first = f["ok"] & ~ok  # this step is the first bad one
        f["step"] = torch.where(first, step, f["step"])
        f["terms_ok"] = torch.where(first, fin, f["terms_ok"])
        f["ok"] = f["ok"] & ok
        f["codes"] = torch.where(f["ok"], codes, f["codes"])

    def nonfinite_message(self) -> str:
        """Host sync: the first non-finite step and its terms ('' while every loss was finite)."""
        f = self.finite
        if f is None or bool(f["ok"]):
            return ""
        bad = [k for k, ok in zip(f["names"], f["terms_ok"].tolist()) if not ok]
        return f"non-finite loss at step {int(f['step'])} (terms: {', '.join(bad)})"

    @property
    def nonfinite(self) -> bool:
        """A loss was non-finite (the NaN watch tripped): the current codes are not a candidate."""
        return self.finite is not None and not bool(self.finite["ok"])

    @property
    def last_good_codes(self) -> torch.Tensor | None:
        """Raw codes ``[B, T, 37]`` (CPU) of the last step whose loss was finite (None before any step)."""
        f = self.finite
        return None if f is None or not bool(f["good"]) else f["codes"].cpu()  # good: the first step was finite

    # ------------------------------------------------------------------------------ checkpoints
    def state_dict(self) -> dict:
        return {
            "name": self.name,
            "noise": self.noise.get_state(),
            "noise_device": self.noise.device.type,
            "history": self.history,
            "best": self.best,
            "balancer": self.balancer.state_dict() if self.balancer else None,
            "steps": self.steps,
            "active": self.active,
            "stopped": self.stopped,
            "exit_code": self.exit_code,
            "wall_s": time.time() - self.t0,
            "cpu_s": time.process_time() - self.cpu0,
        }

    def load_state_dict(self, s: dict) -> None:
        self.noise_state = (s.get("noise_device", "cpu"), s["noise"])  # set on the first step's device
        self.history, self.best = list(s["history"]), s["best"]
        if self.balancer and s["balancer"]:
            self.balancer.load_state_dict(s["balancer"])
        self.steps, self.active, self.stopped, self.exit_code = s["steps"], s["active"], s["stopped"], s["exit_code"]
        self.t0 = time.time() - s["wall_s"]
        self.earlier_wall_s = float(s["wall_s"])  # the segments before this resume (metrics.json wall_time_s adds it)
        self.cpu0 = time.process_time() - s.get("cpu_s", 0.0)
        last = self.history[-1] if self.history else {}
        self.eval_s, self.eval_cpu_s = float(last.get("eval_s", 0.0)), float(last.get("eval_cpu_s", 0.0))
