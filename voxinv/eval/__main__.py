"""``python -m voxinv.eval RUN_DIR [RUN_DIR …]``: evaluate inversion runs, merge into their metrics.json.

The work is :func:`voxinv.eval.evaluate.evaluate_run`; results go to ``metrics.json`` under
``"eval"`` (other keys kept).
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from voxinv import rundir
from voxinv.eval.evaluate import (
    evaluate_run,
    format_table,
    load_table,
    loss_models_of_run,
)
from voxinv.eval.metrics import ALL_GROUPS, ASR_ENGINES, SPK_GRADERS, SPK_KEYS, csv_list

# evaluate_run / loss_models_of_run live in voxinv.eval.evaluate; re-exported here for existing importers
__all__ = ["evaluate_run", "loss_models_of_run", "main"]


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(
        prog="python -m voxinv.eval",
        description='Evaluate inversion runs; merge the metrics into each run\'s metrics.json under "eval".',
    )
    ap.add_argument("runs", nargs="+", metavar="RUN_DIR")
    ap.add_argument("--which", default=",".join(ALL_GROUPS), help="metric groups (default: all)")
    ap.add_argument("--out", type=Path, help="also write {run_dir: eval} to this JSON file")
    ap.add_argument("--loss-models", help="loss terms the runs used, e.g. spk,stft (default: read from each run)")
    ap.add_argument("--ref-text", help="reference transcript for WER (default: target.txt, else ASR of target)")
    ap.add_argument("--model", help="model dir / HF id: its audio-code table adds code_emb_cos")
    ap.add_argument("--spk-graders", default=",".join(SPK_GRADERS))
    ap.add_argument("--asr", default=",".join(ASR_ENGINES), help="ASR engines")
    args = ap.parse_args(argv)

    import torch

    torch.set_num_threads(min(torch.get_num_threads(), int(os.environ.get("VOXINV_EVAL_THREADS", "4"))))
    which = csv_list(args.which)
    bad = [w for w in which if w not in ALL_GROUPS]
    if bad:
        print(f"error: unknown --which {bad}: choose from {','.join(ALL_GROUPS)}", file=sys.stderr)
        return 2
    table = audio_args = None
    if args.model:
        try:
            table, audio_args = load_table(args.model)
        except Exception as e:
            print(f"error: --model {args.model}: {str(e).splitlines()[0]}", file=sys.stderr)
            return 2
    loss_models = set(csv_list(args.loss_models)) if args.loss_models is not None else None
    results: dict[str, dict] = {}
    failed = 0
    for run in args.runs:
        try:
            results[run] = evaluate_run(
                run,
                which=which,
                loss_models=loss_models,
                ref_text=args.ref_text,
                table=table,
                audio_args=audio_args,
                spk_graders=csv_list(args.spk_graders),
                asr_engines=csv_list(args.asr),
            )
        except Exception as e:  # one line per failed run; keep going with the others
            failed += 1
            msg = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
            print(f"error: {msg}" if str(run) in msg else f"error: {run}: {msg}", file=sys.stderr)
    if results:
        print(format_table(results))
        for run, r in results.items():  # held-out grading: say which model the headline spk is, and what is biased
            mine = [k.removesuffix("_self_graded") for k, v in r.items() if k.endswith("_self_graded") and v is True]
            mine = [SPK_KEYS.get(k.removeprefix("spk_sim_"), k) for k in mine if k != "spk_sim"]
            if "spk_sim_model" in r:
                print(
                    f"{run}: spk = {r['spk_sim_model']}"
                    + (" (SELF-GRADED: no independent grader available)" if r.get("spk_sim_self_graded") else "")
                    + (f"; self-graded, not headline: {', '.join(mine)} (the loss used that model)" if mine else "")
                )
        skipped = sorted({k[: -len("_skipped")] for r in results.values() for k in r if k.endswith("_skipped")})
        if skipped:
            print(f"skipped (missing package/weights): {', '.join(skipped)}")
    if args.out:
        rundir.write_json(args.out, results)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
