"""Code layout (spec §5): raw ↔ model, END frames, validation errors, file I/O, code embeddings."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from voxinv.voxtral.codes import (
    END_AUDIO,
    AudioCodebookEmbeddings,
    CodesError,
    batch_to_frames,
    codes_metadata,
    end_frame,
    frames_to_batch,
    load_codes,
    save_codes,
    strip_end,
    to_model,
    to_raw,
    validate_raw,
)
from voxinv.voxtral.params import VoxtralParams
from voxinv.voxtral.tiny import REAL_PARAMS, random_codes


@pytest.fixture(scope="module")
def params() -> VoxtralParams:
    return VoxtralParams.from_dict(REAL_PARAMS)


@pytest.fixture
def raw(params) -> torch.Tensor:
    return random_codes(11, torch.Generator().manual_seed(0), params)  # [11, 37]


def test_raw_model_round_trip(raw):
    m = to_model(raw)
    assert int(m[:, 0].min()) >= 2 and torch.equal(to_raw(m), raw)
    with pytest.raises(CodesError, match="strip_end"):
        to_raw(torch.cat([m, end_frame()[None]]))


def test_end_frame_and_strip(raw):
    e = end_frame()
    assert e.tolist() == [END_AUDIO] + [0] * 36
    m = to_model(raw)
    seq = torch.cat([m, e[None], m[:3]])  # anything after the first END is dropped
    assert torch.equal(strip_end(seq), m)
    assert torch.equal(strip_end(m), m)
    flow_end = torch.tensor([[1] + [2] * 36])  # the END frame the flow model emits (spec §5)
    assert torch.equal(strip_end(torch.cat([m, flow_end])), m)


def test_frames_batch_layout(raw):
    b = frames_to_batch(raw)
    assert b.shape == (1, 37, 11) and torch.equal(b[0, :, 3], raw[3])
    assert torch.equal(batch_to_frames(b), raw) and torch.equal(batch_to_frames(b[0]), raw)
    with pytest.raises(CodesError, match="batch of 2"):
        batch_to_frames(torch.cat([b, b]))


@pytest.mark.parametrize(
    ("bad", "match"),
    [
        (torch.zeros(5, 36, dtype=torch.long), r"shape \[T, 37\]"),
        (torch.zeros(37, 5, dtype=torch.long), "transpose"),
        (torch.zeros(2, 5, 37, dtype=torch.long), r"shape \[T, 37\]"),
        (torch.zeros(0, 37, dtype=torch.long), "zero frames"),
        (torch.full((3, 37), 0.5), "non-integral"),
    ],
)
def test_validate_shape_errors(bad, match):
    with pytest.raises(CodesError, match=match):
        validate_raw(bad)


def test_validate_range_errors_hint_model_format(raw):
    sem = raw.clone()
    sem[0, 0] = 8192
    with pytest.raises(CodesError, match=r"semantic codes must be in \[0, 8191\].*--format model"):
        validate_raw(sem)
    ac = raw.clone()
    ac[2, 5] = 21
    with pytest.raises(CodesError, match=r"acoustic codes must be in \[0, 20\].*--format model"):
        validate_raw(ac)
    neg = raw.clone()
    neg[1, 1] = -1
    with pytest.raises(CodesError, match="acoustic"):
        validate_raw(neg)


def test_validate_accepts_integral_floats_and_small_ints(raw):
    assert torch.equal(validate_raw(raw.float()), raw)
    out = validate_raw(raw.to(torch.int16))
    assert out.dtype == torch.int64 and torch.equal(out, raw)


# ------------------------------------------------------------------------------------- file I/O


def test_save_load_safetensors(tmp_path, raw):
    p = save_codes(tmp_path / "sub" / "c.safetensors", raw, source="test")
    assert p.is_file() and not list(tmp_path.rglob("*.tmp"))
    assert torch.equal(load_codes(p), raw)
    md = codes_metadata(p)
    assert md["format"] == "raw" and md["layout"] == "[T,37]" and md["frame_rate"] == "12.5" and md["source"] == "test"


def test_save_rejects_invalid(tmp_path, raw):
    with pytest.raises(CodesError):
        save_codes(tmp_path / "c.safetensors", raw.T)
    assert not (tmp_path / "c.safetensors").exists()


def test_load_npy_raw_and_model(tmp_path, raw):
    np.save(tmp_path / "raw.npy", raw.numpy().astype(np.int32))
    assert torch.equal(load_codes(tmp_path / "raw.npy"), raw)
    model = torch.cat([to_model(raw), end_frame()[None]])  # what vLLM-Omni streams: +2, END last
    np.save(tmp_path / "model.npy", model.numpy())
    assert torch.equal(load_codes(tmp_path / "model.npy", fmt="model"), raw)
    with pytest.raises(CodesError, match="--format model"):
        load_codes(tmp_path / "model.npy")  # read as raw, the +2 pushes acoustic codes past 20


def test_load_safetensors_model_metadata(tmp_path, raw):
    from safetensors.torch import save_file

    model = torch.cat([to_model(raw), end_frame()[None]])
    save_file({"codes": model}, str(tmp_path / "m.safetensors"), metadata={"format": "model"})
    assert torch.equal(load_codes(tmp_path / "m.safetensors"), raw)
    save_file({"x": raw}, str(tmp_path / "other.safetensors"))  # any single tensor name
    assert torch.equal(load_codes(tmp_path / "other.safetensors"), raw)
    assert torch.equal(load_codes(tmp_path / "other.safetensors", fmt="raw"), raw)


def test_load_pt(tmp_path, raw):
    torch.save(raw, tmp_path / "c.pt")
    assert torch.equal(load_codes(tmp_path / "c.pt"), raw)
    torch.save({"a": raw}, tmp_path / "d.pt")
    with pytest.raises(CodesError, match="does not hold a tensor"):
        load_codes(tmp_path / "d.pt")


def test_load_errors(tmp_path, raw):
    with pytest.raises(CodesError, match="does not exist"):
        load_codes(tmp_path / "missing.npy")
    (tmp_path / "c.txt").write_text("1 2 3")
    with pytest.raises(CodesError, match="unsupported codes file"):
        load_codes(tmp_path / "c.txt")
    (tmp_path / "bad.safetensors").write_bytes(b"not a safetensors file")
    with pytest.raises(CodesError, match="cannot read codes"):
        load_codes(tmp_path / "bad.safetensors")
    np.save(tmp_path / "ok.npy", raw.numpy())
    with pytest.raises(CodesError, match="unknown codes format"):
        load_codes(tmp_path / "ok.npy", fmt="wav")


# ---------------------------------------------------------------------------- code embeddings


def test_codebook_offsets_and_table_size(params):
    a = params.audio
    assert a.codebook_sizes == [8194] + [23] * 36
    assert (
        a.codebook_offsets[:3] == [0, 8194, 8217] and a.codebook_offsets[-1] == 8999
    )  # 8194 + 23·35 (spec §5 writes "…, 9000")
    assert sum(a.codebook_sizes) == 9022 and a.audio_table_rows == 9088 and a.semantic_head_rows == 8320


def test_audio_codebook_embeddings_sum(params, raw):
    emb = AudioCodebookEmbeddings(params.audio, dim=8)
    m = to_model(raw)
    out = emb(m)  # [11, 8]
    W = emb.embeddings.weight
    want = sum(W[int(m[3, k]) + params.audio.codebook_offsets[k]] for k in range(37))
    torch.testing.assert_close(out[3], want)
    assert emb.slice(0).shape == (8194, 8) and emb.slice(36).shape == (23, 8)
    assert torch.equal(emb.slice(1)[0], W[8194])
