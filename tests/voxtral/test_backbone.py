"""Backbone: checkpoint loading, KV-cache stepping, cross-check against transformers' MistralModel."""

from __future__ import annotations

import pytest
import torch

from voxinv.voxtral.backbone import Backbone, apply_rope, kv_bytes_per_position, rope_tables, weight_bytes
from voxinv.voxtral.checkpoint import Checkpoint, CheckpointError
from voxinv.voxtral.params import VoxtralParams
from voxinv.voxtral.tiny import REAL_PARAMS


@pytest.fixture(scope="module")
def ckpt(tiny_dir) -> Checkpoint:
    return Checkpoint(tiny_dir)


@pytest.fixture(scope="module")
def bb(ckpt) -> Backbone:
    return Backbone.from_checkpoint(ckpt, dtype=torch.float32)


def test_loads_only_backbone_tensors(bb, ckpt):
    names = set(bb.state_dict())
    assert "layers.0.attention.wq.weight" in names
    assert "mm_audio_embeddings.audio_codebook_embeddings.embeddings.weight" in names
    assert not any(n.startswith(("acoustic_transformer.", "audio_tokenizer.")) for n in names)
    w = ckpt.load("layers.1.feed_forward.")["w2.weight"]
    assert torch.equal(bb.layers[1].feed_forward.w2.weight, w.float())
    assert bb.dtype == torch.float32 and not any(p.requires_grad for p in bb.parameters())
    assert torch.equal(bb.mm_audio_embeddings.audio_codebook_embeddings.offsets[:3], torch.tensor([0, 8194, 8217]))


def test_shape_mismatch_is_one_clear_error(tmp_path, tiny_dir):
    import json
    import shutil

    d = tmp_path / "m"
    shutil.copytree(tiny_dir, d)
    p = json.loads((d / "params.json").read_text())
    p["hidden_dim"] = 384
    (d / "params.json").write_text(json.dumps(p))
    with pytest.raises(CheckpointError, match="wrong shape"):
        Backbone.from_checkpoint(Checkpoint(d))


def test_rope_rotates_interleaved_pairs():
    x = torch.randn(1, 3, 2, 8)
    cos, sin = rope_tables(8, 10000.0, torch.arange(3))
    y = apply_rope(x, cos, sin)
    # pair i of position p is rotated by p·θ^(-2i/d): check pair 1 of position 2 by hand
    ang = 2 * 10000.0 ** (-2 / 8)
    a, b = x[0, 2, :, 2], x[0, 2, :, 3]
    torch.testing.assert_close(y[0, 2, :, 2], a * torch.cos(torch.tensor(ang)) - b * torch.sin(torch.tensor(ang)))
    torch.testing.assert_close(y[0, 2, :, 3], a * torch.sin(torch.tensor(ang)) + b * torch.cos(torch.tensor(ang)))
    torch.testing.assert_close(y[0, 0], x[0, 0])  # position 0 untouched


def test_kv_cache_stepping_matches_full_forward(bb):
    torch.manual_seed(0)
    L, extra = 11, 6
    x = torch.randn(1, L + extra, bb.args.dim)
    full = bb(x)
    cache = bb.new_cache(L + extra)
    parts = [bb(x[:, :L], 0, cache)]
    parts.append(bb(x[:, L : L + 2], L, cache))  # a 2-position chunk after the cache
    for p in range(L + 2, L + extra):
        parts.append(bb(x[:, p : p + 1], p, cache))
    stepped = torch.cat(parts, dim=1)
    assert (stepped - full).abs().max() <= 1e-5


def test_cache_overflow_is_clear(bb):
    cache = bb.new_cache(4)
    with pytest.raises(RuntimeError, match="KV cache holds 4"):
        bb(torch.randn(1, 5, bb.args.dim), 0, cache)


def test_matches_transformers_mistral(bb, ckpt):
    """Spec §4.6: HF MistralModel with renamed weights and permuted q/k rows = interleaved RoPE."""
    transformers = pytest.importorskip("transformers")
    a = ckpt.params.backbone
    cfg = transformers.MistralConfig(
        vocab_size=a.vocab_size,
        hidden_size=a.dim,
        intermediate_size=a.hidden_dim,
        num_hidden_layers=a.n_layers,
        num_attention_heads=a.n_heads,
        num_key_value_heads=a.n_kv_heads,
        head_dim=a.head_dim,
        rms_norm_eps=a.norm_eps,
        rope_parameters={"rope_type": "default", "rope_theta": a.rope_theta},
        sliding_window=None,
        max_position_embeddings=512,
        attn_implementation="eager",
    )
    hf = transformers.MistralModel(cfg).eval()

    def perm(w: torch.Tensor, n: int) -> torch.Tensor:
        return w.view(n, a.head_dim // 2, 2, -1).transpose(1, 2).reshape(w.shape)

    ren = {
        "attention.wq": "self_attn.q_proj",
        "attention.wk": "self_attn.k_proj",
        "attention.wv": "self_attn.v_proj",
        "attention.wo": "self_attn.o_proj",
        "feed_forward.w1": "mlp.gate_proj",
        "feed_forward.w2": "mlp.down_proj",
        "feed_forward.w3": "mlp.up_proj",
        "attention_norm": "input_layernorm",
        "ffn_norm": "post_attention_layernorm",
    }
    sd = {"norm.weight": bb.norm.weight, "embed_tokens.weight": bb.mm_audio_embeddings.tok_embeddings.weight}
    for i, layer in enumerate(bb.layers):
        for src, dst in ren.items():
            w = layer.get_submodule(src).weight
            if src == "attention.wq":
                w = perm(w, a.n_heads)
            elif src == "attention.wk":
                w = perm(w, a.n_kv_heads)
            sd[f"layers.{i}.{dst}.weight"] = w
    missing, unexpected = hf.load_state_dict(sd, strict=False)
    assert not unexpected and all("rotary" in m for m in missing)
    torch.manual_seed(1)
    x = torch.randn(2, 40, a.dim)
    with torch.no_grad():
        ref = hf(inputs_embeds=x).last_hidden_state
    assert (bb(x) - ref).abs().max() <= 1e-4


def test_release_memory_numbers():
    p = VoxtralParams.from_dict(REAL_PARAMS)
    wb = weight_bytes(p)
    assert wb["backbone_layers"] == 3_026_353_152 * 2  # spec §1: 3026.35 M parameters
    assert wb["text_embedding"] == 131072 * 3072 * 2
    assert wb["audio_table"] == 9088 * 3072 * 2
    assert wb["flow"] == 393_851_904 * 2  # 393.85 M
    assert sum(v for k, v in wb.items() if k != "backbone") == 4_002_353_392 * 2  # the 4002.4 M checkpoint
    assert kv_bytes_per_position(p.backbone) == 26 * 2 * 8 * 128 * 2  # 104 KiB
