"""Write a finished (or stopped) inversion: codes, reconstruction, voice, metrics, config."""

from __future__ import annotations

from pathlib import Path

import torch

from voxinv import rundir
from voxinv.audio import write_wav
from voxinv.voxtral.codes import save_codes
from voxinv.voxtral.voices import codes_to_voice, save_voice


def code_stats(codes: torch.Tensor, levels: int = 21) -> dict:
    """Statistics of raw codes ``[T, 37]`` that flag degenerate solutions (collapse, saturation)."""
    sem, ac = codes[:, 0], codes[:, 1:]
    hist = torch.bincount(ac.flatten(), minlength=levels).float()
    p = hist / hist.sum()
    return {
        "frames": int(codes.shape[0]),
        "unique_semantic": int(sem.unique().numel()),
        "acoustic_extreme_fraction": float(((ac == 0) | (ac == levels - 1)).float().mean()),
        "acoustic_level_entropy_bits": float(-(p[p > 0] * p[p > 0].log2()).sum()),
    }


def export_run(
    out: Path,
    *,
    codes: torch.Tensor,  # raw [T, 37]
    codec,  # fp32 codec used for the reconstruction
    target,
    ckpt,
    extra: dict,
) -> dict:
    """Write the run directory (:mod:`voxinv.rundir`): codes, reconstruction, target, voice, metrics (+ true codes)."""
    from voxinv.eval.metrics import code_recovery, signal_metrics

    out.mkdir(parents=True, exist_ok=True)
    sr = codec.sampling_rate
    save_codes(out / rundir.CODES, codes, frame_rate=codec.args.frame_rate, model=str(ckpt.path), target=target.name)
    rec = codec.decode_windowed(codes.T[None].to(next(codec.parameters()).device))[0, 0].float().cpu()
    write_wav(out / rundir.RECONSTRUCTION, rec, sr)
    write_wav(out / rundir.TARGET, target.wav, sr)
    table = ckpt.audio_table()
    voice = codes_to_voice(codes, table, ckpt.params.audio)
    save_voice(voice, out / rundir.VOICE)
    x, y = target.wav.numpy(), rec.numpy()
    metrics = {
        "signal": signal_metrics(x, y, sr),
        "codes": code_stats(codes, codec.args.acoustic_codebook_size),
        "target": {"name": target.name, "frames": target.n_frames, "seconds": target.wav.numel() / sr, **target.info},
        "voice": {"rows": int(voice.shape[0]), "dim": int(voice.shape[1])},
        **extra,
    }
    if target.codes is not None:
        save_codes(out / rundir.TRUE_CODES, target.codes, frame_rate=codec.args.frame_rate)
        metrics["truth"] = code_recovery(codes, target.codes, table=table, audio_args=ckpt.params.audio)
    rundir.write_metrics(out, metrics)
    return metrics
