"""The inversion as a LightningModule. ``training_step`` is the whole algorithm, top to bottom.

Frozen networks (codec decoder, speaker encoder, backbone prior) are held outside the module's
parameters/state so checkpoints hold only the code parameters, the optimizer and RNG state.
"""

from __future__ import annotations

import time
from collections.abc import Mapping

import pytorch_lightning as pl
import torch
from hydra.utils import instantiate
from omegaconf import DictConfig

from voxinv.invert import schedule
from voxinv.invert.losses import WAVE_TERMS, Balancer, LossSuite
from voxinv.invert.params import CodeParams
from voxinv.invert.target import Target
from voxinv.invert.window import window_of


class NonFiniteLoss(RuntimeError):
    pass


def trainer_settings(trainer_cfg: Mapping, device: torch.device) -> dict:
    """The ``trainer`` group as ``pl.Trainer`` kwargs for ``device``.

    ``deterministic: true`` means as deterministic as the device allows: on CPU every op is (reruns
    are bit-identical); on CUDA some kernels this decoder needs have no deterministic version
    (``reflection_pad1d_backward``), so it becomes ``"warn"`` — Lightning then calls
    ``torch.use_deterministic_algorithms(True, warn_only=True)`` and sets ``CUBLAS_WORKSPACE_CONFIG``:
    deterministic kernels wherever torch has one, a warning (not a crash) where it has none.
    """
    kw = dict(trainer_cfg)
    if int(kw.pop("devices", 1)) != 1:  # processes over a manifest's clips (voxinv/invert/manifest.py)
        raise ValueError(f"trainer.devices={trainer_cfg['devices']}: one clip runs on one device; use target=manifest")
    if kw.get("deterministic") is True and device.type == "cuda":
        kw["deterministic"] = "warn"
    return kw


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


class _CompiledOnce:
    """``torch.compile(fn)``; if the first call fails to compile (no Triton, no C compiler, an op
    inductor lacks), one warning says why and the run goes on eager — the results are the same.
    ``strict`` (tests) re-raises instead, so a test of the compiled path cannot pass on eager."""

    strict = False

    def __init__(self, fn, mode: str):
        self.fn, self.compiled, self.tried = fn, torch.compile(fn, mode=mode, dynamic=False), False

    def __call__(self, *args):
        if self.tried:
            return self.compiled(*args)
        self.tried = True
        try:
            return self.compiled(*args)
        except Exception as e:  # compile errors surface at the first call
            if self.strict:
                raise
            import logging

            logging.getLogger("voxinv").warning(
                "loop.compile: torch.compile failed (%s: %s); running eager (set loop.compile=false to skip it)",
                type(e).__name__,
                str(e).splitlines()[0] if str(e) else "",
            )
            self.compiled = self.fn
            return self.fn(*args)


class _Frozen:
    """Plain holder: Lightning neither registers nor checkpoints what is inside."""

    def __init__(self, **kw):
        self.__dict__.update(kw)


class InversionModule(pl.LightningModule):
    def __init__(
        self,
        cfg: DictConfig,
        codec,
        target: Target,
        losses: LossSuite,
        params: CodeParams,
        eval_codec=None,
        loop: Mapping | None = None,
    ):
        super().__init__()
        self.automatic_optimization = False  # the step below is the whole loop, written out
        self.cfg = cfg
        self.loop = dict(loop or loop_settings(cfg.loop, cfg.trainer, torch.device("cpu")))
        self.frozen = _Frozen(codec=codec, eval_codec=eval_codec or codec, losses=losses)
        self.frozen.wave = self._decode_and_wave_terms
        if self.loop["compile"]:  # shapes are static during a run: one graph for decode + waveform losses
            self.frozen.wave = _CompiledOnce(self._decode_and_wave_terms, self.loop["compile_mode"])
        self.params = params
        self.register_buffer("target", target.wav.float(), persistent=False)  # [N]
        self.true_codes = target.codes
        # Gumbel noise: own generator so resume replays it exactly; it lives on the device of the codes
        # (drawn there: no host→device copy in the step), created at the first step (see _noise_on)
        self.noise = torch.Generator().manual_seed(int(cfg.seed) + 1)
        self._noise_state: tuple[str, torch.Tensor] | None = None  # from a checkpoint, applied in _noise_on
        self.balancer = Balancer(**cfg.loss.balancer.kwargs) if cfg.loss.balancer.enabled else None
        self.tau_schedule = instantiate(cfg.schedule.temperature)  # f(step, total) -> τ (conf/schedule)
        self.history: list[dict] = []  # eval records (step, metrics), kept in checkpoints
        self._finite: dict | None = None  # device-side NaN watch (see _watch)
        self.best: dict | None = None  # {"objective", "step", "codes" [T, 37]}: what gets exported
        self._t0, self._cpu0 = time.time(), time.process_time()
        self._eval_s = 0.0  # seconds spent in evaluate() so far: curves can exclude measurement overhead
        self._eval_cpu_s = 0.0  # the same in process CPU time (load-independent with one torch thread)
        self.earlier_wall_s = 0.0  # wall seconds of the run's earlier segments, from the resume checkpoint

    def _decode_and_wave_terms(
        self, latent: torch.Tensor, target: torch.Tensor, cut: int
    ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """Decode ``[B, 292, T']``, drop the first ``cut`` samples (left context) → ``[B, L]`` and its terms vs ``target [L]``."""
        wav = self.frozen.codec.decode_latent(latent)[:, 0, cut:].float()
        return wav, self.frozen.losses.wave_terms(wav, target)

    # ----------------------------------------------------------------------------------- one step
    def training_step(self, batch, batch_idx):
        cfg, step = self.cfg, self.global_step
        total_steps = int(cfg.steps)
        opt = self.optimizers()
        lr_sched = self.lr_schedulers()
        losses = self.frozen.losses
        every = self.loop["sync_every"]
        sync = every == 1 or (step + 1) % every == 0 or step + 1 == total_steps  # host syncs only here

        # 1. sample discrete codes (straight-through) and decode them with the frozen codec
        tau = self.tau_schedule(step, total_steps)
        sample = self.params(tau, noise=self._noise_on(self.target.device))
        win = cfg.window  # long clips: this step's window of frames (+ left context), else the whole clip
        latent, target, cut = window_of(step, sample.latent, self.target, win.frames, win.context)
        wav, wave = self.frozen.wave(latent, target, cut)  # [B, L], {term: [B]}

        # 2. loss terms [B] and their weighted sum, with weight ramps
        weights = schedule.loss_weights(step, cfg.loss.weights, cfg.schedule.get("ramps"))
        terms = losses(wav, target, sample, weights, wave=wave)
        loss = terms["total"].mean()
        self._watch(step, loss, terms)
        if sync and not bool(self._finite["ok"]):  # the one host sync of a step (every `sync_every` steps)
            f = self._finite
            bad = [k for k, ok in zip(f["names"], f["terms_ok"].tolist()) if not ok]
            raise NonFiniteLoss(f"non-finite loss at step {int(f['step'])} (terms: {', '.join(bad)})")

        # 3. backward (optionally gradient-balanced on the waveform), clip, step
        opt.zero_grad(set_to_none=True)
        if self.balancer is not None:
            rest = sum(weights.get(k, 0.0) * terms[k] for k in terms if k in weights and k not in WAVE_TERMS)
            self.balancer.backward(wav, {k: terms[k] for k in WAVE_TERMS if k in terms}, weights)
            if torch.is_tensor(rest) and rest.requires_grad:
                self.manual_backward(rest.mean())
        else:
            self.manual_backward(loss)
        if cfg.optim.grad_clip:
            self.clip_gradients(opt, gradient_clip_val=float(cfg.optim.grad_clip), gradient_clip_algorithm="norm")
        opt.step()
        lr_sched.step()

        # 4. log (device tensors; Lightning converts them when it writes, every log_every_n_steps)
        if sync:
            self.log("loss", loss.detach(), prog_bar=True)
            self.log_dict({f"train/{k}": v.detach().mean() for k, v in terms.items() if k != "total"})
            self.log_dict({"train/lr": lr_sched.get_last_lr()[0], "train/temperature": tau})
        every = int(cfg.eval_every)
        if (every and (step + 1) % every == 0) or step + 1 == total_steps:  # the last step always (0: only it)
            self.evaluate(step + 1)

    def _watch(self, step: int, loss: torch.Tensor, terms: dict[str, torch.Tensor]) -> None:
        """Device-side NaN watch, no host sync: ``ok`` stays false from the first non-finite loss on,
        which records its step and per-term finiteness; ``codes`` are the last codes with a finite loss."""
        codes = self.params.codes()  # [B, T, 37]: the codes this step's loss belongs to
        fin = torch.stack([torch.isfinite(v).all() for v in terms.values()])  # [K]
        ok = torch.isfinite(loss)
        f = self._finite
        if f is None or f["names"] != list(terms):
            step_t = torch.tensor(step, device=loss.device)
            self._finite = {"names": list(terms), "ok": ok, "good": ok, "terms_ok": fin, "codes": codes, "step": step_t}
            return
        first = f["ok"] & ~ok  # this step is the first bad one
        f["step"] = torch.where(first, step, f["step"])
        f["terms_ok"] = torch.where(first, fin, f["terms_ok"])
        f["ok"] = f["ok"] & ok
        f["codes"] = torch.where(f["ok"], codes, f["codes"])

    @property
    def nonfinite(self) -> bool:
        """A loss was non-finite (the NaN watch tripped): the current codes are not a candidate."""
        return self._finite is not None and not bool(self._finite["ok"])

    @property
    def last_good_codes(self) -> torch.Tensor | None:
        """Raw codes ``[B, T, 37]`` (CPU) of the last step whose loss was finite (None before any step)."""
        f = self._finite
        return None if f is None or not bool(f["good"]) else f["codes"].cpu()  # good: the first step was finite

    # --------------------------------------------------------------------------------- evaluation
    @torch.no_grad()
    def evaluate(self, step: int, codes: torch.Tensor | None = None, log: bool = True) -> dict:
        """fp32 decode of the discrete codes → the objective (all weights, no noise) + signal metrics
        (+ code accuracy when codes are known). The best codes by that objective are kept for export.
        ``log=True`` hands the record and its audio to the callbacks' ``on_evaluation`` (EvalLogger)."""
        from voxinv.eval.metrics import code_recovery, log_mel_distance, si_sdr
        from voxinv.invert.losses import discrete_losses

        t_eval, cpu_eval = time.time(), time.process_time()
        codes = self.params.codes() if codes is None else codes  # [B, T, 37]
        terms, rec = discrete_losses(
            self.frozen.eval_codec, self.frozen.losses, self.target, codes, self.cfg.loss.weights
        )
        total = terms["total"].cpu()
        b = int(total.argmin())
        if self.best is None or float(total[b]) < self.best["objective"]:
            self.best = {"objective": float(total[b]), "step": step, "codes": codes[b].cpu().clone()}
        x, y = self.target.cpu().numpy(), rec[b].cpu().numpy()
        m = {
            "objective": float(total[b]),
            "si_sdr": si_sdr(x, y),
            "mel": log_mel_distance(x, y, self.frozen.codec.sampling_rate),
        }
        if self.true_codes is not None:
            m.update(code_recovery(codes[b].cpu(), self.true_codes))
        now, cpu = time.time(), time.process_time()
        self._eval_s += now - t_eval  # wall_s - eval_s: optimisation time alone (evaluations excluded)
        self._eval_cpu_s += cpu - cpu_eval
        self.history.append(
            {
                "step": step,
                "wall_s": round(now - self._t0, 3),
                "eval_s": round(self._eval_s, 3),
                "cpu_s": round(cpu - self._cpu0, 3),  # this process's CPU time (all threads) since the start
                "eval_cpu_s": round(self._eval_cpu_s, 3),
                "restart": b,
                **m,
            }
        )
        if log and self._trainer is not None:  # each evaluation once, at its own step (not self.log's sampling)
            for cb in self._trainer.callbacks:
                if hasattr(cb, "on_evaluation"):
                    cb.on_evaluation(self._trainer, self, self.history[-1], rec[b].cpu())
        return m

    def on_train_start(self) -> None:
        if not self.history:  # the initialisation is a candidate too (not re-done on resume)
            self.evaluate(0)

    # ------------------------------------------------------------------------------ configuration
    def configure_optimizers(self):
        """``optim.optimizer`` (a torch.optim class, ``_partial_``) on the code parameters; the LR follows
        ``schedule.lr`` (a multiplier ``f(step, total)``). ``optim.grad_clip`` is applied in the step."""
        opt = instantiate(self.cfg.optim.optimizer, _convert_="all")(self.params.parameters())
        factor, total = instantiate(self.cfg.schedule.lr), int(self.cfg.steps)
        sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: factor(s, total))
        return [opt], [sched]

    def _noise_on(self, device: torch.device) -> torch.Generator:
        """The Gumbel-noise generator on ``device`` (seeded ``seed + 1``; a checkpoint's state restored)."""
        if self.noise.device.type != device.type:
            self.noise = torch.Generator(device=device).manual_seed(int(self.cfg.seed) + 1)
        if self._noise_state is not None:
            kind, state = self._noise_state
            self._noise_state = None
            if kind != device.type:  # a generator's state is per device type: the noise stream restarts
                raise RuntimeError(
                    f"this checkpoint's Gumbel-noise state is from {kind}, the run is on {device.type}: "
                    f"resume on {kind} (or start a new run)"
                )
            self.noise.set_state(state)
        return self.noise

    def on_save_checkpoint(self, checkpoint: dict) -> None:
        checkpoint["voxinv"] = {
            "noise": self.noise.get_state(),
            "noise_device": self.noise.device.type,
            "history": self.history,
            "best": self.best,
            "balancer": self.balancer.state_dict() if self.balancer else None,
            "wall_s": time.time() - self._t0,
            "cpu_s": time.process_time() - self._cpu0,
        }

    def on_load_checkpoint(self, checkpoint: dict) -> None:
        s = checkpoint["voxinv"]
        self._noise_state = (s.get("noise_device", "cpu"), s["noise"])  # set on the first step's device
        self.history = list(s["history"])
        self.best = s["best"]
        if self.balancer and s["balancer"]:
            self.balancer.load_state_dict(s["balancer"])
        self._t0 = time.time() - s["wall_s"]
        self.earlier_wall_s = float(s["wall_s"])  # the segments before this resume (metrics.json wall_time_s adds it)
        self._cpu0 = time.process_time() - s.get("cpu_s", 0.0)
        last = self.history[-1] if self.history else {}
        self._eval_s, self._eval_cpu_s = float(last.get("eval_s", 0.0)), float(last.get("eval_cpu_s", 0.0))


class Steps(torch.utils.data.Dataset):
    """``n`` empty batches: the data is the fixed target, a step is one optimizer update."""

    def __init__(self, n: int):
        self.n = n

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, i: int) -> int:
        return i
