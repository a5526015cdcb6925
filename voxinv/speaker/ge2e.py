"""Differentiable GE2E speaker encoder: resemblyzer's ``VoiceEncoder`` re-built in torch end to end.

Network (same as resemblyzer 0.1.x): 3-layer LSTM(40 → 256) → last hidden state of the top layer →
Linear(256, 256) → ReLU → L2 norm, on 160-frame partial utterances (1.6 s) taken every 77 frames
(``rate=1.3``); the utterance embedding is the re-normalised mean of the partials (``embed_utterance``).
Weights are read from the ``pretrained.pt`` that the ``resemblyzer`` package ships; its ``__init__`` is
never imported (it imports ``webrtcvad`` and ``librosa``), only its file location is looked up.

Front-end, all torch and differentiable w.r.t. the waveform:
· resample ``sr`` → 16 kHz with ``torchaudio.functional.resample`` (resemblyzer: librosa/soxr);
· volume normalisation to −30 dBFS, *increase only* (resemblyzer's ``normalize_volume``) — kept because
  the mel is linear power (not log), so the embedding depends on the input level;
· librosa-equivalent mel: periodic Hann, n_fft 400 (25 ms), hop 160 (10 ms), centred with zero padding,
  power 2, 40 Slaney mel bands with Slaney area norm, 0–8 kHz (no log).
Not reproduced in the differentiable path: resemblyzer's webrtcvad trimming of long silences
(``trim_long_silences``) — a hard, data-dependent cut with no gradient. Embed the reference and the
candidate the same way (both untrimmed) for a loss; ``vad_trim`` is there for reference-side evaluation.
"""

from __future__ import annotations

import importlib.util
import math
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

SR = 16000
N_FFT = 400  # 25 ms
HOP = 160  # 10 ms
N_MELS = 40
PARTIAL_FRAMES = 160  # 1.6 s
RATE = 1.3  # partials per second (resemblyzer default) -> 77-frame step, ~50 % overlap
MIN_COVERAGE = 0.75
TARGET_DBFS = -30.0
EMBED_DIM = 256
INSTALL_HINT = "pip install --no-deps resemblyzer webrtcvad-wheels"


class SpeakerEncoderUnavailable(ImportError):
    """The resemblyzer package (which ships the pretrained weights) is not installed."""


def packaged_file(package: str, rel: str, what: str, hint: str, error: type[ImportError]) -> Path:
    """Path of model file ``rel`` shipped inside ``package``, found without importing the package;
    ``error`` (naming ``hint``, the install command) when the package or the file is missing."""
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        raise error(f"{what} needs the {package} package: {hint}")
    path = Path(next(iter(spec.submodule_search_locations))) / rel
    if not path.is_file():
        raise error(f"{package} is installed but {path} is missing: reinstall ({hint})")
    return path


def batch_at_16k(wav: torch.Tensor, sr: int, min_samples: int, what: str) -> torch.Tensor:
    """Waveforms ``[B, N]`` (or ``[N]``) at ``sr`` as float ``[B, N']`` at 16 kHz, the rate both speaker
    models take; ``ValueError`` for another shape or fewer than ``min_samples`` samples at 16 kHz."""
    if wav.dim() == 1:
        wav = wav[None]
    if wav.dim() != 2:
        raise ValueError(f"{what} wants a waveform [B, N], got shape {tuple(wav.shape)}")
    wav = wav.float()
    if sr != SR:
        import torchaudio.functional as AF

        wav = AF.resample(wav, sr, SR)
    if wav.shape[-1] < min_samples:
        raise ValueError(f"waveform too short for the {what} ({wav.shape[-1]} samples at 16 kHz)")
    return wav


def weights_path() -> Path:
    """Path of resemblyzer's ``pretrained.pt`` without importing resemblyzer (its import needs webrtcvad)."""
    return packaged_file(
        "resemblyzer", "pretrained.pt", "the GE2E speaker encoder", INSTALL_HINT, SpeakerEncoderUnavailable
    )


def partial_starts(n_samples: int, rate: float = RATE, min_coverage: float = MIN_COVERAGE) -> list[int]:
    """First mel frame of each partial utterance for a 16 kHz waveform of ``n_samples`` (as resemblyzer)."""
    n_frames = math.ceil((n_samples + 1) / HOP)
    step = round((SR / rate) / HOP)
    if not 0 < step <= PARTIAL_FRAMES:
        raise ValueError(f"partial rate {rate} must give a step in 1..{PARTIAL_FRAMES} frames")
    starts = list(range(0, max(1, n_frames - PARTIAL_FRAMES + step + 1), step))
    # drop a last partial that would be mostly padding (but always keep one)
    coverage = (n_samples - starts[-1] * HOP) / (PARTIAL_FRAMES * HOP)
    if coverage < min_coverage and len(starts) > 1:
        starts = starts[:-1]
    return starts


class SpeakerEncoder(nn.Module):
    """GE2E speaker encoder; ``embed(wav [B, N], sr) -> [B, 256]`` unit-norm, differentiable."""

    def __init__(self) -> None:
        super().__init__()
        import torchaudio.functional as AF

        self.lstm = nn.LSTM(N_MELS, EMBED_DIM, 3, batch_first=True)
        self.linear = nn.Linear(EMBED_DIM, EMBED_DIM)
        fb = AF.melscale_fbanks(N_FFT // 2 + 1, 0.0, SR / 2, N_MELS, SR, norm="slaney", mel_scale="slaney")
        self.register_buffer("mel_fb", fb, persistent=False)  # [201, 40]
        self.register_buffer("window", torch.hann_window(N_FFT), persistent=False)  # periodic, as librosa

    @classmethod
    def load(cls, device: str | torch.device | None = None, path: str | Path | None = None) -> SpeakerEncoder:
        """Frozen encoder (eval, no grad on weights) with resemblyzer's pretrained weights."""
        path = Path(path) if path is not None else weights_path()
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
        state = {k: v for k, v in ckpt["model_state"].items() if k.startswith(("lstm.", "linear."))}
        enc = cls()
        enc.load_state_dict(state, strict=False)  # completeness checked below, with a one-line error
        missing = {k for k, _ in enc.named_parameters()} - set(state)
        if missing:
            raise ValueError(f"{path} lacks speaker-encoder weights {sorted(missing)}: reinstall with {INSTALL_HINT}")
        enc.requires_grad_(False)
        return enc.eval().to(device or "cpu")

    def mel(self, wav16: torch.Tensor) -> torch.Tensor:
        """``[B, N]`` 16 kHz → linear-power mel ``[B, T, 40]``, ``T = 1 + N // 160`` (librosa framing)."""
        spec = torch.stft(
            wav16, N_FFT, HOP, window=self.window.to(wav16.dtype), center=True, pad_mode="constant", return_complex=True
        )  # [B, 201, T]
        power = spec.real.square() + spec.imag.square()
        return torch.einsum("bft,fm->btm", power, self.mel_fb.to(power.dtype))

    def partials(self, mels: torch.Tensor) -> torch.Tensor:
        """``[M, 160, 40]`` mel partials → unit-norm embeddings ``[M, 256]``."""
        _, (hidden, _) = self.lstm(mels)
        return F.normalize(F.relu(self.linear(hidden[-1])), dim=-1, eps=1e-12)

    def embed(self, wav: torch.Tensor, sr: int = 24000, normalize_volume: bool = True) -> torch.Tensor:
        """Utterance embeddings ``[B, 256]`` (unit norm) of waveforms ``[B, N]`` (or ``[N]``) at ``sr``."""
        wav = batch_at_16k(wav, sr, HOP, "speaker encoder")
        if normalize_volume:
            wav = self.normalize_volume(wav)
        starts = partial_starts(wav.shape[-1])
        need = (starts[-1] + PARTIAL_FRAMES) * HOP  # resemblyzer zero-pads up to the last partial's end
        if need >= wav.shape[-1]:
            wav = F.pad(wav, (0, need - wav.shape[-1]))
        mel = self.mel(wav)  # [B, T, 40]
        parts = torch.stack([mel[:, s : s + PARTIAL_FRAMES] for s in starts], 1)  # [B, P, 160, 40]
        b, p = parts.shape[:2]
        emb = self.partials(parts.reshape(b * p, PARTIAL_FRAMES, N_MELS)).view(b, p, EMBED_DIM)
        return F.normalize(emb.mean(1), dim=-1, eps=1e-12)

    @staticmethod
    def normalize_volume(wav: torch.Tensor, target_dbfs: float = TARGET_DBFS) -> torch.Tensor:
        """Raise each row to ``target_dbfs`` RMS if quieter (never lowers it), as resemblyzer."""
        rms = wav.square().mean(-1, keepdim=True).sqrt().clamp_min(1e-8)
        gain = (10 ** (target_dbfs / 20) / rms).clamp_min(1.0)
        return wav * gain

    @staticmethod
    def similarity(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        """Cosine similarity along the last axis (broadcasting)."""
        return F.cosine_similarity(a, b, dim=-1)


def speaker_distance(
    enc: SpeakerEncoder, wav: torch.Tensor, ref_embedding: torch.Tensor, sr: int = 24000
) -> torch.Tensor:
    """Mean over the batch of 1 − cos(embed(wav), ref); ``ref_embedding`` ``[256]`` or ``[B, 256]``."""
    emb = enc.embed(wav, sr)
    return (1 - SpeakerEncoder.similarity(emb, ref_embedding.to(emb))).mean()


def vad_trim(wav16: torch.Tensor) -> torch.Tensor:
    """Resemblyzer's ``trim_long_silences`` on a 16 kHz ``[N]`` waveform (webrtcvad, not differentiable).

    For reference-side evaluation only: 30 ms frames, VAD mode 3, 8-frame moving average, silences
    longer than 6 frames dropped.
    """
    try:
        import webrtcvad
    except ImportError as e:
        raise SpeakerEncoderUnavailable(f"vad_trim needs webrtcvad: {INSTALL_HINT}") from e
    import numpy as np
    from scipy.ndimage import binary_dilation

    win = 30 * SR // 1000
    x = wav16.detach().float().cpu().reshape(-1).numpy()
    x = x[: len(x) - len(x) % win]
    pcm = np.round(x * 32767).astype(np.int16)  # resemblyzer casts without clipping
    vad = webrtcvad.Vad(3)
    flags = np.array([vad.is_speech(pcm[i : i + win].tobytes(), SR) for i in range(0, len(x), win)], dtype=float)
    width = 8
    padded = np.concatenate([np.zeros((width - 1) // 2), flags, np.zeros(width // 2)])
    avg = np.convolve(padded, np.ones(width) / width, mode="valid")
    mask = binary_dilation(np.round(avg).astype(bool), np.ones(7))
    return torch.from_numpy(x[np.repeat(mask, win)].copy())
