"""End-to-end evaluation of a cloned voice: Voxtral speaks held-out sentences with it, and we score them.

    python -m voxinv.eval.e2e RUN_DIR --model MODEL [--presets casual_female,neutral_male] [--n 3]

For the run's ``voice.pt`` (and, for comparison, preset voices of the model) each sentence is
synthesised (seed + i for sentence i) and scored against the run's ``target.wav``: speaker
similarity with a grader that is not the loss model (flagged when it is), WER of the sentence text
(pocketsphinx offline, Whisper when cached), DNSMOS. The reference row is the voice's own
``reconstruction.wav`` against the target. Results go to ``metrics.json["e2e"]`` and the audio to
``RUN_DIR/e2e/``. With a tiny random model the numbers only show the pipeline runs.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

from voxinv import rundir
from voxinv.audio import read_audio, write_wav
from voxinv.eval.evaluate import loss_models_of_run
from voxinv.eval.formats import columns
from voxinv.eval.metrics import Unavailable, asr_metrics, dnsmos, speaker_metrics
from voxinv.voxtral.device import pick_device

# Harvard sentences (IEEE 1969, public domain): held out from any target we ship
SENTENCES = [
    "The birch canoe slid on the smooth planks.",
    "Glue the sheet to the dark blue background.",
    "It's easy to tell the depth of a well.",
    "These days a chicken leg is a rare dish.",
    "Rice is often served in round bowls.",
]


def _mean(rows: list[dict], key: str) -> float | None:
    vals = [r[key] for r in rows if isinstance(r.get(key), (int, float))]
    return float(np.mean(vals)) if vals else None


def score_voice(
    tts,
    voice,
    target: np.ndarray,
    sentences: list[str],
    seed: int,
    loss_models: set[str],
    out_dir: Path,
    tag: str,
    max_seconds: float = 10.0,
) -> dict:
    """Synthesize ``sentences`` with ``voice`` and score each against ``target``; mean per metric."""
    from voxinv.voxtral.tts import synthesize_eval

    sr = tts.sampling_rate
    rows = []
    max_frames = int(max_seconds * 12.5)  # a model that never says END stops here
    for i, wav in enumerate(synthesize_eval(tts, voice, sentences, seed=seed, max_frames=max_frames)):
        write_wav(out_dir / f"{tag}_{i}.wav", wav, sr)
        y = wav.numpy()
        row = {"seconds": len(y) / sr}
        if len(y) == 0:
            row["error"] = "empty generation (END at the first frame)"
            rows.append(row)
            continue
        row.update(speaker_metrics(target, y, sr, loss_models=loss_models))
        row.update(asr_metrics(y, y, sr, ref_text=sentences[i]))
        try:
            row.update({f"dnsmos_{k}": v for k, v in dnsmos(y, sr).items()})
        except Unavailable as e:
            row["dnsmos_skipped"] = str(e)
        rows.append(row)
    keys = [*columns("e2e"), "seconds"]
    summary = {k: _mean(rows, k) for k in keys}
    summary["spk_sim_model"] = next((r["spk_sim_model"] for r in rows if "spk_sim_model" in r), None)
    summary["spk_sim_self_graded"] = any(r.get("spk_sim_self_graded") for r in rows)
    summary["wer_model"] = next((r["wer_model"] for r in rows if "wer_model" in r), None)
    return {"summary": summary, "sentences": rows}


def evaluate_e2e(
    run: Path, model: str, *, presets: list[str], n: int, seed: int, device: str = "cpu", max_seconds: float = 10.0
) -> dict:
    from voxinv.voxtral.tts import VoxtralTTS

    run = Path(run)
    for f in (rundir.VOICE, *rundir.AUDIO_FILES):
        if not (run / f).is_file():
            raise FileNotFoundError(f"{run} has no {f}: pass a finished voxinv run directory")
    loss_models = loss_models_of_run(run, rundir.read_metrics(run))
    device = str(pick_device(device, "--device "))
    tts = VoxtralTTS.from_pretrained(model, device=device)
    sr = tts.sampling_rate
    target = read_audio(run / rundir.TARGET, sr).numpy()
    rec = read_audio(run / rundir.RECONSTRUCTION, sr).numpy()
    out_dir = run / rundir.E2E_DIR
    out_dir.mkdir(exist_ok=True)
    sentences = SENTENCES[:n]
    res = {"model": str(model), "sentences": sentences, "seed": seed, "voices": {}}
    ref = speaker_metrics(target, rec, sr, loss_models=loss_models)
    try:
        ref.update({f"dnsmos_{k}": v for k, v in dnsmos(rec, sr).items()})
    except Unavailable as e:
        ref["dnsmos_skipped"] = str(e)
    res["reconstruction"] = ref
    res["voices"]["clone"] = score_voice(
        tts, run / rundir.VOICE, target, sentences, seed, loss_models, out_dir, "clone", max_seconds
    )
    for p in presets:
        res["voices"][p] = score_voice(tts, p, target, sentences, seed, loss_models, out_dir, p, max_seconds)
    rundir.merge_metrics(run, "e2e", res)
    return res


def format_e2e(res: dict) -> str:
    lines = [f"{'voice':<18} {'spk_sim':>8} {'WER':>6} {'DNSMOS':>7}  grader"]
    r = res["reconstruction"]
    lines.append(
        f"{'reconstruction':<18} {r.get('spk_sim', float('nan')):>8.3f} {'-':>6} {r.get('dnsmos_ovrl', float('nan')):>7.2f}  {r.get('spk_sim_model')}"
    )
    for name, v in res["voices"].items():
        s = v["summary"]
        f = lambda x, fmt: format(x, fmt) if isinstance(x, float) else "-"  # noqa: E731
        lines.append(
            f"{name:<18} {f(s['spk_sim'], '8.3f'):>8} {f(s['wer'], '6.2f'):>6} {f(s['dnsmos_ovrl'], '7.2f'):>7}  {s['spk_sim_model']}{' (self-graded)' if s['spk_sim_self_graded'] else ''}"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m voxinv.eval.e2e", description=__doc__.split("\n")[0])
    ap.add_argument("run", type=Path, help="a finished voxinv run directory")
    ap.add_argument("--model", required=True, help="model directory or Hugging Face repo id (the run's model)")
    ap.add_argument(
        "--presets", default="", help="comma-separated preset voices to compare against ('all' for every preset)"
    )
    ap.add_argument("--n", type=int, default=3, help=f"number of held-out sentences (≤ {len(SENTENCES)})")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--device", default="cpu", help="cpu, cuda, cuda:N or auto (cuda if available)")
    ap.add_argument("--max-seconds", type=float, default=10.0, help="generation cap per sentence")
    a = ap.parse_args(argv)
    presets = [p for p in a.presets.split(",") if p]
    if presets == ["all"]:
        from voxinv.voxtral.checkpoint import Checkpoint

        presets = Checkpoint(a.model, weights=False).params.voices
    try:
        res = evaluate_e2e(
            a.run,
            a.model,
            presets=presets,
            n=min(a.n, len(SENTENCES)),
            seed=a.seed,
            device=a.device,
            max_seconds=a.max_seconds,
        )
    except (FileNotFoundError, ValueError) as e:
        print(f"voxinv.eval.e2e: error: {e}", file=sys.stderr)
        return 2
    print(format_e2e(res))
    return 0


if __name__ == "__main__":
    sys.exit(main())
