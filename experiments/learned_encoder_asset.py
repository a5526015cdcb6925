"""Commit a trained proxy encoder as ``assets/proxy/learned_encoder.safetensors`` + its held-out scores.

Copies the run's ``encoder.safetensors`` (as exported by ``voxinv.train_encoder``), then scores it alone
(encoder → codes → decoder, no refinement) against the proxy's own encoder on the first ``--seconds`` of
each held-out benchmark clip (speakers neither the proxy nor the learned encoder trained on), and writes
``learned_encoder.json`` (the figures ``tests/voxtral/test_proxy.py`` checks, plus the run's provenance).

python experiments/learned_encoder_asset.py --run outputs/train_encoder/i21
"""

from __future__ import annotations

import argparse
import json
import shutil
import time
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]
# every benchmark clip of the 4 speakers neither the proxy nor the learned encoder trained on
HELD_OUT = (
    "librivox_ss01_0870", "linphone_hello_a", "codec2_speech16k_a", "alsa_front", "librivox_ss01_0880_0930",
    "librivox_ss01_0890", "librivox_ss01_0920", "linphone_hello_b", "codec2_speech16k_b", "alsa_rear_side",
)  # fmt: skip


def heldout_wav(path: Path, seconds: float) -> torch.Tensor:
    """The first ``seconds`` of a benchmark clip at 24 kHz, peak 0.08 (the level target=file uses)."""
    from voxinv.audio import normalize_peak, read_audio

    return normalize_peak(read_audio(path, 24000)[: int(round(seconds * 24000))], 0.08)


def score_encoder(codec, wav: torch.Tensor) -> dict:
    """Encoder alone on ``wav``: MR log-mel (log10 units) and envelope correlation of its codes' decode."""
    from voxinv.voxtral.proxy import encoder_round_trip, envelope_correlation, mr_log_mel

    codes, y = encoder_round_trip(codec, wav)
    x = torch.nn.functional.pad(wav, (0, y.numel() - wav.numel()))
    return {
        "mrmel": round(mr_log_mel(x, y), 4),
        "env_corr": round(envelope_correlation(x, y), 4),
        "distinct_sem": len(set(codes[:, 0].tolist())),
    }


def main() -> None:
    from omegaconf import OmegaConf

    from voxinv.paths import CONF_DIR
    from voxinv.voxtral.checkpoint import Checkpoint
    from voxinv.voxtral.codec import load_codec
    from voxinv.voxtral.models import model_path

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--run", required=True, type=Path, help="a voxinv.train_encoder run directory")
    ap.add_argument("--clips", type=Path, default=REPO / "data" / "benchmarks" / "real")
    ap.add_argument("--seconds", type=float, default=2.0)
    ap.add_argument("--out", type=Path, default=REPO / "assets" / "proxy")
    a = ap.parse_args()
    torch.set_num_threads(1)
    dst = a.out / "learned_encoder.safetensors"
    shutil.copyfile(a.run / "encoder.safetensors", dst)
    metrics = json.loads((a.run / "metrics.json").read_text())
    cfg = OmegaConf.create({"model": OmegaConf.load(Path(CONF_DIR) / "model" / "proxy.yaml")})
    ckpt = Checkpoint(model_path(cfg.model))
    learned = load_codec(ckpt, dtype=torch.float32, encoder_path=dst)
    true = load_codec(ckpt, dtype=torch.float32)
    rows = {}
    for cid in HELD_OUT:
        wav = heldout_wav(a.clips / f"{cid}.wav", a.seconds)
        t = time.process_time()
        rows[cid] = {"learned": score_encoder(learned, wav), "true": score_encoder(true, wav)}
        rows[cid]["cpu_s"] = round(time.process_time() - t, 2)
    mean = {k: round(sum(r[k]["mrmel"] for r in rows.values()) / len(rows), 4) for k in ("learned", "true")}
    out = {
        "file": dst.name,
        "heldout": {"seconds": a.seconds, "peak": 0.08, "clips": rows, "mean_mrmel": mean},
        "train": {
            k: metrics.get(k)
            for k in ("steps", "batch_size", "crop_seconds", "params_M", "cpu_time_s", "train_cpu_s", "step_cpu_s")
        }
        | {"data": {k: v for k, v in metrics["data"].items() if k != "train_speakers"}, "val": metrics.get("val")},
    }
    run_cfg = OmegaConf.load(a.run / "config.yaml")
    if run_cfg.encoder.get("init"):  # a fine-tune: the weights it started from (their own provenance is in git)
        out["train"]["init"] = str(run_cfg.encoder.init)
        out["train"]["lr"] = float(run_cfg.optim.lr)
    (a.out / "learned_encoder.json").write_text(json.dumps(out, indent=1) + "\n")
    print(json.dumps(out["heldout"], indent=1))


if __name__ == "__main__":
    main()
