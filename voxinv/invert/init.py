"""Initialisations: ``random`` (the parameters' own), ``warm_start``, ``coord_descent`` and ``encoder``
(``conf/init/<kind>.yaml`` instantiates :class:`Init`, :class:`WarmStart`, :class:`CoordDescent`, :class:`EncoderInit`).

:func:`initialise` runs the chosen one for every restart and sets the code parameters; an interrupt
(Ctrl-C / SIGTERM) during it keeps the codes found so far and says where it stopped.

``coord_descent`` is analysis-by-synthesis that exploits the decoder's causality and finite
receptive field: left to right, frame t (frames < t fixed) picks its semantic code among
candidates, then sweeps each of its 36 acoustic values over the 21 levels, each choice minimising a
spectral loss (``init.loss``: the loss suite's multi-resolution STFT term) on the audio frame t
influences (frames t … t+lookahead), decoded together with ``context`` frames of left context.
Candidates are decoded in batches.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path

import torch
from torch import nn

from voxinv.invert.params import CodeParams
from voxinv.voxtral.codec import VoxtralCodec, fsq_codes, fsq_values

log = logging.getLogger(__name__)


class InitInterrupted(KeyboardInterrupt):
    """An interrupt during a search, carrying the codes ``[T, 37]`` found so far."""

    def __init__(self, codes: torch.Tensor, stats: dict, where: str):
        super().__init__(where)
        self.codes, self.stats, self.where = codes, stats, where


def initialise(init: Init, params: CodeParams, codec: VoxtralCodec, target, ckpt) -> dict:
    """Set ``params``' codes by ``init`` (the ``init`` group, instantiated) for every restart; returns what was done.

    ``info["interrupted"]`` says where an interrupt stopped it (the codes so far are set: searched
    frames of an interrupted restart, the parameters' own start for the restarts not reached)."""
    info: dict = {"kind": init.kind}
    t0, c0 = time.time(), time.process_time()
    start = init.start_codes(params, codec, target, ckpt, info)
    if start is None:  # the parameters' own random start
        return info
    params.set_codes(start, logit_margin=init.logit_margin)
    info["seconds"] = round(time.time() - t0, 3)
    info["cpu_s"] = round(time.process_time() - c0, 3)  # this process's CPU time (load-independent, 1 thread)
    if "interrupted" in info:
        log.warning("init %s interrupted (%s) after %.1f s", init.kind, info["interrupted"], info["seconds"])
    else:
        log.info("init %s done in %.1f s", init.kind, info["seconds"])
    return info


class Init:
    """``init=random``: the code parameters' own seeded random start. ``kind`` is the option's name
    (metrics.json ``init.kind``); ``logit_margin`` is how far a set semantic code leads (:meth:`CodeParams.set_codes`)."""

    def __init__(self, kind: str, logit_margin: float):
        self.kind, self.logit_margin = kind, logit_margin

    def start_codes(self, params: CodeParams, codec: VoxtralCodec, target, ckpt, info: dict) -> torch.Tensor | None:
        """Raw start codes ``[B, T, 37]`` for the restarts, or ``None`` to keep the parameters' own;
        what was done goes into ``info``."""
        return None


class WarmStart(Init):
    """``init=warm_start``: codes from a codes file, a previous run directory or a preset voice."""

    def __init__(self, kind: str, logit_margin: float, source: str | None):
        super().__init__(kind, logit_margin)
        self.source = source

    def start_codes(self, params, codec, target, ckpt, info):
        return warm_start_codes(str(self.source), target.n_frames, ckpt)[None].expand(params.shape[0], -1, -1)


class CoordDescent(Init):
    """``init=coord_descent``: :func:`coord_descent` from each restart's own start (settings: conf/init/coord_descent.yaml)."""

    def __init__(
        self,
        kind: str,
        logit_margin: float,
        sweeps: int,
        shortlist: int,
        context: int,
        lookahead: int,
        gn_steps: int,
        acoustic_passes: int,
        batch_size: int,
        loss: nn.Module,
    ):
        super().__init__(kind, logit_margin)
        self.search = {
            "loss": loss,
            "sweeps": sweeps,
            "shortlist": shortlist,
            "context": context,
            "lookahead": lookahead,
            "batch_size": batch_size,
            "acoustic_passes": acoustic_passes,
            "gn_steps": gn_steps,
        }

    def start_codes(self, params, codec, target, ckpt, info):
        start = params.codes().cpu().clone()  # [B, T, 37]; restarts not reached keep their own start
        for b in range(start.shape[0]):
            try:
                start[b], info[f"restart{b}"] = coord_descent(codec, target.wav, start[b], **self.search)
            except InitInterrupted as e:
                start[b], info[f"restart{b}"] = e.codes, e.stats
                info["interrupted"] = f"restart {b + 1}/{start.shape[0]}, {e.where}"
                break
        return start


class EncoderInit(Init):
    """``init=encoder``: one forward pass of an encoder (a trained one at ``path``, else the model's own)."""

    def __init__(self, kind: str, logit_margin: float, path: str | None):
        super().__init__(kind, logit_margin)
        self.path = path

    def start_codes(self, params, codec, target, ckpt, info):
        from voxinv.invert.encoder_init import encoder_init

        codes0, st = encoder_init(ckpt, self.path, target.wav, next(codec.parameters()).device)
        info.update(st)
        return codes0[None].expand(params.shape[0], -1, -1)


def warm_start_codes(source: str, n_frames: int, ckpt=None) -> torch.Tensor:
    """Raw codes ``[T, 37]`` from a codes file, a previous run directory, or a preset voice name."""
    from voxinv.rundir import CODES
    from voxinv.voxtral.codes import load_codes

    p = Path(source)
    if p.is_dir():
        p = p / CODES
        if not p.is_file():
            raise FileNotFoundError(f"init.source={source}: run directory has no {CODES}")
        codes = load_codes(p)
    elif p.suffix in (".npy", ".safetensors", ".pt") and p.exists():
        codes = load_codes(p)
    elif ckpt is not None and source in ckpt.params.voices:
        from voxinv.voxtral.voices import preset_codes

        codes = preset_codes(ckpt, source).codes
    else:
        raise FileNotFoundError(
            f"init.source={source!r} is neither a codes file, a run directory, nor a preset voice of the model"
        )
    if codes.shape[0] < n_frames:  # shorter: repeat cyclically (a voice prompt is shorter than most targets)
        reps = -(-n_frames // codes.shape[0])
        log.info("warm start: %d source frames tiled to %d", codes.shape[0], n_frames)
        codes = codes.repeat(reps, 1)
    return codes[:n_frames]


@torch.no_grad()
def coord_descent(
    codec: VoxtralCodec,
    target: torch.Tensor,  # [T · spf]
    codes: torch.Tensor,  # raw [T, 37] starting point
    *,
    loss: nn.Module,  # candidate segments [K, L] vs the target segment [L] -> [K]
    sweeps: int,
    shortlist: int,
    context: int,
    lookahead: int,
    batch_size: int,
    acoustic_passes: int,
    gn_steps: int,
    progress: bool = True,
    frames: list[int] | None = None,
) -> tuple[torch.Tensor, dict]:
    """Greedy left-to-right code search (see module docstring). Returns codes and statistics.
    The settings (no defaults here: ``conf/init/coord_descent.yaml`` holds them) are documented there.

    Per frame visit, three named steps: :func:`semantic_step` (candidates ranked under a local linear
    model of the decoder, the best ``shortlist`` decoded exactly), :func:`gauss_newton_step` (up to
    ``gn_steps`` Gauss-Newton steps on the acoustic values, kept only when the exact loss drops) and
    :func:`acoustic_sweeps` (``acoustic_passes`` exact sweeps over the 21 levels).
    An interrupt raises :class:`InitInterrupted` with the codes found so far.
    ``frames``: visit only these frames, in this order, once each (``sweeps`` unused; the targeted
    late-stage search of :mod:`voxinv.invert.refine`); None: ``sweeps`` left-to-right passes.
    """
    dev = next(codec.parameters()).device
    spf, T = codec.samples_per_frame, codes.shape[0]
    codes = codes.clone().to(dev)
    target = target.to(dev)
    loss = loss.to(dev)
    latent = codec.quantizer.decode(codes.T[None], torch.float32)[0]  # [292, T]
    stats = {"evaluations": 0, "changed": 0}
    order = [i % T for i in range(sweeps * T)] if frames is None else [int(t) for t in frames]
    it = range(len(order))
    if progress:
        from tqdm.auto import tqdm

        it = tqdm(it, desc="coord_descent", unit="frame", leave=False)
    i = 0
    try:
        for i in it:
            t = order[i]
            a, b = max(0, t - context), min(T, t + lookahead + 1)
            f = _Frame(codec, loss, target[t * spf : b * spf], (t - a) * spf, t - a, batch_size, stats)
            window = latent[:, a:b].clone()  # [292, b-a]
            window = semantic_step(f, window, codes[t], shortlist)
            window = gauss_newton_step(f, window, codes[t], gn_steps)
            window = acoustic_sweeps(f, window, codes[t], acoustic_passes)
            latent[:, t] = window[:, f.j]
    except KeyboardInterrupt:
        raise InitInterrupted(codes.cpu(), stats, f"frame visit {i + 1}/{len(order)}") from None
    return codes.cpu(), stats


class _Frame:
    """One frame visit: the decoder, the target segment it scores against and the frame's column."""

    def __init__(
        self, codec: VoxtralCodec, loss: nn.Module, seg: torch.Tensor, off: int, j: int, batch_size: int, stats: dict
    ):
        self.codec, self.score, self.seg, self.off, self.j = codec, loss, seg, off, j
        self.batch_size, self.stats = batch_size, stats
        self.table = codec.quantizer.semantic_codebook.table.float()  # [8192, 256]
        self.levels = codec.args.acoustic_codebook_size
        self.n_sem = codec.args.semantic_dim

    def decode(self, windows: torch.Tensor) -> torch.Tensor:
        """Latent windows ``[K, 292, b-a]`` → the segment of audio frame t influences ``[K, L]``."""
        return torch.cat(
            [
                self.codec.decode_latent(windows[s : s + self.batch_size])[:, 0, self.off :].float()
                for s in range(0, len(windows), self.batch_size)
            ]
        )

    def loss(self, windows: torch.Tensor) -> torch.Tensor:
        """Exact spectral loss of candidate windows ``[K, 292, b-a]`` → ``[K]``."""
        self.stats["evaluations"] += len(windows)
        return torch.cat(
            [
                self.score(self.decode(windows[s : s + self.batch_size]), self.seg)
                for s in range(0, len(windows), self.batch_size)
            ]
        )


def semantic_step(f: _Frame, window: torch.Tensor, code: torch.Tensor, shortlist: int) -> torch.Tensor:
    """Semantic entry (+ a joint acoustic guess) of frame ``f.j``; updates ``code`` ``[37]`` in place.

    A secant Jacobian of the segment w.r.t. the frame's 292 latent dims (one batch of 293 decodes)
    gives a local linear model of the decoder. For each entry e_c the acoustic values are solved by
    least squares, so entries are ranked with the acoustic part already adapted to them; the best
    ``shortlist`` (all 8192 when ``shortlist <= 0``) plus the current entry are decoded exactly.
    """
    j, n_sem, levels, table = f.j, f.n_sem, f.levels, f.table
    V = table.shape[0]
    D = window.shape[0]
    probe = window[None].repeat(D + 1, 1, 1)
    probe[torch.arange(D), torch.arange(D), j] += 1.0
    Y = f.decode(probe)
    f.stats["evaluations"] += D + 1
    J = Y[:D] - Y[D]  # [292, L]
    Js, Ja = J[:n_sem], J[n_sem:]
    r = Y[D] - f.seg  # current error [L]
    Q, _ = torch.linalg.qr(Ja.T)  # [L, 36] basis of what the acoustic values can change
    pred = r + (table - window[:n_sem, j]) @ Js  # [8192, L] predicted error per entry
    score = pred.pow(2).sum(-1) - (pred @ Q).pow(2).sum(-1)  # after the best acoustic fix
    k = V if shortlist <= 0 or shortlist >= V else shortlist
    cand = torch.unique(torch.cat([score.topk(k, largest=False).indices, code[:1]]))
    # least-squares acoustic step per candidate, snapped to the 21 levels
    da = -torch.linalg.lstsq(Ja.T, pred[cand].T).solution.T  # [K, 36]
    ac = fsq_codes(window[n_sem:, j] + da, levels)  # [K, 36]
    batch = window[None].repeat(len(cand) + 1, 1, 1)  # row 0: the frame as it is (never worse)
    batch[1:, :n_sem, j] = table[cand]
    batch[1:, n_sem:, j] = fsq_values(ac, levels)
    i_best = int(f.loss(batch).argmin())
    if i_best > 0:
        new = torch.cat([cand[i_best - 1 : i_best], ac[i_best - 1]])
        f.stats["changed"] += int((new != code).sum())
        code.copy_(new)
        window[:, j] = batch[i_best, :, j]
    return window


def gauss_newton_step(f: _Frame, window: torch.Tensor, code: torch.Tensor, steps: int) -> torch.Tensor:
    """Gauss-Newton on the frame's acoustic values: a local secant Jacobian (one level wide), the
    step snapped to the 21 levels and kept only if the exact loss improves; ``code`` updated in place."""
    j, n_sem, levels = f.j, f.n_sem, f.levels
    n_ac, h = code.shape[0] - 1, 2 / (levels - 1)  # h: one level's width
    cur = f.loss(window[None])[0]
    for _ in range(steps):
        probe = window[None].repeat(n_ac + 1, 1, 1)
        probe[torch.arange(n_ac), n_sem + torch.arange(n_ac), j] += h
        Y = f.codec.decode_latent(probe)[:, 0, f.off :].float()
        f.stats["evaluations"] += n_ac + 1
        Ja = (Y[:n_ac] - Y[n_ac]) / h  # [36, L]
        da = -torch.linalg.lstsq(Ja.T, (Y[n_ac] - f.seg)[:, None]).solution[:, 0]
        lv = fsq_codes(window[n_sem:, j] + da, levels)  # [36]
        if torch.equal(lv, code[1:]):
            break
        trial = window.clone()
        trial[n_sem:, j] = fsq_values(lv, levels)
        loss = f.loss(trial[None])[0]
        if loss >= cur:
            break
        cur, window = loss, trial
        f.stats["changed"] += int((lv != code[1:]).sum())
        code[1:] = lv
    return window


def acoustic_sweeps(f: _Frame, window: torch.Tensor, code: torch.Tensor, passes: int) -> torch.Tensor:
    """Exact coordinate sweeps: each acoustic value in turn takes the best of its 21 levels."""
    j, n_sem, levels = f.j, f.n_sem, f.levels
    values = fsq_values(torch.arange(levels, device=window.device), levels)  # [21]: the decoder's latent values
    for _ in range(passes):
        moved = 0
        for k in range(code.shape[0] - 1):
            batch = window[None].repeat(levels, 1, 1)
            batch[:, n_sem + k, j] = values
            lv = int(f.loss(batch).argmin())
            moved += int(lv != code[1 + k])
            code[1 + k] = lv
            window[n_sem + k, j] = values[lv]
        f.stats["changed"] += moved
        if not moved:
            break
    return window
