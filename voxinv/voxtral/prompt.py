"""Tekken prompts for speech requests (spec §9) and the tiny generated ``tekken.json``.

Layout of a speech prompt (ids of the release)::

    [BOS=1] [BEGIN_AUDIO=25] [AUDIO=24] × N [NEXT_AUDIO_TEXT=36] <text ids> [REPEAT_AUDIO_TEXT=35] [BEGIN_AUDIO=25]

The N ``[AUDIO]`` placeholders are replaced by the N rows of the voice prompt (END row included).
Preset voices go through mistral-common's ``encode_speech_request`` (N from ``tekken.json →
audio.voice_num_audio_tokens``); voices tekken.json does not know (cloned voices) get the same
layout built here with N = the voice's row count.
"""

from __future__ import annotations

import base64
import json
import os
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path

import torch

from voxinv import rundir
from voxinv.voxtral.voices import VoiceError

# special-token ranks of the release's tekken.json that the TTS path uses (spec §9)
SPECIAL_RANKS = {
    0: "<unk>",
    1: "<s>",
    2: "</s>",
    3: "[INST]",
    4: "[/INST]",
    5: "[AVAILABLE_TOOLS]",
    6: "[/AVAILABLE_TOOLS]",
    7: "[TOOL_RESULTS]",
    8: "[/TOOL_RESULTS]",
    9: "[TOOL_CALLS]",
    10: "[IMG]",
    11: "<pad>",
    12: "[IMG_BREAK]",
    13: "[IMG_END]",
    14: "[PREFIX]",
    15: "[MIDDLE]",
    16: "[SUFFIX]",
    17: "[SYSTEM_PROMPT]",
    18: "[/SYSTEM_PROMPT]",
    19: "[TOOL_CONTENT]",
    20: "[ARGS]",
    21: "[CALL_ID]",
    24: "[AUDIO]",
    25: "[BEGIN_AUDIO]",
    34: "[TRANSCRIBE]",
    35: "[REPEAT_AUDIO_TEXT]",
    36: "[NEXT_AUDIO_TEXT]",
}
NUM_SPECIAL = 1000  # Tekken: regular ids are BPE rank + 1000
PATTERN = r"[^\r\n\p{L}\p{N}]?[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]*[\p{Ll}\p{Lm}\p{Lo}\p{M}]+|[^\r\n\p{L}\p{N}]?[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]+[\p{Ll}\p{Lm}\p{Lo}\p{M}]*|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n/]*|\s*[\r\n]+|\s+(?!\S)|\s+"


def write_tiny_tekken(path: str | Path, *, vocab_size: int, voice_num_audio_tokens: dict[str, int]) -> Path:
    """A small but real Tekken v7 file: 256 byte tokens + greedy pair merges up to ``vocab_size``.

    Loadable by mistral-common's ``Tekkenizer.from_file`` with the same special-token ranks and
    ``audio`` section (incl. ``voice_num_audio_tokens``) as the release.
    """
    n_regular = vocab_size - NUM_SPECIAL
    if n_regular < 256:
        raise ValueError(f"vocab_size must be ≥ {NUM_SPECIAL + 256} (256 byte tokens + {NUM_SPECIAL} specials)")
    tokens = [bytes([i]) for i in range(256)]
    corpus = (
        b"the quick brown fox jumps over the lazy dog. hello world, this is a test of the voice "
        b"cloning system. paris is a beautiful city! speech synthesis with voxtral."
    )
    seen = set(tokens)
    while len(tokens) < n_regular:  # merges of frequent adjacent pairs of existing tokens
        pairs: dict[bytes, int] = {}
        for a in list(seen):
            if len(a) > 3:
                continue
            for b in (bytes([c]) for c in b"etaoinshr lcdu"):
                m = a + b
                if m not in seen:
                    pairs[m] = corpus.count(m)
        if not pairs:
            break
        best = max(pairs, key=lambda m: (pairs[m], -len(m), m))
        tokens.append(best)
        seen.add(best)
    while len(tokens) < n_regular:  # pad with unique 4-byte tokens (never produced by merges above)
        tokens.append(b"\xff\xfe" + len(tokens).to_bytes(2, "big"))
    vocab = [
        {"rank": i, "token_bytes": base64.b64encode(t).decode(), "token_str": t.decode("utf-8", "replace")}
        for i, t in enumerate(tokens)
    ]
    special = [
        {"rank": r, "token_str": SPECIAL_RANKS.get(r, f"<SPECIAL_{r}>"), "is_control": True}
        for r in range(max(SPECIAL_RANKS) + 1)
    ]
    data = {
        "config": {
            "pattern": PATTERN,
            "num_vocab_tokens": n_regular,
            "default_vocab_size": vocab_size,
            "default_num_special_tokens": NUM_SPECIAL,
            "version": "v7",
        },
        "vocab": vocab,
        "special_tokens": special,
        "audio": {
            "sampling_rate": 24000,
            "frame_rate": 12.5,
            "audio_encoding_config": {"num_mel_bins": 128, "hop_length": 160, "window_size": 400},
            "voice_num_audio_tokens": dict(voice_num_audio_tokens),
        },
    }
    return rundir.atomic_write(path, json.dumps(data, ensure_ascii=False))


# ------------------------------------------------------------------------------------ speech prompts

VOICE_FILE = rundir.VOICE  # what a voxinv run directory holds


class PromptError(VoiceError):
    """Bad voice / text / tokenizer for a speech prompt (a ``VoiceError``, so CLIs print one line)."""


@dataclass
class Prompt:
    """A tokenized speech request: ids ``[L]`` and the voice rows for the ``[AUDIO]`` slots."""

    ids: torch.Tensor  # [L] int64
    voice: torch.Tensor  # [N, D] (bf16 as stored)
    audio_positions: torch.Tensor  # [N] int64, positions of the [AUDIO] placeholders (2 … N+1)
    text_ids: list[int] = field(default_factory=list)
    voice_name: str = ""

    def __len__(self) -> int:
        return int(self.ids.numel())


@lru_cache(maxsize=4)
def _load_tokenizer(path: str, mtime: float):
    from mistral_common.tokens.tokenizers.mistral import MistralTokenizer

    return MistralTokenizer.from_file(path)


def load_tokenizer(model_dir: str | Path):
    """mistral-common ``MistralTokenizer`` of ``model_dir/tekken.json`` (cached per file version)."""
    path = Path(model_dir) / "tekken.json"
    if not path.is_file():
        raise PromptError(f"{model_dir} has no tekken.json: download it with the weights (it is the tokenizer)")
    return _load_tokenizer(str(path), path.stat().st_mtime)


def special_ids(tokenizer) -> dict[str, int]:
    """Ids of the special tokens a speech prompt uses, read from the tokenizer."""
    tek = tokenizer.instruct_tokenizer.tokenizer
    get = tek.get_special_token
    return {
        "bos": tek.bos_id,
        "audio": get("[AUDIO]"),
        "begin_audio": get("[BEGIN_AUDIO]"),
        "text_to_audio": get("[NEXT_AUDIO_TEXT]"),
        "audio_to_text": get("[REPEAT_AUDIO_TEXT]"),
    }


def voice_num_audio_tokens(tokenizer) -> dict[str, int]:
    """``tekken.json → audio.voice_num_audio_tokens`` (preset name → rows incl. END)."""
    ae = tokenizer.instruct_tokenizer.audio_encoder
    cfg = getattr(ae, "audio_config", None)
    return dict(getattr(cfg, "voice_num_audio_tokens", None) or {})


def speech_ids(tokenizer, text: str, n_voice_rows: int) -> tuple[list[int], list[int]]:
    """Prompt ids built here for a voice of ``n_voice_rows`` rows; returns (ids, text ids)."""
    if not text.strip():
        raise PromptError("text is empty: pass the sentence to speak")
    if n_voice_rows < 1:
        raise PromptError("voice has no rows")
    sp = special_ids(tokenizer)
    text_ids = tokenizer.instruct_tokenizer.tokenizer.encode(text, bos=False, eos=False)
    ids = (
        [sp["bos"], sp["begin_audio"]]
        + [sp["audio"]] * n_voice_rows
        + [sp["text_to_audio"]]
        + list(text_ids)
        + [sp["audio_to_text"], sp["begin_audio"]]
    )
    return ids, list(text_ids)


def preset_speech_ids(tokenizer, text: str, voice: str) -> list[int]:
    """mistral-common's own encoding of ``SpeechRequest(input=text, voice=voice)``."""
    from mistral_common.protocol.speech.request import SpeechRequest

    return list(tokenizer.encode_speech_request(SpeechRequest(input=text, voice=voice)).tokens)


def resolve_voice(
    voice: str | os.PathLike | torch.Tensor, model_dir: str | Path | None = None
) -> tuple[str, torch.Tensor]:
    """A voice given as a tensor, a preset name, a ``.pt`` file or a voxinv run directory → (name, rows).

    Run directories are recognised by their ``voice.pt``. Names are looked up in
    ``model_dir/voice_embedding/<name>.pt``.
    """
    from voxinv.voxtral.voices import load_voice

    if isinstance(voice, torch.Tensor):
        return "custom", voice
    p = Path(os.path.expanduser(str(voice)))
    if p.is_dir():
        if not (p / VOICE_FILE).is_file():
            raise PromptError(f"voice directory {p} has no {VOICE_FILE}: pass a voxinv run directory or a .pt file")
        return p.name, load_voice(p / VOICE_FILE)
    if p.suffix == ".pt" or p.is_file():
        return p.stem, load_voice(p)
    name = str(voice).lower()
    if model_dir is not None:
        f = Path(model_dir) / "voice_embedding" / f"{name}.pt"
        if f.is_file():
            return name, load_voice(f)
        have = sorted(x.stem for x in (Path(model_dir) / "voice_embedding").glob("*.pt"))
        raise PromptError(
            f"unknown voice {voice!r}: use a preset ({', '.join(have) or 'none found'}), a .pt file or a run dir"
        )
    raise PromptError(f"voice {voice!r} is neither a file nor a directory (and no model directory to look up presets)")


def build_prompt(
    tokenizer,
    text: str,
    voice: str | os.PathLike | torch.Tensor,
    model_dir: str | Path | None = None,
) -> Prompt:
    """Tokenize a speech request. Presets known to tekken.json use mistral-common's encoder (and
    their row count must match it); other voices get the identical layout with N = their rows."""
    name, rows = resolve_voice(voice, model_dir)
    if rows.dim() != 2:
        raise PromptError(f"voice {name} must be [N, dim], got {list(rows.shape)}")
    n = int(rows.shape[0])
    known = voice_num_audio_tokens(tokenizer)
    ids, text_ids = speech_ids(tokenizer, text, n)
    is_preset = isinstance(voice, str) and not Path(os.path.expanduser(voice)).exists() and name in known
    if is_preset:
        if known[name] != n:
            raise PromptError(
                f"tekken.json says voice {name} has {known[name]} rows but its file has {n}: "
                "re-register the voice (voxinv.voxtral.voices.register_voice) so both agree"
            )
        ref = preset_speech_ids(tokenizer, text, name)
        if ref != ids:  # our layout must equal mistral-common's; fail loudly if a release changes it
            raise PromptError("mistral-common's speech prompt differs from the documented layout (spec §9)")
    ids_t = torch.tensor(ids, dtype=torch.long)
    positions = (ids_t == special_ids(tokenizer)["audio"]).nonzero().flatten()
    if len(positions) != n:
        raise PromptError(f"text contains [AUDIO] tokens: {len(positions)} placeholders for {n} voice rows")
    return Prompt(ids=ids_t, voice=rows, audio_positions=positions, text_ids=text_ids, voice_name=name)
