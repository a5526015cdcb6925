"""Write a finished (or stopped) inversion: codes, reconstruction, voice, metrics, config; then the
end-of-run steps (graders, voice registration, loggers' final record, the summary lines)."""

from __future__ import annotations

import logging
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING

import torch

from voxinv import rundir
from voxinv.audio import write_wav
from voxinv.voxtral.codes import save_codes
from voxinv.voxtral.voices import codes_to_voice, save_voice

if TYPE_CHECKING:
    from voxinv.invert.fit import Inversion

log = logging.getLogger("voxinv")


def code_stats(codes: torch.Tensor, levels: int) -> dict:
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
    # metrics.json goes first and is written last: a half-exported run (killed, disk full) never looks finished
    rundir.metrics_path(out).unlink(missing_ok=True)
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
    if target.codes is None:
        (out / rundir.TRUE_CODES).unlink(missing_ok=True)  # never another target's codes beside these
    else:
        save_codes(out / rundir.TRUE_CODES, target.codes, frame_rate=codec.args.frame_rate)
        metrics["truth"] = code_recovery(codes, target.codes, table=table, audio_args=ckpt.params.audio)
    rundir.write_metrics(out, metrics)
    return metrics


def export(job: Inversion, t_start: float) -> dict:
    """Export the best codes of ``job`` seen at any evaluation by the discrete (noise-free, fp32)
    objective; returns metrics.json's content."""
    from voxinv.invert.fit import make_module
    from voxinv.invert.losses import discrete_losses

    cfg, device, m = job.cfg, job.device, job.model
    module = job.module if job.module is not None else make_module([job])  # fitting never started
    clip = job.clip
    steps = clip.steps
    module.to(device)
    clip.to(device)
    if clip.nonfinite and clip.last_good_codes is not None:  # other stops were evaluated by fit
        module.evaluate(clip, steps, clip.last_good_codes, log=False)
    if clip.best is None:
        module.evaluate(clip, steps, log=False)
    best = clip.best
    weights = dict(cfg.loss.weights)
    final, _ = discrete_losses(m.eval_codec, clip.losses, job.target.wav.to(device), best["codes"][None], weights)
    extra = {
        "final": {k: float(v[0]) for k, v in final.items()},
        "best_step": best["step"],
        "init": job.init,
        "steps": steps,
        "seed": int(cfg.seed),
        # after a resume: the total over the segments (earlier ones up to the checkpoint they left)
        "wall_time_s": round(time.time() - t_start + clip.earlier_wall_s, 3),
        "device": str(device),
        "model": str(m.ckpt.path),
        "loss_models": sorted(k for k, w in weights.items() if w > 0),
        "stopped": job.stopped,
        "exit_code": job.exit_code,  # guard.EXIT_*: 0 finished, 3 failed, 128 + signal interrupted
        "history": clip.history,
    }
    return export_run(job.out, codes=best["codes"], codec=m.eval_codec, target=job.target, ckpt=m.ckpt, extra=extra)


def evaluate(cfg, out: Path, metrics: dict, codec=None) -> None:
    """The end-of-run graders (``eval.which``) into metrics.json ``eval``, and with ``eval.reference=encoder``
    the same scores for ``codec``'s own encoder into ``reference``; an interrupt skips them."""
    try:
        if cfg.eval.which:
            from voxinv.eval.evaluate import evaluate_run

            metrics["eval"] = evaluate_run(out, which=tuple(cfg.eval.which), loss_models=set(metrics["loss_models"]))
        if cfg.eval.get("reference") == "encoder":
            if codec is None or not codec.has_encoder:
                log.warning("eval.reference=encoder: the model has no codec encoder (the release ships none); skipped")
            else:
                metrics["reference"] = encoder_reference(codec, out)
                rundir.merge_metrics(out, "reference", metrics["reference"])
    except KeyboardInterrupt:
        log.warning("evaluation interrupted: the outputs are exported, metrics.json has no eval section")


def encoder_reference(codec, out: Path) -> dict:
    """The run's clone next to the codec's own encoder (one forward pass, then decoded), both scored
    against the run's ``target.wav``: MR log-mel L1 in log10 units (:func:`voxinv.voxtral.proxy.mr_log_mel`,
    the speech benchmark's metric; lower is closer) and resemblyzer speaker similarity (GE2E cosine;
    ``None`` with ``spk_error`` where the grader is unavailable)."""
    from voxinv.audio import read_audio
    from voxinv.eval import speaker_similarity
    from voxinv.voxtral.proxy import encoder_round_trip, mr_log_mel

    t0 = time.time()
    sr = codec.sampling_rate
    target, clone = read_audio(out / rundir.TARGET, sr), read_audio(out / rundir.RECONSTRUCTION, sr)
    _, enc = encoder_round_trip(codec, target)
    res: dict = {"model_encoder": {}, "clone": {}}
    for name, wav in (("clone", clone), ("model_encoder", enc[: target.numel()])):
        res[name]["mrmel"] = mr_log_mel(target, wav, sr)
        try:
            res[name]["spk"] = speaker_similarity(target.numpy(), wav.numpy(), sr, "resemblyzer")
        except Exception as e:  # grader not installed / silent audio: recorded as missing, never as a number
            res[name]["spk"], res["spk_error"] = None, f"{type(e).__name__}: {e}"
    res["seconds"] = round(time.time() - t0, 3)
    return res


def finish(job: Inversion, metrics: dict, t_start: float | None = None) -> None:
    """Register the voice (``export.register``), give the loggers the final record, print the summary
    (with the whole run's wall time since ``t_start``)."""
    cfg, out, ckpt = job.cfg, job.out, job.model.ckpt
    if cfg.export.register:
        from voxinv.voxtral.voices import register_voice

        r = cfg.export.register
        register_voice(ckpt.path, r.name, torch.load(out / rundir.VOICE, weights_only=True), r.overlay)
        log.info("registered voice %r in %s", r.name, r.overlay)
    if job.trainer is not None:  # its clip's loggers (a group of one: the trainer's)
        from voxinv.invert.final import log_final

        log_final(job.clip.loggers, out, metrics)  # final/ + best/ rows and summary, W&B artifact; closes them
    took = None
    if t_start is not None:  # process CPU includes the imports and every thread (wall depends on the machine's load)
        took = f"{time.time() - t_start:.0f} s wall, {time.process_time():.0f} s CPU"
    summary(out, metrics, ckpt, note=cfg.model.get("note"), took=took)


def summary(out: Path, m: dict, ckpt, note: str | None = None, took: str | None = None) -> None:
    """The run's result and how to deploy its voice, on stderr; ``note`` says what the model is, ``took``
    how long the run took."""
    s = m["signal"]
    line = f"[voxinv] {out}: SI-SDR {s['si_sdr']:.2f} dB, mel {s['mel']:.4f}"
    if "truth" in m:
        line += f", semantic acc {m['truth']['code_sem_acc']:.1f}%, acoustic acc {m['truth']['code_ac_acc']:.1f}%"
    print(line, file=sys.stderr)
    if "reference" in m:
        print(reference_summary(out, m, took), file=sys.stderr)
    if note:
        print(f"[voxinv] note: {note}", file=sys.stderr)
    if m.get("stopped"):
        from voxinv.invert.fit import STOP_MESSAGES

        why = STOP_MESSAGES.get(m["stopped"], m["stopped"])
        print(f"[voxinv] stopped early at step {m['steps']}: {why}; exported the best evaluated codes", file=sys.stderr)
    elif m["steps"] == 0:
        print(f"[voxinv] steps=0: only the init ({m['init']['kind']}) ran; its codes were exported", file=sys.stderr)
    from voxinv.invert.loggers import in_multirun, offline_sync_hint

    if in_multirun():  # the sweep's end says it once (voxinv.invert.loggers.SweepSummary)
        return
    print(
        f"[voxinv] deploy: voxinv register-voice --model {ckpt.path} --voice-file {out / rundir.VOICE} "
        f"--name my_voice --out OVERLAY_DIR",
        file=sys.stderr,
    )
    hint = offline_sync_hint([out])
    if hint:
        print(hint, file=sys.stderr)


def reference_summary(out: Path, m: dict, took: str | None = None) -> str:
    """The clone against the model's own encoder (metrics.json ``reference``), in words a user can act on."""
    r, t = m["reference"], m["target"]
    clone, enc = r["clone"], r["model_encoder"]

    def spk(x: float | None) -> str:
        return "unavailable" if x is None else f"{x:.3f}"

    closer = clone["mrmel"] < enc["mrmel"]
    lines = [
        f"[voxinv] cloned {t['name']} ({t['seconds']:.2f} s of audio) in {m['steps']} steps"
        + (f": {took}" if took else ""),
        f"[voxinv]   reconstruction: {out / rundir.RECONSTRUCTION}",
        f"[voxinv]   voice file:     {out / rundir.VOICE}",
        f"[voxinv]   MR log-mel to your recording (log10, lower is closer): clone {clone['mrmel']:.3f}, "
        f"the codec's own encoder {enc['mrmel']:.3f}",
        "[voxinv]   "
        + (
            "the clone decodes closer to your recording than the codec's own encoder does"
            if closer
            else "the clone does not yet decode closer to your recording than the codec's own encoder (try more steps)"
        ),
        f"[voxinv]   speaker similarity (resemblyzer cosine, 1 = same voice): clone {spk(clone['spk'])}, "
        f"the codec's own encoder {spk(enc['spk'])}" + (f" ({r['spk_error']})" if "spk_error" in r else ""),
    ]
    return "\n".join(lines)
