"""The speech-trained proxy codec (``assets/proxy/``) as a release-format model directory.

The proxy is a small codec trained on speech with the exact Voxtral codec layout and tensor names,
plus its encoder (which the release lacks). A model directory for it is the tiny generator's
(backbone, flow, table, voices, tokenizer: random, seeded) with the proxy's codec sizes, whose
``audio_tokenizer.*`` tensors are the proxy's decoder tensors, plus its encoder tensors under the
same prefix, so ``load_codec`` builds decoder and encoder and ``codec.encode`` works.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import torch

from voxinv.voxtral.checkpoint import CheckpointError

DECODER = "decoder.safetensors"  # 116 tensors, already prefixed ``audio_tokenizer.``
ENCODER = "encoder.safetensors"  # 114 tensors, no prefix
PARAMS = "codec_params.json"  # {"multimodal": {"audio_tokenizer_args": {...}}}
FILES = (DECODER, ENCODER, PARAMS)
PREFIX = "audio_tokenizer."
# codec keys the tiny generator sizes (TINY_SIZES["codec"]); every other key must equal the release's
SIZE_KEYS = ("dim", "hidden_dim", "head_dim", "n_heads", "n_kv_heads")
GENERATOR_VERSION = 1


def default_assets() -> Path:
    """``<repo>/assets/proxy`` (next to the ``voxinv`` package of a clone or editable install)."""
    return Path(__file__).resolve().parents[2] / "assets" / "proxy"


def assets_dir(path: str | Path | None = None) -> Path:
    """The proxy asset folder (``path`` or the repo's), checked: one clear error if files are missing."""
    d = Path(path).expanduser() if path else default_assets()
    missing = [f for f in FILES if not (d / f).is_file()]
    if missing:
        raise CheckpointError(
            f"proxy codec assets missing in {d} ({', '.join(missing)}): use a full clone of the repository "
            "(assets/proxy/ is committed) or set model.assets=<folder with decoder/encoder.safetensors>"
        )
    return d


def codec_args(assets: Path) -> dict:
    """The proxy's ``audio_tokenizer_args`` (release keys)."""
    return json.loads((assets / PARAMS).read_text())["multimodal"]["audio_tokenizer_args"]


def proxy_sizes(assets: Path) -> dict:
    """TINY_SIZES with the proxy's codec sizes; raises if the proxy differs from the release elsewhere."""
    import copy

    from voxinv.voxtral.params import CodecArgs
    from voxinv.voxtral.tiny import REAL_PARAMS, TINY_SIZES

    args = codec_args(assets)
    real = REAL_PARAMS["multimodal"]["audio_tokenizer_args"]
    defaults = CodecArgs()
    for k, v in args.items():
        ref = real[k] if k in real else getattr(defaults, k, None)
        if k not in SIZE_KEYS and v != ref:
            raise CheckpointError(
                f"{assets / PARAMS}: {k}={v!r} differs from the release ({ref!r}); only {SIZE_KEYS} may differ"
            )
    sizes = copy.deepcopy(TINY_SIZES)
    sizes["codec"] = {k: args[k] for k in SIZE_KEYS}
    return sizes


def proxy_fingerprint(assets: Path) -> str:
    """Hash of the asset files' bytes and the generator version: the cache directory changes with them."""
    h = hashlib.sha256(f"proxy-generator-{GENERATOR_VERSION}".encode())
    for f in FILES:
        h.update(f.encode())
        h.update((assets / f).read_bytes())
    return h.hexdigest()[:8]


def proxy_codec_tensors(assets: Path) -> dict[str, torch.Tensor]:
    """The checkpoint's ``audio_tokenizer.*`` tensors: decoder as stored, encoder with the prefix added."""
    from safetensors.torch import load_file

    dec = load_file(str(assets / DECODER))
    enc = load_file(str(assets / ENCODER))
    bad = [k for k in dec if not k.startswith(PREFIX)] + [k for k in enc if k.startswith(PREFIX)]
    if bad:
        raise CheckpointError(f"{assets}: unexpected tensor names (e.g. {bad[:3]}): not the proxy codec files")
    return {**dec, **{PREFIX + k: v for k, v in enc.items()}}


def make_proxy(out_dir: str | Path, assets: str | Path | None = None, *, seed: int = 0, tekken: bool = True) -> Path:
    """Write the proxy model directory (release format, codec with encoder) and return its path.

    ``tekken=False`` skips the tokenizer file (most of the ≈20 s generation time; only TTS needs it).
    """
    from safetensors.torch import load_file, save_file

    from voxinv.voxtral.params import VoxtralParams
    from voxinv.voxtral.tiny import make_tiny, manifest, tiny_params

    a = assets_dir(assets)
    sizes = proxy_sizes(a)
    out = make_tiny(out_dir, seed=seed, sizes=sizes, tekken=tekken)
    weights = out / "consolidated.safetensors"
    tensors = {k: v for k, v in load_file(str(weights)).items() if not k.startswith(PREFIX)}
    tensors.update(proxy_codec_tensors(a))
    # params.json: the tiny one with the proxy's codec args verbatim (the voice map stays the tiny one's)
    raw = tiny_params(sizes)
    tok = raw["multimodal"]["audio_tokenizer_args"]
    raw["multimodal"]["audio_tokenizer_args"] = {**codec_args(a), "voice": tok["voice"]}
    expected = manifest(VoxtralParams.from_dict(raw), with_encoder=True)
    got = {k: tuple(v.shape) for k, v in tensors.items()}
    if got != expected:
        diff = sorted(set(got.items()) ^ set(expected.items()))[:3]
        raise CheckpointError(f"proxy tensors do not match the checkpoint layout (e.g. {diff})")
    save_file({k: v.contiguous() for k, v in tensors.items()}, str(weights), metadata={"format": "pt"})
    (out / "params.json").write_text(json.dumps(raw, indent=4) + "\n")
    return out


# ------------------------------------------------------------------ the metrics of eval.json, reproduced
# eval.json gives no formulas. These definitions reproduce its figures to within ≈ ±0.035 (mrmel) and
# ≈ ±0.01 (env_corr) per clip on the CPU in fp32 (tests/voxtral/test_proxy.py); the rest is the
# encoder's nearest-entry argmin flipping on float noise (fp32 CPU vs the trainer's GPU) and details
# of the trainer's metric code that the file does not record.


def mr_log_mel(ref: torch.Tensor, est: torch.Tensor, sr: int = 24000) -> float:
    """Multi-resolution log-mel L1 in log10 units: :func:`voxinv.dsp.log_mel_l1` (the ``mel`` metric) / ln 10
    (80 mels, n_fft 512/1024/2048, hop n_fft/4, log(mel + 1e-5)). Equal-length ``[N]``."""
    import math

    from voxinv.dsp import log_mel_l1

    return log_mel_l1(ref, est, sr) / math.log(10)


def envelope_correlation(ref: torch.Tensor, est: torch.Tensor, hop: int = 240, eps: float = 1e-8) -> float:
    """Pearson correlation of the log-energy envelopes (mean power per ``hop`` samples = 10 ms)."""

    def env(x: torch.Tensor) -> torch.Tensor:  # [N] -> [N // hop]
        x = x.detach().double().reshape(-1)
        return x[: x.numel() // hop * hop].view(-1, hop).pow(2).mean(-1).add(eps).log()

    a, b = env(ref), env(est)
    n = min(a.numel(), b.numel())
    return float(torch.corrcoef(torch.stack([a[:n], b[:n]]))[0, 1])


@torch.no_grad()
def encoder_round_trip(codec, wav: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The encoder's codes of ``wav`` ``[N]`` (zero-padded to whole frames) and their decode.

    Returns raw codes ``[T, 37]`` and the fp32 waveform ``[T·1920]``.
    """
    spf = codec.samples_per_frame
    n = -(-wav.numel() // spf)
    x = torch.nn.functional.pad(wav.float().reshape(-1), (0, n * spf - wav.numel()))
    dev = next(codec.parameters()).device
    codes = codec.encode(x.to(dev)[None, None])  # [1, 37, T]
    y = codec.decode(codes)[0, 0].float().cpu()
    return codes[0].T.cpu(), y
