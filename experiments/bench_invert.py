"""Speed of the main job: milliseconds per optimizer step of the inversion, coordinate-descent
seconds per frame, peak memory — tiny and release-size codec (random weights), CPU or CUDA.

Rows (``mode``):

* ``module``  — the real ``InversionModule.training_step`` inside a Lightning ``Trainer`` (what
  ``python -m voxinv.run`` does; ``loop`` settings resolved for the device as in a run);
* ``bare``    — the same step (code parameters → decode → ``LossSuite`` → backward → clip → Adam)
  as a plain Python loop: ``module − bare`` is Lightning's per-step overhead;
* ``recipe``  — the public recipe's objective written the way its own script computes it (one
  auraloss ``MultiResolutionSTFTLoss`` call, torchaudio mel + MFCC, L1; Gumbel codes) as a bare
  loop on the same decoder: the reference a ``module`` step with ``--loss recipe`` must not exceed;
* ``cd``      — coordinate descent (``conf/init/coord_descent.yaml`` settings, one sweep) seconds
  per frame visit.

ms/step is the wall time of ``--steps`` steps after ``--warmup`` steps, divided by ``--steps``
(CUDA: synchronised only at the start and the end, so host/device overlap counts as it does in a
run); "CPU ms/step" is the process's CPU time over the same steps (on a shared, loaded CPU the
wall time mostly measures the other processes; with one torch thread CPU time does not). Memory: peak growth during the timed steps (bench_codec.py's method: CUDA allocator peak, CPU
resident-set growth). The speaker term (GE2E) is left out of ``recipe``/``--loss recipe`` when its
weights are not installed (stated in the output).

    python experiments/bench_invert.py --quick                        # CPU smoke (≈ 1 min)
    python experiments/bench_invert.py --sizes tiny real --seconds 2 --restarts 1 --json cpu.json
    python experiments/bench_invert.py --device cuda --dtype fp32 bf16 --seconds 2 10 30 --restarts 1 16
"""

from __future__ import annotations

import argparse
import itertools
import json
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_codec import DTYPES, _mallopt, build, peak_memory  # noqa: E402  (sibling script)

HERE = Path(__file__).resolve().parent


def compose(*overrides: str):
    from hydra import compose as hcompose
    from hydra import initialize_config_dir

    from voxinv.paths import CONF_DIR

    with initialize_config_dir(config_dir=CONF_DIR, version_base="1.3"):
        return hcompose("config", overrides=["model=tiny", "target=synthetic", "init=random", *overrides])


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _speaker_available() -> bool:
    from voxinv.speaker.ge2e import SpeakerEncoderUnavailable, weights_path

    try:
        weights_path()
        return True
    except SpeakerEncoderUnavailable:
        return False


class Setup:
    """Codec, target, losses and code parameters of one benchmark cell."""

    def __init__(self, codec, cfg, seconds: float, restarts: int, device: torch.device):
        from hydra.utils import instantiate

        from voxinv.invert.losses import LossSuite, build_terms
        from voxinv.invert.target import synthetic

        self.codec, self.cfg, self.device = codec, cfg, device
        frames = max(1, round(seconds * codec.args.frame_rate))
        self.target = synthetic(codec, frames, seed=0)
        self.target.wav = self.target.wav.float()
        weights = {k: v for k, v in cfg.loss.weights.items() if v > 0}
        spk = None
        if weights.get("spk"):
            from voxinv.speaker.ge2e import SpeakerEncoder

            spk = SpeakerEncoder.load(device)
        self.weights = weights
        terms = build_terms(cfg.loss, codec.sampling_rate, self.target.wav.to(device), spk)
        self.losses = LossSuite(weights, terms).to(device)
        self.params = instantiate(cfg.codes, _partial_=True)(
            codec.quantizer.semantic_codebook.table.float().cpu(),
            restarts,
            frames,
            levels=codec.args.acoustic_codebook_size,
            n_acoustic=codec.args.acoustic_dim,
            generator=torch.Generator().manual_seed(1),
        )


def time_module(s: Setup, warmup: int, steps: int) -> dict:
    import pytorch_lightning as pl

    from voxinv.invert.clip import Clip
    from voxinv.invert.module import InversionModule, Steps
    from voxinv.invert.settings import resolve
    from voxinv.trainer import build_trainer

    cfg = s.cfg.copy()
    cfg.steps = warmup + steps + 1  # +1: the last step evaluates (not timed)
    cfg.eval_every = 0
    settings, recipe = resolve(cfg, s.device)  # also refuses trainer.devices != 1
    clip = Clip("bench", s.target, s.losses, s.params, settings.seed)
    module = InversionModule([clip], s.codec, settings, recipe, eval_codec=s.codec)
    marks: dict = {}

    class Clock(pl.Callback):
        def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
            if batch_idx == 0:
                marks["t_first"] = time.perf_counter()
            if batch_idx == warmup:
                _sync(s.device)
                marks["mem"] = peak_memory(s.device)
                marks["mem_out"] = marks["mem"].__enter__()
                marks["t0"], marks["c0"] = time.perf_counter(), time.process_time()

        def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
            if batch_idx == 0:
                _sync(s.device)
                marks["first_step_s"] = time.perf_counter() - marks["t_first"]
            if batch_idx == warmup + steps - 1:
                _sync(s.device)
                marks["t1"], marks["c1"] = time.perf_counter(), time.process_time()
                marks["mem"].__exit__(None, None, None)

    trainer = build_trainer(
        cfg.trainer,
        s.device,
        max_steps=int(cfg.steps),
        max_epochs=-1,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        callbacks=[Clock()],
        devices=1,
    )
    loader = torch.utils.data.DataLoader(Steps(int(cfg.steps)), batch_size=None, shuffle=False)
    trainer.fit(module, loader)
    return {
        "ms_per_step": 1e3 * (marks["t1"] - marks["t0"]) / steps,
        "cpu_ms_per_step": 1e3 * (marks["c1"] - marks["c0"]) / steps,
        "first_step_s": marks["first_step_s"],
        "peak_mb": marks["mem_out"]["peak_mb"],
        "compile": settings.compile,
    }


def _bare_loop(s: Setup, objective, warmup: int, steps: int, noise: bool) -> dict:
    """The configured optimizer (optim.optimizer) + clip around ``objective(sample) -> loss``; the step of training_step without Lightning."""
    from hydra.utils import instantiate

    cfg = s.cfg
    params = s.params.to(s.device)
    opt = instantiate(cfg.optim.optimizer, _convert_="all")(params.parameters())
    temperature = instantiate(cfg.schedule.temperature)  # f(step, total)
    gen = torch.Generator().manual_seed(2)

    def step(i: int) -> None:
        tau = temperature(i, warmup + steps)
        sample = params(tau, noise=gen if noise else None)
        loss = objective(sample)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params.parameters(), float(cfg.optim.grad_clip))
        opt.step()

    for i in range(warmup):
        step(i)
    _sync(s.device)
    with peak_memory(s.device) as mem:
        t0, c0 = time.perf_counter(), time.process_time()
        for i in range(warmup, warmup + steps):
            step(i)
        _sync(s.device)
        t1, c1 = time.perf_counter(), time.process_time()
    return {
        "ms_per_step": 1e3 * (t1 - t0) / steps,
        "cpu_ms_per_step": 1e3 * (c1 - c0) / steps,
        "peak_mb": mem["peak_mb"],
    }


def time_bare(s: Setup, warmup: int, steps: int) -> dict:
    target = s.target.wav.to(s.device)

    def objective(sample):
        wav = s.codec.decode_latent(sample.latent)[:, 0].float()
        return s.losses(wav, target, sample)["total"].mean()

    return _bare_loop(s, objective, warmup, steps, noise=s.cfg.codes.semantic == "gumbel")


def time_recipe(s: Setup, warmup: int, steps: int, with_spk: bool) -> dict:
    """The recipe's objective as its own script computes it: per-call auraloss (batch of one), mel, MFCC."""
    import auraloss
    import torchaudio

    c = s.cfg.loss
    sr, dev = s.codec.sampling_rate, s.device
    x = s.target.wav.to(dev)[None, None]  # [1, 1, N]
    stft = auraloss.freq.MultiResolutionSTFTLoss(
        fft_sizes=list(c.stft.fft_sizes),
        hop_sizes=[int(n * c.stft.hop_ratio) for n in c.stft.fft_sizes],
        win_lengths=list(c.stft.fft_sizes),
    ).to(dev)
    mel = torchaudio.transforms.MelSpectrogram(
        sr, n_fft=c.mel.fft_sizes[0], hop_length=int(c.mel.fft_sizes[0] * c.mel.hop_ratio), n_mels=c.mel.n_mels
    ).to(dev)
    mfcc = torchaudio.transforms.MFCC(
        sr, c.mfcc.n_mfcc, melkwargs={"n_fft": c.mfcc.n_fft, "hop_length": c.mfcc.hop, "n_mels": c.mfcc.n_mels}
    ).to(dev)
    spk = s.losses.terms["spk"] if with_spk else None
    w = c.weights

    def objective(sample):
        y = s.codec.decode_latent(sample.latent).float()  # [B, 1, N]
        loss = w.l1 * (y - x).abs().mean() + w.stft * stft(y, x)
        loss = loss + w.mel * (torch.log(mel(y) + 1e-5) - torch.log(mel(x) + 1e-5)).abs().mean()
        loss = loss + w.mfcc * (mfcc(y) - mfcc(x)).abs().mean()
        if spk is not None:
            loss = loss + w.spk * spk(y[:, 0], x[0, 0]).mean()
        return loss

    return _bare_loop(s, objective, warmup, steps, noise=True)


def time_cd(codec, seconds: float, device: torch.device, sweeps: int) -> dict:
    from hydra.utils import instantiate

    from voxinv.invert.init import coord_descent
    from voxinv.invert.target import synthetic

    i = compose("init=coord_descent").init

    frames = max(1, round(seconds * codec.args.frame_rate))
    target = synthetic(codec, frames, seed=0)
    g = torch.Generator().manual_seed(3)
    a = codec.args
    start = torch.cat(
        [
            torch.randint(0, a.semantic_codebook_size, (frames, 1), generator=g),
            torch.randint(0, a.acoustic_codebook_size, (frames, a.acoustic_dim), generator=g),
        ],
        1,
    )
    _sync(device)
    with peak_memory(device) as mem:
        t0 = time.perf_counter()
        _, st = coord_descent(
            codec,
            target.wav.float(),
            start,
            sweeps=sweeps,
            shortlist=i.shortlist,
            context=i.context,
            lookahead=i.lookahead,
            batch_size=i.batch_size,
            acoustic_passes=i.acoustic_passes,
            gn_steps=i.gn_steps,
            loss=instantiate(i.loss),
            progress=False,
        )
        _sync(device)
        t = time.perf_counter() - t0
    return {
        "s_per_frame": t / (frames * sweeps),
        "seconds": t,
        "evaluations": st["evaluations"],
        "peak_mb": mem["peak_mb"],
    }


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--device", default="cpu", help="cpu, cuda, auto")
    ap.add_argument("--dtype", nargs="+", default=["fp32"], choices=sorted(DTYPES))
    ap.add_argument("--threads", type=int, default=1, help="torch CPU threads")
    ap.add_argument("--sizes", nargs="+", default=["tiny", "real"], choices=["tiny", "real"])
    ap.add_argument("--seconds", nargs="+", type=float, default=[2.0, 10.0, 30.0])
    ap.add_argument("--restarts", nargs="+", type=int, default=[1, 16])
    ap.add_argument("--modes", nargs="+", default=["module", "bare", "recipe", "cd"])
    ap.add_argument(
        "--loss", default="stft+mel", help="loss group of the module/bare rows (recipe: experiment=seed_recipe's step)"
    )
    ap.add_argument("--compile", default="auto", choices=["auto", "true", "false"], help="loop.compile")
    ap.add_argument("--compile-mode", default="default", help="loop.compile_mode (e.g. reduce-overhead)")
    ap.add_argument("--warmup", type=int, default=2)
    ap.add_argument("--steps", type=int, default=5)
    ap.add_argument("--cd-seconds", type=float, default=2.0, help="clip length for coordinate descent")
    ap.add_argument("--cd-sweeps", type=int, default=1)
    ap.add_argument("--max-cpu-work", type=float, default=40.0, help="CPU: skip cells with seconds·restarts above")
    ap.add_argument("--quick", action="store_true", help="CPU smoke: tiny, 2 s, 1 restart, 1+2 steps, all modes")
    ap.add_argument("--json", default=None, help="also write {meta, rows} here")
    args = ap.parse_args(argv)
    if args.quick:
        args.sizes, args.seconds, args.restarts, args.warmup, args.steps = ["tiny"], [2.0], [1], 1, 2
        args.cd_seconds = 0.5

    torch.set_num_threads(args.threads)
    name = "cuda" if args.device == "auto" and torch.cuda.is_available() else args.device
    name = "cpu" if name == "auto" else name
    device = torch.device(name)
    cpu = device.type == "cpu"
    if not cpu:  # fp32 means fp32, not TF32 (as in a run: the default precision of torch)
        torch.backends.cuda.matmul.allow_tf32 = False
        torch.backends.cudnn.allow_tf32 = False
    spk_ok = _speaker_available()
    rows: list[dict] = []
    notes: list[str] = []
    overrides = [f"device={name}", f"loop.compile={args.compile}", f"loop.compile_mode={args.compile_mode}"]
    for size, dt in itertools.product(args.sizes, args.dtype):
        codec = build(size, device, DTYPES[dt])
        for secs, B in itertools.product(args.seconds, args.restarts):
            if cpu and secs * B > args.max_cpu_work:
                notes.append(f"skipped {size} {dt} {secs:g} s × {B} (CPU budget --max-cpu-work {args.max_cpu_work:g})")
                continue
            for mode in args.modes:
                if mode == "cd":
                    continue
                loss = "recipe" if mode == "recipe" else args.loss
                extra = [f"loss={loss}", f"batch={B}"]
                if loss == "recipe":  # experiment=seed_recipe's step (Gumbel codes, its schedule and LR)
                    extra += ["codes=gumbel", "schedule=recipe", "optim.lr=0.1"]
                if mode == "recipe" and B != 1:
                    continue  # the recipe's script optimises one clip, one restart
                cfg = compose(*overrides, *extra)
                if cfg.loss.weights.get("spk", 0) > 0 and not spk_ok:
                    cfg.loss.weights.spk = 0.0
                    notes.append(f"{mode} ({loss}): speaker term left out (GE2E weights not installed)")
                if cpu:
                    _mallopt(32 * 2**20)
                s = Setup(codec, cfg, secs, B, device)
                t0 = time.perf_counter()
                if mode == "module":
                    r = time_module(s, args.warmup, args.steps)
                elif mode == "bare":
                    r = time_bare(s, args.warmup, args.steps)
                elif mode == "recipe":
                    r = time_recipe(s, args.warmup, args.steps, with_spk="spk" in s.losses.terms)
                else:
                    raise SystemExit(f"bench_invert: error: --modes {mode!r}: expected module, bare, recipe, cd")
                row = dict(size=size, dtype=dt, mode=mode, loss=loss, audio_s=secs, restarts=B, **r)
                row["cell_s"] = round(time.perf_counter() - t0, 2)
                rows.append(row)
                print(json.dumps(row), flush=True)
                del s
                if not cpu:
                    torch.cuda.empty_cache()
        if "cd" in args.modes:
            r = time_cd(codec, args.cd_seconds, device, args.cd_sweeps)
            row = dict(size=size, dtype=dt, mode="cd", loss="-", audio_s=args.cd_seconds, restarts=1, **r)
            rows.append(row)
            print(json.dumps(row), flush=True)
        del codec
        if not cpu:
            torch.cuda.empty_cache()

    dev = torch.cuda.get_device_name(device) if not cpu else f"CPU, {torch.get_num_threads()} thread(s)"
    meta = dict(
        device=dev,
        torch=torch.__version__,
        warmup=args.warmup,
        steps=args.steps,
        loss=args.loss,
        compile=args.compile,
        compile_mode=args.compile_mode,
        cd_sweeps=args.cd_sweeps,
        speaker_term=spk_ok,
        notes=notes,
    )
    print(f"\ninversion benchmark: {dev}, torch {torch.__version__}, {args.steps} timed steps after {args.warmup}\n")
    print(table(rows))
    for n in dict.fromkeys(notes):
        print(f"- {n}")
    if args.json:
        Path(args.json).write_text(json.dumps({"meta": meta, "rows": rows}, indent=2) + "\n")
    return {"meta": meta, "rows": rows}


def table(rows: list[dict]) -> str:
    out = [
        "| codec | dtype | mode | loss | audio (s) | restarts | ms/step | CPU ms/step | cd s/frame | first step (s) | peak mem (MB) |",
        "|---|---|---|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        ms = f"{r['ms_per_step']:.1f}" if "ms_per_step" in r else "-"
        cms = f"{r['cpu_ms_per_step']:.1f}" if "cpu_ms_per_step" in r else "-"
        cd = f"{r['s_per_frame']:.3f}" if "s_per_frame" in r else "-"
        first = f"{r['first_step_s']:.2f}" if "first_step_s" in r else "-"
        out.append(
            f"| {r['size']} | {r['dtype']} | {r['mode']}{' (compiled)' if r.get('compile') else ''} | {r['loss']} "
            f"| {r['audio_s']:g} | {r['restarts']} | {ms} | {cms} | {cd} | {first} | {r['peak_mb']:.0f} |"
        )
    return "\n".join(out)


if __name__ == "__main__":
    main()
