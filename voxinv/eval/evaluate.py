"""Evaluate finished inversion run directories (:mod:`voxinv.rundir`); merge results into ``metrics.json["eval"]``.

Each run directory needs ``target.wav`` and ``reconstruction.wav`` (24 kHz); ``codes.safetensors``
plus ``true_codes.safetensors`` add code-recovery metrics, ``target.txt`` is used as the reference
transcript for WER. ``python -m voxinv.eval`` is the CLI.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from voxinv import rundir
from voxinv.audio import read_audio
from voxinv.eval.formats import METRIC, columns, fmt
from voxinv.eval.metrics import ALL_GROUPS, ASR_ENGINES, SPK_GRADERS, SR, code_recovery, evaluate_pair
from voxinv.voxtral.codes import load_codes


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
    for name in rundir.CONFIG_FILES:
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


def load_table(model: str):
    """The audio-code table ``[rows, dim]`` and audio args of a model (adds ``code_emb_cos``)."""
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
    run = Path(run)
    if not run.is_dir():
        raise RunError(f"{run}: not a directory")
    for name in rundir.AUDIO_FILES:
        if not (run / name).is_file():
            raise RunError(f"{run}: no {name} (a finished inversion run holds {' and '.join(rundir.AUDIO_FILES)})")
    try:
        metrics = rundir.read_metrics(run)
    except rundir.RunDirError as e:
        raise RunError(str(e)) from e
    if loss_models is None:
        loss_models = loss_models_of_run(run, metrics)
    if ref_text is None and (run / rundir.TARGET_TEXT).is_file():
        ref_text = (run / rundir.TARGET_TEXT).read_text().strip()
    target, recon = read_audio(run / rundir.TARGET, SR), read_audio(run / rundir.RECONSTRUCTION, SR)
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
    if (run / rundir.CODES).is_file() and (run / rundir.TRUE_CODES).is_file():
        res.update(
            code_recovery(load_codes(run / rundir.CODES), load_codes(run / rundir.TRUE_CODES), table, audio_args)
        )
    if write:
        rundir.merge_metrics(run, "eval", res)  # re-reads under a lock: keys written meanwhile are kept
    return res


def format_table(results: dict[str, dict]) -> str:
    """A compact fixed-width table: one row per run, the metric registry's ``eval`` view as columns."""
    import pandas as pd

    cols = [k for k in columns("eval") if any(k in r for r in results.values())]
    df = pd.DataFrame(
        [[fmt(k, r.get(k)) for k in cols] for r in results.values()],
        index=pd.Index(list(results), name="run"),
        columns=[METRIC[k].header for k in cols],
    )
    return df.to_string(index_names=False) if cols else "\n".join(["run", *results])
