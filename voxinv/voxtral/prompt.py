"""Tekken prompts for speech requests (spec §9) and the tiny generated ``tekken.json``."""

from __future__ import annotations

import base64
import json
from pathlib import Path

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
        "the quick brown fox jumps over the lazy dog. hello world, this is a test of the voice "
        "cloning system. paris is a beautiful city! speech synthesis with voxtral."
    ).encode()
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
    path = Path(path)
    path.write_text(json.dumps(data, ensure_ascii=False))
    return path
