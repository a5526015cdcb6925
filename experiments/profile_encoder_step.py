"""Where one ``voxinv.train_encoder`` step spends its CPU time (process seconds, 1 torch thread).

Builds the trainer's own objects (recordings, crop stream, encoder, :class:`EncoderModule`, loss
terms, optimizer) for ``model=proxy`` and times, over ``--steps`` steps after ``--warmup``:
the crop draw, encoder forward, quantizer, decoder forward, each loss term, backward (the whole
graph, then split: encoder alone and decoder alone, fed a leaf input), optimizer step, and the full
Lightning ``trainer.fit`` step (logging, callbacks) for the overhead around the arithmetic.

python experiments/profile_encoder_step.py --sources data/benchmarks/real/manifest.json \
    --out experiments/results/encoder/profile.json [overrides…]
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from pathlib import Path

import torch
from hydra import compose, initialize_config_dir

import voxinv.encoder.module as EM
from voxinv.encoder.data import RandomCrops, list_sources, load_recordings
from voxinv.encoder.network import initial_encoder
from voxinv.encoder.quantize import quantize_ste
from voxinv.encoder.train import train
from voxinv.paths import CONF_DIR
from voxinv.voxtral.checkpoint import Checkpoint
from voxinv.voxtral.codec import load_codec
from voxinv.voxtral.device import to_dtype
from voxinv.voxtral.models import model_path


def cpu() -> float:
    return time.process_time()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sources", nargs="+", required=True, help="data.sources (manifests, folders, files)")
    ap.add_argument("--steps", type=int, default=5)
    ap.add_argument("--warmup", type=int, default=1)
    ap.add_argument("--fit-steps", type=int, default=6, help="steps of the full trainer.fit timing (0: skip)")
    ap.add_argument("--label", default="")
    ap.add_argument(
        "--per-crop-losses", action="store_true", help="the trainer's loss terms crop by crop (the code before)"
    )
    ap.add_argument("--out", default=None)
    ap.add_argument("overrides", nargs="*", help="train_encoder overrides (default: model=proxy batch_size=8)")
    a = ap.parse_args()
    torch.set_num_threads(1)
    if a.per_crop_losses:  # the previous paired_terms: each waveform term called once per crop
        EM.paired_terms = lambda terms, y, x: {
            k: torch.cat([t(y[b : b + 1], x[b]) for b in range(y.shape[0])]) for k, t in terms.items()
        }
    ov = ["model=proxy", "device=cpu", "batch_size=8", f"data.sources=[{','.join(a.sources)}]", *a.overrides]
    with initialize_config_dir(config_dir=CONF_DIR, version_base="1.3"):
        cfg = compose("train_encoder", overrides=ov)
    d = cfg.data
    codec = load_codec(Checkpoint(model_path(cfg.model)), dtype=to_dtype(cfg.model.dtype), with_encoder=False)
    sr, spf = codec.sampling_rate, codec.samples_per_frame
    files = list_sources(d.sources, d.speakers, d.exclude_speakers)
    t = cpu()
    recs = load_recordings(files, sr, float(d.peak))
    load_s = cpu() - t
    length = int(d.crop_frames) * spf
    B = int(cfg.batch_size)
    n = (a.warmup + a.steps) * B
    crops = RandomCrops(recs, n, length, d.gain_db, float(d.min_rms_db), int(cfg.seed))
    terms = EM.build_loss_terms(cfg.loss, sr, "cpu")
    enc = initial_encoder(cfg, codec, recs)
    module = EM.EncoderModule(cfg, codec, terms, enc)
    opt = torch.optim.AdamW(enc.parameters(), lr=1e-4)
    rows: list[dict[str, float]] = []
    for s in range(a.warmup + a.steps):
        r: dict[str, float] = {}
        t = cpu()
        x = torch.stack([crops[s * B + i] for i in range(B)])
        r["data"] = cpu() - t
        t = cpu()
        latent = enc(x[:, None])
        r["encoder_fwd"] = cpu() - t
        t = cpu()
        q = cfg.quantizer
        lq, codes, aux = quantize_ste(
            latent, module.table, codec.args.acoustic_codebook_size, semantic=q.semantic, tau=float(q.tau),
            unit=module.unit,
        )  # fmt: skip
        r["quantizer"] = cpu() - t
        t = cpu()
        y = codec.decode_latent(lq)[:, 0].float()
        r["decoder_fwd"] = cpu() - t
        total = float(q.commit) * aux["commit"] + float(q.usage) * aux["usage"]
        for k, term in terms.items():
            t = cpu()
            v = EM.paired_terms({k: term}, y, x)[k].mean()
            r[f"loss_{k}"] = cpu() - t
            total = total + module.weights[k] * v
        t = cpu()
        opt.zero_grad(set_to_none=True)
        total.backward()
        r["backward_all"] = cpu() - t
        t = cpu()
        opt.step()
        r["optimizer"] = cpu() - t
        # the two networks' fwd+bwd alone: decoder from a leaf latent, encoder to a plain sum
        leaf = lq.detach().requires_grad_(True)
        t = cpu()
        codec.decode_latent(leaf)[:, 0].float().pow(2).mean().backward()
        r["decoder_fwd_bwd"] = cpu() - t
        t = cpu()
        enc(x[:, None]).pow(2).mean().backward()
        r["encoder_fwd_bwd"] = cpu() - t
        # each loss term fwd+bwd from a leaf reconstruction: one batched paired call vs crop by crop (before)
        yl = y.detach().requires_grad_(True)
        for k, term in terms.items():
            t = cpu()
            term(yl, x).sum().backward()
            r[f"loss_{k}_fwd_bwd"] = cpu() - t
            t = cpu()
            torch.cat([term(yl[b : b + 1], x[b]) for b in range(B)]).sum().backward()
            r[f"loss_{k}_fwd_bwd_per_crop"] = cpu() - t
        opt.zero_grad(set_to_none=True)
        if s >= a.warmup:
            rows.append(r)
    med = {k: round(statistics.median(rr[k] for rr in rows), 4) for k in rows[0]}
    arith = [
        "data",
        "encoder_fwd",
        "quantizer",
        "decoder_fwd",
        *[f"loss_{k}" for k in terms],
        "backward_all",
        "optimizer",
    ]
    med["step_sum"] = round(sum(med[k] for k in arith), 4)
    med["nets_fwd_bwd"] = round(med["decoder_fwd_bwd"] + med["encoder_fwd_bwd"], 4)
    out = {
        "label": a.label,
        "overrides": ov,
        "threads": torch.get_num_threads(),
        "batch_size": B,
        "crop_s": length / sr,
        "load_recordings_cpu_s": round(load_s, 2),
        "recordings": len(recs),
        "steps_timed": a.steps,
        "median_cpu_s": med,
    }
    if a.fit_steps:  # the real trainer, end to end: CPU seconds per step, fit overhead included
        with tempfile.TemporaryDirectory() as tmp:
            fov = [*ov, f"steps={a.fit_steps}", "val_every=0", f"checkpoint_every={a.fit_steps}",
                   "trainer.enable_progress_bar=false", f"hydra.run.dir={tmp}"]  # fmt: skip
            with initialize_config_dir(config_dir=CONF_DIR, version_base="1.3"):
                fcfg = compose("train_encoder", overrides=fov)
            t = cpu()
            train(fcfg, Path(tmp))
            total = cpu() - t
            m = json.loads((Path(tmp) / "metrics.json").read_text())
            out["fit"] = {"steps": a.fit_steps, "cpu_s_total": round(total, 2), "step_cpu_s": m.get("step_cpu_s")}
    print(json.dumps(out, indent=1))
    if a.out:
        p = Path(a.out)
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_text(json.dumps(out, indent=1) + "\n")


if __name__ == "__main__":
    main()
