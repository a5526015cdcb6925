"""Model resolution, lazy tensor loading, load errors, params.json parsing, the 386-tensor manifest."""

from __future__ import annotations

import json
import math
import shutil
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file

from voxinv.voxtral.checkpoint import (
    DEFAULT_REPO,
    Checkpoint,
    CheckpointError,
    check_state,
    resolve_model,
)
from voxinv.voxtral.codec import load_codec
from voxinv.voxtral.params import VoxtralParams
from voxinv.voxtral.tiny import REAL_PARAMS, manifest

WEIGHTS = "consolidated.safetensors"


def _copy_with(tiny_dir: Path, dst: Path, edit) -> Path:
    """Copy ``tiny_dir`` with its tensors passed through ``edit(dict) -> dict``."""
    shutil.copytree(tiny_dir, dst)
    tensors = edit(load_file(str(tiny_dir / WEIGHTS)))
    save_file(tensors, str(dst / WEIGHTS))
    return dst


# --------------------------------------------------------------------------------- resolution


def test_missing_dir_says_how_to_download(tmp_path):
    with pytest.raises(CheckpointError, match=f"does not exist.*hf download {DEFAULT_REPO}"):
        resolve_model(tmp_path / "nope")
    with pytest.raises(CheckpointError, match="make-tiny"):
        Checkpoint(tmp_path / "nope")


def test_incomplete_dirs(tmp_path, tiny_dir):
    (tmp_path / "empty").mkdir()
    with pytest.raises(CheckpointError, match="no params.json.*hf download"):
        resolve_model(tmp_path / "empty")
    (tmp_path / "file").write_text("x")
    with pytest.raises(CheckpointError, match="is a file"):
        resolve_model(tmp_path / "file")
    d = tmp_path / "noweights"
    d.mkdir()
    shutil.copy(tiny_dir / "params.json", d)
    with pytest.raises(CheckpointError, match=f"no {WEIGHTS}"):
        resolve_model(d)
    assert resolve_model(d, weights=False) == d
    ck = Checkpoint(d, weights=False)
    with pytest.raises(CheckpointError, match=f"no {WEIGHTS}"):
        ck.tensor_names()


def test_repo_id_fetch_failure_is_one_clear_error(monkeypatch):
    import huggingface_hub
    from huggingface_hub.errors import LocalEntryNotFoundError

    def offline(**kw):
        raise LocalEntryNotFoundError("offline and not in the cache\nmore detail")

    monkeypatch.setattr(huggingface_hub, "snapshot_download", offline)
    with pytest.raises(CheckpointError, match=r"cannot fetch someone/model .*offline and not in the cache\);"):
        resolve_model("someone/model")


def test_params_not_voxtral(tmp_path):
    with pytest.raises(ValueError, match="not a Voxtral TTS checkpoint"):
        VoxtralParams.from_dict({"dim": 3})
    (tmp_path / "params.json").write_text("{not json")
    with pytest.raises(ValueError, match="not valid JSON"):
        VoxtralParams.from_json(tmp_path / "params.json")


# ------------------------------------------------------------------------------------ loading


def test_lazy_load_prefix(tiny_dir):
    ck = Checkpoint(tiny_dir)
    assert sorted(ck.tensor_names()) == sorted(manifest(ck.params))
    codec = ck.load("audio_tokenizer.", dtype=torch.float32)
    assert len(codec) == 116 and all(t.dtype == torch.float32 for t in codec.values())
    assert "quantizer.semantic_codebook.embedding_sum" in codec
    skipped = ck.load("audio_tokenizer.", skip=("decoder_blocks.",))
    assert (
        not any(k.startswith("decoder_blocks.") for k in skipped)
        and "output_proj.conv.parametrizations.weight.original0" in skipped
    )
    with pytest.raises(CheckpointError, match="no tensors under 'nothing.'"):
        ck.load("nothing.")


def test_missing_tensor_lists_names(tiny_dir, tmp_path):
    gone = "audio_tokenizer.decoder_blocks.3.layers.1.attention.wk.weight"
    d = _copy_with(tiny_dir, tmp_path / "m", lambda t: {k: v for k, v in t.items() if k != gone})
    with pytest.raises(
        CheckpointError, match=r"1 missing \(e\.g\. decoder_blocks\.3\.layers\.1\.attention\.wk\.weight\)"
    ):
        load_codec(Checkpoint(d))


def test_wrong_shape_lists_names(tiny_dir, tmp_path):
    name = "audio_tokenizer.decoder_blocks.1.layers.0.feed_forward.w1.weight"
    d = _copy_with(tiny_dir, tmp_path / "m", lambda t: {**t, name: t[name][:-1].contiguous()})
    c = Checkpoint(tiny_dir).params.codec  # w1: [hidden, dim]; one row dropped
    h, dim = c.hidden_dim, c.dim
    with pytest.raises(
        CheckpointError,
        match=rf"wrong shape \(e\.g\. decoder_blocks\.1\.layers\.0\.feed_forward\.w1\.weight \({h - 1}, {dim}\)≠\({h}, {dim}\)\)",
    ):
        load_codec(Checkpoint(d))


def test_unknown_tensor_listed(tiny_dir, tmp_path):
    d = _copy_with(tiny_dir, tmp_path / "m", lambda t: {**t, "audio_tokenizer.extra.weight": torch.zeros(2)})
    with pytest.raises(CheckpointError, match=r"1 unknown \(e\.g\. extra\.weight\).*same release"):
        load_codec(Checkpoint(d))


def test_params_sizes_disagree_with_weights(tiny_dir, tmp_path):
    d = tmp_path / "m"
    shutil.copytree(tiny_dir, d)
    p = json.loads((d / "params.json").read_text())
    p["multimodal"]["audio_tokenizer_args"]["hidden_dim"] = 96
    (d / "params.json").write_text(json.dumps(p))
    with pytest.raises(CheckpointError, match="does not match params.json.*wrong shape"):
        load_codec(Checkpoint(d))


def test_check_state_optional_and_dtype():
    exp = {"a": torch.Size([2]), "enc.b": torch.Size([3])}
    check_state(exp, {"a": torch.zeros(2)}, where="x", optional=("enc.",))  # encoder absent: fine
    with pytest.raises(CheckpointError, match="missing"):
        check_state(exp, {"a": torch.zeros(2)}, where="x")
    with pytest.raises(CheckpointError, match="float dtype"):
        check_state({"a": torch.Size([2])}, {"a": torch.zeros(2, dtype=torch.long)}, where="x")


def test_encoder_absent_is_fine(tiny_dir):
    assert not any(
        n.startswith(("audio_tokenizer.encoder_blocks.", "audio_tokenizer.input_proj."))
        for n in Checkpoint(tiny_dir).tensor_names()
    )
    assert not load_codec(Checkpoint(tiny_dir)).has_encoder


# ----------------------------------------------------------------------------------- manifest


def test_real_manifest_386_tensors_4002M():
    p = VoxtralParams.from_dict(REAL_PARAMS)
    m = manifest(p)
    assert len(m) == 386
    n = {k: math.prod(s) for k, s in m.items()}
    assert round(sum(n.values()) / 1e6, 2) == 4002.35

    def total(pred) -> float:
        return round(sum(v for k, v in n.items() if pred(k)) / 1e6, 2)

    # spec §1 parameter split
    assert total(lambda k: k.startswith("layers.") or k == "norm.weight") == 3026.35
    assert total(lambda k: k == "mm_audio_embeddings.tok_embeddings.weight") == 402.65
    assert total(lambda k: "audio_codebook_embeddings" in k) == 27.92
    assert total(lambda k: k.startswith("acoustic_transformer.")) == 393.85
    assert total(lambda k: k.startswith("audio_tokenizer.")) == 151.58
    assert sum(k.startswith("audio_tokenizer.") for k in m) == 116
    assert sum(k.startswith("acoustic_transformer.") for k in m) == 33
    # spot checks against the published header (spec §4)
    assert m["layers.0.attention.wq.weight"] == (4096, 3072)
    assert m["acoustic_transformer.semantic_codebook_output.weight"] == (8320, 3072)
    assert m["audio_tokenizer.decoder_blocks.0.conv.parametrizations.weight.original1"] == (1024, 292, 3)
    assert m["audio_tokenizer.decoder_blocks.2.conv.parametrizations.weight.original1"] == (1024, 1024, 4)
    assert m["audio_tokenizer.output_proj.conv.parametrizations.weight.original0"] == (240, 1, 1)
    assert m["audio_tokenizer.decoder_blocks.7.layers.1.attention_scale"] == (1024,)
    assert len(manifest(p, with_encoder=True)) - len(m) == 114  # the unreleased encoder


def test_real_params_derived_values():
    p = VoxtralParams.from_dict(REAL_PARAMS)
    c = p.codec
    assert c.samples_per_frame == 1920 and c.frame_rate == 12.5 and c.latent_dim == 292 and c.num_codebooks == 37
    assert p.audio.acoustic_transformer_args.n_decoding_steps == 7  # absent from the file: upstream default
    assert p.voices[:2] == ["casual_female", "casual_male"] and len(p.voices) == 20
    assert p.raw is REAL_PARAMS
