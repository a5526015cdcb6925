"""Hydra entry point: compose → build → fit → export → evaluate.

python -m voxinv.run loss=stft+spk target.path=me.wav       # clone a recording (released model)
python -m voxinv.run experiment=demo                         # the ≈1 min offline demo (tiny model)
python -m voxinv.run model=tiny target=preset target.voice=casual_male
python -m voxinv.run -m model=tiny target=synthetic seed=0,1,2 codes=gumbel,softmax_ste   # sweeps
"""

from __future__ import annotations

import logging
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

import hydra
import torch
from omegaconf import DictConfig, OmegaConf

from voxinv import rundir

log = logging.getLogger("voxinv")
CONF_DIR = str(Path(__file__).resolve().parent / "conf")  # shipped inside the package (wheel and editable alike)
DTYPES = {"float32": torch.float32, "fp32": torch.float32, "bfloat16": torch.bfloat16, "bf16": torch.bfloat16}


def model_path(cfg: DictConfig) -> str:
    """The model directory / repo id; tiny and proxy models are generated once into the cache directory."""
    m = cfg.model
    if m.path:
        return str(m.path)
    if m.name == "tiny":
        from voxinv.voxtral.tiny import make_tiny, tiny_fingerprint

        path = Path(m.cache_dir).expanduser() / f"tiny-seed{m.tiny_seed}-{tiny_fingerprint()}"
        make = lambda d: make_tiny(d, seed=int(m.tiny_seed))  # noqa: E731
    elif m.name == "proxy":
        from voxinv.voxtral.proxy import assets_dir, make_proxy, proxy_fingerprint

        assets = assets_dir(m.assets)
        path = Path(m.cache_dir).expanduser() / f"proxy-seed{m.tiny_seed}-{proxy_fingerprint(assets)}"
        make = lambda d: make_proxy(d, assets, seed=int(m.tiny_seed))  # noqa: E731
    else:
        raise ValueError("model.path is required (a local directory or a Hugging Face repo id)")
    if not (path / "consolidated.safetensors").is_file():
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(dir=path.parent, prefix=f".{m.name}-"))
        make(tmp)
        try:
            os.replace(tmp, path)
        except OSError:  # another process made it first
            shutil.rmtree(tmp, ignore_errors=True)
    return str(path)


def pick_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise RuntimeError("device=cuda requested but CUDA is not available; use device=cpu")
    return torch.device(name)


def build_target(cfg: DictConfig, codec, ckpt):
    from voxinv.invert import target as T

    t = cfg.target
    if t.kind == "file":
        if not t.path:
            raise ValueError("target=file needs target.path=<audio file>")
        return T.from_file(t.path, codec, trim=t.trim, trim_db=t.trim_db, peak=t.peak, max_seconds=t.max_seconds)
    if t.kind == "synthetic":
        return T.synthetic(codec, int(t.n_frames), int(t.seed))
    if t.kind == "preset":
        return T.preset(codec, ckpt, t.voice, t.max_frames)
    raise ValueError(f"target.kind={t.kind!r}: expected file, preset or synthetic")


def resume_checkpoint(cfg: DictConfig, out: Path) -> str | None:
    r = cfg.resume
    if r in (False, None, "false"):
        return None
    p = out / rundir.LAST_CKPT if r in (True, "true") else Path(str(r))
    if p.is_dir():
        p = p / rundir.LAST_CKPT
    if not p.is_file():
        if r in (True, "true"):
            log.info("resume=true but %s does not exist yet: starting fresh", p)
            return None
        raise FileNotFoundError(f"resume={r}: no checkpoint at {p}")
    return str(p)


def run(cfg: DictConfig, out: Path) -> dict:
    """Everything one inversion does; returns metrics.json's content."""
    import pytorch_lightning as pl
    from hydra.utils import instantiate

    from voxinv.invert.export import discrete_losses, export_run
    from voxinv.invert.init import coord_descent, warm_start_codes
    from voxinv.invert.loggers import build_logger, log_final, quiet_lightning
    from voxinv.invert.losses import LossSuite, build_terms
    from voxinv.invert.module import InversionModule, NonFiniteLoss, Steps, loop_settings, trainer_settings
    from voxinv.invert.params import CodeParams
    from voxinv.voxtral.checkpoint import Checkpoint
    from voxinv.voxtral.codec import load_codec

    t_start = time.time()
    if cfg.target.kind == "file":  # bad input fails before any model is fetched
        if not cfg.target.path:
            raise ValueError("target=file needs target.path=<audio file> (or use experiment=demo for the offline demo)")
        if not Path(cfg.target.path).expanduser().is_file():
            from voxinv.audio import AudioError

            raise AudioError(f"audio file {cfg.target.path} does not exist")
    out.mkdir(parents=True, exist_ok=True)
    cfg.paths.output_dir = str(out)  # the run directory (Hydra's, or the caller's) for paths.*
    rundir.atomic_write(out / rundir.CONFIG, OmegaConf.to_yaml(cfg, resolve=True))
    pl.seed_everything(int(cfg.seed), workers=True, verbose=False)
    device = pick_device(cfg.device)

    # frozen model parts and the target
    ckpt = Checkpoint(model_path(cfg))
    dtype = DTYPES[cfg.model.dtype]
    codec = load_codec(ckpt, dtype=dtype, device=device)
    eval_codec = codec if dtype == torch.float32 else load_codec(ckpt, dtype=torch.float32, device=device)
    target = build_target(cfg, eval_codec, ckpt)
    log.info("target %s: %d frames (%.2f s)", target.name, target.n_frames, target.wav.numel() / codec.sampling_rate)

    # code parameters + initialisation
    # salted: a synthetic target seeded by the same `seed` must not share draws with the random start
    g = torch.Generator().manual_seed(int(cfg.seed) + 1_000_003)
    table = codec.quantizer.semantic_codebook.table.float().cpu()
    c = cfg.codes
    params = CodeParams(
        table,
        int(cfg.batch),
        target.n_frames,
        semantic=c.semantic,
        levels=codec.args.acoustic_codebook_size,
        n_acoustic=codec.args.acoustic_dim,
        init_logit_scale=c.init_logit_scale,
        init_acoustic_std=c.init_acoustic_std,
        generator=g,
    )
    resume = resume_checkpoint(cfg, out)
    init_info: dict = {"kind": cfg.init.kind}
    if resume is None and cfg.init.kind != "random":
        t0 = time.time()
        if cfg.init.kind == "warm_start":
            start = warm_start_codes(str(cfg.init.source), target.n_frames, ckpt)[None].expand(int(cfg.batch), -1, -1)
        elif cfg.init.kind == "coord_descent":
            i = cfg.init
            found = []
            for b, codes0 in enumerate(params.codes()):
                cb, st = coord_descent(
                    eval_codec,
                    target.wav,
                    codes0,
                    sweeps=i.sweeps,
                    shortlist=i.shortlist,
                    context=i.context,
                    lookahead=i.lookahead,
                    batch_size=i.batch_size,
                    acoustic_passes=i.acoustic_passes,
                    gn_steps=i.gn_steps,
                )
                found.append(cb)
                init_info[f"restart{b}"] = st
            start = torch.stack(found)
        elif cfg.init.kind == "encoder":
            from voxinv.invert.encoder_init import encoder_init

            codes0, st = encoder_init(ckpt, cfg.init.path, target.wav, device)
            start = codes0[None].expand(int(cfg.batch), -1, -1)
            init_info.update(st)
        else:
            raise ValueError(f"init.kind={cfg.init.kind!r}: expected random, warm_start, coord_descent or encoder")
        params.set_codes(start, logit_margin=cfg.init.logit_margin)
        init_info["seconds"] = round(time.time() - t0, 3)
        log.info("init %s done in %.1f s", cfg.init.kind, init_info["seconds"])

    # losses (speaker encoder and backbone prior only when weighted)
    weights = dict(cfg.loss.weights)
    spk = None
    if weights.get("spk", 0) > 0:
        from voxinv.invert.speaker import SpeakerEncoder

        spk = SpeakerEncoder.load(device)
    prior = None
    if weights.get("prior", 0) > 0:
        from voxinv.invert.prior import BackbonePrior

        prior = BackbonePrior(ckpt, device=device, **cfg.loss.prior)
    terms = build_terms(cfg.loss, codec.sampling_rate, target.wav.to(device), spk)
    losses = LossSuite(weights, terms, prior).to(device)

    if resume is None and (out / "checkpoints").is_dir():  # a fresh run into a used dir: old checkpoints go
        log.info("fresh run (resume=false): removing old checkpoints in %s", out / "checkpoints")
        shutil.rmtree(out / "checkpoints")
    loop = loop_settings(cfg.loop, cfg.trainer, device)
    module = InversionModule(cfg, codec, target, losses, params, eval_codec=eval_codec, loop=loop)
    quiet_lightning()
    logger = build_logger(cfg, resume=resume is not None)
    bar = cfg.trainer.get("enable_progress_bar", True)
    callbacks = [instantiate(c) for k, c in cfg.callbacks.items() if c is not None and (bar or k != "progress_bar")]
    trainer = pl.Trainer(
        max_steps=int(cfg.steps),
        max_epochs=-1,
        logger=logger,
        callbacks=callbacks,
        accelerator="gpu" if device.type == "cuda" else "cpu",
        devices=1,
        **trainer_settings(cfg.trainer, device),
    )
    loader = torch.utils.data.DataLoader(Steps(int(cfg.steps)), batch_size=None, shuffle=False)
    stopped = None
    try:
        trainer.fit(module, loader, ckpt_path=resume)
    except NonFiniteLoss as e:
        stopped = f"{e}; kept the last codes with a finite loss"
        log.error("stopping: %s", stopped)
    except SystemExit:  # Lightning answers Ctrl-C with sys.exit(1): export what there is instead
        if not trainer.interrupted:
            raise
    if trainer.interrupted and stopped is None:
        stopped = f"interrupted at step {trainer.global_step}; exported the current codes"

    # export the best codes seen at any evaluation, by the discrete (noise-free, fp32) objective
    module.to(device)
    if stopped and module.last_good_codes is not None:
        module.evaluate(int(trainer.global_step), module.last_good_codes, log=False)
    if module.best is None:
        module.evaluate(int(trainer.global_step), log=False)
    best = module.best
    final, _ = discrete_losses(eval_codec, losses, target.wav.to(device), best["codes"][None], weights)
    extra = {
        "final": {k: float(v[0]) for k, v in final.items()},
        "best_step": best["step"],
        "init": init_info,
        "steps": int(trainer.global_step),
        "seed": int(cfg.seed),
        "wall_time_s": round(time.time() - t_start, 3),
        "device": str(device),
        "model": str(ckpt.path),
        "loss_models": sorted(k for k, w in weights.items() if w > 0),
        "stopped": stopped,
        "history": module.history,
    }
    metrics = export_run(out, codes=best["codes"], codec=eval_codec, target=target, ckpt=ckpt, extra=extra)
    if cfg.eval.which:
        from voxinv.eval.__main__ import evaluate_run

        metrics["eval"] = evaluate_run(out, which=tuple(cfg.eval.which), loss_models=set(extra["loss_models"]))
    if cfg.export.register:
        from voxinv.voxtral.voices import register_voice

        r = cfg.export.register
        register_voice(ckpt.path, r.name, torch.load(out / rundir.VOICE, weights_only=True), r.overlay)
        log.info("registered voice %r in %s", r.name, r.overlay)
    log_final(trainer.loggers, out, metrics)  # final/ + best/ rows and summary, W&B artifact; closes them
    _summary(out, metrics, ckpt)
    return metrics


def _summary(out: Path, m: dict, ckpt) -> None:
    s = m["signal"]
    line = f"[voxinv] {out}: SI-SDR {s['si_sdr']:.2f} dB, mel {s['mel']:.4f}"
    if "truth" in m:
        line += f", semantic acc {m['truth']['code_sem_acc']:.1f}%, acoustic acc {m['truth']['code_ac_acc']:.1f}%"
    print(line, file=sys.stderr)
    if m.get("stopped"):
        print(f"[voxinv] stopped early: {m['stopped']}", file=sys.stderr)
    print(
        f"[voxinv] deploy: voxinv register-voice --model {ckpt.path} --voice-file {out / rundir.VOICE} "
        f"--name my_voice --out OVERLAY_DIR",
        file=sys.stderr,
    )


@hydra.main(version_base="1.3", config_path=CONF_DIR, config_name="config")
def main(cfg: DictConfig) -> float:
    from hydra.core.hydra_config import HydraConfig

    from voxinv.audio import AudioError
    from voxinv.voxtral.checkpoint import CheckpointError

    out = Path(HydraConfig.get().runtime.output_dir)
    try:
        metrics = run(cfg, out)
    except (CheckpointError, AudioError, FileNotFoundError, ValueError) as e:
        # bad input: one line, no traceback (bugs still raise with a traceback)
        print(f"voxinv: error: {e}", file=sys.stderr)
        sys.exit(2)
    return float(metrics["final"]["total"])  # the sweep objective (Optuna)


if __name__ == "__main__":
    main()
