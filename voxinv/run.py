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
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import hydra
import torch
from hydra.experimental.callback import Callback
from omegaconf import DictConfig, OmegaConf

from voxinv import rundir
from voxinv.voxtral.device import DTYPES, pick_device, to_dtype  # noqa: F401 (DTYPES: the config's names)

log = logging.getLogger("voxinv")
CONF_DIR = str(Path(__file__).resolve().parent / "conf")  # shipped inside the package (wheel and editable alike)


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


def build_target(cfg: DictConfig, codec, ckpt, audio=None):
    """The target; ``audio`` is the recording :func:`check_inputs` already read (``target=file``)."""
    from voxinv.invert import target as T

    t = cfg.target
    if t.kind == "file":
        if audio is not None and _released_frame() == (codec.sampling_rate, codec.samples_per_frame):
            return audio
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


class RunInterrupted(KeyboardInterrupt):
    """Ctrl-C / SIGTERM before any codes existed: nothing to export."""


@contextmanager
def sigterm_as_interrupt() -> Iterator[None]:
    """SIGTERM (what schedulers send) is handled like Ctrl-C; SIGINT's handler is restored afterwards
    (Lightning ignores SIGINT after the first Ctrl-C)."""
    import signal
    import threading

    if threading.current_thread() is not threading.main_thread():  # signals reach the main thread only
        yield
        return

    def to_interrupt(signum, frame):
        raise KeyboardInterrupt(f"signal {signum}")

    old_term, old_int = signal.signal(signal.SIGTERM, to_interrupt), signal.getsignal(signal.SIGINT)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, old_term)
        signal.signal(signal.SIGINT, old_int)


@contextmanager
def uninterrupted() -> Iterator[None]:
    """Hold Ctrl-C / SIGTERM off while the outputs are written (they are never left half-written)."""
    import signal
    import threading

    if threading.current_thread() is not threading.main_thread():
        yield
        return
    old = {s: signal.signal(s, signal.SIG_IGN) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for s, h in old.items():
            signal.signal(s, h)


def check_inputs(cfg: DictConfig, out: Path):
    """Everything that can be checked before any model is resolved (no download for a bad input):
    steps, optional packages of the chosen losses (and graders: a warning), the run directory, and
    the target recording (read and validated: returned, or ``None`` for other target kinds)."""
    from voxinv.invert.target import load_file

    if int(cfg.steps) < 0:
        raise ValueError(f"steps={cfg.steps}: must be >= 0 (steps=0 runs only the init and exports its codes)")
    missing_packages(cfg)
    try:
        out.mkdir(parents=True, exist_ok=True)
        probe = out / ".voxinv-write-test"
        probe.write_text("")
        probe.unlink()
    except OSError as e:
        raise ValueError(
            f"run directory {out} is not writable ({e.strerror}): pass hydra.run.dir=<a writable directory>"
        ) from None
    t = cfg.target
    if t.kind != "file":
        return None
    if not t.path:
        raise ValueError("target=file needs target.path=<audio file> (or use experiment=demo for the offline demo)")
    sr, spf = _released_frame()  # build_target re-reads the file for a model with other values
    return load_file(t.path, sr, spf, trim=t.trim, trim_db=t.trim_db, peak=t.peak, max_seconds=t.max_seconds)


def _released_frame() -> tuple[int, int]:
    """(sampling rate, samples per frame) of the released codec."""
    from voxinv.voxtral.params import CodecArgs

    c = CodecArgs()
    return c.sampling_rate, c.samples_per_frame


def missing_packages(cfg: DictConfig) -> None:
    """A loss whose package is missing is an error (one line, the install command); a grader's is a
    warning (its metrics are recorded as skipped)."""
    import importlib.util

    from voxinv.invert.speaker import INSTALL_HINT, weights_path

    weights = dict(cfg.loss.weights)
    ramps = cfg.schedule.get("ramps") or {}
    if weights.get("spk", 0) > 0 or "spk" in ramps:
        weights_path()  # SpeakerEncoderUnavailable names the install command
    need = {"perceptual": ["pesq", "pystoi", "speechmos", "onnxruntime"], "asr": ["pocketsphinx"]}
    need["speaker"] = ["resemblyzer", "webrtcvad"]
    miss = sorted({m for g in cfg.eval.which for m in need.get(g, []) if importlib.util.find_spec(m) is None})
    if miss:
        hint = " ".join("webrtcvad-wheels" if m == "webrtcvad" else m for m in miss if m != "resemblyzer")
        log.warning(
            "eval.which=%s: %s not installed, those metrics will be skipped (pip install %s%s)",
            list(cfg.eval.which),
            ", ".join(miss),
            hint,
            f"; {INSTALL_HINT}" if "resemblyzer" in miss else "",
        )


def run(cfg: DictConfig, out: Path) -> dict:
    """Everything one inversion does; returns metrics.json's content.

    Ctrl-C or SIGTERM at any point after the code parameters exist (the init included) exports the
    best codes so far and says so in metrics.json ``stopped``; before that, :class:`RunInterrupted`."""
    import pytorch_lightning as pl

    t_start = time.time()
    audio = check_inputs(cfg, out)  # bad input fails before any model is fetched
    cfg.paths.output_dir = str(out)  # the run directory (Hydra's, or the caller's) for paths.*
    rundir.atomic_write(out / rundir.CONFIG, OmegaConf.to_yaml(cfg, resolve=True))
    pl.seed_everything(int(cfg.seed), workers=True, verbose=False)
    device = pick_device(cfg.device)
    with sigterm_as_interrupt():
        try:
            ckpt, codec, eval_codec = load_model(cfg, device)
            target = build_target(cfg, eval_codec, ckpt, audio)
            log.info(
                "target %s: %d frames (%.2f s)", target.name, target.n_frames, target.wav.numel() / codec.sampling_rate
            )
            losses = build_losses(cfg, ckpt, codec, target, device)
            params = build_params(cfg, codec, target)
        except KeyboardInterrupt:
            raise RunInterrupted("interrupted before the code parameters existed: nothing to export") from None
        module = stopped = None
        init_info: dict = {"kind": cfg.init.kind}
        try:
            resume = resume_checkpoint(cfg, out)
            if resume is None:
                from voxinv.invert.init import initialise

                init_info = initialise(cfg.init, params, eval_codec, target, ckpt)
            if "interrupted" in init_info:
                stopped = f"interrupted during the init ({init_info['interrupted']}); exported the codes found so far"
            else:
                module, trainer, stopped = fit(cfg, out, codec, eval_codec, target, losses, params, resume, device)
        except KeyboardInterrupt:
            stopped = "interrupted before fitting; exported the initial codes"
        with uninterrupted():
            if module is None:
                from voxinv.invert.module import InversionModule, loop_settings

                loop = loop_settings(cfg.loop, cfg.trainer, device)
                module = InversionModule(cfg, codec, target, losses, params, eval_codec=eval_codec, loop=loop)
                trainer = None
            steps = int(trainer.global_step) if trainer is not None else 0
            metrics = export(cfg, out, module, steps, stopped, init_info, ckpt, eval_codec, target, device, t_start)
    try:
        if cfg.eval.which:
            from voxinv.eval.evaluate import evaluate_run

            metrics["eval"] = evaluate_run(out, which=tuple(cfg.eval.which), loss_models=set(metrics["loss_models"]))
    except KeyboardInterrupt:
        log.warning("evaluation interrupted: the outputs are exported, metrics.json has no eval section")
    if cfg.export.register:
        from voxinv.voxtral.voices import register_voice

        r = cfg.export.register
        register_voice(ckpt.path, r.name, torch.load(out / rundir.VOICE, weights_only=True), r.overlay)
        log.info("registered voice %r in %s", r.name, r.overlay)
    if trainer is not None:
        from voxinv.invert.loggers import log_final

        log_final(trainer.loggers, out, metrics)  # final/ + best/ rows and summary, W&B artifact; closes them
    _summary(out, metrics, ckpt)
    return metrics


def load_model(cfg: DictConfig, device: torch.device):
    """The checkpoint and its frozen codec decoder (+ an fp32 copy for evaluation when optimising in bf16)."""
    from voxinv.voxtral.checkpoint import Checkpoint
    from voxinv.voxtral.codec import load_codec

    ckpt = Checkpoint(model_path(cfg))
    dtype = to_dtype(cfg.model.dtype)
    codec = load_codec(ckpt, dtype=dtype, device=device)
    eval_codec = codec if dtype == torch.float32 else load_codec(ckpt, dtype=torch.float32, device=device)
    return ckpt, codec, eval_codec


def build_losses(cfg: DictConfig, ckpt, codec, target, device: torch.device):
    """The loss suite (speaker encoder and backbone prior only when weighted)."""
    from voxinv.invert.losses import LossSuite, build_terms

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
    return LossSuite(weights, terms, prior).to(device)


def build_params(cfg: DictConfig, codec, target):
    from voxinv.invert.params import CodeParams

    # salted: a synthetic target seeded by the same `seed` must not share draws with the random start
    g = torch.Generator().manual_seed(int(cfg.seed) + 1_000_003)
    table = codec.quantizer.semantic_codebook.table.float().cpu()
    c = cfg.codes
    return CodeParams(
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


def fit(cfg, out: Path, codec, eval_codec, target, losses, params, resume: str | None, device: torch.device):
    """Gradient refinement with Lightning; returns (module, trainer, why it stopped early or None)."""
    import pytorch_lightning as pl
    from hydra.utils import instantiate

    from voxinv.invert.loggers import build_logger, quiet_lightning
    from voxinv.invert.module import InversionModule, NonFiniteLoss, Steps, loop_settings, trainer_settings

    if resume is None and (out / rundir.CHECKPOINTS).is_dir():  # a fresh run into a used dir: old checkpoints go
        log.info("fresh run (resume=false): removing old checkpoints in %s", out / rundir.CHECKPOINTS)
        shutil.rmtree(out / rundir.CHECKPOINTS)
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
    if resume is not None:
        check_resume_file(resume)
    try:
        trainer.fit(module, loader, ckpt_path=resume, weights_only=True)
    except NonFiniteLoss as e:
        stopped = f"{e}; kept the last codes with a finite loss"
        log.error("stopping: %s", stopped)
    except SystemExit:  # Lightning answers Ctrl-C with sys.exit(1): export what there is instead
        if not trainer.interrupted:
            raise
    if trainer.interrupted and stopped is None:
        stopped = f"interrupted at step {trainer.global_step}; exported the current codes"
    return module, trainer, stopped


def check_resume_file(path: str) -> None:
    """A resume checkpoint may hold tensors and plain data only (nothing that runs code when loaded)."""
    from voxinv.voxtral.checkpoint import CheckpointError, load_plain

    try:
        load_plain(path)
    except ValueError as e:
        raise CheckpointError(f"resume={path}: {e}") from e
    except Exception as e:  # truncated / not a torch file
        raise CheckpointError(f"resume={path}: cannot read it as a Lightning checkpoint ({type(e).__name__})") from e


def export(cfg, out, module, steps: int, stopped, init_info, ckpt, eval_codec, target, device, t_start) -> dict:
    """Export the best codes seen at any evaluation, by the discrete (noise-free, fp32) objective."""
    from voxinv.invert.export import export_run
    from voxinv.invert.losses import discrete_losses

    module.to(device)
    if stopped and module.last_good_codes is not None:
        module.evaluate(steps, module.last_good_codes, log=False)
    if module.best is None:
        module.evaluate(steps, log=False)
    best = module.best
    losses = module.frozen.losses
    weights = dict(cfg.loss.weights)
    final, _ = discrete_losses(eval_codec, losses, target.wav.to(device), best["codes"][None], weights)
    extra = {
        "final": {k: float(v[0]) for k, v in final.items()},
        "best_step": best["step"],
        "init": init_info,
        "steps": steps,
        "seed": int(cfg.seed),
        "wall_time_s": round(time.time() - t_start, 3),
        "device": str(device),
        "model": str(ckpt.path),
        "loss_models": sorted(k for k, w in weights.items() if w > 0),
        "stopped": stopped,
        "history": module.history,
    }
    return export_run(out, codes=best["codes"], codec=eval_codec, target=target, ckpt=ckpt, extra=extra)


def _summary(out: Path, m: dict, ckpt) -> None:
    s = m["signal"]
    line = f"[voxinv] {out}: SI-SDR {s['si_sdr']:.2f} dB, mel {s['mel']:.4f}"
    if "truth" in m:
        line += f", semantic acc {m['truth']['code_sem_acc']:.1f}%, acoustic acc {m['truth']['code_ac_acc']:.1f}%"
    print(line, file=sys.stderr)
    if m.get("stopped"):
        print(f"[voxinv] stopped early: {m['stopped']}", file=sys.stderr)
    elif m["steps"] == 0:
        print(f"[voxinv] steps=0: only the init ({m['init']['kind']}) ran; its codes were exported", file=sys.stderr)
    print(
        f"[voxinv] deploy: voxinv register-voice --model {ckpt.path} --voice-file {out / rundir.VOICE} "
        f"--name my_voice --out OVERLAY_DIR",
        file=sys.stderr,
    )


class CheckRunDir(Callback):
    """Hydra callback: the run (or sweep) directory must be creatable and writable, else one line, exit 2
    (Hydra would otherwise fail with two tracebacks while writing .hydra/)."""

    def on_run_start(self, config: DictConfig, **kwargs) -> None:
        _writable_or_exit(OmegaConf.select(config, "hydra.run.dir"), "hydra.run.dir")

    def on_multirun_start(self, config: DictConfig, **kwargs) -> None:
        _writable_or_exit(OmegaConf.select(config, "hydra.sweep.dir"), "hydra.sweep.dir")


def _writable_or_exit(path: str, key: str) -> None:
    d = Path(str(path))
    try:
        d.mkdir(parents=True, exist_ok=True)
        probe = d / ".voxinv-write-test"
        probe.write_text("")
        probe.unlink()
    except OSError as e:
        print(
            f"voxinv: error: cannot write to {key}={d} ({e.strerror}): pass {key}=<a writable directory>",
            file=sys.stderr,
        )
        sys.exit(2)


@hydra.main(version_base="1.3", config_path=CONF_DIR, config_name="config")
def main(cfg: DictConfig) -> float:
    from hydra.core.hydra_config import HydraConfig

    from voxinv.audio import AudioError
    from voxinv.invert.speaker import SpeakerEncoderUnavailable
    from voxinv.voxtral.checkpoint import CheckpointError

    out = Path(HydraConfig.get().runtime.output_dir)
    try:
        metrics = run(cfg, out)
    except (CheckpointError, AudioError, FileNotFoundError, ValueError, SpeakerEncoderUnavailable) as e:
        # bad input: one line, no traceback (bugs still raise with a traceback)
        print(f"voxinv: error: {e}", file=sys.stderr)
        sys.exit(2)
    except RunInterrupted as e:
        print(f"voxinv: {e}", file=sys.stderr)
        sys.exit(130)
    return float(metrics["final"]["total"])  # the sweep objective (Optuna)


if __name__ == "__main__":
    main()
