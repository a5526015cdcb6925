"""Audio-code layout (spec §5): raw ↔ model format, END rows, validation, file I/O, code embeddings.

* **raw**: what the codec takes, 0-based: semantic 0..8191, acoustic 0..20.
* **model**: raw + 2 (``[EMPTY_AUDIO]`` = 0, ``[END_AUDIO]`` = 1 precede every codebook); this is
  what the backbone embeds and what vLLM-Omni streams between stages.
* A sequence on disk is ``[T, 37]`` (frame-major); the codec takes ``[B, 37, T]``.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from torch import nn

from voxinv.rundir import atomic_write
from voxinv.voxtral.params import AudioModelArgs

N_SPECIAL = 2
EMPTY_AUDIO = 0
END_AUDIO = 1
N_CODEBOOKS = 37


class CodesError(ValueError):
    """Codes of the wrong shape, range or format."""


def to_model(raw: torch.Tensor) -> torch.Tensor:
    """Raw 0-based codes → model format (+2)."""
    return raw + N_SPECIAL


def to_raw(model: torch.Tensor) -> torch.Tensor:
    """Model-format codes (no END/EMPTY rows) → raw 0-based codes."""
    if (model < N_SPECIAL).any():
        raise CodesError("model-format codes contain END/EMPTY specials; call strip_end() first")
    return model - N_SPECIAL


def end_frame(like: torch.Tensor | None = None, n_acoustic: int = 36) -> torch.Tensor:
    """The END frame of a voice prompt in model format: ``[1, 0, …, 0]`` (spec §5, §10)."""
    f = torch.zeros(1 + n_acoustic, dtype=torch.long)
    f[0] = END_AUDIO
    return f if like is None else f.to(like.device)


def strip_end(model: torch.Tensor) -> torch.Tensor:
    """Cut a model-format ``[T, 37]`` sequence at its first END frame (as the decoder stage does)."""
    ends = (model[:, 0] == END_AUDIO).nonzero()
    return model[: int(ends[0])] if len(ends) else model


def frames_to_batch(codes: torch.Tensor) -> torch.Tensor:
    """``[T, 37]`` → ``[1, 37, T]``."""
    return codes.T.unsqueeze(0).contiguous()


def batch_to_frames(codes: torch.Tensor) -> torch.Tensor:
    """``[1, 37, T]`` (or ``[37, T]``) → ``[T, 37]``."""
    if codes.dim() == 3:
        if codes.shape[0] != 1:
            raise CodesError(f"expected a single sequence [1, 37, T], got batch of {codes.shape[0]}")
        codes = codes[0]
    return codes.T.contiguous()


def validate_raw(
    codes: torch.Tensor, semantic_size: int = 8192, levels: int = 21, n_acoustic: int = 36
) -> torch.Tensor:
    """Check raw ``[T, 37]`` codes; return them as int64. Errors say what is wrong and how to fix it."""
    if codes.is_floating_point():
        if not torch.equal(codes, codes.round()):
            raise CodesError("codes must be integers, got non-integral floats")
        codes = codes.long()
    codes = codes.long()
    width = 1 + n_acoustic
    if codes.dim() != 2 or codes.shape[1] != width:
        hint = " (looks like [37, T]: transpose it)" if codes.dim() == 2 and codes.shape[0] == width else ""
        raise CodesError(f"codes must have shape [T, {width}], got {list(codes.shape)}{hint}")
    if codes.shape[0] == 0:
        raise CodesError("codes have zero frames")
    sem, ac = codes[:, 0], codes[:, 1:]
    if sem.min() < 0 or sem.max() >= semantic_size:
        raise CodesError(
            f"semantic codes must be in [0, {semantic_size - 1}] (raw, 0-based), got [{int(sem.min())}, "
            f"{int(sem.max())}]; if these are model-format codes (+2) pass --format model"
        )
    if ac.min() < 0 or ac.max() >= levels:
        raise CodesError(
            f"acoustic codes must be in [0, {levels - 1}] (raw, 0-based), got [{int(ac.min())}, {int(ac.max())}]; "
            "if these are model-format codes (+2) pass --format model"
        )
    return codes


def save_codes(path: str | Path, raw: torch.Tensor, *, frame_rate: float = 12.5, **meta: str) -> Path:
    """Save raw ``[T, 37]`` codes as safetensors (``codes``) with layout metadata."""
    from safetensors.torch import save_file

    raw = validate_raw(raw.detach().cpu())
    md = {"format": "raw", "layout": "[T,37]", "frame_rate": str(frame_rate), **{k: str(v) for k, v in meta.items()}}
    return atomic_write(path, lambda tmp: save_file({"codes": raw.to(torch.int64).contiguous()}, str(tmp), metadata=md))


def load_codes(path: str | Path, fmt: str | None = None) -> torch.Tensor:
    """Load ``[T, 37]`` integer codes from ``.npy`` / ``.safetensors`` / ``.pt``; return raw int64.

    ``fmt`` (``raw`` | ``model``) overrides the file's metadata (safetensors) or the default (raw).
    Model-format input is cut at its END frame and shifted back by 2.
    """
    path = Path(path)
    if not path.is_file():
        raise CodesError(f"codes file {path} does not exist")
    suffix = path.suffix.lower()
    try:
        if suffix == ".npy":
            codes = torch.from_numpy(np.load(path, allow_pickle=False))
        elif suffix == ".safetensors":
            from safetensors import safe_open

            with safe_open(str(path), framework="pt") as f:
                keys = list(f.keys())
                if not keys:
                    raise CodesError(f"{path} holds no tensors")
                codes = f.get_tensor("codes" if "codes" in keys else keys[0])
                fmt = fmt or (f.metadata() or {}).get("format")
        elif suffix == ".pt":
            from voxinv.voxtral.checkpoint import load_plain

            codes = load_plain(path)
        else:
            raise CodesError(f"unsupported codes file {path.name}: use .npy or .safetensors ([T, 37] integers)")
    except CodesError:
        raise
    except Exception as e:  # corrupt files: one line saying which file
        raise CodesError(f"cannot read codes from {path}: {e}") from e
    if not isinstance(codes, torch.Tensor):
        raise CodesError(f"{path} does not hold a tensor")
    if (fmt or "raw") == "model":
        if codes.dim() == 2 and codes.shape[-1] == 37 and not bool((codes[:, 0] == END_AUDIO).any()):
            raise CodesError(
                f"{path}: model-format codes end with an END frame ([1, 0, …]) and these have none: they look like "
                "raw 0-based codes (decoding them as model format would shift every code by 2); use --format raw"
            )
        codes = to_raw(strip_end(codes.long()))
    elif fmt not in (None, "raw"):
        raise CodesError(f"unknown codes format {fmt!r}: expected 'raw' or 'model'")
    return validate_raw(codes)


def codes_metadata(path: str | Path) -> dict[str, str]:
    from safetensors import safe_open

    with safe_open(str(path), framework="pt") as f:
        return dict(f.metadata() or {})


class AudioCodebookEmbeddings(nn.Module):
    """The shared audio-code table (``mm_audio_embeddings.audio_codebook_embeddings``).

    A frame's backbone input is the **sum** of its 37 rows ``E[code_k + offset_k]``, codes in
    model format. Offsets: semantic at 0, acoustic k at ``8194 + 23·k``.
    """

    def __init__(self, args: AudioModelArgs, dim: int):
        super().__init__()
        self.embeddings = nn.Embedding(args.audio_table_rows, dim)
        self.register_buffer("offsets", torch.tensor(args.codebook_offsets), persistent=False)
        self.sizes = args.codebook_sizes

    def forward(self, model_codes: torch.Tensor) -> torch.Tensor:  # [..., 37] -> [..., dim]
        return self.embeddings(model_codes + self.offsets).sum(-2)

    def slice(self, k: int) -> torch.Tensor:
        """Rows of codebook ``k`` (incl. its 2 specials): ``[sizes[k], dim]``."""
        o = int(self.offsets[k])
        return self.embeddings.weight[o : o + self.sizes[k]]
