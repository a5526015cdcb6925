"""Training and evaluation audio for ``python -m voxinv.train_encoder`` (speaker-disjoint split).

Train (``<out>/train/manifest.json``): flite and espeak-ng voices reading the licence texts in
``/usr/share/common-licenses`` (synthesised here, offline, seconds of CPU), plus the real speakers of
the benchmark set that the evaluation does not use (codec2's 8 kHz talkers, pocketsphinx's cards /
raw-numbers speakers; listed in ``TRAIN_SPEAKERS``), plus (``--asterisk``) the real voices Debian
ships as WAV prompts (``ASTERISK_PACKAGES``, one speaker per voice folder, 8 kHz) and (``--espeak-extra``)
more espeak-ng voices × variants at random rate and pitch. Mild augmentation at build time: each
asterisk chunk is kept as is or speed-perturbed (sox ``speed`` 0.92–1.08, pitch and tempo together);
the trainer adds random crops and gain. (``--klettres``) adds the natural, full-band (44.1 kHz) voices of
``klettres-data``: letters and syllables read by one speaker per language folder, joined like the asterisk
prompts (the only human full-band speech Debian ships that the evaluation does not use).
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
ASTERISK_PACKAGES = (
    "asterisk-core-sounds-en-wav",
    "asterisk-core-sounds-fr-wav",
    "asterisk-core-sounds-es-wav",
    "asterisk-core-sounds-it-wav",
    "asterisk-core-sounds-ru-wav",
    "asterisk-prompt-it-menardi-wav",
)
# espeak-ng languages × variants (voices/!v): male, female and Klatt formant variants of several languages
ESPEAK_EXTRA_LANGS = ("en-us", "en-gb", "fr", "es", "it", "de", "ru", "pt", "nl", "pl")
ESPEAK_EXTRA_VARIANTS = (
    "m1",
    "m2",
    "m3",
    "m4",
    "m6",
    "m7",
    "f1",
    "f2",
    "f3",
    "f5",
    "klatt",
    "klatt4",
    "croak",
    "whisperf",
)


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


def make_train(
    out: Path,
    bench: dict,
    bench_dir: Path,
    per_voice: int,
    asterisk: bool = False,
    espeak_extra: int = 0,
    klettres: bool = False,
) -> None:
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
    if espeak_extra:
        add_espeak_extra(out, clips, texts, espeak_extra, seed=1)
    if asterisk:
        add_asterisk(out, clips, chunk_s=60.0, seed=2)
    if klettres:
        add_klettres(out, clips, chunk_s=30.0, seed=3)
    for c in bench["clips"]:
        if c["speaker"] in TRAIN_SPEAKERS:
            src = (bench_dir / c["path"]).resolve()
            clips.append({**c, "path": str(src)})
    leaked = sorted({c["speaker"] for c in clips} & set(EVAL_SPEAKERS))
    if leaked:  # the split check: no held-out speaker in training, whatever was added
        raise SystemExit(f"voxinv: error: held-out speakers {leaked} in the training set")
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


def asterisk_files(package: str) -> dict[str, list[Path]]:
    """The package's WAV prompts grouped by voice folder (``/usr/share/asterisk/sounds/<voice>/…``)."""
    try:
        listed = subprocess.run(["dpkg", "-L", package], check=True, capture_output=True, text=True).stdout
    except (subprocess.CalledProcessError, FileNotFoundError):
        print(f"{package}: not installed, skipped (apt-get install {package})", file=sys.stderr)
        return {}
    out: dict[str, list[Path]] = {}
    for line in sorted(listed.splitlines()):
        p = Path(line)
        if p.suffix == ".wav" and "sounds" in p.parts and p.is_file():
            voice = p.parts[p.parts.index("sounds") + 1]
            out.setdefault(voice, []).append(p)
    return out


def _write_chunk(f: Path, parts: list[torch.Tensor], sr: int, speed: float) -> float:
    """Write the joined prompts (16-bit, source rate), speed-perturbed by sox unless ``speed`` is 1; seconds."""
    import soundfile as sf

    w = torch.cat(parts)
    w = w * min(1.0, 0.9 / float(w.abs().max().clamp_min(1e-9)))  # headroom for sox's resampling filter
    sf.write(str(f), w.numpy(), sr, subtype="PCM_16")
    if speed != 1.0:
        tmp = f.with_suffix(".sp.wav")
        subprocess.run(["sox", str(f), str(tmp), "speed", f"{speed:.3f}", "rate", str(sr)], check=True)
        tmp.replace(f)
    return sf.info(str(f)).duration


def add_joined(
    out: Path, clips: list[dict], waves, sr: int, chunk_s: float, min_s: float, g: torch.Generator, **meta: str
) -> int:
    """One speaker's recordings (``waves``: mono tensors at ``sr``) trimmed, joined with 0.2 s gaps into
    ``chunk_s`` chunks and written at ``sr`` as ``<meta["id"]>_<k>.wav``; half of the chunks speed-perturbed
    (sox, 0.92–1.08). ``meta``: ``id``, ``speaker``, ``package``. Returns the number of chunks."""
    chunks: list[list[torch.Tensor]] = [[]]
    for w in waves:
        w = trim_silence(w, sr)
        if w.numel() < int(min_s * sr):
            continue
        if sum(p.numel() for p in chunks[-1]) >= chunk_s * sr:
            chunks.append([])
        chunks[-1] += [w, torch.zeros(int(0.2 * sr))]
    for k, parts in enumerate(c for c in chunks if c):
        r = torch.rand(2, generator=g)
        speed = 1.0 if float(r[0]) < 0.5 else round(0.92 + 0.16 * float(r[1]), 3)
        cid = f"{meta['id']}_{k:03d}"
        dur = _write_chunk(out / f"{cid}.wav", parts, sr, speed)
        clips.append(
            {"id": cid, "path": f"{cid}.wav", "speaker": meta["speaker"], "package": meta["package"],
             "speed": speed, "duration_s": round(dur, 3), "sample_rate": sr}
        )  # fmt: skip
    return len(chunks)


def add_asterisk(out: Path, clips: list[dict], chunk_s: float, seed: int) -> None:
    """One speaker per voice folder, its prompts joined (:func:`add_joined`) at the source rate (8 kHz)."""
    import soundfile as sf

    def prompts(files: list[Path], sr: int):
        for f in files:
            x, fsr = sf.read(str(f), dtype="float32", always_2d=True)
            if fsr == sr and x.shape[0] >= int(0.3 * sr):  # one rate per voice; a stray or empty file is skipped
                yield torch.from_numpy(x.mean(1))

    g = torch.Generator().manual_seed(seed)
    for pkg in ASTERISK_PACKAGES:
        for voice, files in asterisk_files(pkg).items():
            sr = sf.info(str(files[0])).samplerate
            meta = {"id": f"asterisk_{voice}", "speaker": f"asterisk/{voice}", "package": pkg}
            n = add_joined(out, clips, prompts(files, sr), sr, chunk_s, 0.3, g, **meta)
            print(f"asterisk {voice}: {n} chunks of ≤ {chunk_s:.0f} s", file=sys.stderr)


KLETTRES = Path("/usr/share/klettres")


def add_klettres(out: Path, clips: list[dict], chunk_s: float, seed: int) -> None:
    """``klettres-data``'s recordings (Ogg, 44.1 kHz; one speaker label per language folder), resampled to
    24 kHz and joined (:func:`add_joined`)."""
    if not KLETTRES.is_dir():
        print("klettres-data: not installed, skipped (apt-get install klettres-data)", file=sys.stderr)
        return
    g = torch.Generator().manual_seed(seed)
    for lang in sorted(d for d in KLETTRES.iterdir() if d.is_dir()):
        files = sorted(lang.rglob("*.ogg"))
        if files:  # icons/, pics/ and an empty language have none
            meta = {"id": f"klettres_{lang.name}", "speaker": f"klettres/{lang.name}", "package": "klettres-data"}
            n = add_joined(out, clips, (read_audio(f, SR) for f in files), SR, chunk_s, 0.15, g, **meta)
            print(f"klettres {lang.name}: {n} chunks of ≤ {chunk_s:.0f} s", file=sys.stderr)


def add_espeak_extra(out: Path, clips: list[dict], texts: list[str], per_voice: int, seed: int) -> None:
    """espeak-ng ``lang+variant`` voices (one speaker each), each sentence at a random rate and pitch."""
    g = torch.Generator().manual_seed(seed)
    k = 0
    with tempfile.TemporaryDirectory() as tmp:
        tmpwav = Path(tmp) / "x.wav"
        for lang in ESPEAK_EXTRA_LANGS:
            for var in ESPEAK_EXTRA_VARIANTS:
                v = f"{lang}+{var}"
                for i in range(per_voice):
                    text = texts[k % len(texts)]
                    k += 1
                    rate = 130 + int(60 * float(torch.rand((), generator=g)))
                    pitch = 30 + int(40 * float(torch.rand((), generator=g)))
                    cmd = ["espeak-ng", "-v", v, "-s", str(rate), "-p", str(pitch), "-w", str(tmpwav), text]
                    wav = synth(cmd, tmpwav)
                    cid = f"espeakx_{lang}_{var}_{i:03d}"
                    write_wav(out / f"{cid}.wav", wav, SR)
                    clips.append(
                        {"id": cid, "path": f"{cid}.wav", "speaker": f"synthetic/espeak-ng-{v}", "synthetic": True,
                         "duration_s": round(wav.numel() / SR, 3), "sample_rate": SR, "text": text}
                    )  # fmt: skip
        print(
            f"espeak-ng extra: {len(ESPEAK_EXTRA_LANGS) * len(ESPEAK_EXTRA_VARIANTS)} voices × {per_voice}",
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
    ap.add_argument("--asterisk", action="store_true", help="add the asterisk WAV voices (ASTERISK_PACKAGES)")
    ap.add_argument("--espeak-extra", type=int, default=0, help="sentences per extra espeak-ng voice (0: none)")
    ap.add_argument("--klettres", action="store_true", help="add klettres-data's natural full-band voices")
    a = ap.parse_args()
    bm = Path(a.benchmark)
    if not bm.is_file():
        raise SystemExit(f"voxinv: error: {bm} does not exist; run experiments/benchmarks/prepare_real.py first")
    bench = json.loads(bm.read_text())
    overlap = set(TRAIN_SPEAKERS) & set(EVAL_SPEAKERS)
    assert not overlap, overlap
    make_train(Path(a.out) / "train", bench, bm.parent, a.per_voice, a.asterisk, a.espeak_extra, a.klettres)
    make_eval(Path(a.out) / "eval", bench, bm.parent, a.eval_seconds)


if __name__ == "__main__":
    main()
