"""``voxinv <verb>``: the one command line.

Pipeline verbs (their own arguments passed through): ``invert`` (= ``python -m voxinv.run``, Hydra
overrides, ``-m`` sweeps), ``eval`` (= ``python -m voxinv.eval``), ``e2e``, ``report``,
``train-encoder`` (= ``python -m voxinv.train_encoder``). Model tools:
``decode`` (codes → WAV), ``voice2codes`` / ``voice2wav`` (a voice prompt → its codes / audio),
``make-tiny`` (seeded tiny checkpoint), ``register-voice`` (servable overlay directory), ``tts``.

Building the parser imports neither torch nor any model code (``voxinv --help`` is instant): every
handler imports what it needs. ``handler(args)`` returns an exit code (``None`` = 0); errors of the
classes in :func:`user_errors` print one line and exit 2.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from voxinv import __version__
from voxinv.voxtral import DEFAULT_REPO
from voxinv.voxtral.device import DTYPES, to_dtype

if TYPE_CHECKING:
    import torch

    from voxinv.voxtral.checkpoint import Checkpoint

PROG = "voxinv"
WINDOW_CHUNK = 250  # frames per decode window (20 s); with 25 context frames ≡ a full decode
WINDOW_CONTEXT = 25


def user_errors() -> tuple[type[BaseException], ...]:
    """Exception classes that mean bad input (reported in one line, exit 2), not a bug."""
    from voxinv.audio import AudioError
    from voxinv.voxtral.checkpoint import CheckpointError
    from voxinv.voxtral.codes import CodesError
    from voxinv.voxtral.voices import VoiceError

    return (CheckpointError, CodesError, VoiceError, AudioError)


# --------------------------------------------------------------------------------------- helpers


def _checkpoint(model: str, *, weights: bool = True) -> Checkpoint:
    from voxinv.voxtral.checkpoint import Checkpoint, CheckpointError

    try:
        return Checkpoint(model, weights=weights)
    except ValueError as e:  # params.json unreadable / not a Voxtral TTS params file
        raise CheckpointError(str(e)) from e


def _writable(path: str, option: str = "--out") -> str:
    """``path``'s folder exists (created) and is writable, checked before any model is loaded."""
    from voxinv.rundir import write_probe
    from voxinv.voxtral.codes import CodesError

    try:
        write_probe(Path(path).parent if option != "dir" else Path(path))
    except OSError as e:
        raise CodesError(
            f"{option} {path}: cannot write there ({e.strerror}); pass a path in a writable folder"
        ) from None
    return path


def _positive(value: int | None, option: str) -> int | None:
    from voxinv.voxtral.codes import CodesError

    if value is not None and value <= 0:
        raise CodesError(f"{option} {value}: must be a positive integer")
    return value


def _device(name: str) -> torch.device:
    from voxinv.voxtral.device import pick_device

    return pick_device(name, "--device ")


def _strict_fp32(device: torch.device) -> None:
    """fp32 on CUDA means fp32: no TF32 convs/matmuls (cuDNN enables TF32 convs by default)."""
    import torch

    if device.type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = False
        torch.backends.cudnn.allow_tf32 = False


def _resolve_voice(ckpt: Checkpoint, voice: str) -> tuple[str, torch.Tensor]:
    """``voice`` (a ``.pt`` file, a run directory or a preset name of the model) → (label, rows ``[N, dim]``)."""
    from voxinv.voxtral.prompt import resolve_voice
    from voxinv.voxtral.voices import VoiceError

    label, v = resolve_voice(voice, ckpt.path)
    if v.shape[1] != ckpt.params.backbone.dim:
        raise VoiceError(
            f"voice {voice} has rows of width {v.shape[1]}, the model's backbone dim is {ckpt.params.backbone.dim}: "
            "it belongs to another model"
        )
    return label, v


def _voice_codes(ckpt: Checkpoint, voice: str) -> tuple[str, torch.Tensor]:
    """Recover the raw codes ``[T, 37]`` behind a voice and print the decomposition residual."""
    from voxinv.voxtral.voices import voice_to_codes

    label, v = _resolve_voice(ckpt, voice)
    dec = voice_to_codes(v, ckpt.audio_table(), ckpt.params.audio)
    T = dec.codes.shape[0]
    print(
        f"{label}: {v.shape[0]} rows -> {T} frames ({T / ckpt.params.codec.frame_rate:.2f} s); "
        f"residual ‖row − Σ emb(codes)‖/‖row‖ max {dec.max_rel_error:.3e}, "
        f"mean {float(dec.rel_error.mean()):.3e} ({dec.sweeps} sweeps)"
    )
    return label, dec.codes


def _decode_to_wav(ckpt: Checkpoint, raw: torch.Tensor, out: str, device: str, dtype: str) -> None:
    """Raw ``[T, 37]`` codes → ``out`` (24 kHz mono float32 WAV, exactly samples_per_frame·T samples)."""
    import torch

    from voxinv.audio import write_wav
    from voxinv.voxtral.codec import load_codec
    from voxinv.voxtral.codes import frames_to_batch

    dev, dt = _device(device), to_dtype(dtype)
    if dt == torch.float32:
        _strict_fp32(dev)
    codec = load_codec(ckpt, dtype=dt, device=dev)
    with torch.inference_mode():
        wav = codec.decode_windowed(frames_to_batch(raw).to(dev), chunk=WINDOW_CHUNK, context=WINDOW_CONTEXT)
    wav = wav.float().cpu().reshape(-1)  # [1920·T]
    assert wav.numel() == raw.shape[0] * codec.samples_per_frame
    write_wav(out, wav, codec.sampling_rate)
    print(
        f"wrote {out}: {raw.shape[0]} frames, {wav.numel()} samples ({wav.numel() / codec.sampling_rate:.2f} s) "
        f"at {codec.sampling_rate} Hz, peak {float(wav.abs().max()):.3f}"
    )


def _save_codes(path: str, raw: torch.Tensor, frame_rate: float, **meta: str) -> None:
    import numpy as np

    from voxinv.voxtral.codes import save_codes, validate_raw

    if Path(path).suffix.lower() == ".npy":
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        np.save(path, validate_raw(raw).numpy())
    else:
        save_codes(path, raw, frame_rate=frame_rate, **meta)
    print(f"wrote {path}: raw codes [{raw.shape[0]}, {raw.shape[1]}]")


# -------------------------------------------------------------------------------------- handlers


def cmd_decode(args: argparse.Namespace) -> int:
    from voxinv.voxtral.codes import load_codes

    _writable(args.out)
    _device(args.device)
    raw = load_codes(args.codes, fmt=args.format)  # validated raw [T, 37]
    _decode_to_wav(_checkpoint(args.model), raw, args.out, args.device, args.dtype)
    return 0


def cmd_voice2codes(args: argparse.Namespace) -> int:
    _writable(args.out)
    ckpt = _checkpoint(args.model)
    label, raw = _voice_codes(ckpt, args.voice)
    _save_codes(args.out, raw, ckpt.params.codec.frame_rate, source=f"voice:{label}")
    return 0


def cmd_voice2wav(args: argparse.Namespace) -> int:
    _writable(args.out)
    if args.codes_out:
        _writable(args.codes_out, "--codes-out")
    _device(args.device)
    ckpt = _checkpoint(args.model)
    label, raw = _voice_codes(ckpt, args.voice)
    if args.codes_out:
        _save_codes(args.codes_out, raw, ckpt.params.codec.frame_rate, source=f"voice:{label}")
    _decode_to_wav(ckpt, raw, args.out, args.device, args.dtype)
    return 0


def cmd_make_tiny(args: argparse.Namespace) -> int:
    from voxinv.voxtral.codes import CodesError
    from voxinv.voxtral.tiny import make_tiny

    d = Path(args.dir)
    if d.exists() and (not d.is_dir() or any(d.iterdir())) and not args.overwrite:
        raise CodesError(
            f"make-tiny: {d} already exists and is not empty (a model directory?); pass --overwrite to replace "
            "its weights, or another directory"
        )
    _writable(args.dir, "dir")
    out = make_tiny(args.dir, seed=args.seed, dtype=to_dtype(args.dtype), with_encoder=args.with_encoder)
    print(f"wrote tiny Voxtral checkpoint (seed {args.seed}{', with encoder' if args.with_encoder else ''}) to {out}")
    return 0


def cmd_register_voice(args: argparse.Namespace) -> int:
    from voxinv.voxtral.voices import VoiceError, has_end_row, load_voice, register_voice

    _writable(args.out + "/x")
    ckpt = _checkpoint(args.model)
    v = load_voice(args.voice_file)
    if v.shape[1] != ckpt.params.backbone.dim:
        raise VoiceError(
            f"{args.voice_file} has rows of width {v.shape[1]}, the model's backbone dim is {ckpt.params.backbone.dim}"
        )
    if not has_end_row(v, ckpt.audio_table(), ckpt.params.audio):
        print(
            f"warning: the last row of {args.voice_file} is not the END frame; voices made by voxinv end with it",
            file=sys.stderr,
        )
    out = register_voice(ckpt.path, args.name, v, args.out)
    print(
        f"registered voice {args.name.lower()!r} ({v.shape[0]} rows incl. END) in {out}; "
        f"serve it with `vllm serve {out}` and request voice={args.name.lower()!r}"
    )
    return 0


def cmd_tts(args: argparse.Namespace) -> int:
    from voxinv.audio import write_wav
    from voxinv.voxtral.codes import save_codes, strip_end, to_raw
    from voxinv.voxtral.tts import VoxtralTTS, frame_cap

    _writable(args.out)
    if args.codes_out:
        _writable(args.codes_out, "--codes-out")
    _positive(args.max_frames, "--max-frames")
    device = _device(args.device or "auto")
    dtype = to_dtype(args.dtype) if args.dtype else None
    tts = VoxtralTTS.from_pretrained(args.model, device=device, dtype=dtype)
    cap = args.max_frames or frame_cap(args.text, tts.params.codec.frame_rate)
    g = tts.generate_codes(args.text, args.voice, args.seed, cap, args.cfg_alpha, progress=not args.quiet)
    wav = tts.decode(g.codes)
    out = write_wav(args.out, wav, tts.sampling_rate)
    if args.codes_out:
        save_codes(args.codes_out, to_raw(strip_end(g.codes)), seed=str(args.seed), text=args.text)
    secs = g.n_audio_frames / tts.params.codec.frame_rate
    stop = "END" if g.ended else f"the frame cap {cap} (--max-frames)"
    print(f"{out}: {secs:.2f} s audio, {g.n_audio_frames} frames (stopped at {stop}), generated in {g.seconds:.1f} s")
    return 0


# the pipeline's own entry points, each with its own argument parser (or Hydra): passed through
PASS_THROUGH = {
    "invert": ("voxinv.run", "invert a recording: Hydra overrides as for python -m voxinv.run (-m: sweep)"),
    "eval": ("voxinv.eval.__main__", "evaluate run directories (PESQ, STOI, DNSMOS, speaker, WER)"),
    "e2e": ("voxinv.eval.e2e", "end-to-end: speak with a cloned voice and score it"),
    "report": ("voxinv.eval.report", "aggregate sweeps into report.md + plots (+ W&B)"),
    "train-encoder": ("voxinv.train_encoder", "learn a codec encoder against the frozen decoder (Hydra overrides)"),
}
HYDRA_APPS = ("invert", "train-encoder")  # they read sys.argv (overrides, -m, --cfg job, --help)


def cmd_pass_through(args: argparse.Namespace) -> int:
    import importlib

    module = importlib.import_module(PASS_THROUGH[args.command][0])
    if args.command in HYDRA_APPS:
        argv, sys.argv = sys.argv, [f"{PROG} {args.command}", *args.args]
        try:
            module.main()
        finally:
            sys.argv = argv
        return 0
    return int(module.main(args.args) or 0)


# ---------------------------------------------------------------------------------------- parser


def _add_model(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--model",
        default=DEFAULT_REPO,
        help="model directory or Hugging Face repo id (default: %(default)s)",
    )


def _add_runtime(p: argparse.ArgumentParser) -> None:
    p.add_argument("--device", default="auto", help="cpu, cuda, cuda:N or auto (default: %(default)s)")
    p.add_argument(
        "--dtype",
        default="fp32",
        choices=sorted(DTYPES),
        help="decoder precision (default fp32; vLLM-Omni serves bf16, ≈40 dB SNR from fp32)",
    )


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=PROG, description="Voice cloning for Voxtral-4B-TTS by inverting its codec decoder."
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="VERB", required=True)

    p = sub.add_parser("decode", help="decode [T, 37] codes to a 24 kHz WAV")
    _add_model(p)
    p.add_argument("--codes", required=True, help=".npy / .safetensors / .pt holding [T, 37] integer codes")
    p.add_argument("--out", required=True, help="output WAV (mono float32, 1920·T samples)")
    p.add_argument(
        "--format",
        choices=("raw", "model"),
        default=None,
        help="raw = 0-based codec codes; model = +2 with END frame (default: file metadata, else raw)",
    )
    _add_runtime(p)
    p.set_defaults(func=cmd_decode)

    p = sub.add_parser("voice2codes", help="recover the codes behind a voice prompt")
    _add_model(p)
    p.add_argument("--voice", required=True, help="preset name (e.g. casual_female) or a voice .pt file")
    p.add_argument("--out", required=True, help="output codes (.safetensors, or .npy)")
    p.set_defaults(func=cmd_voice2codes)

    p = sub.add_parser("voice2wav", help="decode the audio behind a voice prompt")
    _add_model(p)
    p.add_argument("--voice", required=True, help="preset name (e.g. casual_female) or a voice .pt file")
    p.add_argument("--out", required=True, help="output WAV")
    p.add_argument("--codes-out", default=None, help="also save the recovered codes here")
    _add_runtime(p)
    p.set_defaults(func=cmd_voice2wav)

    p = sub.add_parser("make-tiny", help="write a seeded tiny random checkpoint in the release format")
    p.add_argument("dir", help="output model directory")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--with-encoder", action="store_true", help="also write codec encoder tensors")
    p.add_argument("--dtype", default="bf16", choices=sorted(DTYPES), help="tensor dtype (default bf16, as released)")
    p.add_argument("--overwrite", action="store_true", help="replace the weights of an existing directory")
    p.set_defaults(func=cmd_make_tiny)

    p = sub.add_parser("register-voice", help="make an overlay model directory that serves a new voice")
    _add_model(p)
    p.add_argument("--voice-file", required=True, help="voice prompt .pt ([N, dim] bf16, last row END)")
    p.add_argument("--name", required=True, help="voice name (letters, digits, '_' or '-')")
    p.add_argument("--out", required=True, help="overlay directory (created; the model directory is untouched)")
    p.set_defaults(func=cmd_register_voice)

    p = sub.add_parser(
        "tts",
        help="speak text with a preset or cloned voice",
        description=(
            "Generate speech with Voxtral-4B-TTS (no vLLM). --voice takes a preset name, a voice .pt file, "
            "or a voxinv run directory (containing voice.pt)."
        ),
    )
    _add_model(p)
    p.add_argument("--voice", required=True, help="preset name | voice .pt | run directory")
    p.add_argument("--text", required=True, help="text to speak")
    p.add_argument("--out", required=True, help="output .wav (24 kHz mono float32)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument(
        "--max-frames",
        type=int,
        default=None,
        help="frame cap (> 0), 12.5 per second (default: fits the text, voxinv.voxtral.tts.frame_cap)",
    )
    p.add_argument("--cfg-alpha", type=float, default=1.2)
    p.add_argument("--device", default=None, help="cpu | cuda | cuda:N | auto (default: auto = cuda if available)")
    p.add_argument("--dtype", default=None, choices=sorted(DTYPES), help="default: bf16 on GPU, fp32 on CPU")
    p.add_argument("--codes-out", default=None, help="also save raw codes [T, 37] (.safetensors)")
    p.add_argument("-q", "--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=cmd_tts)

    for verb, (_, text) in PASS_THROUGH.items():
        p = sub.add_parser(verb, help=text, add_help=False, prefix_chars="\0")  # every argument is theirs
        p.add_argument("args", nargs=argparse.REMAINDER)
        p.set_defaults(func=cmd_pass_through)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        rc = args.func(args)
    except user_errors() as e:
        msg = " ".join(str(e).split()) or type(e).__name__
        print(f"{PROG}: error: {msg}", file=sys.stderr)
        return 2
    return int(rc or 0)


if __name__ == "__main__":
    sys.exit(main())
