"""Benchmark Voxtral TTS generation without vLLM: speed (frames/s, × real time) and memory.

1. tiny model (``make_tiny``, fp32): the real code path end to end — prompt, prefill, frame
   loop, codec decode.
2. real-size shapes with random weights: the release's dims (dim 3072, 32/8 heads, FFN 9216, flow
   3 layers, codec dim 1024) but only ``--real-layers`` backbone layers (the full 26-layer fp32
   backbone alone is 12 GB); the backbone step is timed per layer and extrapolated to 26 layers.
   The text embedding is shrunk to 1024 rows (a lookup: its size costs memory, not time).
   Also the BackbonePrior loss (forward + backward) at real dims, extrapolated the same way.
3. memory the real model needs: weight bytes per component (from the manifest) and KV cache.

``--device cpu`` (default; ``torch.set_num_threads(--threads)``) or ``cuda`` (timings synchronised;
``--real-layers 26`` builds the whole backbone there: no extrapolation). Example (≈ 2-3 min on 1 thread):

    python experiments/bench_tts.py --threads 1 --dtype fp32 bf16
    python experiments/bench_tts.py --device cuda --dtype bf16 --real-layers 26 --real-frames 50
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import tempfile
import time
from pathlib import Path

import torch

from voxinv.voxtral.backbone import Backbone, kv_bytes_per_position, weight_bytes
from voxinv.voxtral.codec import VoxtralCodec
from voxinv.voxtral.flow import AcousticTransformer
from voxinv.voxtral.params import VoxtralParams
from voxinv.voxtral.tiny import REAL_PARAMS, make_tiny
from voxinv.voxtral.tts import VoxtralTTS, frame_loop

DT = {"fp32": torch.float32, "bf16": torch.bfloat16}
FRAME_RATE = 12.5
DEVICE = torch.device("cpu")  # set by --device


def _sync() -> None:
    if DEVICE.type == "cuda":
        torch.cuda.synchronize(DEVICE)


def _best(fn, repeat: int) -> float:
    fn()  # warm-up
    ts = []
    for _ in range(repeat):
        _sync()
        t0 = time.perf_counter()
        fn()
        _sync()
        ts.append(time.perf_counter() - t0)
    return min(ts)


def bench_tiny(frames: int) -> dict:
    with tempfile.TemporaryDirectory() as d:
        make_tiny(Path(d) / "m", seed=0)
        tts = VoxtralTTS.from_pretrained(Path(d) / "m", device=DEVICE, dtype=torch.float32)
        text = "Paris is a beautiful city! The quick brown fox jumps over the lazy dog."
        p = tts.prompt(text, "neutral_female")
        tts.generate_codes(text, "neutral_female", seed=0, max_frames=4, stop_at_end=False)  # warm-up
        g = tts.generate_codes(text, "neutral_female", seed=0, max_frames=frames, stop_at_end=False, prompt=p)
        _sync()
        t0 = time.perf_counter()
        wav = tts.decode(g.codes.clamp(min=2))  # END rows (if any) made decodable: timing only
        _sync()
        dec = time.perf_counter() - t0
    fps = frames / g.seconds
    return {
        "prompt_len": len(p),
        "frames": frames,
        "generate_s": round(g.seconds, 3),
        "frames_per_s": round(fps, 1),
        "x_real_time": round(fps / FRAME_RATE, 2),
        "decode_s": round(dec, 3),
        "decode_x_real_time": round(len(wav) / 24000 / dec, 1),
    }


def _bench_prior(bb: Backbone, flow: AcousticTransformer, p: VoxtralParams, layers: int, n_real: int, T: int) -> dict:
    """BackbonePrior forward + backward at T frames; backbone part extrapolated to 26 layers."""
    from types import SimpleNamespace

    from voxinv.invert.prior import BackbonePrior

    prior = BackbonePrior(SimpleNamespace(backbone=bb, flow=flow, params=p), seed=0)
    sem = torch.softmax(torch.randn(1, T, 8192, device=DEVICE), -1).requires_grad_()
    ac = (torch.rand(1, T, 36, device=DEVICE) * 2 - 1).requires_grad_()

    def step():
        out = prior(sem, ac)
        (out["prior_sem"] + out["prior_flow"]).backward()

    full = _best(step, 2)
    layers_all = bb.layers
    bb.layers = layers_all[:1]  # same prior with one layer: the difference is one layer's cost
    try:
        one = _best(step, 2)
    finally:
        bb.layers = layers_all
    per_layer = max(full - one, 0.0) / (layers - 1)
    return {
        "frames": T,
        "fwd_bwd_s_measured": round(full, 2),
        "per_layer_s": round(per_layer, 3),
        "fwd_bwd_s_26_layers": round(one + per_layer * (n_real - 1), 1),
    }


def bench_real(dtype: torch.dtype, layers: int, frames: int, prompt_len: int, prior_frames: int = 100) -> dict:
    """Real dims, random weights, ``layers`` backbone layers; per-frame cost extrapolated to 26."""
    p = VoxtralParams.from_dict(REAL_PARAMS)
    n_real = p.backbone.n_layers
    torch.manual_seed(0)
    bb = Backbone(dataclasses.replace(p.backbone, n_layers=layers, vocab_size=1024), p.audio)
    bb = bb.to(device=DEVICE, dtype=dtype).eval().requires_grad_(False)
    flow = AcousticTransformer(p.audio).to(device=DEVICE, dtype=dtype).eval().requires_grad_(False)
    D = p.backbone.dim
    emb = torch.randn(1, prompt_len, D, dtype=dtype, device=DEVICE)

    # backbone: prefill and one cached decode step, per layer
    def prefill():
        with torch.no_grad():
            bb(emb, 0, bb.new_cache(prompt_len + 1))

    cache = bb.new_cache(prompt_len + 1)
    with torch.no_grad():
        bb(emb, 0, cache)
    x1 = torch.randn(1, 1, D, dtype=dtype, device=DEVICE)

    def step():
        with torch.no_grad():
            bb(x1, prompt_len, cache)

    prefill_layer = _best(prefill, 1) / layers
    step_layer = _best(step, 3) / layers
    h = torch.randn(1, D, dtype=dtype, device=DEVICE)

    def flow_frame():
        with torch.no_grad():
            flow(h, torch.randn(1, 36))  # noise drawn on CPU, as in the frame loop

    flow_s = _best(flow_frame, 3)
    # the shipped loop on this reduced model (sanity: ≈ layers·step + flow per frame)
    g = frame_loop(bb, flow, emb, seed=0, max_frames=frames, stop_at_end=False)
    loop_frame = (g.seconds - prefill_layer * layers) / frames
    frame_s = loop_frame + (n_real - layers) * step_layer  # add the layers not built
    prior = _bench_prior(bb, flow, p, layers, n_real, prior_frames)
    return {
        "dtype": str(dtype).replace("torch.", ""),
        "layers_built": layers,
        "prompt_len": prompt_len,
        "backbone_step_per_layer_ms": round(step_layer * 1e3, 1),
        "backbone_prefill_per_layer_ms": round(prefill_layer * 1e3, 1),
        "flow_per_frame_ms": round(flow_s * 1e3, 1),
        "loop_frame_ms_measured": round(loop_frame * 1e3, 1),
        "frame_ms_extrapolated_26_layers": round(frame_s * 1e3, 1),
        "frames_per_s_26_layers": round(1 / frame_s, 3),
        "x_real_time_26_layers": round(1 / frame_s / FRAME_RATE, 4),
        "prefill_s_26_layers": round(prefill_layer * n_real, 2),
        "prior": prior,
    }


def bench_codec_real(dtype: torch.dtype, frames: int) -> dict:
    p = VoxtralParams.from_dict(REAL_PARAMS)
    torch.manual_seed(0)
    codec = VoxtralCodec(p.codec).to(device=DEVICE, dtype=dtype).eval().requires_grad_(False)
    codes = torch.cat([torch.randint(0, 8192, (1, 1, frames)), torch.randint(0, 21, (1, 36, frames))], 1).to(DEVICE)

    def dec():
        with torch.no_grad():
            codec.decode(codes)

    s = _best(dec, 1)
    return {
        "dtype": str(dtype).replace("torch.", ""),
        "frames": frames,
        "decode_s": round(s, 3),
        "x_real_time": round(frames / FRAME_RATE / s, 2),
    }


def memory() -> dict:
    p = VoxtralParams.from_dict(REAL_PARAMS)
    gb = {k: round(v / 1e9, 3) for k, v in weight_bytes(p, torch.bfloat16).items()}
    kv = kv_bytes_per_position(p.backbone, torch.bfloat16)
    return {
        "weights_bf16_GB": gb,
        "total_bf16_GB": round(sum(v for k, v in gb.items() if k != "backbone"), 3),
        "kv_cache_bf16_bytes_per_position": kv,
        "kv_cache_bf16_MB_4096_positions": round(kv * 4096 / 1e6, 1),
        "note": "a position = one prompt token or one generated frame (80 ms); fp32 doubles everything",
    }


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--device", default="cpu", help="cpu, cuda or auto")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--tiny-frames", type=int, default=150)
    ap.add_argument("--real-layers", type=int, default=2)
    ap.add_argument("--real-frames", type=int, default=5)
    ap.add_argument("--prior-frames", type=int, default=100)
    ap.add_argument("--prompt-len", type=int, default=180, help="≈ a 147-row voice + a short sentence")
    ap.add_argument("--dtype", nargs="+", default=["fp32", "bf16"], choices=sorted(DT))
    ap.add_argument("--json", default=None, help="also write the results here")
    args = ap.parse_args(argv)
    global DEVICE
    name = args.device if args.device != "auto" else ("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise SystemExit("bench_tts: error: --device cuda but CUDA is not available; use --device cpu")
    DEVICE = torch.device(name)
    torch.set_num_threads(args.threads)
    dev = torch.cuda.get_device_name(DEVICE) if DEVICE.type == "cuda" else f"CPU, {args.threads} thread(s)"
    out: dict = {"device": dev, "threads": args.threads, "torch": torch.__version__, "memory": memory()}
    t0 = time.perf_counter()
    out["tiny_fp32"] = bench_tiny(args.tiny_frames)
    print(json.dumps({"tiny_fp32": out["tiny_fp32"]}), flush=True)
    for name in args.dtype:
        r = bench_real(DT[name], args.real_layers, args.real_frames, args.prompt_len, args.prior_frames)
        out[f"real_{name}"] = r
        print(json.dumps({f"real_{name}": r}), flush=True)
        c = bench_codec_real(DT[name], 50)
        out[f"codec_real_{name}"] = c
        print(json.dumps({f"codec_real_{name}": c}), flush=True)
    out["bench_s"] = round(time.perf_counter() - t0, 1)
    print(json.dumps(out, indent=2))
    if args.json:
        Path(args.json).write_text(json.dumps(out, indent=2) + "\n")


if __name__ == "__main__":
    main()
