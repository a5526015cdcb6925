"""``python -m voxinv.eval RUN_DIR [RUN_DIR …]``: evaluate inversion runs, merge into their metrics.json.

Each run directory needs ``target.wav`` and ``reconstruction.wav`` (24 kHz); ``codes.safetensors``
plus ``true_codes.safetensors`` add code-recovery metrics, ``target.txt`` is used as the reference
transcript for WER. Results go to ``metrics.json`` under ``"eval"`` (other keys kept).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
from pathlib import Path
from typing import Any

from voxinv.eval.metrics import ALL_GROUPS, ASR_ENGINES, SPK_GRADERS, SR, code_recovery, csv_list, evaluate_pair

CONFIG_FILES = ("config.yaml", ".hydra/config.yaml", "config.json")
TABLE = (  # (key, header, format) in print order; columns absent from every run are dropped
    ("si_sdr", "SI-SDR", "{:.2f}"),
    ("mrstft", "MRSTFT", "{:.3f}"),
    ("mel", "mel", "{:.3f}"),
    ("pesq", "PESQ", "{:.2f}"),
    ("stoi", "STOI", "{:.3f}"),
    ("estoi", "eSTOI", "{:.3f}"),
    ("dnsmos_ovrl", "DNSMOS", "{:.2f}"),
    ("spk_sim", "spk", "{:.3f}"),
    ("wer", "WER", "{:.2f}"),
    ("code_sem_acc", "sem%", "{:.1f}"),
    ("code_ac_acc", "ac%", "{:.1f}"),
    ("code_emb_cos", "embcos", "{:.3f}"),
)


class RunError(RuntimeError):
    pass


def _loss_names(section: Any) -> set[str]:
    """Loss terms with a non-zero weight in a config ``loss`` section.

    Accepted shapes: ``{name: weight}``, ``{name: {weight: w, …}}``, either one nested under
    ``weights`` or ``terms``, or a list of names.
    """
    if isinstance(section, list | tuple):
        return {str(n) for n in section}
    if not isinstance(section, dict):
        return set()
    for sub in ("weights", "terms"):
        if isinstance(section.get(sub), dict | list):
            return _loss_names(section[sub])
    out = set()
    for k, v in section.items():
        if str(k).startswith("_"):
            continue
        w = v.get("weight") if isinstance(v, dict) else v
        if isinstance(w, int | float) and not isinstance(w, bool) and w != 0:
            out.add(str(k))
    return out


def loss_models_of_run(run: Path, metrics: dict | None = None) -> set[str]:
    """The loss terms a run optimized: ``metrics.json["loss_models"]``, else its saved config's ``loss``."""
    if metrics and isinstance(metrics.get("loss_models"), list):
        return {str(n) for n in metrics["loss_models"]}
    for name in CONFIG_FILES:
        p = run / name
        if not p.is_file():
            continue
        try:
            if p.suffix == ".json":
                cfg = json.loads(p.read_text())
            else:
                import yaml

                cfg = yaml.safe_load(p.read_text())
        except Exception as e:
            raise RunError(f"{p}: cannot parse ({e}); pass --loss-models explicitly") from e
        if isinstance(cfg, dict) and "loss" in cfg:
            return _loss_names(cfg["loss"])
    return set()


def _read_metrics(path: Path) -> dict:
    if not path.is_file():
        return {}
    try:
        data = json.loads(path.read_text())
    except json.JSONDecodeError as e:
        raise RunError(f"{path} is not valid JSON ({e}); fix or delete it") from e
    if not isinstance(data, dict):
        raise RunError(f"{path} does not hold a JSON object; fix or delete it")
    return data


def _write_json_atomic(path: Path, data: dict) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(data, indent=2, default=_json_default) + "\n")
    os.replace(tmp, path)


def _json_default(o: Any) -> Any:
    try:
        return float(o)
    except (TypeError, ValueError):
        return str(o)


def _load_table(model: str):
    from voxinv.voxtral.checkpoint import Checkpoint

    ckpt = Checkpoint(model)
    table = ckpt.audio_table()
    return table, ckpt.params.audio


def evaluate_run(
    run: str | Path,
    *,
    which: tuple[str, ...] = ALL_GROUPS,
    loss_models: set[str] | None = None,
    ref_text: str | None = None,
    table=None,
    audio_args=None,
    spk_graders: tuple[str, ...] = tuple(SPK_GRADERS),
    asr_engines: tuple[str, ...] = ASR_ENGINES,
    write: bool = True,
) -> dict:
    """Evaluate one run directory; merge the result into its ``metrics.json`` under ``"eval"``."""
    from voxinv.audio import read_audio
    from voxinv.voxtral.codes import load_codes

    run = Path(run)
    if not run.is_dir():
        raise RunError(f"{run}: not a directory")
    for name in ("target.wav", "reconstruction.wav"):
        if not (run / name).is_file():
            raise RunError(f"{run}: no {name} (a finished inversion run holds target.wav and reconstruction.wav)")
    metrics_path = run / "metrics.json"
    metrics = _read_metrics(metrics_path)
    if loss_models is None:
        loss_models = loss_models_of_run(run, metrics)
    if ref_text is None and (run / "target.txt").is_file():
        ref_text = (run / "target.txt").read_text().strip()
    target, recon = read_audio(run / "target.wav", SR), read_audio(run / "reconstruction.wav", SR)
    res: dict[str, Any] = {"loss_models": ",".join(sorted(loss_models))}
    res.update(
        evaluate_pair(
            target,
            recon,
            SR,
            which=which,
            ref_text=ref_text,
            loss_models=loss_models,
            spk_graders=spk_graders,
            asr_engines=asr_engines,
        )
    )
    if (run / "codes.safetensors").is_file() and (run / "true_codes.safetensors").is_file():
        res.update(
            code_recovery(
                load_codes(run / "codes.safetensors"), load_codes(run / "true_codes.safetensors"), table, audio_args
            )
        )
    if write:
        metrics = _read_metrics(metrics_path)  # re-read: keep keys written meanwhile
        metrics["eval"] = res
        _write_json_atomic(metrics_path, metrics)
    return res


def format_table(results: dict[str, dict]) -> str:
    """A compact fixed-width table: one row per run, the headline metrics as columns."""
    cols = [(k, h, f) for k, h, f in TABLE if any(k in r for r in results.values())]
    names = list(results)
    w0 = max([3] + [len(n) for n in names])
    rows = [["run".ljust(w0)] + [h for _, h, _ in cols]]
    for n in names:
        r = results[n]
        cells = []
        for k, _, f in cols:
            v = r.get(k)
            cells.append("-" if not isinstance(v, int | float) or math.isnan(v) else f.format(v))
        rows.append([n.ljust(w0)] + cells)
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    return "\n".join("  ".join(c.rjust(w) if i else c for i, (c, w) in enumerate(zip(row, widths))) for row in rows)


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
            table, audio_args = _load_table(args.model)
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
        skipped = sorted({k[: -len("_skipped")] for r in results.values() for k in r if k.endswith("_skipped")})
        if skipped:
            print(f"skipped (missing package/weights): {', '.join(skipped)}")
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        _write_json_atomic(args.out, results)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
