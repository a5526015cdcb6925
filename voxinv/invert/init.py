"""Initialisations: ``random`` (the parameters' own), ``warm_start`` and ``coord_descent``.

``coord_descent`` is analysis-by-synthesis that exploits the decoder's causality and finite
receptive field: left to right, frame t (frames < t fixed) picks its semantic code among
candidates, then sweeps each of its 36 acoustic values over the 21 levels, each choice minimising a
spectral loss on the audio frame t influences (frames t … t+lookahead), decoded together with
``context`` frames of left context. Candidates are decoded in batches.
"""

from __future__ import annotations

import logging
from pathlib import Path

import torch

from voxinv.voxtral.codec import VoxtralCodec

log = logging.getLogger(__name__)


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


def segment_loss(y: torch.Tensor, x: torch.Tensor, fft_sizes=(512, 256, 128), eps: float = 1e-5) -> torch.Tensor:
    """Spectral loss of candidate segments ``y [K, L]`` against ``x [L]``: log-mag L1 + spectral convergence."""
    out = torch.zeros(y.shape[0], device=y.device)
    for n in fft_sizes:
        win = torch.hann_window(n, device=y.device)
        Y = torch.stft(y, n, n // 4, window=win, return_complex=True).abs()
        X = torch.stft(x[None], n, n // 4, window=win, return_complex=True).abs()
        out += (torch.log(Y + eps) - torch.log(X + eps)).abs().mean((-1, -2))
        out += (Y - X).flatten(1).norm(dim=-1) / X.norm().clamp_min(eps)
    return out / len(fft_sizes)


@torch.no_grad()
def coord_descent(
    codec: VoxtralCodec,
    target: torch.Tensor,  # [T · spf]
    codes: torch.Tensor,  # raw [T, 37] starting point
    *,
    sweeps: int,
    shortlist: int,
    context: int,
    lookahead: int,
    batch_size: int,
    acoustic_passes: int,
    gn_steps: int,
    progress: bool = True,
) -> tuple[torch.Tensor, dict]:
    """Greedy left-to-right code search (see module docstring). Returns codes and statistics.
    The settings (no defaults here: ``conf/init/coord_descent.yaml`` holds them) are documented there.

    Semantic candidates are ranked under a local linear model of the decoder (secant Jacobian of
    the segment w.r.t. the frame's latent, acoustic values solved by least squares per entry); the
    best ``shortlist`` (all 8192 when ``shortlist <= 0``) plus the current entry are decoded and
    scored exactly. The frame's acoustic values then take up to ``gn_steps`` Gauss-Newton steps
    (kept only when the exact loss drops) and ``acoustic_passes`` exact sweeps over the 21 levels.
    """
    dev = next(codec.parameters()).device
    spf, T = codec.samples_per_frame, codes.shape[0]
    table = codec.quantizer.semantic_codebook.table.float()
    V = table.shape[0]
    levels = codec.args.acoustic_codebook_size
    codes = codes.clone().to(dev)
    target = target.to(dev)
    latent = codec.quantizer.decode(codes.T[None], torch.float32)[0]  # [292, T]
    values = torch.linspace(-1, 1, levels, device=dev)
    n_sem = codec.args.semantic_dim
    stats = {"evaluations": 0, "changed": 0}
    it = range(sweeps * T)
    if progress:
        from tqdm.auto import tqdm

        it = tqdm(it, desc="coord_descent", unit="frame", leave=False)
    for i in it:
        t = i % T
        a, b = max(0, t - context), min(T, t + lookahead + 1)
        seg = target[t * spf : b * spf]
        off = (t - a) * spf

        def evaluate(cands: torch.Tensor, off: int = off, seg: torch.Tensor = seg) -> torch.Tensor:
            """Exact spectral loss of candidate windows ``[K, 292, b-a]`` → ``[K]``."""
            stats["evaluations"] += len(cands)
            return torch.cat(
                [
                    segment_loss(codec.decode_latent(cands[s : s + batch_size])[:, 0, off:].float(), seg)
                    for s in range(0, len(cands), batch_size)
                ]
            )

        window = latent[:, a:b].clone()  # [292, b-a]
        j = t - a
        # --- semantic (+ a joint acoustic guess) from a local linear model of the decoder: a secant
        # Jacobian of the segment w.r.t. the frame's 292 latent dims (one batch of 293 decodes). For
        # each entry e_c the acoustic values are solved by least squares, so entries are ranked with
        # the acoustic part already adapted to them; the best `shortlist` are then decoded exactly.
        D = window.shape[0]
        probe = window[None].repeat(D + 1, 1, 1)
        probe[torch.arange(D), torch.arange(D), j] += 1.0
        Y = torch.cat(
            [codec.decode_latent(probe[s : s + batch_size])[:, 0, off:].float() for s in range(0, D + 1, batch_size)]
        )
        stats["evaluations"] += D + 1
        J = Y[:D] - Y[D]  # [292, L]
        Js, Ja = J[:n_sem], J[n_sem:]
        r = Y[D] - seg  # current error [L]
        Q, _ = torch.linalg.qr(Ja.T)  # [L, 36] basis of what the acoustic values can change
        pred = r + (table - window[:n_sem, j]) @ Js  # [8192, L] predicted error per entry
        score = pred.pow(2).sum(-1) - (pred @ Q).pow(2).sum(-1)  # after the best acoustic fix
        k = V if shortlist <= 0 or shortlist >= V else shortlist
        cand = torch.unique(torch.cat([score.topk(k, largest=False).indices, codes[t, :1]]))
        # least-squares acoustic step per candidate, snapped to the 21 levels
        da = -torch.linalg.lstsq(Ja.T, pred[cand].T).solution.T  # [K, 36]
        ac = ((window[n_sem:, j] + da).clamp(-1, 1) + 1) / 2 * (levels - 1)
        ac = ac.round()
        batch = window[None].repeat(len(cand) + 1, 1, 1)  # row 0: the frame as it is (never worse)
        batch[1:, :n_sem, j] = table[cand]
        batch[1:, n_sem:, j] = ac * 2 / (levels - 1) - 1
        i_best = int(evaluate(batch).argmin())
        if i_best > 0:
            new = torch.cat([cand[i_best - 1 : i_best], ac[i_best - 1].long()])
            stats["changed"] += int((new != codes[t]).sum())
            codes[t] = new
            window[:, j] = batch[i_best, :, j]
        # --- acoustic: Gauss-Newton steps on a local secant Jacobian (one level wide), snapped to
        # the 21 levels and kept only if the exact loss improves; then exact coordinate sweeps
        n_ac, h = codes.shape[1] - 1, 2 / (levels - 1)
        cur = evaluate(window[None])[0]
        for _ in range(gn_steps):
            probe = window[None].repeat(n_ac + 1, 1, 1)
            probe[torch.arange(n_ac), n_sem + torch.arange(n_ac), j] += h
            Y = codec.decode_latent(probe)[:, 0, off:].float()
            stats["evaluations"] += n_ac + 1
            Ja = (Y[:n_ac] - Y[n_ac]) / h  # [36, L]
            da = -torch.linalg.lstsq(Ja.T, (Y[n_ac] - seg)[:, None]).solution[:, 0]
            lv = (((window[n_sem:, j] + da).clamp(-1, 1) + 1) / 2 * (levels - 1)).round()
            if torch.equal(lv.long(), codes[t, 1:]):
                break
            trial = window.clone()
            trial[n_sem:, j] = lv * h - 1
            loss = evaluate(trial[None])[0]
            if loss >= cur:
                break
            cur, window = loss, trial
            stats["changed"] += int((lv.long() != codes[t, 1:]).sum())
            codes[t, 1:] = lv.long()
        for _ in range(acoustic_passes):
            moved = 0
            for k in range(codes.shape[1] - 1):
                batch = window[None].repeat(levels, 1, 1)
                batch[:, n_sem + k, j] = values
                lv = int(evaluate(batch).argmin())
                moved += int(lv != codes[t, 1 + k])
                codes[t, 1 + k] = lv
                window[n_sem + k, j] = values[lv]
            stats["changed"] += moved
            if not moved:
                break
        latent[:, t] = window[:, j]
    return codes.cpu(), stats
