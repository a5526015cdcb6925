"""Peak memory and the chosen window for a long recording (issue 19): ``target=file`` with the default
``target.max_seconds=12``.

    python experiments/bench_long_recording.py [--minutes 30] [--code-root DIR]

Writes (once, in blocks) a ``--minutes`` long 48 kHz stereo PCM-16 file: 10 s of speech-like sound
(harmonics of a wobbling f0 under a syllable envelope, with pauses) followed by white noise at −6 dB
(RMS relative to the speech) for the rest. Then, in a fresh process per measurement, loads it as a
target (:func:`voxinv.invert.target.load_file`) and prints peak RSS (ru_maxrss), process CPU seconds,
the selected window and how many of its seconds hold the speech. ``--code-root`` runs another checkout
of voxinv (e.g. ``git archive <commit> voxinv | tar -x -C DIR``) for a before/after comparison.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np

SR_FILE, SPEECH_S = 48000, 10.0


def speech_like(seconds: float, sr: int, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    t = np.arange(int(seconds * sr)) / sr
    f0 = 120 * (1 + 0.1 * np.sin(2 * np.pi * 3 * t))
    phase = 2 * np.pi * np.cumsum(f0) / sr
    x = sum(np.sin(k * phase) / k for k in range(1, 12))
    env = np.clip(np.sin(2 * np.pi * 4 * t), 0, None) * (np.sin(2 * np.pi * 0.4 * t) > -0.6)  # syllables, pauses
    return (0.3 * env * x / np.abs(x).max() + 0.002 * rng.standard_normal(t.size)).astype(np.float32)


def make_file(path: Path, minutes: float) -> None:
    import soundfile as sf

    speech = speech_like(SPEECH_S, SR_FILE)
    noise_rms = float(np.sqrt(np.mean(speech[speech != 0] ** 2))) * 10 ** (-6 / 20)
    rng = np.random.default_rng(1)
    total = int(minutes * 60 * SR_FILE)
    with sf.SoundFile(str(path), "w", SR_FILE, 2, subtype="PCM_16") as f:
        f.write(np.stack([speech, speech], 1))
        done = speech.size
        while done < total:  # 10 s blocks: the generator itself never holds the file
            n = min(10 * SR_FILE, total - done)
            x = (noise_rms * rng.standard_normal(n)).astype(np.float32)
            f.write(np.stack([x, x], 1))
            done += n


CHILD = r"""
import json, resource, sys, time
from voxinv.invert.target import load_file
t = time.process_time()
tg = load_file(sys.argv[1], 24000, 1920, trim=True, trim_db=-40.0, peak=0.08, max_seconds=12.0)
cpu = time.process_time() - t
a, b = tg.info.get("selected_seconds", [0.0, tg.wav.numel() / 24000])
print(json.dumps({"peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, "cpu_s": round(cpu, 2),
                  "selected_seconds": [a, b], "speech_seconds_in_window": round(max(0.0, min(b, 10.0) - a), 2),
                  "selected_by": tg.info.get("selected_by", "level (energy rule)")}))
"""


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--minutes", type=float, default=30.0)
    ap.add_argument("--file", default="/tmp/voxinv-long-recording.wav")
    ap.add_argument("--code-root", default=str(Path(__file__).resolve().parents[1]))
    args = ap.parse_args()
    path = Path(args.file)
    if not path.is_file():
        make_file(path, args.minutes)
    env = {**os.environ, "PYTHONPATH": args.code_root, "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "-c", CHILD, str(path)]
    r = subprocess.run(cmd, env=env, capture_output=True, text=True, check=True, cwd=path.parent)  # not this checkout
    print(json.dumps({"file": str(path), "minutes": args.minutes, "code_root": args.code_root, **json.loads(r.stdout)}))


if __name__ == "__main__":
    main()
