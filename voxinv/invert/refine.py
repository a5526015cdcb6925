"""Anytime refinement: the expensive search only where it pays.

After the gradient phase (a cheap first answer), :class:`RefineWorst` ranks the frames of the best
codes by their own spectral loss (``loss``, the module coordinate descent scores candidates with) and runs coordinate-descent visits
(:func:`voxinv.invert.init.coord_descent` with ``frames=``: semantic step, Gauss-Newton and exact
acoustic sweeps) on the ``frames`` worst of them only, ``rounds`` times. Every round ends with a
normal evaluation (:meth:`InversionModule.evaluate`), so the refined codes are exported only when
the discrete objective improves, and each round is a point of the quality-vs-time curve.

Enable with ``callbacks/refine=worst_frames`` (settings in ``conf/callbacks/refine/worst_frames.yaml``).
"""

from __future__ import annotations

import logging
import time

import pytorch_lightning as pl
import torch
from torch import nn

from voxinv.invert.init import coord_descent
from voxinv.voxtral.codec import VoxtralCodec

log = logging.getLogger(__name__)


@torch.no_grad()
def frame_losses(codec: VoxtralCodec, loss: nn.Module, target: torch.Tensor, codes: torch.Tensor) -> torch.Tensor:
    """Per-frame loss ``[T]`` (``loss`` of each frame's samples of the fp32 decode of raw codes
    ``[T, 37]`` against the same samples of ``target`` ``[N]``)."""
    from voxinv.invert.window import decode_latent_windowed

    dev = next(codec.parameters()).device
    spf = codec.samples_per_frame
    lat = codec.quantizer.decode(codes.T[None].to(dev), torch.float32)  # [1, 292, T]
    wav = decode_latent_windowed(codec, lat)[0, 0].float()  # [T · spf]
    x, loss = target.to(dev).float(), loss.to(dev)
    n = min(wav.numel(), x.numel()) // spf  # whole frames present in both
    return torch.stack([loss(wav[None, t * spf : (t + 1) * spf], x[t * spf : (t + 1) * spf])[0] for t in range(n)])


def worst_frames(losses: torch.Tensor, k: int) -> list[int]:
    """Indices of the ``k`` largest per-frame losses, in time order (left to right: a visit then sees
    its already refined left neighbours)."""
    k = min(int(k), losses.numel())
    return sorted(int(i) for i in losses.topk(k).indices)


class RefineWorst(pl.Callback):
    """At the end of training: ``rounds`` × (rank frames of the best codes by :func:`frame_losses`,
    coordinate descent on the ``frames`` worst, evaluate). Search settings as in ``init=coord_descent``."""

    def __init__(
        self,
        frames: int,
        rounds: int,
        shortlist: int,
        context: int,
        lookahead: int,
        gn_steps: int,
        acoustic_passes: int,
        batch_size: int,
        loss: nn.Module,
    ) -> None:
        if int(frames) < 1 or int(rounds) < 1:
            raise ValueError(f"callbacks.refine: frames={frames} and rounds={rounds} must be ≥ 1")
        self.frames, self.rounds = int(frames), int(rounds)
        self.search = {
            "shortlist": int(shortlist),
            "context": int(context),
            "lookahead": int(lookahead),
            "gn_steps": int(gn_steps),
            "acoustic_passes": int(acoustic_passes),
            "batch_size": int(batch_size),
        }
        self.loss = loss  # scores a frame (ranking) and the search's candidate segments, as init.loss does
        self.stats: list[dict] = []  # one record per round (what it visited, changed, cost)

    def on_train_end(self, trainer: pl.Trainer, module) -> None:
        if trainer.interrupted:
            return
        for clip in module.clips:  # a group: each clip refined on its own
            if clip.best is not None and not clip.nonfinite:
                self.refine(module, clip, int(clip.steps))

    def refine(self, module, clip, step: int) -> None:
        codec, target = module.frozen.eval_codec, clip.wav
        for r in range(self.rounds):
            t0 = time.time()
            codes = clip.best["codes"]  # [T, 37], the best by the discrete objective so far
            visit = worst_frames(frame_losses(codec, self.loss, target, codes), self.frames)
            new, st = coord_descent(
                codec, target, codes, loss=self.loss, sweeps=1, progress=False, frames=visit, **self.search
            )
            before = clip.best["objective"]
            m = module.evaluate(clip, step, codes=new[None])  # kept as best only if the objective improves
            clip.history[-1]["refine_round"] = r + 1
            rec = {"clip": clip.name, "round": r + 1, "frames": visit, **st, "objective": m["objective"]}
            rec.update(before=before, seconds=round(time.time() - t0, 3))
            self.stats.append(rec)
            log.info(
                "refine %sround %d: frames %s, %d values changed, objective %.4f → %.4f (%.1f s)",
                f"{clip.name} " if len(module.clips) > 1 else "",
                r + 1,
                visit,
                st["changed"],
                before,
                m["objective"],
                rec["seconds"],
            )
            if st["changed"] == 0:  # nothing moved: the next round would visit the same frames
                break
