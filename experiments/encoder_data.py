"""Training and evaluation audio for ``python -m voxinv.train_encoder`` (speaker-disjoint split).

Train (``<out>/train/manifest.json``): flite and espeak-ng voices reading the licence texts in
``/usr/share/common-licenses`` (synthesised here, offline, seconds of CPU), plus the real speakers of
the benchmark set that the evaluation does not use (codec2's 8 kHz talkers, pocketsphinx's cards /
raw-numbers speakers; listed in ``TRAIN_SPEAKERS``).
Eval (``<out>/eval/manifest.json``): the first ``--eval-seconds`` of each benchmark clip of the
held-out speakers (``EVAL_SPEAKERS``: LibriVox, linphone, ALSA, codec2 speech_orig_16k), never
trained on. The benchmark set comes from ``experiments/benchmarks/prepare_real.py``.

python experiments/encoder_data.py --benchmark data/benchmarks/real/manifest.json --out data/encoder
"""

from __future__ import annotations

import argparse
import json
import re
import subprocess
import sys
import tempfile
from pathlib import Path

import torch

from voxinv.audio import read_audio, trim_silence, write_wav

SR = 24000
FLITE_VOICES = ("kal", "kal16", "awb", "rms", "slt")
ESPEAK_VOICES = (
    "en-us",
    "en-gb",
    "en-gb-scotland",
    "en-029",
    "en-gb-x-rp",
    "en-us+f2",
    "en-us+f4",
    "en-gb+m3",
    "en-gb+f3",
    "en-us+m5",
)
TEXTS = ("GPL-3", "Apache-2.0", "LGPL-2.1", "MPL-2.0", "Artistic", "GFDL-1.3")
TRAIN_SPEAKERS = (
    "codec2_hts1",
    "codec2_hts2",
    "codec2_kristoff",
    "codec2_mmt1",
    "codec2_vk5qi",
    "ps_cards",
    "ps_raw",
)
EVAL_SPEAKERS = ("librivox_ss01", "linphone_hello", "alsa_voice", "codec2_speech16k")


def sentences(n: int, min_words: int = 8, max_words: int = 28) -> list[str]:
    """``n`` prose sentences from the licence texts (deterministic order, no duplicates)."""
    out: list[str] = []
    for name in TEXTS:
        p = Path("/usr/share/common-licenses") / name
        if not p.is_file():
            continue
        text = re.sub(r"\s+", " ", p.read_text(errors="ignore"))
        for s in re.split(r"(?<=[.;:])\s+", text):
            s = re.sub(r"[^A-Za-z0-9,.;:'() -]", " ", s).strip()
            if min_words <= len(s.split()) <= max_words and s not in out:
                out.append(s)
    if len(out) < n:
        raise SystemExit(f"voxinv: error: only {len(out)} sentences in /usr/share/common-licenses, wanted {n}")
    return out[:n]


def synth(cmd: list[str], wav: Path) -> torch.Tensor:
    subprocess.run(cmd, check=True, capture_output=True)
    return trim_silence(read_audio(wav, SR), SR)


def make_train(out: Path, bench: dict, bench_dir: Path, per_voice: int) -> None:
    out.mkdir(parents=True, exist_ok=True)
    clips = []
    texts = sentences(per_voice * (len(FLITE_VOICES) + len(ESPEAK_VOICES)))
    k = 0
    with tempfile.TemporaryDirectory() as tmp:
        tmpwav = Path(tmp) / "x.wav"
        for engine, voices in (("flite", FLITE_VOICES), ("espeak-ng", ESPEAK_VOICES)):
            for v in voices:
                for i in range(per_voice):
                    text = texts[k]
                    k += 1
                    if engine == "flite":
                        cmd = ["flite", "-voice", v, "-t", text, "-o", str(tmpwav)]
                    else:
                        cmd = ["espeak-ng", "-v", v, "-w", str(tmpwav), text]
                    wav = synth(cmd, tmpwav)
                    cid = f"{engine}_{v.replace('+', '_')}_{i:03d}"
                    write_wav(out / f"{cid}.wav", wav, SR)
                    clips.append(
                        {
                            "id": cid,
                            "path": f"{cid}.wav",
                            "speaker": f"synthetic/{engine}-{v}",
                            "synthetic": True,
                            "duration_s": round(wav.numel() / SR, 3),
                            "sample_rate": SR,
                            "text": text,
                        }
                    )
            print(f"{engine}: {len(voices)} voices × {per_voice} sentences", file=sys.stderr)
    for c in bench["clips"]:
        if c["speaker"] in TRAIN_SPEAKERS:
            src = (bench_dir / c["path"]).resolve()
            clips.append({**c, "path": str(src)})
    total = sum(c["duration_s"] for c in clips)
    (out / "manifest.json").write_text(
        json.dumps(
            {
                "sample_rate": SR,
                "split": "train",
                "speakers": sorted({c["speaker"] for c in clips}),
                "total_s": round(total, 1),
                "clips": clips,
            },
            indent=1,
        )
    )
    print(
        f"train: {len(clips)} clips, {total / 60:.1f} min, {len({c['speaker'] for c in clips})} speakers",
        file=sys.stderr,
    )


def make_eval(out: Path, bench: dict, bench_dir: Path, seconds: float) -> None:
    out.mkdir(parents=True, exist_ok=True)
    clips = []
    for c in bench["clips"]:
        if c["speaker"] not in EVAL_SPEAKERS:
            continue
        wav = read_audio(bench_dir / c["path"], SR)[: int(seconds * SR)]
        write_wav(out / f"{c['id']}.wav", wav, SR)
        clips.append(
            {**c, "path": f"{c['id']}.wav", "duration_s": round(wav.numel() / SR, 3), "crop": f"first {seconds} s"}
        )
    (out / "manifest.json").write_text(
        json.dumps({"sample_rate": SR, "split": "eval", "speakers": list(EVAL_SPEAKERS), "clips": clips}, indent=1)
    )
    print(f"eval: {len(clips)} clips of {seconds} s", file=sys.stderr)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--benchmark", default="data/benchmarks/real/manifest.json", help="prepare_real.py's manifest")
    ap.add_argument("--out", default="data/encoder")
    ap.add_argument("--per-voice", type=int, default=24, help="sentences per synthetic voice")
    ap.add_argument("--eval-seconds", type=float, default=1.6)
    a = ap.parse_args()
    bm = Path(a.benchmark)
    if not bm.is_file():
        raise SystemExit(f"voxinv: error: {bm} does not exist; run experiments/benchmarks/prepare_real.py first")
    bench = json.loads(bm.read_text())
    overlap = set(TRAIN_SPEAKERS) & set(EVAL_SPEAKERS)
    assert not overlap, overlap
    make_train(Path(a.out) / "train", bench, bm.parent, a.per_voice)
    make_eval(Path(a.out) / "eval", bench, bm.parent, a.eval_seconds)


if __name__ == "__main__":
    main()
