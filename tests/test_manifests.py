"""``voxinv.manifests``: one audio-list format (CSV / TSV / JSONL / ``{"clips": …}`` JSON) read the same by
``target=manifest`` and by the encoder trainer's sources; the lists the repository's scripts write stay readable."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from voxinv.encoder.data import list_sources
from voxinv.invert.manifest import ManifestError, read_manifest
from voxinv.manifests import AudioListError, Clip, read_audio_list

REPO = Path(__file__).resolve().parents[1]
ROWS = [
    {"path": "a.wav", "speaker": "s1", "text": "hello", "name": "first"},
    {"path": "/abs/b.wav", "speaker": "", "text": "", "name": ""},
]


def _write(p: Path, kind: str) -> Path:
    if kind in ("csv", "tsv"):
        sep = "," if kind == "csv" else "\t"
        lines = [sep.join(["PATH", "Speaker", "text", "name"])] + [sep.join(r.values()) for r in ROWS]
        p.write_text("\n".join(lines) + "\n")
    elif kind == "jsonl":
        p.write_text("".join(json.dumps(r) + "\n" for r in ROWS))
    elif kind == "json":  # prepare_real.py / encoder_data.py: id and transcript, extra keys
        clips = [{"id": "first", "path": "a.wav", "speaker": "s1", "transcript": "hello", "duration_s": 1.0}]
        p.write_text(json.dumps({"sample_rate": 24000, "clips": clips + [{"path": "/abs/b.wav", "speaker": None}]}))
    else:  # a bare JSON list
        p.write_text(json.dumps(ROWS))
    return p


@pytest.mark.parametrize("kind", ["csv", "tsv", "jsonl", "json", "list"])
def test_every_flavour_is_the_same_list(tmp_path, kind):
    p = _write(tmp_path / f"m.{'json' if kind == 'list' else kind}", kind)
    assert read_audio_list(p) == [
        Clip(1, str(tmp_path / "a.wav"), "s1", "hello", "first"),
        Clip(2, "/abs/b.wav", None, None, None),
    ]
    # both users read it: inversion rows (run directory names) and the encoder's (file, speaker, name)
    rows = read_manifest(p)
    assert [(r.row, r.path, r.name, r.speaker, r.text) for r in rows] == [
        (1, str(tmp_path / "a.wav"), "first", "s1", "hello"),
        (2, "/abs/b.wav", "b", None, None),
    ]
    assert list_sources([p]) == [(tmp_path / "a.wav", "s1", "first"), (Path("/abs/b.wav"), tmp_path.name, "b")]


def test_name_and_text_win_over_their_aliases(tmp_path):
    p = tmp_path / "m.jsonl"
    p.write_text(json.dumps({"path": "x.wav", "id": "i", "name": "n", "transcript": "t", "text": "u"}) + "\n")
    assert read_audio_list(p) == [Clip(1, str(tmp_path / "x.wav"), None, "u", "n")]


@pytest.mark.parametrize(
    ("name", "content", "says"),
    [
        ("m.csv", None, "does not exist"),
        ("m.csv", "file,speaker\na.wav,x\n", "no `path` column"),
        ("m.csv", "path\n", "has no rows"),
        ("m.json", '{"clips": []}', "has no rows"),
        ("m.json", '{"sample_rate": 24000}', "is not a clip list"),
        ("m.json", "{not json", "cannot be parsed"),
        ("m.txt", "a.wav\n", "unknown format .txt"),
    ],
)
def test_bad_list_is_one_line_naming_the_file(tmp_path, name, content, says):
    p = tmp_path / name
    if content is not None:
        p.write_text(content)
    with pytest.raises(AudioListError, match=says) as e:
        read_audio_list(p)
    assert str(p) in str(e.value) and "\n" not in str(e.value)
    with pytest.raises(ManifestError, match=says):  # target=manifest: the same line, its own error type
        read_manifest(p)


@pytest.mark.parametrize("rel", ["data/benchmarks/real/manifest.json", "data/encoder/train/manifest.json"])
def test_the_repositorys_lists_stay_readable(rel):
    """The lists `make data` (prepare_real.py) and experiments/encoder_data.py wrote before this format."""
    p = REPO / rel
    if not p.is_file():
        pytest.skip(f"{rel} is not made in this checkout (make data / experiments/encoder_data.py)")
    clips = read_audio_list(p)
    raw = json.loads(p.read_text())["clips"]
    assert len(clips) == len(raw) and all(c.path and Path(c.path).is_file() for c in clips)
    assert [c.name for c in clips] == [r.get("id") or Path(r["path"]).stem for r in raw]
    assert [c.speaker for c in clips] == [r.get("speaker") for r in raw]
