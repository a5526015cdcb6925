"""`params.json` → typed config.

The released file nests the audio parts under ``multimodal``; field names are kept verbatim so a
reader can grep the spec (§3). Fields absent from the file get the upstream defaults listed in the
spec's "Fields not in the file" table. The raw dict is kept so that a rewritten ``params.json``
(voice registration) loses nothing the loader does not know about.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any


def _from_dict(cls, d: dict[str, Any]):
    """Build dataclass ``cls`` from ``d``, ignoring keys it does not declare (forward compatible)."""
    names = {f.name for f in fields(cls)}
    return cls(**{k: v for k, v in d.items() if k in names})


def _ints(s: str) -> tuple[int, ...]:
    return tuple(int(i) for i in s.split(","))


@dataclass
class CodecArgs:
    """``multimodal.audio_tokenizer_args`` (Voxtral codec)."""

    channels: int = 1
    sampling_rate: int = 24000
    pretransform_patch_size: int = 240
    patch_proj_kernel_size: int = 7
    semantic_codebook_size: int = 8192
    semantic_dim: int = 256
    acoustic_codebook_size: int = 21
    acoustic_dim: int = 36
    conv_weight_norm: bool = True
    causal: bool = True
    attn_sliding_window_size: int = 16
    half_attn_window_upon_downsampling: bool = True
    dim: int = 1024
    hidden_dim: int = 4096
    head_dim: int = 128
    n_heads: int = 8
    n_kv_heads: int = 8
    qk_norm_eps: float = 1e-6
    qk_norm: bool = True
    use_biases: bool = False
    norm_eps: float = 1e-2
    layer_scale: bool = True
    layer_scale_init: float | None = 0.01
    encoder_transformer_lengths_str: str = "2,2,2,2"
    encoder_convs_kernels_str: str = "4,4,4,3"
    encoder_convs_strides_str: str = "2,2,2,1"
    decoder_transformer_lengths_str: str = "2,2,2,2"
    decoder_convs_kernels_str: str = "3,4,4,4"
    decoder_convs_strides_str: str = "1,2,2,2"
    voice: dict[str, int] = field(default_factory=dict)

    @property
    def latent_dim(self) -> int:
        return self.semantic_dim + self.acoustic_dim

    @property
    def num_codebooks(self) -> int:
        return 1 + self.acoustic_dim

    @property
    def encoder_transformer_lengths(self) -> tuple[int, ...]:
        return _ints(self.encoder_transformer_lengths_str)

    @property
    def encoder_convs_kernels(self) -> tuple[int, ...]:
        return _ints(self.encoder_convs_kernels_str)

    @property
    def encoder_convs_strides(self) -> tuple[int, ...]:
        return _ints(self.encoder_convs_strides_str)

    @property
    def decoder_transformer_lengths(self) -> tuple[int, ...]:
        return _ints(self.decoder_transformer_lengths_str)

    @property
    def decoder_convs_kernels(self) -> tuple[int, ...]:
        return _ints(self.decoder_convs_kernels_str)

    @property
    def decoder_convs_strides(self) -> tuple[int, ...]:
        return _ints(self.decoder_convs_strides_str)

    @property
    def samples_per_frame(self) -> int:
        return self.pretransform_patch_size * math.prod(self.decoder_convs_strides)

    @property
    def frame_rate(self) -> float:
        return self.sampling_rate / self.samples_per_frame


@dataclass
class FlowArgs:
    """``multimodal.audio_model_args.acoustic_transformer_args`` (flow-matching head)."""

    input_dim: int = 3072
    dim: int = 3072
    n_layers: int = 3
    head_dim: int = 128
    hidden_dim: int = 9216
    n_heads: int = 32
    n_kv_heads: int = 8
    use_biases: bool = False
    rope_theta: float = 10000.0
    sigma: float = 1e-5
    sigma_max: float = 1.0
    n_decoding_steps: int = 7  # absent from the release; vLLM-Omni's parser sets 7
    norm_eps: float = 1e-5


@dataclass
class AudioModelArgs:
    """``multimodal.audio_model_args``."""

    semantic_codebook_size: int = 8192
    acoustic_codebook_size: int = 21
    n_acoustic_codebook: int = 36
    audio_token_id: int = 24
    begin_audio_token_id: int = 25
    input_embedding_concat_type: str = "sum"
    p_uncond: float = 0.0
    text_feature_bugged: bool = False
    condition_dropped_token_id: int = 42
    audio_encoding_args: dict[str, Any] = field(default_factory=dict)
    acoustic_transformer_args: FlowArgs = field(default_factory=FlowArgs)

    N_SPECIAL: int = 2  # [EMPTY_AUDIO]=0, [END_AUDIO]=1 precede every codebook

    @property
    def codebook_sizes(self) -> list[int]:
        """Per-codebook vocabulary incl. the 2 specials: ``[8194] + [23]*36``."""
        sem = self.semantic_codebook_size + self.N_SPECIAL
        return [sem] + [self.acoustic_codebook_size + self.N_SPECIAL] * self.n_acoustic_codebook

    @property
    def codebook_offsets(self) -> list[int]:
        """Row offset of each codebook in the shared audio-code table (0, 8194, 8217, …)."""
        out, acc = [], 0
        for s in self.codebook_sizes:
            out.append(acc)
            acc += s
        return out

    @property
    def audio_table_rows(self) -> int:
        """Rows of the audio-code table: used rows padded to a multiple of 128 (9088)."""
        return 128 * math.ceil(sum(self.codebook_sizes) / 128)

    @property
    def semantic_head_rows(self) -> int:
        """Rows of ``semantic_codebook_output`` (8194 padded to a multiple of 128 = 8320)."""
        return 128 * math.ceil((self.semantic_codebook_size + self.N_SPECIAL) / 128)


@dataclass
class BackboneArgs:
    """Top-level Mistral decoder fields."""

    dim: int = 3072
    n_layers: int = 26
    head_dim: int = 128
    hidden_dim: int = 9216
    n_heads: int = 32
    n_kv_heads: int = 8
    use_biases: bool = False
    causal: bool = True
    rope_theta: float = 1_000_000.0
    norm_eps: float = 1e-5
    vocab_size: int = 131072
    tied_embeddings: bool = True
    max_seq_len: int = 65536


@dataclass
class VoxtralParams:
    backbone: BackboneArgs
    audio: AudioModelArgs
    codec: CodecArgs
    bos_token_id: int = 1
    model_type: str = "voxtral_tts"
    raw: dict[str, Any] = field(default_factory=dict, repr=False)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> VoxtralParams:
        mm = d.get("multimodal")
        if not isinstance(mm, dict) or "audio_tokenizer_args" not in mm or "audio_model_args" not in mm:
            raise ValueError(
                "params.json has no multimodal.audio_model_args / audio_tokenizer_args: "
                "this is not a Voxtral TTS checkpoint (expected mistralai/Voxtral-4B-TTS-2603 layout)"
            )
        am = dict(mm["audio_model_args"])
        flow = _from_dict(FlowArgs, am.get("acoustic_transformer_args", {}))
        am["acoustic_transformer_args"] = flow
        return cls(
            backbone=_from_dict(BackboneArgs, d),
            audio=_from_dict(AudioModelArgs, am),
            codec=_from_dict(CodecArgs, mm["audio_tokenizer_args"]),
            bos_token_id=mm.get("bos_token_id", 1),
            model_type=d.get("model_type", "voxtral_tts"),
            raw=d,
        )

    @classmethod
    def from_json(cls, path: str | Path) -> VoxtralParams:
        path = Path(path)
        try:
            d = json.loads(path.read_text())
        except json.JSONDecodeError as e:
            raise ValueError(f"{path} is not valid JSON ({e}); re-download params.json") from e
        return cls.from_dict(d)

    @property
    def voices(self) -> list[str]:
        """Preset names: the keys of ``audio_tokenizer_args.voice`` (ids are unused upstream)."""
        return list(self.codec.voice)
