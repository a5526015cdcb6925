"""Voxtral TTS generation without vLLM (spec §8): prompt → backbone prefill → frame loop → codec.

Frame loop (one frame = 80 ms): the backbone's last hidden state goes to the flow head, which
returns the frame's 37 model-format codes; the sum of their 37 code embeddings is the next input
position. Generation stops at a frame whose semantic code is ``[END_AUDIO]`` (emitted, never fed
back) or after ``max_frames``.

Determinism contract: ``torch.manual_seed(seed)`` once right before the frame loop, then exactly
one ``torch.randn(1, 36)`` draw (fp32, CPU default generator) per frame for the flow's ``x0`` —
also for the END frame — so codes depend only on (weights, dtype/device math, prompt, seed) and a
CPU/GPU run draws the same noise.

``codes`` are returned in model format ``[T, 37]`` exactly as vLLM-Omni streams them between
stages: the END frame ``[1, 2, …, 2]``, when generated, is the last row; the waveform covers the
frames before it.
"""

from __future__ import annotations

import math
import os
import time
from dataclasses import dataclass

import torch

from voxinv.voxtral.backbone import Backbone, default_dtype
from voxinv.voxtral.checkpoint import DEFAULT_REPO, Checkpoint
from voxinv.voxtral.codes import END_AUDIO, frames_to_batch, strip_end, to_raw
from voxinv.voxtral.flow import AcousticTransformer
from voxinv.voxtral.prompt import Prompt, PromptError, build_prompt, load_tokenizer

DEFAULT_MAX_FRAMES = 2048  # the deployment's max_tokens (≈ 164 s)
# a frame cap that fits the text: the slowest speech expected (4 characters/s; ≈ 15 is usual) plus
# lead-in/out, so a voice that never says END stops after seconds, not after 164 s of frames
SECONDS_PER_CHAR = 0.25
EXTRA_SECONDS = 2.0


def frame_cap(text: str, frame_rate: float) -> int:
    """Frames enough for ``text`` spoken at a quarter of a usual rate, at most DEFAULT_MAX_FRAMES."""
    return min(DEFAULT_MAX_FRAMES, math.ceil(frame_rate * (EXTRA_SECONDS + SECONDS_PER_CHAR * len(text))))


@dataclass
class Generation:
    codes: torch.Tensor  # [T, 37] model format, END frame last if generated
    hidden: torch.Tensor | None  # [T, D] fp32: the hidden state that produced each frame
    prompt_len: int
    ended: bool  # stopped at END (else hit max_frames)
    seconds: float  # wall time of prefill + frame loop

    @property
    def n_audio_frames(self) -> int:
        return len(self.codes) - int(self.ended)


@torch.no_grad()
def frame_loop(
    backbone: Backbone,
    flow: AcousticTransformer,
    prompt_embeds: torch.Tensor,
    seed: int,
    max_frames: int,
    cfg_alpha: float = 1.2,
    *,
    stop_at_end: bool = True,
    return_hidden: bool = False,
    progress: bool = False,
) -> Generation:
    """Prefill ``prompt_embeds`` ``[1, L, D]`` then generate frames (see the module docstring);
    ``progress``: a tqdm bar over frames (stderr)."""
    from tqdm.auto import tqdm

    if max_frames < 1:
        raise ValueError("max_frames must be ≥ 1")
    t0 = time.perf_counter()
    bb = backbone
    L = prompt_embeds.shape[1]
    cache = bb.new_cache(L + max_frames)
    h = bb(prompt_embeds, 0, cache)[:, -1]  # [1, D] at the last prompt position ([BEGIN_AUDIO])
    frames, hiddens = [], []
    ended = False
    torch.manual_seed(seed)
    bar = tqdm(total=max_frames, desc="tts", unit="frame", disable=not progress)
    for k in range(max_frames):
        bar.update(1)
        x0 = torch.randn(1, flow.n_acoustic)  # the one draw per frame (fp32, CPU)
        frame = flow(h, x0, cfg_alpha)  # [1, 37] model format
        frames.append(frame[0].cpu())
        if return_hidden:
            hiddens.append(h[0].float().cpu())
        if stop_at_end and int(frame[0, 0]) == END_AUDIO:
            ended = True
            break
        if k + 1 < max_frames:  # the frame's summed code embeddings are the next position
            h = bb(bb.embed_codes(frame)[:, None], L + k, cache)[:, -1]
    bar.close()
    return Generation(
        codes=torch.stack(frames),
        hidden=torch.stack(hiddens) if return_hidden else None,
        prompt_len=L,
        ended=ended,
        seconds=time.perf_counter() - t0,
    )


class VoxtralTTS:
    """The full model: backbone + flow head + codec decoder + tokenizer.

    >>> tts = VoxtralTTS.from_pretrained("mistralai/Voxtral-4B-TTS-2603", device="cuda")
    >>> codes, wav = tts.generate("Hello there.", voice="casual_female", seed=0)
    """

    def __init__(self, ckpt: Checkpoint, backbone: Backbone, flow: AcousticTransformer, codec, tokenizer) -> None:
        self.ckpt, self.backbone, self.flow, self.codec, self.tokenizer = ckpt, backbone, flow, codec, tokenizer
        self.params = ckpt.params

    @classmethod
    def from_pretrained(
        cls,
        path_or_id: str | os.PathLike = DEFAULT_REPO,
        device: str | torch.device = "cpu",
        dtype: torch.dtype | None = None,
        *,
        codec_dtype: torch.dtype = torch.float32,
        with_codec: bool = True,
    ) -> VoxtralTTS:
        """Load every component once. ``dtype`` (backbone + flow) defaults to bf16 on GPU, fp32 on CPU;
        the 150 M-parameter codec decodes in fp32 unless ``codec_dtype`` says otherwise."""
        from voxinv.voxtral.codec import load_codec

        ckpt = Checkpoint(path_or_id)
        dtype = dtype or default_dtype(device)
        backbone = Backbone.from_checkpoint(ckpt, dtype=dtype, device=device)
        flow = AcousticTransformer.from_checkpoint(ckpt, dtype=dtype, device=device)
        codec = load_codec(ckpt, dtype=codec_dtype, device=device) if with_codec else None
        return cls(ckpt, backbone, flow, codec, load_tokenizer(ckpt.path))

    @property
    def device(self) -> torch.device:
        return self.backbone.device

    @property
    def sampling_rate(self) -> int:
        return self.params.codec.sampling_rate

    # ---------------------------------------------------------------------------------------- prompt
    def prompt(self, text: str, voice: str | os.PathLike | torch.Tensor) -> Prompt:
        """Tokenize; ``voice`` is a preset name, a ``.pt`` file, a run directory or a tensor ``[N, D]``."""
        p = build_prompt(self.tokenizer, text, voice, self.ckpt.path)
        if p.voice.shape[1] != self.params.backbone.dim:
            raise PromptError(
                f"voice {p.voice_name} has rows of width {p.voice.shape[1]}, this model's dim is "
                f"{self.params.backbone.dim}: the voice was made for another model"
            )
        return p

    def prompt_embeds(self, prompt: Prompt) -> torch.Tensor:
        """Prompt ids → ``[1, L, D]``: text embeddings, [AUDIO] slots replaced by the voice rows."""
        bb = self.backbone
        e = bb.embed_tokens(prompt.ids.to(bb.device)).clone()
        e[prompt.audio_positions.to(bb.device)] = prompt.voice.to(device=bb.device, dtype=bb.dtype)
        return e[None]

    # ------------------------------------------------------------------------------------ generation
    @torch.no_grad()
    def generate_codes(
        self,
        text: str,
        voice: str | os.PathLike | torch.Tensor,
        seed: int = 0,
        max_frames: int = DEFAULT_MAX_FRAMES,
        cfg_alpha: float = 1.2,
        *,
        stop_at_end: bool = True,
        return_hidden: bool = False,
        prompt: Prompt | None = None,
        progress: bool = False,
    ) -> Generation:
        """Run the frame loop. ``stop_at_end=False`` keeps going after END frames (feeding them
        back) — for benchmarks and parity checks that need a fixed number of frames only."""
        t0 = time.perf_counter()
        prompt = prompt or self.prompt(text, voice)
        g = frame_loop(
            self.backbone,
            self.flow,
            self.prompt_embeds(prompt),
            seed,
            max_frames,
            cfg_alpha,
            stop_at_end=stop_at_end,
            return_hidden=return_hidden,
            progress=progress,
        )
        g.seconds = time.perf_counter() - t0
        return g

    @torch.no_grad()
    def decode(self, codes: torch.Tensor) -> torch.Tensor:
        """Model-format ``[T, 37]`` (cut at END) → waveform ``[N]`` fp32 CPU, windowed for long audio."""
        if self.codec is None:
            raise RuntimeError("this VoxtralTTS was loaded with with_codec=False")
        codes = strip_end(codes)
        if len(codes) == 0:
            return torch.zeros(0)
        raw = frames_to_batch(to_raw(codes)).to(self.device)
        return self.codec.decode_windowed(raw)[0, 0].float().cpu()

    def generate(
        self,
        text: str,
        voice: str | os.PathLike | torch.Tensor,
        seed: int = 0,
        max_frames: int = DEFAULT_MAX_FRAMES,
        cfg_alpha: float = 1.2,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Text + voice → (codes ``[T, 37]`` model format, waveform ``[N]`` fp32 at 24 kHz)."""
        g = self.generate_codes(text, voice, seed, max_frames, cfg_alpha)
        return g.codes, self.decode(g.codes)


def synthesize_eval(
    model: VoxtralTTS,
    voice: str | os.PathLike | torch.Tensor,
    sentences: list[str],
    seed: int = 0,
    max_frames: int = 750,
    cfg_alpha: float = 1.2,
) -> list[torch.Tensor]:
    """Speak each sentence with ``voice``; sentence i uses seed ``seed + i``. Returns fp32 CPU
    waveforms ``[N_i]`` at ``model.sampling_rate``. Scoring is the evaluation layer's job."""
    return [model.generate(s, voice, seed + i, max_frames, cfg_alpha)[1] for i, s in enumerate(sentences)]


__all__ = ["VoxtralTTS", "Generation", "frame_cap", "synthesize_eval"]
