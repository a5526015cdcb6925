"""Codec decoder speed and memory: tiny and release-size codec (random weights), decode and decode+backward.

Decode speed is reported as × real time (audio seconds per wall second, median of ``--repeats``);
decode+backward is one inversion step's codec cost (gradient w.r.t. the latent only, weights frozen).
Memory (one extra call after the timed ones): on CUDA ``torch.cuda.max_memory_allocated`` above
what was allocated before the call (model, inputs); on CPU the peak resident-set growth during the
call, sampled every millisecond from /proc, with glibc told (``mallopt``) to serve every block
≥ 64 KiB by ``mmap`` so freed tensors leave the resident set at once — then RSS growth tracks the
live tensors of the call (to within small allocations). Timed calls run with a 32 MiB threshold,
glibc's steady state.

    python experiments/bench_codec.py                                   # CPU, fp32, 1 thread
    python experiments/bench_codec.py --device cuda --dtype bf16 --seconds 2 10 30
    python experiments/bench_codec.py --sizes real --seconds 2 --json out.json

The release-size codec is built straight from the release's params (``REAL_PARAMS``), so no download
is needed: the weights are random, the shapes and therefore the cost are the real ones.
"""

from __future__ import annotations

import argparse
import ctypes
import ctypes.util
import json
import os
import statistics
import threading
import time
from contextlib import contextmanager
from pathlib import Path

import torch

from voxinv.voxtral.codec import VoxtralCodec
from voxinv.voxtral.params import VoxtralParams
from voxinv.voxtral.tiny import REAL_PARAMS, tiny_params

DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16}
PAGE = os.sysconf("SC_PAGE_SIZE") if hasattr(os, "sysconf") else 4096


def _rss() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * PAGE


def _mallopt(mmap_threshold: int) -> None:
    """glibc: blocks ≥ threshold are mmapped (returned to the OS on free); trim the heap top likewise."""
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        libc.mallopt(-3, mmap_threshold)  # M_MMAP_THRESHOLD
        libc.mallopt(-1, mmap_threshold)  # M_TRIM_THRESHOLD
        libc.malloc_trim(0)
    except (OSError, AttributeError):  # not glibc: RSS growth is then only a lower bound
        pass


@contextmanager
def peak_memory(device: torch.device):
    """Yield a dict that holds ``peak_mb`` (growth above the state at entry) after the block."""
    out: dict[str, float] = {}
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        base = torch.cuda.memory_allocated(device)
        torch.cuda.reset_peak_memory_stats(device)
        yield out
        torch.cuda.synchronize(device)
        out["peak_mb"] = (torch.cuda.max_memory_allocated(device) - base) / 2**20
        return
    base, peak, stop = _rss(), [0], threading.Event()

    def sample() -> None:  # torch kernels release the GIL, so this thread keeps sampling
        while not stop.is_set():
            peak[0] = max(peak[0], _rss())
            time.sleep(0.001)

    t = threading.Thread(target=sample, daemon=True)
    t.start()
    try:
        yield out
    finally:
        stop.set()
        t.join()
        out["peak_mb"] = max(0, max(peak[0], _rss()) - base) / 2**20


def build(size: str, device: torch.device, dtype: torch.dtype) -> VoxtralCodec:
    raw = REAL_PARAMS if size == "real" else tiny_params()
    codec = VoxtralCodec(VoxtralParams.from_dict(raw).codec)
    g = torch.Generator().manual_seed(0)
    with torch.no_grad():  # keep activations O(1) so timings are not of denormals / infs
        for p in codec.parameters():
            if p.dim() > 1:
                p.copy_(torch.randn(p.shape, generator=g) / (p[0].numel() ** 0.5))
        q = codec.quantizer.semantic_codebook
        q.embedding_sum.copy_(torch.randn(q.embedding_sum.shape, generator=g))
    return codec.to(device=device, dtype=dtype).eval().requires_grad_(False)


def random_codes(codec: VoxtralCodec, frames: int, batch: int, device: torch.device) -> torch.Tensor:
    a = codec.args
    sem = torch.randint(0, a.semantic_codebook_size, (batch, 1, frames))
    ac = torch.randint(0, a.acoustic_codebook_size, (batch, a.acoustic_dim, frames))
    return torch.cat([sem, ac], 1).to(device)


def timed(fn, device: torch.device, repeats: int) -> tuple[float, float]:
    """(median seconds over ``repeats`` calls after a warm-up call, peak MB of one more call)."""
    cpu = device.type == "cpu"
    if cpu:
        _mallopt(32 * 2**20)
    fn()
    times = []
    for _ in range(repeats):
        if not cpu:
            torch.cuda.synchronize(device)
        t0 = time.perf_counter()
        fn()
        if not cpu:
            torch.cuda.synchronize(device)
        times.append(time.perf_counter() - t0)
    if cpu:
        _mallopt(64 * 2**10)
    with peak_memory(device) as mem:
        fn()
    return statistics.median(times), mem["peak_mb"]


def bench_size(size: str, args: argparse.Namespace, device: torch.device, dtype: torch.dtype) -> list[dict]:
    codec = build(size, device, dtype)
    n_params = sum(p.numel() for p in codec.parameters()) / 1e6
    fr = codec.args.frame_rate
    rows = []

    def row(op: str, frames: int, t: float, mb: float) -> dict:
        audio = args.batch * frames / fr
        return dict(size=size, params_M=round(n_params, 2), op=op, audio_s=frames / fr, batch=args.batch,
                    seconds=t, x_realtime=audio / t, peak_mb=mb)  # fmt: skip

    for secs in args.seconds:
        frames = max(1, round(secs * fr))
        codes = random_codes(codec, frames, args.batch, device)

        def decode(codes: torch.Tensor = codes) -> None:
            with torch.inference_mode():
                codec.decode(codes)

        rows.append(row("decode", frames, *timed(decode, device, args.repeats)))
    if args.backward_seconds > 0:
        frames = max(1, round(args.backward_seconds * fr))
        latent = codec.latent(random_codes(codec, frames, args.batch, device)).detach()

        def step() -> None:  # one inversion step's codec cost: forward, backward to the latent
            lat = latent.clone().requires_grad_(True)
            codec.decode_latent(lat).float().pow(2).mean().backward()
            assert lat.grad is not None

        rows.append(row("decode+backward", frames, *timed(step, device, args.repeats)))
    return rows


def main(argv: list[str] | None = None) -> list[dict]:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--dtype", default="fp32", choices=sorted(DTYPES))
    ap.add_argument("--threads", type=int, default=1, help="torch CPU threads")
    ap.add_argument("--sizes", nargs="+", default=["tiny", "real"], choices=["tiny", "real"])
    ap.add_argument("--seconds", nargs="+", type=float, default=[2.0, 10.0], help="clip lengths to decode")
    ap.add_argument("--batch", type=int, default=1)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--backward-seconds", type=float, default=2.0, help="clip length for decode+backward (0: skip)")
    ap.add_argument("--json", default=None, help="also write the rows here")
    args = ap.parse_args(argv)

    torch.set_num_threads(args.threads)
    device, dtype = torch.device(args.device), DTYPES[args.dtype]
    if device.type == "cuda" and dtype == torch.float32:  # fp32 means fp32, not TF32
        torch.backends.cuda.matmul.allow_tf32 = False
        torch.backends.cudnn.allow_tf32 = False
    torch.manual_seed(0)
    rows: list[dict] = []
    for size in args.sizes:
        rows += bench_size(size, args, device, dtype)
        if device.type == "cuda":
            torch.cuda.empty_cache()

    dev = torch.cuda.get_device_name(device) if device.type == "cuda" else f"CPU, {torch.get_num_threads()} thread(s)"
    print(
        f"\ncodec benchmark: {dev}, {args.dtype}, batch {args.batch}, torch {torch.__version__}, median of {args.repeats}\n"
    )
    print("| codec | params (M) | op | audio (s) | time (s) | × real time | peak mem (MB) |")
    print("|---|---:|---|---:|---:|---:|---:|")
    for r in rows:
        print(
            f"| {r['size']} | {r['params_M']:.2f} | {r['op']} | {r['audio_s']:.1f} | {r['seconds']:.4f} | {r['x_realtime']:.1f} | {r['peak_mb']:.1f} |"
        )
    if args.json:
        meta = dict(device=dev, dtype=args.dtype, batch=args.batch, torch=torch.__version__, repeats=args.repeats)
        Path(args.json).write_text(json.dumps({"meta": meta, "rows": rows}, indent=2) + "\n")
    return rows


if __name__ == "__main__":
    main()
