"""``voxinv.encoder.data``: recordings from audio lists, folders and files; speaker filters and the
train/validation split; the crop streams (seeded, resumable, level-checked)."""

from __future__ import annotations

import json

import pytest
import torch
from encoder_common import encoder_cfg, voice

from voxinv.encoder.data import RandomCrops, Recording, check_sources, fixed_crops, list_sources, load_recordings


def test_folders_files_and_lists(audio, tmp_path):
    """A folder labels its files by the folder; a list by its ``speaker`` column, else by the list's folder;
    ``{"clips": …}`` JSON (prepare_real.py / encoder_data.py) and CSV are the same list."""
    lists = tmp_path / "lists"
    lists.mkdir()
    clips = [{"id": "a0", "path": str(audio / "train_a" / "0.wav"), "speaker": "train_a", "duration_s": 1.5}]
    clips.append({"path": "../x.wav"})  # relative to the list's folder, no speaker, no id
    voice(tmp_path / "x.wav", 130.0, 0.5, seed=3)
    (lists / "manifest.json").write_text(json.dumps({"sample_rate": 24000, "clips": clips}))
    (lists / "m.csv").write_text(f"path,speaker,name\n{audio / 'train_a' / '0.wav'},train_a,a0\n../x.wav,,\n")
    folder = list_sources([audio / "train_b"])
    assert folder == [(audio / "train_b" / f"{i}.wav", "train_b", str(i)) for i in range(2)]
    expected = [(audio / "train_a" / "0.wav", "train_a", "a0"), (lists / ".." / "x.wav", "lists", "x")]
    assert list_sources([lists / "manifest.json"]) == expected
    assert list_sources([lists / "m.csv"]) == expected
    assert list_sources([tmp_path / "x.wav"]) == [(tmp_path / "x.wav", tmp_path.name, "x")]
    recs = load_recordings(expected, 24000, 0.08)
    assert [r.speaker for r in recs] == ["train_a", "lists"] and abs(float(recs[1].wav.abs().max()) - 0.08) < 1e-6


def test_speaker_filters_and_split(audio):
    both = [audio / "train_a", audio / "train_b"]
    assert {s for _, s, _ in list_sources(both, speakers=["train_b"])} == {"train_b"}
    assert {s for _, s, _ in list_sources(both, exclude=["train_b"])} == {"train_a"}
    train, val = check_sources(encoder_cfg(audio))
    assert {s for _, s, _ in train} == {"train_a", "train_b"} and {s for _, s, _ in val} == {"heldout"}
    assert check_sources(encoder_cfg(audio, "val.sources=[]"))[1] == []


@pytest.mark.parametrize(
    ("overrides", "error", "says"),
    [
        (["data.sources=[]"], ValueError, "data.sources is empty"),
        (["data.sources=[{tmp}/nope]"], FileNotFoundError, "does not exist"),
        (["val.sources=[{audio}/train_a]"], ValueError, "also in the training data"),
        (["data.exclude_speakers=[train_a,train_b]"], ValueError, "no recordings left"),
        (["data.sources=[{tmp}/nolist.json]"], ValueError, "is not a clip list"),
        (["data.sources=[{tmp}/nopath.json]"], ValueError, "row 1 has no path"),
        (["data.sources=[{tmp}/nocol.csv]"], ValueError, "no `path` column"),
    ],
)
def test_bad_sources_are_one_clear_error(audio, tmp_path, overrides, error, says):
    (tmp_path / "nolist.json").write_text(json.dumps({"sample_rate": 24000}))
    (tmp_path / "nopath.json").write_text(json.dumps({"clips": [{"speaker": "s"}, {"path": "a.wav"}]}))
    (tmp_path / "nocol.csv").write_text("file\na.wav\n")
    cfg = encoder_cfg(audio, *(o.format(tmp=tmp_path, audio=audio) for o in overrides))
    with pytest.raises(error, match=says):
        check_sources(cfg)


def test_random_crops_are_indexed_draws():
    """Item i depends only on (seed, offset + i): a resumed stream (offset) continues the same draws;
    crops are ``length`` long (short recordings zero-padded), quiet ones are redrawn, gain within range."""
    g = torch.Generator().manual_seed(0)
    loud, short = 0.1 * torch.randn(5000, generator=g), 0.1 * torch.randn(300, generator=g)
    recs = [Recording(loud, "a", "loud"), Recording(short, "b", "short"), Recording(torch.zeros(4000), "c", "silent")]
    full = RandomCrops(recs, 8, 1000, (-6.0, 6.0), -45.0, seed=3)
    tail = RandomCrops(recs, 4, 1000, (-6.0, 6.0), -45.0, seed=3, offset=4)
    assert len(full) == 8 and all(torch.equal(full[4 + i], tail[i]) for i in range(4))
    assert not torch.equal(full[0], RandomCrops(recs, 8, 1000, (-6.0, 6.0), -45.0, seed=4)[0])
    for i in range(8):
        x = full[i]
        assert x.shape == (1000,) and x.pow(2).mean().sqrt() > 10 ** (-45 / 20)  # never the silent recording
    flat = RandomCrops(recs[:1], 1, 5000, (0.0, 0.0), -45.0, seed=0)[0]
    assert torch.equal(flat, loud)  # the whole recording, unit gain


def test_fixed_crops_pad():
    recs = [
        Recording(torch.ones(5), "a", "x"),
        Recording(2 * torch.ones(2), "b", "y"),
        Recording(torch.ones(9), "c", "z"),
    ]
    c = fixed_crops(recs, 2, 4)
    assert torch.equal(c, torch.tensor([[1.0, 1, 1, 1], [2, 2, 0, 0]]))
