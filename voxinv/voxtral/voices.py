"""Voice prompts (spec §10): load, END row, voice ↔ codes, register a new voice.

A voice is a bf16 ``[N, dim]`` tensor: row t = sum of the 37 audio-table rows of frame t's
model-format codes, last row the END frame ``[1, 0, …, 0]``. It replaces the N ``[AUDIO]``
placeholders of the prompt.
"""

from __future__ import annotations

import json
import shutil
from dataclasses import dataclass
from pathlib import Path

import torch

from voxinv.rundir import atomic_write
from voxinv.voxtral.checkpoint import load_plain
from voxinv.voxtral.codes import N_SPECIAL, end_frame, to_model
from voxinv.voxtral.params import AudioModelArgs


class VoiceError(ValueError):
    pass


def load_voice(path: str | Path) -> torch.Tensor:
    """Load a ``voice_embedding/*.pt`` tensor on CPU (the release's files were saved on CUDA)."""
    path = Path(path)
    if not path.is_file():
        raise VoiceError(f"voice file {path} does not exist")
    with open(path, "rb") as f:
        magic = f.read(4)
    if path.suffix.lower() in (".wav", ".flac", ".ogg", ".mp3") or magic in (b"RIFF", b"fLaC", b"OggS"):
        raise VoiceError(
            f"{path} is audio, not a voice prompt (.pt): make a voice from it with "
            f"`voxinv invert target.path={path}` (its run directory holds voice.pt)"
        )
    try:
        v = load_plain(path)
    except Exception as e:
        raise VoiceError(f"cannot read voice file {path}: {e}") from e
    if isinstance(v, dict) and len(v) == 1:  # tolerate {"embedding": tensor}
        v = next(iter(v.values()))
    if not isinstance(v, torch.Tensor) or v.dim() != 2 or not v.is_floating_point():
        raise VoiceError(f"{path} is not a voice prompt: expected a float tensor [N, dim]")
    return v


def save_voice(voice: torch.Tensor, path: str | Path) -> Path:
    """Write a voice prompt ``[N, dim]`` as the release stores them: bf16, CPU, contiguous (atomically)."""
    v = voice.detach().to(torch.bfloat16).cpu().contiguous()
    return atomic_write(path, lambda tmp: torch.save(v, tmp))


def frame_embeddings(model_codes: torch.Tensor, table: torch.Tensor, audio: AudioModelArgs) -> torch.Tensor:
    """Sum of the 37 table rows per frame, fp32: model codes ``[T, 37]`` → ``[T, dim]``."""
    offsets = torch.tensor(audio.codebook_offsets, device=model_codes.device)
    return table.float()[model_codes + offsets].sum(1)


def end_row(table: torch.Tensor, audio: AudioModelArgs) -> torch.Tensor:
    """Embedding of the voice-prompt END frame ``[1, 0, …, 0]`` (fp32, ``[dim]``)."""
    return frame_embeddings(end_frame(n_acoustic=audio.n_acoustic_codebook)[None], table, audio)[0]


def has_end_row(voice: torch.Tensor, table: torch.Tensor, audio: AudioModelArgs, rtol: float = 2e-2) -> bool:
    """Whether the last row is the END frame (bf16 rounding tolerated)."""
    e = end_row(table, audio)
    return bool((voice[-1].float() - e).norm() <= rtol * e.norm())


def codes_to_voice(raw: torch.Tensor, table: torch.Tensor, audio: AudioModelArgs) -> torch.Tensor:
    """Raw codes ``[T, 37]`` → deployable voice ``[T + 1, dim]`` bf16 (frames + END row)."""
    rows = frame_embeddings(to_model(raw.long()), table, audio)
    return torch.cat([rows, end_row(table, audio)[None]]).to(torch.bfloat16)


@dataclass
class Decomposition:
    codes: torch.Tensor  # raw [T, 37]
    rel_error: torch.Tensor  # per frame ‖row − Σ rows(codes)‖ / ‖row‖, [T]
    sweeps: int

    @property
    def max_rel_error(self) -> float:
        return float(self.rel_error.max())


def voice_to_codes(
    voice: torch.Tensor, table: torch.Tensor, audio: AudioModelArgs, max_sweeps: int = 20
) -> Decomposition:
    """Estimate the raw codes behind a voice: greedy nearest-neighbour init + coordinate descent.

    Each frame row is decomposed over the 37 codebook slices of the audio table (specials
    excluded). Coordinate descent re-picks each codebook's entry given the others (exact
    minimisation of the squared residual per slice) until nothing changes. Exact on tables whose
    rows are in general position; on real voices the bf16-rounded rows leave a small residual,
    reported per frame. The END row, if present, is dropped.
    """
    v = voice.float()
    if has_end_row(v, table, audio):
        v = v[:-1]
    if len(v) == 0:
        raise VoiceError("voice has no frames besides its END row")
    E = table.float().to(v.device)
    slices = [
        E[o + N_SPECIAL : o + size]  # [size - 2, dim], raw code c at row c
        for o, size in zip(audio.codebook_offsets, audio.codebook_sizes)
    ]
    sq = [(s * s).sum(-1) for s in slices]  # ‖row‖², for argmin ‖r − e‖² = argmax 2⟨r,e⟩ − ‖e‖²
    T, K = len(v), len(slices)
    codes = torch.zeros(T, K, dtype=torch.long, device=v.device)
    r = v.clone()
    # greedy init, semantic (largest slice) last: acoustic slices are small and decided reliably
    for k in list(range(1, K)) + [0]:
        c = (2 * r @ slices[k].T - sq[k]).argmax(-1)
        codes[:, k] = c
        r -= slices[k][c]
    sweeps = 0
    for sweeps in range(1, max_sweeps + 1):  # noqa: B007 (the count is returned)
        changed = 0
        for k in range(K):
            rk = r + slices[k][codes[:, k]]
            c = (2 * rk @ slices[k].T - sq[k]).argmax(-1)
            changed += int((c != codes[:, k]).sum())
            codes[:, k] = c
            r = rk - slices[k][c]
        if not changed:
            break
    rel = r.norm(dim=-1) / v.norm(dim=-1).clamp_min(1e-12)
    return Decomposition(codes=codes.cpu(), rel_error=rel.cpu(), sweeps=sweeps)


def preset_codes(ckpt, name: str) -> Decomposition:
    """The codes behind preset voice ``name`` of a :class:`~voxinv.voxtral.checkpoint.Checkpoint`."""
    from voxinv.voxtral.checkpoint import VOICE_DIR

    path = ckpt.path / VOICE_DIR / f"{name}.pt"
    if not path.is_file():
        raise VoiceError(f"preset voice {name!r} not found in {ckpt.path / VOICE_DIR}; presets: {ckpt.params.voices}")
    return voice_to_codes(load_voice(path), ckpt.audio_table(), ckpt.params.audio)


# ------------------------------------------------------------------------------------ registration


def _link_or_copy(src: Path, dst: Path) -> None:
    if dst.exists() or dst.is_symlink():
        return
    try:
        dst.symlink_to(src.resolve())
    except OSError:  # filesystems without symlinks
        shutil.copy2(src, dst)


def register_voice(model_dir: str | Path, name: str, voice: torch.Tensor, overlay_dir: str | Path) -> Path:
    """Make ``overlay_dir`` a servable model directory with ``name`` added as a preset voice.

    The overlay links every file of ``model_dir`` (weights are never copied), and writes its own
    ``params.json`` (name added under ``multimodal.audio_tokenizer_args.voice``), ``tekken.json``
    (``audio.voice_num_audio_tokens[name]`` = row count incl. END) and
    ``voice_embedding/<name>.pt``. The original directory is never modified; re-registering in
    the same overlay adds to it. Serve with ``vllm serve OVERLAY_DIR`` as with the original.
    """
    src, dst = Path(model_dir).resolve(), Path(overlay_dir)
    name = name.lower()
    if not name.replace("_", "").replace("-", "").isalnum():
        raise VoiceError(f"voice name {name!r}: use letters, digits, '_' or '-'")
    if voice.dim() != 2:
        raise VoiceError(f"voice must be [N, dim], got {list(voice.shape)}")
    if dst.resolve() == src:
        raise VoiceError("overlay_dir must differ from the model directory (the original is never modified)")
    for f in ("params.json", "tekken.json"):
        if not (src / f).is_file():
            raise VoiceError(f"{src} has no {f}: cannot register a voice there")
    dst.mkdir(parents=True, exist_ok=True)
    (dst / "voice_embedding").mkdir(exist_ok=True)
    for item in src.iterdir():
        if item.name not in ("params.json", "tekken.json", "voice_embedding"):
            _link_or_copy(item, dst / item.name)
    if (src / "voice_embedding").is_dir():
        for item in (src / "voice_embedding").iterdir():
            _link_or_copy(item, dst / "voice_embedding" / item.name)

    # read the overlay's own copies when they exist, so successive registrations accumulate
    params_src = dst / "params.json" if (dst / "params.json").is_file() else src / "params.json"
    tekken_src = dst / "tekken.json" if (dst / "tekken.json").is_file() else src / "tekken.json"
    params = json.loads(params_src.read_text())
    tok_args = params["multimodal"]["audio_tokenizer_args"]
    voices = tok_args.setdefault("voice", {})
    if name not in voices:
        voices[name] = max(voices.values(), default=-1) + 1
    tekken = json.loads(tekken_src.read_text())
    tekken.setdefault("audio", {}).setdefault("voice_num_audio_tokens", {})[name] = int(voice.shape[0])

    vfile = dst / "voice_embedding" / f"{name}.pt"
    if vfile.is_symlink():
        vfile.unlink()  # never write through a link into the original directory
    save_voice(voice, vfile)
    atomic_write(dst / "tekken.json", json.dumps(tekken, ensure_ascii=False))
    atomic_write(dst / "params.json", json.dumps(params, indent=4) + "\n")
    return dst
