"""Statistics over the benchmark's recorded curves: time to a quality level (the exported codes so far),
speed-ups against the recipe on the same (clip, seed), wins against the encoder's codes, the early stop
replayed."""

from __future__ import annotations

import math
from collections.abc import Mapping

import pandas as pd

from voxinv.eval.formats import METRIC
from voxinv.stopping import evals_since_improvement


def _opt_curve(curve: list, steps: int, clock: str = "wall") -> list[tuple[float, float, float, int]]:
    """``(seconds without evaluations, mrmel, objective, step)`` per evaluation; ``clock`` ``wall`` or
    ``cpu`` (process CPU seconds: points ``[.., cpu s, evaluation CPU s so far]``; ``[]`` for rows without
    them). Old rows (wall s, no step): evaluation time included, steps spread evenly over ``steps``."""
    n = max(len(curve) - 1, 1)
    if clock == "cpu":
        if not curve or len(curve[0]) < 7:
            return []
        return [(p[5] - p[6], p[1], p[2], int(p[4])) for p in curve]
    return [
        (p[0] - (p[3] if len(p) > 3 else 0.0), p[1], p[2], int(p[4]) if len(p) > 4 else round(i * steps / n))
        for i, p in enumerate(curve)
    ]


def time_to(curve: list, level: float, steps: int, clock: str = "wall") -> tuple[float, int] | None:
    """First (seconds without evaluations, step) at which the exported codes so far — the best by the
    run's objective, as the export picks them — have mrmel ≤ ``level``; None if never (or no ``clock``)."""
    best_obj, best_mel = math.inf, math.inf
    for t, mel, obj, step in _opt_curve(curve, steps, clock):
        if obj < best_obj:
            best_obj, best_mel = obj, mel
        if best_mel <= level:
            return t, step
    return None


def _wins(df: pd.DataFrame, enc: Mapping[str, dict], key: str) -> tuple[int, int]:
    """(rows better than the encoder's codes on ``key``, rows scored): lower mrmel, higher spk wins."""
    rows = [
        r
        for r in df.to_dict("records")
        if enc.get(r["clip"], {}).get(key) is not None and not math.isnan(float(r[key]))
    ]
    better = [
        (r[key] > enc[r["clip"]][key]) if METRIC[key].higher_better else (r[key] < enc[r["clip"]][key]) for r in rows
    ]
    return int(sum(better)), len(rows)


def _recipe_of(row, recipe: str | Mapping[str, str]) -> str:
    return recipe if isinstance(recipe, str) else recipe.get(row.get("tier", ""), recipe.get("*", ""))


def speedups(df: pd.DataFrame, recipe: str | Mapping[str, str]) -> dict[str, dict]:
    """Per variant: time and steps to the recipe's final mrmel on the same (clip, seed), as speed-ups
    (recipe's seconds / seconds to reach, both without evaluations, in wall and — where both rows have
    it — process CPU seconds; recipe's steps / steps to reach) and whether the variant ends better.
    ``recipe``: a variant, or {tier: variant} (``*``: any other tier)."""
    out: dict[str, dict] = {}
    idx = df.set_index(["variant", "clip", "seed"])
    for r in df.to_dict("records"):
        rv = _recipe_of(r, recipe)
        if not rv or r["variant"] == rv or (rv, r["clip"], r["seed"]) not in idx.index:
            continue
        ref = idx.loc[(rv, r["clip"], r["seed"])]
        o = out.setdefault(
            r["variant"], {"recipe": rv, "n": 0, "wall": [], "cpu": [], "steps": [], "better": 0, "pairs": []}
        )
        o["n"] += 1
        o["better"] += int(r["mrmel"] < ref["mrmel"])
        pair = {"clip": r["clip"], "seed": int(r["seed"]), "recipe_mrmel": float(ref["mrmel"]), "mrmel": r["mrmel"]}
        for clock in ("wall", "cpu"):
            hit = time_to(r["curve"], float(ref["mrmel"]), int(r["steps"]), clock)
            ref_curve = _opt_curve(ref["curve"], int(ref["steps"]), clock)
            if hit is None or not ref_curve:
                continue
            t, step = hit
            sfx = "" if clock == "wall" else "_cpu"
            o[clock].append(ref_curve[-1][0] / max(t, 1e-3))
            pair.update(
                {f"seconds{sfx}": round(t, 2), f"recipe_seconds{sfx}": round(ref_curve[-1][0], 2)}
                | {f"speedup{sfx}": round(o[clock][-1], 2), "step": step}
            )
        if "step" in pair:
            o["steps"].append(float(ref["steps"]) / max(pair["step"], 1))
        o["pairs"].append(pair)
    return out


def early_stop_replay(
    df: pd.DataFrame, patience: int, min_rel_delta: float, every: int | None = None
) -> dict[str, dict]:
    """The early stop (:func:`voxinv.stopping.evals_since_improvement`, as ``callbacks.EarlyStop``) replayed on the recorded curves (simulated, not run): per variant how many
    runs would stop early, the exported mrmel at the stop minus the full run's, and the time saved.
    ``every``: evaluate only every that many steps (e.g. config.yaml's ``eval_every``), as the run would
    have; rows without steps keep their recorded grid."""
    out = {}
    for v, g in df.groupby("variant", sort=False):
        stops, dm, saved = 0, [], []
        for r in g.itertuples():
            curve = r.curve
            if every and len(curve[0]) > 4:  # the evaluations a run with eval_every=`every` makes
                curve = [p for i, p in enumerate(curve) if int(p[4]) % every == 0 or i == len(curve) - 1]
            objs = [p[2] for p in curve]
            k = next(
                (i for i in range(len(objs)) if evals_since_improvement(objs[: i + 1], min_rel_delta) >= patience), None
            )
            if k is None or k == len(objs) - 1:
                dm.append(0.0)
                saved.append(0.0)
                continue
            stops += 1
            best = min(range(k + 1), key=lambda i: objs[i])
            dm.append(curve[best][1] - r.mrmel)
            saved.append(1 - curve[k][0] / curve[-1][0])
        out[v] = {"n": len(g), "stopped": stops, "dmrmel": dm, "saved": saved}
    return out
