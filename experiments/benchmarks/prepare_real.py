"""Build the real-speech benchmark set from speech that Debian packages ship (recipe: real.yaml).

    python experiments/benchmarks/prepare_real.py            # install missing packages (root), write clips
    python experiments/benchmarks/prepare_real.py --no-install --out /tmp/real

Writes ``<out>/<id>.wav`` (24 kHz mono float32, silence-trimmed, 3-10 s) and ``<out>/manifest.json``
(one entry per clip; ``path`` is relative to the manifest's folder). Missing packages (the synthetic
voices' flite and espeak-ng included) are installed with apt-get when running as root, otherwise
listed. The documented benchmark numbers use every clip of the recipe: when one cannot be made the
script says which and how to get it, and exits 1 (``--allow-missing``: write the rest and exit 0).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
import soundfile as sf
import torch
import yaml

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))
from voxinv.audio import resample, trim_silence, write_wav  # noqa: E402

RECIPE = Path(__file__).with_name("real.yaml")


def installed(pkg: str) -> bool:
    r = subprocess.run(["dpkg-query", "-W", "-f=${Status}", pkg], capture_output=True, text=True)
    return r.returncode == 0 and "install ok installed" in r.stdout


def ensure_packages(pkgs: list[str], install: bool) -> list[str]:
    """Install what is missing when allowed and possible; return the packages still missing."""
    if shutil.which("dpkg-query") is None:
        print(f"not a Debian system: cannot check packages {pkgs}; clips whose files exist are still made")
        return []
    missing = [p for p in pkgs if not installed(p)]
    if missing and install and os.geteuid() == 0 and shutil.which("apt-get"):
        env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
        print(f"installing {' '.join(missing)}")
        subprocess.run(["apt-get", "update", "-qq"], check=False, env=env)
        subprocess.run(["apt-get", "install", "-y", "-qq", "--no-install-recommends", *missing], check=False, env=env)
        missing = [p for p in missing if not installed(p)]
    if missing:
        print(f"missing packages (clips from them are skipped): sudo apt-get install {' '.join(missing)}")
    return missing


def read_source(src: str | dict) -> tuple[np.ndarray, int]:
    """A WAV (any soundfile format) or ``{path, sr}`` raw s16le file → mono float32, sample rate."""
    if isinstance(src, dict):
        pcm = np.fromfile(src["path"], dtype="<i2")
        return pcm.astype(np.float32) / 32768.0, int(src["sr"])
    data, sr = sf.read(src, dtype="float32", always_2d=True)
    return data.mean(1), sr


def source_path(src: str | dict) -> str:
    return src["path"] if isinstance(src, dict) else src


def split_quiet(wav: torch.Tensor, sr: int, parts: int, frame_ms: float = 20.0) -> list[torch.Tensor]:
    """Cut ``wav`` into ``parts`` pieces at the quietest frame within ±20 % of each even cut point."""
    hop = int(sr * frame_ms / 1000)
    n = wav.numel() // hop
    rms = wav[: n * hop].view(n, hop).pow(2).mean(-1)
    cuts = [0]
    for k in range(1, parts):
        centre = k * n // parts
        lo, hi = max(cuts[-1] + 1, centre - n // (5 * parts)), min(n - 1, centre + n // (5 * parts))
        cuts.append(lo + int(rms[lo:hi].argmin()))
    bounds = [c * hop for c in cuts] + [wav.numel()]
    return [wav[a:b] for a, b in zip(bounds[:-1], bounds[1:])]


def build_clip(spec: dict, cfg: dict) -> list[tuple[str, torch.Tensor, dict]]:
    sr_out, trim_db = cfg["sample_rate"], cfg["trim_db"]
    pieces = []
    for src in spec["files"]:
        x, sr = read_source(src)
        w = resample(torch.from_numpy(np.ascontiguousarray(x)), sr, sr_out)
        pieces.append((trim_silence(w, sr_out, trim_db), sr))
    gap = torch.zeros(int(cfg["gap_seconds"] * sr_out))
    wav = torch.cat([t for p, _ in pieces for t in (p, gap)][:-1])
    parts = int(spec.get("split", 1))
    wavs = [trim_silence(p, sr_out, trim_db) for p in split_quiet(wav, sr_out, parts)] if parts > 1 else [wav]
    band = min(sr for _, sr in pieces) // 2
    out = []
    for i, w in enumerate(wavs):
        cid = spec["id"] if parts == 1 else f"{spec['id']}_{chr(ord('a') + i)}"
        meta = {"source_sr": min(sr for _, sr in pieces), "bandwidth_hz": band, "part": f"{i + 1}/{parts}"}
        out.append((cid, w, meta))
    return out


def synthesize(spec: dict, sr_out: int) -> tuple[torch.Tensor, int] | None:
    """Run flite / espeak-ng on the spec's text → (waveform at ``sr_out``, the program's sample rate)."""
    prog = shutil.which(spec["program"])
    if prog is None:
        return None
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "out.wav"
        if spec["program"] == "flite":
            cmd = [prog, "-voice", spec["voice"], "-t", spec["text"], "-o", str(path)]
        else:
            cmd = [prog, "-v", spec["voice"], "-w", str(path), spec["text"]]
        if subprocess.run(cmd, capture_output=True).returncode != 0 or not path.is_file():
            return None
        x, sr = read_source(str(path))
    return resample(torch.from_numpy(np.ascontiguousarray(x)), sr, sr_out), sr


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--recipe", type=Path, default=RECIPE)
    ap.add_argument(
        "--out", type=Path, default=None, help="output folder (default: the recipe's out_dir under the repo)"
    )
    ap.add_argument("--no-install", action="store_true", help="never run apt-get; only report missing packages")
    ap.add_argument("--no-synthetic", action="store_true", help="skip the flite/espeak-ng synthetic voices")
    ap.add_argument(
        "--allow-missing", action="store_true", help="exit 0 even when some clips could not be made (they are listed)"
    )
    args = ap.parse_args(argv)
    torch.set_num_threads(1)

    cfg = yaml.safe_load(args.recipe.read_text())
    out = args.out or REPO / cfg["out_dir"]
    out.mkdir(parents=True, exist_ok=True)
    sr_out, lo, hi = cfg["sample_rate"], cfg["min_seconds"], cfg["max_seconds"]
    programs = [] if args.no_synthetic else sorted({spec["program"] for spec in cfg.get("synthetic", [])})
    missing = ensure_packages([*cfg["packages"], *programs], install=not args.no_install)  # program = its package
    synthetic = [] if args.no_synthetic else cfg.get("synthetic", [])
    expected = sum(int(c.get("split", 1)) for c in cfg["clips"]) + len(synthetic)

    entries, skipped = [], []
    for spec in cfg["clips"]:
        absent = [source_path(s) for s in spec["files"] if not Path(source_path(s)).is_file()]
        if absent:
            skipped.append(f"{spec['id']}: {absent[0]} absent (package {spec['package']})")
            continue
        for cid, wav, meta in build_clip(spec, cfg):
            dur = wav.numel() / sr_out
            if not lo <= dur <= hi:
                skipped.append(f"{cid}: {dur:.2f} s outside [{lo}, {hi}] s")
                continue
            write_wav(out / f"{cid}.wav", wav, sr_out)
            entries.append(
                {
                    "id": cid,
                    "path": f"{cid}.wav",
                    "speaker": spec["speaker"],
                    "recording": spec["recording"],
                    "synthetic": False,
                    "source_package": spec["package"],
                    "source_files": [source_path(s) for s in spec["files"]],
                    "license": cfg["packages"][spec["package"]]["license"],
                    "duration_s": round(dur, 3),
                    "sample_rate": sr_out,
                    "peak": round(float(wav.abs().max()), 4),
                    "transcript": spec.get("transcript") if meta["part"] == "1/1" else None,
                    **meta,
                }
            )

    if not args.no_synthetic:
        for spec in cfg.get("synthetic", []):
            made = synthesize(spec, sr_out)
            if made is None:
                skipped.append(f"{spec['id']}: {spec['program']} not available")
                continue
            wav, src_sr = made
            wav = trim_silence(wav, sr_out, cfg["trim_db"])
            write_wav(out / f"{spec['id']}.wav", wav, sr_out)
            entries.append({
                "id": spec["id"], "path": f"{spec['id']}.wav", "speaker": spec["speaker"], "recording": spec["id"],
                "synthetic": True, "source_package": spec["program"], "source_files": [],
                "license": f"synthetic speech generated locally with {spec['program']} (voice {spec['voice']})",
                "duration_s": round(wav.numel() / sr_out, 3), "sample_rate": sr_out,
                "peak": round(float(wav.abs().max()), 4), "transcript": spec["text"],
                "source_sr": src_sr, "bandwidth_hz": src_sr // 2, "part": "1/1",
            })  # fmt: skip

    (out / "manifest.json").write_text(json.dumps({"sample_rate": sr_out, "clips": entries}, indent=1) + "\n")
    speakers: dict[str, list[str]] = {}
    for e in entries:
        speakers.setdefault(e["speaker"], []).append(f"{e['id']} {e['duration_s']:.2f}s")
    print(f"wrote {len(entries)} clips of {len(speakers)} speakers to {out} (manifest.json)")
    for spk, clips in speakers.items():
        print(f"  {spk}: {', '.join(clips)}")
    for s in skipped:
        print(f"  skipped {s}")
    if len(entries) < expected:
        hint = f"sudo apt-get install {' '.join(missing)}" if missing else "see the skipped clips above"
        print(
            f"error: made {len(entries)} of the recipe's {expected} clips (the documented benchmarks use all "
            f"{expected}): {hint}, then rerun `make data` (or pass --allow-missing)",
            file=sys.stderr,
        )
        return 0 if args.allow_missing and entries else 1
    return 0 if entries else 1


if __name__ == "__main__":
    raise SystemExit(main())
