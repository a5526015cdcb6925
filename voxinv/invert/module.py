"""The inversion as a LightningModule over a group of clips. ``training_step`` is the whole algorithm,
top to bottom; a single-clip run is a group of one.

A clip inverted in a group comes out as it would alone (same seed → same codes). What makes that hold:

* **The decoder is causal** (left-padded convolutions, causal windowed attention): zero-padding a
  short clip's latent on the right to the group's longest leaves its own samples unchanged
  (tests/invert/test_manifest.py checks it), so the padded tail is cut off the decode: it enters no
  loss and sends no gradient. One decoder call per step serves every clip.
* **Losses per clip, on the clip's own samples**: each clip keeps its own :class:`LossSuite` (its
  speaker reference) and is scored on its own span of the decode, so no norm, mean or STFT frame spans
  two clips. The step's loss is the SUM over clips of each clip's mean over its restarts: each clip's
  parameters get exactly the gradient of its own loss.
* **Per-clip state** (:class:`voxinv.invert.clip.Clip`): code parameters (Adam and SGD act per
  element: one optimizer over all clips equals one per clip), noise generator, gradient clipping by
  its own norm, NaN watch, balancer, evaluations, best codes and early stop. A clip that stops leaves
  the decoder call; without a gradient the optimizer skips its parameters.

Frozen networks (codec decoder, speaker encoder, backbone prior) are held outside the module's
parameters/state so checkpoints hold only the code parameters, the optimizer and RNG state.
"""

from __future__ import annotations

import logging
import time

import pytorch_lightning as pl
import torch
import torch.nn.functional as F
from torch import nn

from voxinv.eval.metrics import code_recovery, log_mel_distance, si_sdr
from voxinv.frozen import Frozen
from voxinv.invert import schedule
from voxinv.invert.clip import Clip
from voxinv.invert.guard import EXIT_FAILED
from voxinv.invert.losses import discrete_losses
from voxinv.invert.settings import Recipe, StepSettings
from voxinv.invert.window import window_of

log = logging.getLogger("voxinv")


class NonFiniteLoss(RuntimeError):
    pass


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
            log.warning(
                "loop.compile: torch.compile failed (%s: %s); running eager (set loop.compile=false to skip it)",
                type(e).__name__,
                str(e).splitlines()[0] if str(e) else "",
            )
            self.compiled = self.fn
            return self.fn(*args)


class InversionModule(pl.LightningModule):
    def __init__(self, clips: list[Clip], codec, settings: StepSettings, recipe: Recipe, eval_codec=None):
        super().__init__()
        self.automatic_optimization = False  # the step below is the whole loop, written out
        self.clips, self.settings, self.recipe = list(clips), settings, recipe
        self.frozen = Frozen(codec=codec, eval_codec=eval_codec or codec)
        self.frozen.wave = self._decode_and_wave_terms
        if settings.compile:  # shapes are static during a run: one graph for decode + waveform losses
            self.frozen.wave = _CompiledOnce(self._decode_and_wave_terms, settings.compile_mode)
        self.params = nn.ModuleList([c.params for c in self.clips])  # what the optimizer and checkpoints see

    def _decode_and_wave_terms(
        self, latent: torch.Tensor, spans: list[tuple[nn.Module, torch.Tensor, int, int, int, int]]
    ) -> list[tuple[torch.Tensor, dict[str, torch.Tensor]]]:
        """One decode of ``[ΣB, 292, T']``; per clip (its loss suite, target [L], rows a:b, samples cut:end)
        its samples ``[B, L]`` (left context and pad dropped) and its waveform terms ``{term: [B]}``."""
        decoded = self.frozen.codec.decode_latent(latent)[:, 0].float()  # [ΣB, T' · spf]
        out = []
        for losses, target, a, b, cut, end in spans:
            wav = decoded[a:b, cut:end]
            out.append((wav, losses.wave_terms(wav, target)))
        return out

    # ----------------------------------------------------------------------------------- one step
    def training_step(self, batch, batch_idx):
        s, step = self.settings, self.global_step
        opt, lr_sched = self.optimizers(), self.lr_schedulers()
        sync = s.syncs(step)  # host syncs only on these steps
        active = [c for c in self.clips if c.active]

        # 1. sample each clip's discrete codes (straight-through, its own noise) and its window of frames
        #    (+ left context; the whole clip when it fits); pad to the longest; one decode of the group
        tau = self.recipe.temperature(step, s.steps)
        samples, windows = [], []
        for c in active:
            samples.append(c.params(tau, noise=c.noise_on(c.wav.device)))
            windows.append(window_of(step, samples[-1].latent, c.wav, s.window_frames, s.window_context))
        t_max = max(lat.shape[-1] for lat, _, _ in windows)
        pad = [F.pad(lat, (0, t_max - lat.shape[-1])) for lat, _, _ in windows] if len(windows) > 1 else None
        latent = torch.cat(pad) if pad else windows[0][0]  # [ΣB, 292, t_max]
        spf, spans, row = self.frozen.codec.samples_per_frame, [], 0
        for c, (lat, target, cut) in zip(active, windows):
            spans.append((c.losses, target, row, row + lat.shape[0], cut, lat.shape[-1] * spf))
            row += lat.shape[0]
        decoded = self.frozen.wave(latent, spans)  # per clip: [B, L], {term: [B]}

        # 2. each clip's loss terms [B] and their weighted sum (weight ramps); its mean over restarts
        weights = schedule.loss_weights(step, s.weights, s.ramps)
        stepping = {}  # clip → (wav, terms, loss) of the clips this step updates
        for c, sample, (_, target, _), (wav, wave) in zip(active, samples, windows, decoded):
            terms = c.losses(wav, target, sample, weights, wave=wave)
            loss = terms["total"].mean()
            c.watch(step, loss, terms)
            bad = c.nonfinite_message() if sync else ""  # the one host sync of a step (every `sync_every`)
            if bad:
                self.stop(c, f"{bad}; kept the last codes with a finite loss", failed=True)
                log.error("stopping%s: %s", self._who(c), c.stopped)
                continue
            stepping[c] = (wav, terms, loss)
        if not stepping:
            raise NonFiniteLoss("; ".join(c.stopped for c in active))

        # 3. backward (optionally gradient-balanced on each clip's waveform), each clip clipped by its own
        #    norm, one optimizer step
        opt.zero_grad(set_to_none=True)
        rest = []
        for c, (wav, terms, loss) in stepping.items():
            if c.balancer is None:
                rest.append(loss)
                continue
            wave = c.losses.wave_names  # balanced: the waveform terms; the others backpropagate as weighted
            c.balancer.backward(wav, {k: terms[k] for k in wave}, weights)
            rest_w = {k: v for k, v in weights.items() if k not in wave and k not in c.losses.info}
            other = sum(rest_w[k] * terms[k] for k in terms if k in rest_w)
            if torch.is_tensor(other) and other.requires_grad:
                rest.append(other.mean())
        if rest:
            self.manual_backward(rest[0] if len(rest) == 1 else torch.stack(rest).sum())
        if s.grad_clip:
            for c in stepping:
                torch.nn.utils.clip_grad_norm_(list(c.params.parameters()), s.grad_clip)
        opt.step()
        lr_sched.step()
        for c in stepping:
            c.steps = step + 1

        # 4. log (device tensors; Lightning converts them when it writes): the mean over the group's clips
        if sync:
            losses = [v[2].detach() for v in stepping.values()]
            self.log("loss", losses[0] if len(losses) == 1 else torch.stack(losses).mean(), prog_bar=True)
            means = [{k: v.detach().mean() for k, v in t.items() if k != "total"} for _, t, _ in stepping.values()]
            terms = means[0] if len(means) == 1 else {k: torch.stack([m[k] for m in means]).mean() for k in means[0]}
            self.log_dict({f"train/{k}": v for k, v in terms.items()})
            self.log_dict({"train/lr": lr_sched.get_last_lr()[0], "train/temperature": tau})
            if len(self.clips) > 1:
                self._log_clips(step, stepping, lr_sched.get_last_lr()[0], tau)
        if s.evaluates(step):  # the last step always (eval_every=0: only it)
            for c in stepping:
                self.evaluate(c, step + 1)

    def _log_clips(self, step: int, stepping: dict, lr: float, tau: float) -> None:
        """Several clips: each clip's own training scalars to its own loggers (the trainer's are the group's)."""
        if (step + 1) % self.trainer.log_every_n_steps and step + 1 != self.settings.steps:
            return
        for c, (_, terms, loss) in stepping.items():
            row = {
                "loss": float(loss.detach()),
                **{f"train/{k}": float(v.detach().mean()) for k, v in terms.items() if k != "total"},
            }
            for lg in c.loggers:
                lg.log_metrics({**row, "train/lr": lr, "train/temperature": tau}, step=step)

    def stop(self, clip: Clip, reason: str | None, failed: bool = False) -> None:
        """``clip`` gets no more updates (callbacks call this: early stop); the group ends with its last clip."""
        clip.stop(reason, EXIT_FAILED if failed else 0)
        if self._trainer is not None and not any(c.active for c in self.clips):
            self.trainer.should_stop = True

    def _who(self, clip: Clip) -> str:
        return f" clip {clip.name}" if len(self.clips) > 1 else ""

    # --------------------------------------------------------------------------------- evaluation
    @torch.no_grad()
    def evaluate(self, clip: Clip, step: int, codes: torch.Tensor | None = None, log: bool = True) -> dict:
        """fp32 decode of ``clip``'s discrete codes → the objective (all weights, no noise) + signal metrics
        (+ code accuracy when codes are known). The best codes by that objective are kept for export.
        ``log=True`` hands the record and its audio to the callbacks' ``on_evaluation`` (EvalLogger)."""
        t_eval, cpu_eval = time.time(), time.process_time()
        codes = clip.params.codes() if codes is None else codes  # [B, T, 37]
        terms, rec = discrete_losses(self.frozen.eval_codec, clip.losses, clip.wav, codes, self.settings.weights)
        total = terms["total"].cpu()
        b = int(total.argmin())
        if clip.best is None or float(total[b]) < clip.best["objective"]:
            clip.best = {"objective": float(total[b]), "step": step, "codes": codes[b].cpu().clone()}
        x, y = clip.wav.cpu().numpy(), rec[b].cpu().numpy()
        m = {
            "objective": float(total[b]),
            "si_sdr": si_sdr(x, y),
            "mel": log_mel_distance(x, y, self.frozen.codec.sampling_rate),
        }
        if clip.target.codes is not None:
            m.update(code_recovery(codes[b].cpu(), clip.target.codes))
        now, cpu = time.time(), time.process_time()
        clip.eval_s += now - t_eval  # wall_s - eval_s: optimisation time alone (evaluations excluded)
        clip.eval_cpu_s += cpu - cpu_eval
        clip.history.append(
            {
                "step": step,
                "wall_s": round(now - clip.t0, 3),
                "eval_s": round(clip.eval_s, 3),
                "cpu_s": round(cpu - clip.cpu0, 3),  # this process's CPU time (all threads) since the start
                "eval_cpu_s": round(clip.eval_cpu_s, 3),
                "restart": b,
                **m,
            }
        )
        if log and self._trainer is not None:  # each evaluation once, at its own step (not self.log's sampling)
            for cb in self._trainer.callbacks:
                if hasattr(cb, "on_evaluation"):
                    cb.on_evaluation(self._trainer, self, clip, clip.history[-1], rec[b].cpu())
        return m

    def on_fit_start(self) -> None:
        for c in self.clips:
            c.to(self.device)

    def on_train_start(self) -> None:
        for c in self.clips:
            if not c.history:  # the initialisation is a candidate too (not re-done on resume)
                self.evaluate(c, 0)

    # ------------------------------------------------------------------------------ configuration
    def configure_optimizers(self):
        """The optimizer (``optim.optimizer``) over every clip's code parameters; the LR follows
        ``schedule.lr`` (a multiplier ``f(step, total)``). ``optim.grad_clip`` is applied in the step."""
        opt = self.recipe.optimizer(self.params.parameters())
        factor, total = self.recipe.lr, self.settings.steps
        sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: factor(s, total))
        return [opt], [sched]

    def on_save_checkpoint(self, checkpoint: dict) -> None:
        checkpoint["voxinv"] = {"clips": [c.state_dict() for c in self.clips]}

    def on_load_checkpoint(self, checkpoint: dict) -> None:
        saved = checkpoint["voxinv"]["clips"]
        names = [c.name for c in self.clips]
        if len(saved) != len(self.clips) or (len(names) > 1 and [s["name"] for s in saved] != names):
            raise RuntimeError(f"the checkpoint holds clips {[s['name'] for s in saved]}, this group {names}")
        for c, s in zip(self.clips, saved):
            c.load_state_dict(s)


class Steps(torch.utils.data.Dataset):
    """``n`` empty batches: the data is the fixed target, a step is one optimizer update."""

    def __init__(self, n: int):
        self.n = n

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, i: int) -> int:
        return i
