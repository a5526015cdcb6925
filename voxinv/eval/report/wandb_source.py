"""W&B as a run source: a project's runs as :class:`~voxinv.eval.report.runs.Run` objects (online only)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from voxinv.eval.report.runs import Run, _get, _is_num


class WandbUnavailable(RuntimeError):
    """W&B cannot be queried here (offline, not logged in, no network)."""


def wandb_runs(project: str, group: str | None = None, limit: int = 500) -> list[Run]:
    """Runs of a W&B project (``[entity/]project``) as :class:`Run` objects, from their summaries and
    logged ``eval/*`` history (no audio: no spectrograms). Raises :class:`WandbUnavailable` when offline
    or not logged in."""
    if os.environ.get("WANDB_MODE", "").lower() in ("offline", "disabled", "dryrun"):
        raise WandbUnavailable(f"WANDB_MODE={os.environ['WANDB_MODE']}")
    try:
        import wandb
    except ImportError as e:
        raise WandbUnavailable("wandb is not installed (pip install wandb)") from e
    try:
        key = os.environ.get("WANDB_API_KEY") or wandb.api.api_key
    except Exception:
        key = None
    if not key:
        raise WandbUnavailable("not logged in (run `wandb login` or set WANDB_API_KEY)")
    try:
        api = wandb.Api(timeout=20)
        found = list(api.runs(project, filters={"group": group} if group else None, per_page=min(limit, 100)))
    except Exception as e:
        msg = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise WandbUnavailable(f"cannot query W&B project {project!r}: {msg}") from e
    keys = ["eval/objective", "eval/si_sdr", "eval/mel", "eval/code_sem_acc", "eval/code_ac_acc", "trainer/global_step"]
    runs = []
    for wr in found[:limit]:
        s = dict(wr.summary)
        ev = {k.split("/", 1)[1]: v for k, v in s.items() if k.startswith("eval/") and _is_num(v)}
        history = []
        for row in wr.scan_history(keys=[k for k in keys if k != "trainer/global_step"]):
            step = row.get("trainer/global_step", row.get("_step"))
            history.append({"step": step, **{k.split("/", 1)[1]: v for k, v in row.items() if k.startswith("eval/")}})
        metrics: dict[str, Any] = {
            "signal": {k: ev[k] for k in ("si_sdr", "mel") if k in ev},
            "final": {"total": ev["objective"]} if "objective" in ev else {},
            "wall_time_s": s.get("_runtime"),
            "seed": wr.config.get("seed"),
            "history": history,
            "target": {"name": _get(wr.config, "target.kind") or "?"},
            "init": {"kind": _get(wr.config, "init.kind")},
        }
        truth = {k: v for k, v in ev.items() if k.startswith("code_")}
        if truth:
            metrics["truth"] = truth
        runs.append(
            Run(
                path=Path(f"wandb/{wr.path[-1] if isinstance(wr.path, list) else wr.id}"),
                metrics=metrics,
                config=dict(wr.config),
            )
        )
    return runs
