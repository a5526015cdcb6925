"""Finished runs as the report sees them: discovery under sweep directories, their files, their values."""

from __future__ import annotations

import sys
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from voxinv import rundir
from voxinv.eval.formats import AC_CHANCE, columns

# ``stopped`` values of a run that ended by its own configured rules (pooled, but flagged in the report)
SELF_STOPS = ("early_stop", "max_time")


class ReportError(ValueError):
    """Inputs the report cannot use (no runs, bad arguments)."""


@dataclass
class Run:
    """One finished inversion: its directory, ``metrics.json``, overrides and resolved config."""

    path: Path
    metrics: dict
    overrides: list[str] = field(default_factory=list)
    config: dict = field(default_factory=dict)
    source_s: float = 0.0  # wall time of the warm-start source run(s)
    has_overrides: bool = False
    label: str = ""  # set by group_runs

    @property
    def seed(self) -> Any:
        return self.metrics.get("seed", self.config.get("seed"))

    @property
    def target(self) -> str:
        t = self.metrics.get("target") or {}
        return str(t.get("name", "?")) if isinstance(t, dict) else str(t)

    @property
    def oracle(self) -> bool:
        """Codes of the target known (synthetic / preset targets): code accuracy and a perfect ceiling."""
        return isinstance(self.metrics.get("truth"), dict)

    @property
    def init_kind(self) -> str:
        i = self.metrics.get("init")
        return str(i.get("kind")) if isinstance(i, dict) else str(_get(self.config, "init.kind") or "?")

    @property
    def incomplete(self) -> str | None:
        """Why the run did not run all its configured steps (``metrics.json`` ``stopped``: ``early_stop``,
        ``max_time``, an interrupt, a non-finite loss), or ``None`` for a run that did."""
        stopped = self.metrics.get("stopped")
        if stopped:
            return str(stopped)
        steps, planned = self.metrics.get("steps"), _get(self.config, "steps")
        if _is_num(steps) and _is_num(planned) and steps < planned:  # exported before stops were recorded
            return f"ran {int(steps)} of {int(planned)} steps"
        return None

    @property
    def interrupted(self) -> bool:
        """Stopped by something other than its own rules (a signal, a non-finite loss, a crash): its
        numbers are not those of its configuration, so the report lists it apart instead of pooling it."""
        stopped = self.metrics.get("stopped")
        return bool(stopped) and stopped not in SELF_STOPS

    @property
    def wall_time_s(self) -> float | None:
        """Wall seconds of the whole run: after a resume, the total over its segments (the history's clock
        is restored from the checkpoint; ``wall_time_s`` of runs exported before that fix held the last
        segment only)."""
        w = self.metrics.get("wall_time_s")
        clocks = [h.get("wall_s") for h in self.history if _is_num(h.get("wall_s"))]
        if not _is_num(w):
            return None
        return float(max([w, *clocks]))

    @property
    def history(self) -> list[dict]:
        h = self.metrics.get("history")
        return h if isinstance(h, list) else []

    def values(self) -> dict[str, float]:
        """Flat numeric values of the run (the registry's keys that are known, and more): its signal and
        code scores, and the ``python -m voxinv.eval`` scores (``eval``) that a sweep-report view shows and
        the run itself did not record."""
        m, out = self.metrics, {}
        for k, v in (m.get("signal") or {}).items():
            out[k] = v
        for k, v in (m.get("truth") or {}).items():
            out[k] = v
        ev = m.get("eval") if isinstance(m.get("eval"), dict) else {}
        for k in dict.fromkeys((*columns("report"), *columns("paired"), *columns("per_run"))):
            if k not in out and k in ev:
                out[k] = ev[k]
        final = m.get("final") or {}
        if "total" in final:
            out["objective"] = final["total"]
        if self.wall_time_s is not None:
            out["wall_s"] = self.wall_time_s
            out["compute_s"] = self.wall_time_s + self.source_s
        init = m.get("init") or {}
        out["init_s"] = init.get("seconds", 0.0) if isinstance(init, dict) else 0.0
        if "steps" in m:
            out["steps"] = m["steps"]
        if "code_ac_acc" in out and out.get("compute_s"):
            out["ac_gain_per_s"] = (out["code_ac_acc"] - AC_CHANCE) / out["compute_s"]
        return {k: float(v) for k, v in out.items() if _is_num(v)}


def _is_num(v: Any) -> bool:
    return isinstance(v, int | float) and not isinstance(v, bool)


def _get(d: Any, dotted: str) -> Any:
    for part in dotted.split("."):
        if not isinstance(d, dict) or part not in d:
            return None
        d = d[part]
    return d


def _load_yaml(p: Path) -> Any:
    import yaml

    return yaml.safe_load(p.read_text())


def load_run(path: str | Path) -> Run:
    """A run directory → :class:`Run` (raises :class:`ReportError` on an unreadable metrics.json)."""
    path = Path(path)
    if not (path / rundir.METRICS).is_file():
        raise ReportError(f"{path}: no {rundir.METRICS} (not a finished run)")
    try:
        metrics = rundir.read_metrics(path)
    except rundir.RunDirError as e:
        raise ReportError(f"{e} (or re-run that run)") from e
    run = Run(path=path, metrics=metrics)
    ov = path / rundir.OVERRIDES
    if ov.is_file():
        run.overrides = [str(o) for o in (_load_yaml(ov) or [])]
        run.has_overrides = True
    for name in (rundir.CONFIG, rundir.HYDRA_CONFIG):
        if (path / name).is_file():
            try:
                run.config = _load_yaml(path / name) or {}
            except Exception:  # an unresolvable config only costs --group-by and warm-start accounting
                run.config = {}
            break
    run.source_s = _source_seconds(run.config, path)
    return run


def _source_seconds(config: dict, path: Path, depth: int = 0) -> float:
    """Wall time of the warm-start chain behind a run (0 unless ``init.kind == warm_start`` from a run dir)."""
    if depth > 4 or _get(config, "init.kind") != "warm_start" or not _get(config, "init.source"):
        return 0.0
    src = Path(str(_get(config, "init.source")))
    for cand in [src] if src.is_absolute() else [Path.cwd() / src, path / src]:
        if (cand / rundir.METRICS).is_file():
            try:
                m = rundir.read_metrics(cand)
                cfg = _load_yaml(cand / rundir.CONFIG) if (cand / rundir.CONFIG).is_file() else {}
            except Exception:
                return 0.0
            return float(m.get("wall_time_s", 0.0)) + _source_seconds(cfg or {}, cand, depth + 1)
    return 0.0


def find_runs(roots: Iterable[str | Path], quiet: bool = False) -> list[Run]:
    """Every run directory (holding ``metrics.json``) at or under ``roots``, in path order."""
    runs: list[Run] = []
    for root in roots:
        root = Path(root)
        if not root.exists():
            raise ReportError(f"{root}: no such directory (pass a Hydra multirun dir or a run dir)")
        files = [root / rundir.METRICS] if (root / rundir.METRICS).is_file() else sorted(root.rglob(rundir.METRICS))
        for f in files:
            if any(p in (rundir.CHECKPOINTS, "wandb") for p in f.parent.relative_to(root).parts):
                continue
            try:
                runs.append(load_run(f.parent))
            except ReportError as e:
                if not quiet:
                    print(f"voxinv.report: skipped {e}", file=sys.stderr)
    return runs
