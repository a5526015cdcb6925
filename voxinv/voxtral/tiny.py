"""Seeded tiny checkpoints in the exact release format (for tests and the offline demo).

The directory looks like the real one: ``params.json`` with the release's nesting and key order
(only sizes shrunk), ``consolidated.safetensors`` with the release's tensor names (bf16 by default,
weight norm stored as ``parametrizations.weight.original{0,1}``), ``voice_embedding/<name>.pt``
(bf16 ``[N, dim]`` with END row) and ``tekken.json``. The code layout (8192 semantic entries,
36 × 21 FSQ levels, 292-d latent, 1920 samples per frame) is the real one.
"""

from __future__ import annotations

import copy
import json
from pathlib import Path

import torch

from voxinv.voxtral.codec import VoxtralCodec, codec_state_for_checkpoint
from voxinv.voxtral.params import VoxtralParams

# params.json of mistralai/Voxtral-4B-TTS-2603 (spec §3), key order as published
REAL_PARAMS: dict = {
    "dim": 3072,
    "n_layers": 26,
    "head_dim": 128,
    "hidden_dim": 9216,
    "n_heads": 32,
    "n_kv_heads": 8,
    "use_biases": False,
    "causal": True,
    "rope_theta": 1000000.0,
    "norm_eps": 1e-05,
    "vocab_size": 131072,
    "model_parallel": 1,
    "tied_embeddings": True,
    "multimodal": {
        "bos_token_id": 1,
        "audio_model_args": {
            "semantic_codebook_size": 8192,
            "acoustic_codebook_size": 21,
            "n_acoustic_codebook": 36,
            "audio_encoding_args": {
                "codebook_pattern": "parallel",
                "interleave_audio_tokens_per_segment": 8192,
                "interleave_text_tokens_per_segment": 8192,
                "single_trailing_segment": False,
                "num_codebooks": 37,
                "sampling_rate": 24000,
                "frame_rate": 12.5,
            },
            "audio_token_id": 24,
            "begin_audio_token_id": 25,
            "input_embedding_concat_type": "sum",
            "acoustic_transformer_args": {
                "input_dim": 3072,
                "dim": 3072,
                "n_layers": 3,
                "head_dim": 128,
                "hidden_dim": 9216,
                "n_heads": 32,
                "n_kv_heads": 8,
                "use_biases": False,
                "rope_theta": 10000.0,
                "sigma": 1e-05,
                "sigma_max": 1.0,
            },
            "p_uncond": 0.0,
            "text_feature_bugged": False,
            "condition_dropped_token_id": 42,
        },
        "audio_tokenizer_args": {
            "channels": 1,
            "sampling_rate": 24000,
            "pretransform_patch_size": 240,
            "patch_proj_kernel_size": 7,
            "semantic_codebook_size": 8192,
            "semantic_dim": 256,
            "acoustic_codebook_size": 21,
            "acoustic_dim": 36,
            "conv_weight_norm": True,
            "causal": True,
            "attn_sliding_window_size": 16,
            "half_attn_window_upon_downsampling": True,
            "dim": 1024,
            "hidden_dim": 4096,
            "head_dim": 128,
            "n_heads": 8,
            "n_kv_heads": 8,
            "qk_norm_eps": 1e-06,
            "qk_norm": True,
            "use_biases": False,
            "norm_eps": 0.01,
            "layer_scale": True,
            "layer_scale_init": 0.01,
            "decoder_transformer_lengths_str": "2,2,2,2",
            "decoder_convs_kernels_str": "3,4,4,4",
            "decoder_convs_strides_str": "1,2,2,2",
            "voice": {
                name: i
                for i, name in enumerate(
                    "casual_female casual_male cheerful_female neutral_female neutral_male pt_male "
                    "pt_female nl_male nl_female it_male it_female fr_male fr_female es_male es_female "
                    "de_male de_female ar_male hi_male hi_female".split()
                )
            },
        },
    },
    "max_seq_len": 65536,
    "model_type": "voxtral_tts",
    "max_position_embeddings": 128000,
}

# Shrunk sizes: GQA, non-square wq/wo (n_heads·head_dim ≠ dim), 8 codec heads, real code layout.
TINY_SIZES: dict = {
    "dim": 256,  # ≥ 256 keeps the 37 summed code rows of a voice frame decomposable (exact voice → codes)
    "n_layers": 2,
    "head_dim": 16,
    "hidden_dim": 512,
    "n_heads": 8,
    "n_kv_heads": 2,
    "vocab_size": 2048,
    "flow": {
        "input_dim": 256,
        "dim": 256,
        "n_layers": 3,
        "head_dim": 16,
        "hidden_dim": 512,
        "n_heads": 8,
        "n_kv_heads": 2,
    },
    # codec dim 128 ≥ 292/3: a frame's latent stays identifiable through the k=3 input conv (dim 64 is not)
    "codec": {"dim": 128, "hidden_dim": 256, "head_dim": 16, "n_heads": 8, "n_kv_heads": 8},
    "voices": {"casual_female": 24, "casual_male": 18, "neutral_female": 30},
}


def tiny_params(sizes: dict | None = None) -> dict:
    """The real params.json with the sizes of ``sizes`` (default :data:`TINY_SIZES`) substituted."""
    s = copy.deepcopy(TINY_SIZES if sizes is None else sizes)
    d = copy.deepcopy(REAL_PARAMS)
    for k in ("dim", "n_layers", "head_dim", "hidden_dim", "n_heads", "n_kv_heads", "vocab_size"):
        d[k] = s[k]
    d["multimodal"]["audio_model_args"]["acoustic_transformer_args"].update(s["flow"])
    tok = d["multimodal"]["audio_tokenizer_args"]
    tok.update(s["codec"])
    tok["voice"] = {name: i for i, name in enumerate(s["voices"])}
    return d


def tiny_fingerprint(sizes: dict | None = None) -> str:
    """Short hash of the tiny sizes and generator version: cache directories change when they do."""
    import hashlib

    blob = json.dumps({"sizes": TINY_SIZES if sizes is None else sizes, "generator": 1}, sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()[:8]


def manifest(params: VoxtralParams, *, with_encoder: bool = False) -> dict[str, tuple[int, ...]]:
    """Every tensor name → shape of a checkpoint for ``params`` (386 for the release)."""
    b, a, f = params.backbone, params.audio, params.audio.acoustic_transformer_args
    out: dict[str, tuple[int, ...]] = {}

    def mistral_layers(prefix: str, n: int, dim: int, hd: int, nh: int, nkv: int, hidden: int) -> None:
        for i in range(n):
            p = f"{prefix}layers.{i}."
            out[p + "attention.wq.weight"] = (nh * hd, dim)
            out[p + "attention.wk.weight"] = (nkv * hd, dim)
            out[p + "attention.wv.weight"] = (nkv * hd, dim)
            out[p + "attention.wo.weight"] = (dim, nh * hd)
            out[p + "attention_norm.weight"] = (dim,)
            out[p + "ffn_norm.weight"] = (dim,)
            out[p + "feed_forward.w1.weight"] = (hidden, dim)
            out[p + "feed_forward.w2.weight"] = (dim, hidden)
            out[p + "feed_forward.w3.weight"] = (hidden, dim)
        out[prefix + "norm.weight"] = (dim,)

    mistral_layers("", b.n_layers, b.dim, b.head_dim, b.n_heads, b.n_kv_heads, b.hidden_dim)
    out["mm_audio_embeddings.tok_embeddings.weight"] = (b.vocab_size, b.dim)
    out["mm_audio_embeddings.audio_codebook_embeddings.embeddings.weight"] = (a.audio_table_rows, b.dim)
    fp = "acoustic_transformer."
    out[fp + "input_projection.weight"] = (f.dim, a.n_acoustic_codebook)
    out[fp + "time_projection.weight"] = (f.dim, f.dim)
    out[fp + "llm_projection.weight"] = (f.dim, f.input_dim)
    mistral_layers(fp, f.n_layers, f.dim, f.head_dim, f.n_heads, f.n_kv_heads, f.hidden_dim)
    out[fp + "semantic_codebook_output.weight"] = (a.semantic_head_rows, f.dim)
    out[fp + "acoustic_codebook_output.weight"] = (a.n_acoustic_codebook, f.dim)
    with torch.device("meta"):
        codec = VoxtralCodec(params.codec, with_encoder=with_encoder)
    for k, t in codec_state_for_checkpoint(codec).items():
        out["audio_tokenizer." + k] = tuple(t.shape)
    return out


def _init_tensor(name: str, shape: tuple[int, ...], g: torch.Generator) -> torch.Tensor:
    """Random weights that keep activations O(1): norms ≈ 1, linears/convs ~ N(0, 1/fan_in)."""
    if name.endswith(("norm.weight", "_norm.weight")):
        return 1.0 + 0.1 * torch.randn(shape, generator=g)
    if name.endswith(("attention_scale", "ffn_scale")):
        return 0.1 + 0.02 * torch.randn(shape, generator=g)
    if name.endswith("cluster_usage"):
        return 0.5 + torch.rand(shape, generator=g) * 2
    if name.endswith("embedding_sum"):
        return torch.randn(shape, generator=g)
    if "tok_embeddings" in name or "audio_codebook_embeddings" in name:
        return torch.randn(shape, generator=g) * 0.5
    fan_in = shape[1] * (shape[2] if len(shape) == 3 else 1)
    return torch.randn(shape, generator=g) / fan_in**0.5


def make_tiny(
    out_dir: str | Path,
    *,
    seed: int = 0,
    dtype: torch.dtype = torch.bfloat16,
    with_encoder: bool = False,
    sizes: dict | None = None,
    tekken: bool = True,
) -> Path:
    """Write a seeded random model directory in the release format and return its path."""
    from safetensors.torch import save_file

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    raw = tiny_params(sizes)
    params = VoxtralParams.from_dict(raw)
    g = torch.Generator().manual_seed(seed)

    # codec: build the module, randomise its plain weights, store with weight norm un-folded
    codec = VoxtralCodec(params.codec, with_encoder=with_encoder)
    state = {}
    for k, t in codec.state_dict().items():
        w = _init_tensor(k, tuple(t.shape), g)
        if k == "output_proj.conv.weight":
            w = w * 0.1  # keeps random-code decodes well inside [-1, 1] (peaks ≈ 0.3–0.6)
        if (
            k.endswith("conv.weight")
            and codec.get_submodule(k[: -len(".weight")]).__class__.__name__ == "ConvTranspose1d"
        ):
            w = w * 2**0.5  # stride-2 transposed conv: each output sees half the taps
        state[k] = w
    codec.load_state_dict(state)
    tensors = {}
    for name, shape in manifest(params, with_encoder=with_encoder).items():
        if not name.startswith("audio_tokenizer."):
            tensors[name] = _init_tensor(name, shape, g)
    for k, t in codec_state_for_checkpoint(codec).items():
        tensors["audio_tokenizer." + k] = t
    tensors = {k: v.to(dtype).contiguous() for k, v in tensors.items()}
    save_file(tensors, str(out / "consolidated.safetensors"), metadata={"format": "pt"})
    (out / "params.json").write_text(json.dumps(raw, indent=4) + "\n")

    # voices: random codes → sum of table rows (+ END row), exactly as a real voice is made
    from voxinv.voxtral.voices import codes_to_voice

    table = tensors["mm_audio_embeddings.audio_codebook_embeddings.embeddings.weight"]
    vdir = out / "voice_embedding"
    vdir.mkdir(exist_ok=True)
    n_frames = (sizes or TINY_SIZES)["voices"]
    for name in params.voices:
        raw_codes = random_codes(n_frames[name], g, params)
        torch.save(codes_to_voice(raw_codes, table, params.audio), vdir / f"{name}.pt")
    if tekken:
        from voxinv.voxtral.prompt import write_tiny_tekken

        write_tiny_tekken(
            out / "tekken.json",
            vocab_size=params.backbone.vocab_size,
            voice_num_audio_tokens={n: n_frames[n] + 1 for n in params.voices},
        )
    return out


def random_codes(n_frames: int, g: torch.Generator, params: VoxtralParams) -> torch.Tensor:
    """Uniform random raw codes ``[T, 37]``."""
    a = params.audio
    sem = torch.randint(0, a.semantic_codebook_size, (n_frames, 1), generator=g)
    ac = torch.randint(0, a.acoustic_codebook_size, (n_frames, a.n_acoustic_codebook), generator=g)
    return torch.cat([sem, ac], dim=1)
