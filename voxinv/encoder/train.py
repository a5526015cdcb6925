"""One encoder training run and its Hydra entry point (``python -m voxinv.train_encoder`` is an alias):
check the sources, claim the run directory, build data, encoder and module, fit, export, prove the export."""

from __future__ import annotations

import logging
import sys
import time
from pathlib import Path

import hydra
import pytorch_lightning as pl
import torch
from omegaconf import DictConfig, OmegaConf

from voxinv import rundir
from voxinv.encoder.data import RandomCrops, check_sources, fixed_crops, load_recordings
from voxinv.encoder.module import EncoderModule, StepClock, ValMedia, build_loss_terms
from voxinv.encoder.network import initial_encoder, save_encoder
from voxinv.encoder.quantize import perplexity
from voxinv.invert.guard import resume_checkpoint
from voxinv.paths import CONF_DIR
from voxinv.rundir import write_metrics
from voxinv.voxtral.device import pick_device, to_dtype
from voxinv.voxtral.models import model_path

log = logging.getLogger("voxinv")


def train(cfg: DictConfig, out: Path) -> dict:
    """Everything one training run does; returns metrics.json's content."""
    from hydra.core.hydra_config import HydraConfig

    from voxinv.invert.guard import preflight

    t_start, c_start = time.time(), time.process_time()
    mine = rundir.held(out) is None  # else Hydra's callback claimed it
    claim = preflight(cfg, out, "train_encoder", hydra_written=HydraConfig.initialized(), inputs=check_sources)
    train_files, val_files = claim.cache["inputs"]
    try:
        return _train(cfg, out, train_files, val_files, t_start, c_start)
    finally:
        if mine:
            claim.release()


def _train(cfg: DictConfig, out: Path, train_files, val_files, t_start: float, c_start: float) -> dict:
    from voxinv.invert.guard import check_resume_file, interrupt_code, sigterm_as_interrupt
    from voxinv.invert.loggers import build_loggers, wandb_of
    from voxinv.voxtral.checkpoint import Checkpoint, CheckpointError, load_plain
    from voxinv.voxtral.codec import load_codec

    d = cfg.data
    cfg.paths.output_dir = str(out)  # the run directory (Hydra's, or the caller's) for paths.* / logger
    rundir.atomic_write(out / rundir.CONFIG, OmegaConf.to_yaml(cfg, resolve=True))
    pl.seed_everything(int(cfg.seed), workers=True, verbose=False)
    device = pick_device(cfg.device)

    ckpt = Checkpoint(model_path(cfg.model))
    codec = load_codec(ckpt, dtype=to_dtype(cfg.model.dtype), with_encoder=False)  # frozen; moved in on_fit_start
    sr, spf = codec.sampling_rate, codec.samples_per_frame
    recs = load_recordings(train_files, sr, float(d.peak))
    length = int(d.crop_frames) * spf
    world = int(cfg.trainer.devices) if str(cfg.trainer.devices).isdigit() else 1
    resume = resume_checkpoint(cfg, out)
    state = None
    if resume:
        check_resume_file(resume)  # tensors and plain data only: a pickle never runs code here
        state = load_plain(resume)
        if not isinstance(state, dict) or not isinstance(state.get("global_step"), int):
            raise CheckpointError(f"resume={resume}: not a train_encoder checkpoint (no global_step)")
    done = int(state["global_step"]) if state else 0
    n_items = max(0, int(cfg.steps) - done) * int(cfg.batch_size) * world
    crops = RandomCrops(
        recs, n_items, length, d.gain_db, float(d.min_rms_db), int(cfg.seed), offset=done * int(cfg.batch_size) * world
    )
    loader = torch.utils.data.DataLoader(
        crops, batch_size=int(cfg.batch_size), shuffle=False, num_workers=int(d.workers), drop_last=True
    )
    val_loader = None
    if val_files:
        val = fixed_crops(load_recordings(val_files, sr, float(d.peak)), int(cfg.val.n_crops), length)
        val_loader = torch.utils.data.DataLoader(val, batch_size=len(val), shuffle=False)

    terms = build_loss_terms(cfg.loss, sr, "cpu")
    encoder = initial_encoder(cfg, codec, recs, fresh=resume is None)
    module = EncoderModule(cfg, codec, terms, encoder)
    n_params = sum(p.numel() for p in encoder.parameters())
    hours = sum(r.wav.numel() for r in recs) / sr / 3600
    log.info(
        "encoder %.2f M params; %d training recordings (%.2f h, %d speakers); %d validation crops",
        n_params / 1e6,
        len(recs),
        hours,
        len({r.speaker for r in recs}),
        len(val_files[: int(cfg.val.n_crops)]),
    )
    loggers = build_loggers(cfg, resume=resume is not None)
    clock = StepClock()
    trainer = build_trainer(cfg, out, device, loggers, [ValMedia(out), clock], validate=val_loader is not None)
    stopped, exit_code = None, 0
    if n_items:
        with sigterm_as_interrupt():  # SIGTERM (schedulers) like Ctrl-C: export the encoder so far, exit 128 + signal
            try:
                trainer.fit(module, loader, val_loader, ckpt_path=resume, weights_only=True)
            except SystemExit:  # Lightning answers Ctrl-C with sys.exit(1)
                if not trainer.interrupted:
                    raise
        if trainer.interrupted:
            stopped, exit_code = (
                f"interrupted at step {trainer.global_step}; exported the encoder so far",
                interrupt_code(),
            )
            log.warning("stopping: %s (resume=true continues from the last checkpoint)", stopped)
    elif resume:
        log.info("resume: %s already holds all %d steps: exporting it", resume, int(cfg.steps))
        module.load_state_dict(state["state_dict"])
        module.on_load_checkpoint(state)
    if not trainer.is_global_zero:
        return {}

    # export, then prove the file loads through load_codec and encodes exactly as trained; metrics.json
    # goes first and comes back last, so a half-exported run never looks finished
    rundir.metrics_path(out).unlink(missing_ok=True)
    enc_path = save_encoder(module.encoder.cpu(), out / "encoder.safetensors", to_dtype(cfg.export.dtype))
    metrics: dict = {
        "encoder": str(enc_path),
        "model": str(ckpt.path),
        "steps": int(trainer.global_step) if n_items else int(cfg.steps),
        "batch_size": int(cfg.batch_size),
        "devices": world,
        "crop_seconds": length / sr,
        "params_M": round(n_params / 1e6, 3),
        "wall_time_s": round(time.time() - t_start, 1),
        "cpu_time_s": round(time.process_time() - c_start, 1),  # this process, this (resumed) session
        "train_cpu_s": round(sum(clock.steps), 1),
        "step_cpu_s": round(sorted(clock.steps)[len(clock.steps) // 2], 4) if clock.steps else None,  # median
        "device": str(device),
        "data": {
            "train_recordings": len(recs),
            "train_hours": round(hours, 3),
            "train_speakers": sorted({r.speaker for r in recs}),
            "val_speakers": sorted({s for _, s, _ in val_files}),
            "excluded_speakers": list(d.exclude_speakers),
        },
        "train_final": {k: float(v) for k, v in trainer.callback_metrics.items() if k.startswith(("train/", "code/"))},
        "code_usage": {
            "ema_perplexity": perplexity(module.usage_ema),
            "ema_distinct": int((module.usage_ema > 1e-3).sum()),
        },
        "val": module.val_records,
        "stopped": stopped,
        "exit_code": exit_code,
    }
    if val_loader is not None:
        reloaded = load_codec(ckpt, encoder_path=enc_path)
        x = next(iter(val_loader))
        with torch.no_grad():
            c1 = reloaded.encode(x[:, None])
            c0 = reloaded.quantizer.encode(module.encoder(x[:, None].to(reloaded.dtype)))
        metrics["reload_codes_equal"] = bool(torch.equal(c0, c1))
    write_metrics(out, metrics)
    if wandb_of(loggers) is not None:
        import wandb

        wandb.finish()
    last = module.val_records[-1] if module.val_records else None
    print(
        f"[voxinv] {enc_path}" + (f" (validation log-mel {last['mel']:.3f} at step {last['step']})" if last else ""),
        file=sys.stderr,
    )
    return metrics


def build_trainer(
    cfg: DictConfig, out: Path, device: torch.device, loggers: list, callbacks: list, *, validate: bool
) -> pl.Trainer:
    """The run's Trainer (the one place it is built): ``steps`` updates, validation every ``val_every``
    steps (``validate``: there is a validation set), ``checkpoints/last.ckpt`` every ``checkpoint_every``
    steps (atomic writes), ``callbacks`` after the checkpoint; ``cfg.trainer`` adds the rest."""
    from pytorch_lightning.callbacks import ModelCheckpoint

    from voxinv.invert.callbacks import AtomicCheckpointIO
    from voxinv.trainer import build_trainer as lightning_trainer

    every = int(cfg.val_every)
    return lightning_trainer(
        cfg.trainer,
        device,
        max_steps=int(cfg.steps),
        max_epochs=-1,
        logger=loggers,
        callbacks=[
            ModelCheckpoint(
                dirpath=str(out / "checkpoints"),
                every_n_train_steps=int(cfg.checkpoint_every),
                save_last=True,
                save_top_k=0,
                save_on_train_epoch_end=False,
            ),
            *callbacks,
        ],
        plugins=[AtomicCheckpointIO()],
        gradient_clip_val=float(cfg.optim.grad_clip) or None,
        val_check_interval=every if (validate and 0 < every < int(cfg.steps)) else None,
        check_val_every_n_epoch=None if (validate and 0 < every < int(cfg.steps)) else 1,
        num_sanity_val_steps=0,
        limit_val_batches=1.0 if validate else 0,
    )


@hydra.main(version_base="1.3", config_path=CONF_DIR, config_name="train_encoder")
def main(cfg: DictConfig) -> None:
    from hydra.core.hydra_config import HydraConfig

    from voxinv.invert.guard import exit_on_bad_input

    out = Path(HydraConfig.get().runtime.output_dir)
    try:
        with exit_on_bad_input():  # bad input: one line, exit 2; a full disk: one line, exit 3
            metrics = train(cfg, out)
    finally:
        rundir.release(out)
    if metrics.get("exit_code"):
        sys.exit(metrics["exit_code"])  # interrupted: 128 + signal (README "Exit codes"); metrics.json says why


if __name__ == "__main__":
    main()
