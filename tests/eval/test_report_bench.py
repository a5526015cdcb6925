"""Benchmark-log report (``python -m voxinv.report <dir with runs.jsonl>``) on a hand-made log whose
statistics are known: means, paired differences, wins against the encoder, time to the recipe's quality."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from voxinv.eval.report import main
from voxinv.eval.report.bench import bench_report, time_to


def _row(variant: str, clip: str, mrmel: float, spk: float, curve: list, steps: int = 10) -> dict:
    return {
        "variant": variant,
        "tier": "t",
        "clip": clip,
        "seed": 0,
        "mrmel": mrmel,
        "mrstft": 2 * mrmel,
        "spk": spk,
        "env": 0.8,
        "si_sdr": -30.0,
        "code_sem": 0.0,
        "code_ac": 10.0,
        "self_graded": False,
        "wall_s": curve[-1][0] + 1,
        "steps": steps,
        "curve": curve,
    }


@pytest.fixture
def log(tmp_path) -> Path:
    # curve points: [wall s, mrmel, objective, evaluation s so far, step]
    rows = [
        _row("a", "c1", 0.40, 0.50, [[1.0, 0.9, 3.0, 0.5, 0], [3.0, 0.45, 2.0, 1.0, 5], [5.0, 0.40, 1.5, 1.5, 10]]),
        _row("r", "c1", 0.45, 0.45, [[1.0, 0.9, 3.0, 0.5, 0], [11.0, 0.45, 2.0, 1.0, 10]]),
        _row("a", "c2", 0.50, 0.45, [[1.0, 0.9, 3.0, 0.5, 0], [4.0, 0.50, 2.0, 1.0, 10]]),
        _row("r", "c2", 0.48, 0.47, [[1.0, 0.9, 3.0, 0.5, 0], [9.0, 0.48, 2.0, 1.0, 10]]),
    ]
    refs = [
        {"clip": "c1", "variant": "encoder", "mrmel": 0.6, "spk": 0.4},
        {"clip": "c2", "variant": "encoder", "mrmel": 0.45, "spk": 0.5},
        {"clip": "c1", "variant": "same_speaker", "other": "c2", "spk": 0.8},
    ]
    (tmp_path / "runs.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    (tmp_path / "references.jsonl").write_text("".join(json.dumps(r) + "\n" for r in refs))
    return tmp_path


def test_time_to_follows_the_exported_codes():
    """The export keeps the best codes by the objective, so a lower mrmel at a worse objective does not count."""
    curve = [[1.0, 0.9, 3.0, 0.5, 0], [2.0, 0.3, 4.0, 1.0, 5], [4.0, 0.4, 2.0, 1.5, 10]]
    assert time_to(curve, 0.45, 10) == (2.5, 10)  # seconds without evaluations, step
    assert time_to(curve, 0.2, 10) is None
    old = [[1.0, 0.9, 3.0], [2.0, 0.5, 2.0], [3.0, 0.4, 1.0]]  # old rows: wall s, steps spread evenly
    assert time_to(old, 0.45, 100) == (3.0, 100)


def test_bench_report_numbers(log):
    s = bench_report(log, baseline="r", recipe="r")
    a = s["variants"]["a"]
    assert a["n"] == 2 and a["mrmel"] == pytest.approx([0.45, 0.0707107], rel=1e-5)
    assert a["beats_encoder"] == {"mrmel": [1, 2], "spk": [1, 2], "clips": {"mrmel": [1, 2], "spk": [1, 2]}}
    paired = s["paired"]["rows"][0]
    assert paired["label"] == "a" and paired["n"] == 2
    assert paired["mean"]["mrmel"] == pytest.approx(-0.015) and paired["better"]["mrmel"] == 1
    assert paired["better"]["spk"] == 1  # higher is better for spk: c1 +0.05, c2 −0.02
    vs = a["vs_recipe"]
    assert vs["n"] == 2 and vs["better"] == 1
    assert vs["wall"] == [pytest.approx(10.0 / 2.0)] and vs["steps"] == [2.0]  # c1 only: c2 never reaches 0.48
    md = (log / "report.md").read_text()
    assert "| *same speaker, other recording (spk ceiling)* | 1 | 1 |" in md and "c1 ↔ c2 0.800" in md
    assert "5.0× [5.0–5.0]" in md
    assert (log / "summary.json").is_file() and (log / "curves.png").is_file()


def test_cli_renders_a_benchmark_log(log, tmp_path, capsys):
    out = tmp_path / "rep"
    assert main([str(log), "--out", str(out), "--baseline", "r", "--recipe", "r"]) == 0
    assert "| `a` | `r` | 2 |" in (out / "report.md").read_text()  # paired against the baseline r
    assert main([str(log), "--out", str(out), "--baseline", "nope"]) == 2
    assert "voxinv.report: error: --baseline 'nope' is not a variant here" in capsys.readouterr().err


def test_cpu_clock_and_held_out_clips(tmp_path):
    """CPU-second speed-ups come from the points' CPU fields; the encoder comparison per clip averages the
    seeds first, and clips the encoder was trained on are reported apart (report.json ``encoder_seen``)."""
    # points: [wall s, mrmel, objective, evaluation s, step, CPU s, evaluation CPU s]
    fast = [[1.0, 0.9, 3.0, 0.5, 0, 1.0, 0.5], [9.0, 0.45, 2.0, 1.0, 10, 3.0, 1.0]]  # reaches at 2 CPU s
    rec = [[1.0, 0.9, 3.0, 0.5, 0, 1.0, 0.5], [11.0, 0.45, 2.0, 1.0, 10, 21.0, 1.0]]  # 20 CPU s in all
    rows = [
        {**_row("a", "c1", 0.40, 0.50, fast), "seed": 0},
        {**_row("a", "c1", 0.40, 0.30, fast), "seed": 1},  # c1 mean spk 0.40 < encoder 0.45: loses per clip
        {**_row("r", "c1", 0.45, 0.45, rec), "seed": 0},
        {**_row("a", "c2", 0.40, 0.60, fast), "seed": 0},
        {**_row("r", "c2", 0.45, 0.45, rec), "seed": 0},
    ]
    refs = [
        {"clip": "c1", "variant": "encoder", "mrmel": 0.6, "spk": 0.45},
        {"clip": "c2", "variant": "encoder", "mrmel": 0.6, "spk": 0.45},
    ]
    (tmp_path / "runs.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    (tmp_path / "references.jsonl").write_text("".join(json.dumps(r) + "\n" for r in refs))
    seen = {"clips": ["c2"], "why": "test"}
    (tmp_path / "report.json").write_text(json.dumps({"recipe": "r", "baseline": {"t": "a"}, "encoder_seen": seen}))
    s = bench_report(tmp_path)
    be = s["variants"]["a"]["beats_encoder"]
    assert be["spk"] == [2, 3] and be["clips"]["spk"] == [1, 2]  # runs vs clips (seed means)
    assert be["held_out"] == {"mrmel": [1, 1], "spk": [0, 1]} and be["seen"]["spk"] == [1, 1]
    vs = s["variants"]["a"]["vs_recipe"]
    assert vs["cpu"] == [pytest.approx(10.0)] * 2  # 20 CPU s / 2 CPU s (pair of seed 0 on c1 and c2)
    assert vs["wall"] == [pytest.approx(10.0 / 8.0)] * 2  # wall clock: 10 s / 8 s
    assert "10.0× [10.0–10.0] · 2/2" in (tmp_path / "report.md").read_text()
    (paired,) = s["paired"]["rows"]  # the baseline of tier t: r paired with a on c1/seed0 and c2/seed0
    assert (paired["label"], paired["vs"], paired["n"]) == ("r", "a", 2)


def test_early_stop_replay_on_the_run_grid():
    """Replayed with ``every``, only the evaluations a run with that eval_every would make count."""
    import pandas as pd

    from voxinv.eval.report.bench import early_stop_replay

    curve = [[float(s), 0.5, 3.0 if s == 0 else 2.0, 0.0, s] for s in range(0, 14, 2)]  # flat after step 0
    df = pd.DataFrame([_row("a", "c1", 0.5, 0.5, curve, steps=12)])
    assert early_stop_replay(df, 3, 0.002)["a"]["stopped"] == 1  # every 2 steps: stops at step 8 of 12
    assert early_stop_replay(df, 3, 0.002, every=4)["a"]["stopped"] == 0  # steps 0, 4, 8, 12: too few


def test_independent_graders_held_out_rule(tmp_path):
    """graders.jsonl merged into the runs: a run whose loss uses a speaker model is read on the other one only
    (its own model's cells marked ‡ and never judged); the speaker goal allows the clip's seed std; no WER goal
    where the encoder's own decode is unintelligible; the ceiling row carries the original's WER."""
    curve = [[1.0, 0.9, 3.0, 0.5, 0, 1.0, 0.5], [5.0, 0.4, 1.5, 1.0, 10, 4.0, 1.0]]
    losses = {"a": ["mel", "stft"], "g": ["mel", "spk", "stft"], "d": ["mel", "spk_dvec", "stft"]}
    rows, graded = [], []
    # spk_ge2e / spk_dvec per (variant, seed) on clip c1; encoder: 0.50 / 0.50
    scores = {"a": [(0.52, 0.46), (0.48, 0.50)], "g": [(0.70, 0.40), (0.72, 0.42)], "d": [(0.51, 0.80), (0.49, 0.82)]}
    for v, per_seed in scores.items():
        for seed, (ge2e, dvec) in enumerate(per_seed):
            rows.append({**_row(v, "c1", 0.4, ge2e, curve), "seed": seed, "loss_models": losses[v]})
            graded.append(
                {"variant": v, "clip": "c1", "seed": seed, "spk_ge2e": ge2e, "spk_dvec": dvec, "wer": 1.0, "cer": 1.0}
            )
    graded += [
        {"variant": "encoder", "clip": "c1", "spk_ge2e": 0.5, "spk_dvec": 0.5, "wer": 1.0, "cer": 0.9},
        {"variant": "original", "clip": "c1", "asr": "hello there", "wer_full": 0.05, "cer_full": 0.02},
        {"variant": "same_speaker", "clip": "c1", "other": "c2", "spk_ge2e": 0.8, "spk_dvec": 0.7},
    ]
    (tmp_path / "runs.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    (tmp_path / "references.jsonl").write_text(json.dumps({"clip": "c1", "variant": "encoder", "mrmel": 0.5}) + "\n")
    (tmp_path / "graders.jsonl").write_text("".join(json.dumps(r) + "\n" for r in graded))
    s = bench_report(tmp_path, baseline="a")
    gv = s["graders"]["variants"]
    assert gv["a"]["held_out"] == ["spk_ge2e", "spk_dvec"] and gv["a"]["loss_speaker"] == []
    assert gv["g"]["held_out"] == ["spk_dvec"] and gv["g"]["loss_speaker"] == ["GE2E"]
    assert gv["d"]["held_out"] == ["spk_ge2e"] and gv["d"]["loss_speaker"] == ["d-vector"]
    assert gv["a"]["cpu_s"][0] == pytest.approx(3.0)  # CPU s 4 − evaluation CPU s 1
    goal = s["graders"]["speaker_goal"]
    # a: GE2E mean 0.50 ≥ 0.50 − std → no worse; d-vector 0.48 ≥ 0.50 − 0.028 → no worse
    assert goal["a"] == {
        "spk_ge2e": {"no_worse": 1, "clips": 1, "met": True},
        "spk_dvec": {"no_worse": 1, "clips": 1, "met": True},
    }
    assert set(goal["g"]) == {"spk_dvec"} and goal["g"]["spk_dvec"]["met"] is False  # 0.41 < 0.50 − 0.014
    assert set(goal["d"]) == {"spk_ge2e"} and goal["d"]["spk_ge2e"]["met"] is True  # never judged on its own model
    assert (
        s["graders"]["clips"]["c1"]["wer_goal"].startswith("none")
        and s["graders"]["clips"]["c1"]["wer_original"] == 0.05
    )
    assert s["variants"]["g"]["self_graded"] == ["spk", "spk_ge2e"] and s["variants"]["d"]["self_graded"] == [
        "spk_dvec"
    ]
    paired = {r["label"]: r for r in s["paired"]["rows"]}
    assert paired["g"]["self_graded"] == ["spk", "spk_ge2e"] and paired["d"]["self_graded"] == ["spk_dvec"]
    assert paired["g"]["mean"]["spk_dvec"] == pytest.approx(-0.07)  # held out: (0.40 + 0.42 − 0.46 − 0.50) / 2
    md = (tmp_path / "report.md").read_text()
    assert "| `g` | 2 | 1 | GE2E | spk d-vector | 0.710 ± 0.014 ‡ |" in md
    assert "| `d` | 2 | 1 | d-vector | spk GE2E | 0.500 ± 0.014 | 0.810 ± 0.014 ‡ |" in md
    assert "| *original recording* | 1 | 1 | – | – | – | – | 0.050 (whole clip vs its transcript)" in md
    assert "'hello there'" in md and "none: the encoder's decode is unintelligible" in md


def test_budgeted_runs_table(tmp_path):
    """Rows with ``budget`` N (one run of steps=N each) get their own table; the speed-up is the default's
    largest-budget CPU s over the cheapest budget (seed mean) reaching its MR log-mel, and the recipe's likewise."""

    def b(variant: str, n: int, mrmel: float, cpu: float, seed: int = 0) -> dict:
        curve = [[cpu + 1, mrmel / 2, 1.0, 0.5, n, cpu + 0.5, 0.5]]  # CPU s without evaluations = cpu
        return {**_row(variant, "c1", mrmel, 0.5, curve, steps=n), "seed": seed, "budget": n}

    rows = [
        b("d", 0, 0.9, 1.0),
        b("d", 10, 0.5, 3.0),
        b("d", 10, 0.7, 3.0, seed=1),  # seed mean 0.6
        b("d", 100, 0.40, 20.0),
        b("l", 0, 0.6, 1.2),
        b("l", 10, 0.42, 2.0),
        b("l", 100, 0.38, 19.0),  # reaches 0.40 only at N=100: 20/19 ×; reaches the recipe's 0.45 at N=10
        # the recipe: ordinary (not budgeted) runs, its final scores and CPU s (seed mean: 0.45, 40 s)
        {**_row("r", "c1", 0.44, 0.5, [[1.0, 0.4, 1.0, 0.5, 100, 40.5, 0.5]], steps=100), "seed": 0},
        {**_row("r", "c1", 0.46, 0.5, [[1.0, 0.4, 1.0, 0.5, 100, 40.5, 0.5]], steps=100), "seed": 1},
    ]
    (tmp_path / "runs.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    (tmp_path / "report.json").write_text(json.dumps({"budget": {"baseline": "d", "recipe": "r"}}))
    s = bench_report(tmp_path)
    assert set(s["variants"]) == {"r"}  # budget rows stay out of the per-run sections
    bt = s["budget"]
    assert bt["variants"]["d"][10]["mrmel"] == pytest.approx(0.6)
    row = bt["per_clip"]["l"]["c1"]
    assert row["default"]["budget"] == 100 and row["default"]["speedup"] == pytest.approx(20.0 / 19.0)
    assert row["recipe"]["budget"] == 10 and row["recipe"]["speedup"] == pytest.approx(20.0)
    assert row["end_delta"] == pytest.approx(-0.02)
    assert "## Budgeted runs" in (tmp_path / "report.md").read_text()

    # `l` re-run on a machine twice as fast: its speed-ups use the references re-timed there (`dc`, `rc`)
    rows += [b("dc", 100, 0.41, 10.0), b("rc", 100, 0.43, 20.0)]
    (tmp_path / "runs.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    clock = {"l": {"default": "dc", "recipe": "rc"}}
    (tmp_path / "report.json").write_text(json.dumps({"budget": {"baseline": "d", "recipe": "r", "clock": clock}}))
    bt = bench_report(tmp_path)["budget"]
    row = bt["per_clip"]["l"]["c1"]
    assert row["default"]["level"] == pytest.approx(0.40) and row["default"]["speedup"] == pytest.approx(10.0 / 19.0)
    assert row["recipe"]["level"] == pytest.approx(0.45) and row["recipe"]["speedup"] == pytest.approx(10.0)
    assert set(bt["per_clip"]) == {"d", "l"}  # the timing runs are references, not rows
