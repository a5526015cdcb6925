"""Sweep report: run discovery, grouping, mean ± std aggregation, markdown, plots, CLI (hand-made runs)."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

from voxinv.audio import write_wav
from voxinv.eval import report as R

SR = 24000


def md_table(md: str) -> tuple[list[str], list[dict[str, str]]]:
    """The first pipe table in ``md`` → (headers, one {header: cell} per row), cells stripped."""
    lines = [ln.strip() for ln in md.splitlines() if ln.strip().startswith("|")]
    split = [[c.strip() for c in ln.strip("|").split("|")] for ln in lines]
    head, body = split[0], [r for r in split[1:] if not set("".join(r)) <= set(":-")]
    return head, [dict(zip(head, r)) for r in body]


def make_run(
    d: Path,
    *,
    overrides: list[str] | None,
    si_sdr: float,
    seed: int,
    loss: str = "stft",
    mel: float = 0.1,
    ac: float | None = 50.0,
    wall: float = 10.0,
    init: str = "random",
    init_s: float | None = None,
    step0_si_sdr: float = -30.0,
    source: str | None = None,
    wav: bool = False,
) -> Path:
    """A finished-run directory with the files the report reads."""
    d.mkdir(parents=True)
    hist = [
        {"step": 0, "wall_s": 0.0, "objective": 2.0, "si_sdr": step0_si_sdr, "mel": 0.5},
        {"step": 10, "wall_s": wall / 2, "objective": 1.0, "si_sdr": si_sdr, "mel": mel},
    ]
    m: dict = {
        "signal": {"si_sdr": si_sdr, "mrstft": 2 * mel, "mel": mel, "l1": 0.01},
        "final": {"total": 1.0},
        "target": {"name": f"synthetic-2f-s{seed}", "frames": 2},
        "init": {"kind": init} | ({"seconds": init_s} if init_s is not None else {}),
        "steps": 10,
        "seed": seed,
        "wall_time_s": wall,
        "history": hist,
    }
    if ac is not None:
        m["truth"] = {"code_sem_acc": 100.0, "code_ac_acc": ac, "code_frame_acc": 0.0}
        for h in hist:
            h.update(code_sem_acc=100.0, code_ac_acc=ac)
    (d / "metrics.json").write_text(json.dumps(m))
    cfg = {"seed": seed, "steps": 10, "loss": {"name": loss, "weights": {loss: 1.0}}, "init": {"kind": init}}
    if source:
        cfg["init"]["source"] = source
    (d / "config.yaml").write_text(yaml.safe_dump(cfg))
    if overrides is not None:
        (d / ".hydra").mkdir()
        (d / ".hydra" / "overrides.yaml").write_text(yaml.safe_dump(overrides))
    if wav:
        g = torch.Generator().manual_seed(seed)
        write_wav(d / "target.wav", 0.1 * torch.randn(3840, generator=g), SR)
        write_wav(d / "reconstruction.wav", 0.1 * torch.randn(3840, generator=g), SR)
    return d


@pytest.fixture
def sweep(tmp_path: Path) -> Path:
    """loss=stft: seeds 0,1,2 with SI-SDR 1, 2, 4; loss=mel: seeds 0,1 with SI-SDR 10, 12."""
    root = tmp_path / "sweep"
    for i, (loss, seed, s) in enumerate(
        [("stft", 0, 1.0), ("stft", 1, 2.0), ("stft", 2, 4.0), ("mel", 0, 10.0), ("mel", 1, 12.0)]
    ):
        make_run(
            root / str(i),
            overrides=[f"loss={loss}", f"seed={seed}", "steps=10"],
            si_sdr=s,
            seed=seed,
            loss=loss,
            mel=0.1 if loss == "stft" else 0.05,
            ac=40.0 + 10 * seed,
            wall=10.0,
            wav=True,
        )
    (root / "multirun.yaml").write_text("{}\n")
    return root


def test_find_runs_skips_checkpoints_and_bad_json(sweep: Path, capsys) -> None:
    (sweep / "0" / "checkpoints").mkdir()
    (sweep / "0" / "checkpoints" / "metrics.json").write_text("{}")
    (sweep / "broken").mkdir()
    (sweep / "broken" / "metrics.json").write_text("{not json")
    runs = R.find_runs([sweep])
    assert sorted(r.path.name for r in runs) == ["0", "1", "2", "3", "4"]
    assert "broken" in capsys.readouterr().err
    assert len(R.find_runs([sweep / "3"])) == 1  # a run dir itself
    with pytest.raises(R.ReportError, match="no such directory"):
        R.find_runs([sweep / "nope"])


def test_grouping_by_overrides_minus_seed(sweep: Path) -> None:
    groups, common = R.group_runs(R.find_runs([sweep]))
    assert list(groups) == ["loss=stft", "loss=mel"]
    assert [len(v) for v in groups.values()] == [3, 2]
    assert common == ["steps=10"]


def test_grouping_by_config_keys_and_config_diff_fallback(sweep: Path, tmp_path: Path) -> None:
    groups, _ = R.group_runs(R.find_runs([sweep]), group_by=["loss.name"])
    assert sorted(groups) == ["loss.name=mel", "loss.name=stft"]
    # no .hydra/overrides.yaml: the differing resolved-config leaves name the groups (seed ignored)
    bare = tmp_path / "bare"
    make_run(bare / "a", overrides=None, si_sdr=1.0, seed=0, loss="l1")
    make_run(bare / "b", overrides=None, si_sdr=2.0, seed=1, loss="l1")
    make_run(bare / "c", overrides=None, si_sdr=3.0, seed=0, loss="mel")
    groups, _ = R.group_runs(R.find_runs([bare]))
    assert sorted(groups) == ["loss.name=l1 loss.weights.l1=1.0", "loss.name=mel loss.weights.mel=1.0"]
    assert sorted(len(v) for v in groups.values()) == [1, 2]


def test_aggregate_mean_std_exact(sweep: Path) -> None:
    runs = R.find_runs([sweep])
    groups, _ = R.group_runs(runs)
    stats = {s.label: s for s in R.aggregate(groups)}
    st = stats["loss=stft"]
    assert st.n == 3
    assert st.mean["si_sdr"] == pytest.approx(7 / 3, abs=1e-12)
    assert st.std["si_sdr"] == pytest.approx(np.std([1.0, 2.0, 4.0], ddof=1), abs=1e-12)
    assert st.std["si_sdr"] == pytest.approx(math.sqrt(7 / 3), abs=1e-12)
    assert st.mean["code_ac_acc"] == pytest.approx(50.0) and st.std["code_ac_acc"] == pytest.approx(10.0)
    m = stats["loss=mel"]
    assert (m.mean["si_sdr"], m.std["si_sdr"]) == (pytest.approx(11.0), pytest.approx(math.sqrt(2)))
    assert m.mean["wall_s"] == 10.0 and m.std["wall_s"] == 0.0
    # Δac%/s over chance 100/21, per compute second
    assert st.mean["ac_gain_per_s"] == pytest.approx((50.0 - 100 / 21) / 10.0)
    assert R.mean_std([3.0]) == (3.0, 0.0)


def test_gain_per_second_uses_random_reference_and_warm_start_source(tmp_path: Path) -> None:
    root = tmp_path / "s"
    src = make_run(root / "src", overrides=["init=random", "seed=0"], si_sdr=-5.0, seed=0, wall=4.0, step0_si_sdr=-30.0)
    make_run(
        root / "warm",
        overrides=["init=warm_start", "seed=0"],
        si_sdr=20.0,
        seed=0,
        wall=6.0,
        init="warm_start",
        step0_si_sdr=-5.0,
        source=str(src),
    )
    runs = {r.path.name: r for r in R.find_runs([root])}
    assert runs["warm"].source_s == 4.0
    ref = R.random_reference(runs.values())
    assert ref == {"synthetic-2f-s0": -30.0}  # only the random-init run's step 0 counts
    v = R.run_values(runs["warm"], ref)
    assert v["compute_s"] == 10.0
    assert v["si_sdr_gain_per_s"] == pytest.approx((20.0 + 30.0) / 10.0)
    assert "si_sdr_gain_per_s" not in R.run_values(runs["warm"], {})  # unknown reference: no column


def test_markdown_sorted_with_ceiling(sweep: Path) -> None:
    groups, _ = R.group_runs(R.find_runs([sweep]))
    stats = R.aggregate(groups)
    md = R.markdown_table(stats, "si_sdr", ceilings=R.ceiling_rows([r for g in groups.values() for r in g]))
    head, rows = md_table(md)
    assert head[:4] == ["config", "n", "**SI-SDR dB** ↑", "mel ↓"]  # sort column bold, arrows say better
    assert [r["config"] for r in rows[:2]] == ["`loss=mel`", "`loss=stft`"]  # best SI-SDR first
    assert (rows[0]["n"], rows[0]["**SI-SDR dB** ↑"]) == ("2", "11.00 ± 1.41")
    assert (rows[1]["n"], rows[1]["**SI-SDR dB** ↑"]) == ("3", "2.33 ± 1.53")
    assert rows[2]["config"].startswith("*ceiling: the true codes' own decode") and rows[2]["**SI-SDR dB** ↑"] == "∞"
    # ascending metrics sort ascending
    _, by_mel = md_table(R.markdown_table(stats, "mel"))
    assert by_mel[0]["config"] == "`loss=mel`"
    assert R.sort_stats(stats, "wall_s")[0].n in (2, 3)
    assert R.winners(stats)["si_sdr"] == ("loss=mel", pytest.approx(11.0))


def test_paired_differences_match_targets(sweep: Path) -> None:
    groups, _ = R.group_runs(R.find_runs([sweep]))
    (row,) = R.paired_differences(groups, "loss=stft")
    # mel runs exist for seeds 0, 1 only: pairs (10 − 1, 12 − 2)
    assert row["label"] == "loss=mel" and row["n"] == 2
    assert row["mean"]["si_sdr"] == pytest.approx(9.5) and row["std"]["si_sdr"] == pytest.approx(math.sqrt(0.5))
    assert row["better"]["si_sdr"] == 2 and row["better"]["mel"] == 2  # mel 0.05 < 0.1: lower is better
    _, (cells,) = md_table(R.paired_table([row], "loss=stft"))
    assert cells["config − `loss=stft`"] == "`loss=mel`" and cells["pairs"] == "2"
    assert cells["Δ SI-SDR dB"] == "+9.50 ± 0.71 (2/2)"
    with pytest.raises(R.ReportError, match="not a configuration"):
        R.paired_differences(groups, "loss=nope")


def test_real_target_ceiling_is_best_found(tmp_path: Path) -> None:
    root = tmp_path / "real"
    make_run(root / "a", overrides=["seed=0"], si_sdr=3.0, seed=0, ac=None, mel=0.2)
    make_run(root / "b", overrides=["seed=1"], si_sdr=5.0, seed=1, ac=None, mel=0.3)
    rows = R.ceiling_rows(R.find_runs([root]))
    assert len(rows) == 1 and rows[0]["label"].startswith("best in-gamut found")
    assert rows[0]["values"]["si_sdr"] == 5.0 and rows[0]["values"]["mel"] == 0.2


def test_write_report_files_and_cli(sweep: Path, tmp_path: Path, capsys) -> None:
    out = tmp_path / "rep"
    summary = R.write_report([sweep], out, title="t")
    for name in ("report.md", "summary.json", "curves.png", "code_acc.png", "spectrograms.png"):
        assert (out / name).is_file() and (out / name).stat().st_size > 0, name
    assert (out / "curves.png").read_bytes()[:4] == b"\x89PNG"
    md = (out / "report.md").read_text()
    assert "![SI-SDR and mel vs step](curves.png)" in md and "Per-run values" in md
    assert summary["groups"][0]["label"] == "loss=mel" and summary["groups"][0]["n"] == 2
    assert json.loads((out / "summary.json").read_text())["winners"]["si_sdr"]["label"] == "loss=mel"

    out2 = tmp_path / "rep2"
    assert R.main([str(sweep), "--out", str(out2), "--sort", "mel", "--no-plots", "--baseline", "loss=stft"]) == 0
    assert "Paired against `loss=stft`" in (out2 / "report.md").read_text()
    assert (out2 / "report.md").is_file() and not (out2 / "curves.png").exists()
    _, rows = md_table(capsys.readouterr().out)
    assert (rows[0]["config"], rows[0]["n"]) == ("`loss=mel`", "2")  # --sort mel: lower mel first

    empty = tmp_path / "empty"
    empty.mkdir()
    assert R.main([str(empty)]) == 2
    assert "no runs" in capsys.readouterr().err
    assert R.main([str(sweep), "--sort", "bogus", "--out", str(tmp_path / "x")]) == 2


def test_figures_are_legible(sweep: Path, tmp_path: Path) -> None:
    """≥ 9-pt text everywhere, chance lines on code accuracy, dB colour bars, 150 dpi PNGs."""
    from matplotlib.text import Text
    from PIL import Image

    stats = R.aggregate(R.group_runs(R.find_runs([sweep]))[0])
    curves, code, spec = (
        R.curves_figure(stats),
        R.curves_figure(stats, R.CODE_CURVE_METRICS),
        R.spectrogram_figure(stats),
    )
    for fig in (curves, code, spec):
        fig.draw_without_rendering()  # creates the tick labels
        sizes = [t.get_fontsize() for t in fig.findobj(Text) if t.get_text().strip() and t.get_visible()]
        assert sizes and min(sizes) >= 9
    for ax, chance in zip(code.axes, (100 / 8192, 100 / 21)):  # semantic, acoustic
        (line,) = [ln for ln in ax.get_lines() if ln.get_label().startswith("chance")]
        assert line.get_ydata()[0] == pytest.approx(chance)
    assert not [ln for ax in curves.axes for ln in ax.get_lines() if ln.get_label().startswith("chance")]
    labels = {ax.get_ylabel() for ax in spec.axes}
    assert {"level, dB", "reconstruction − target, dB"} <= labels
    png = R.plot_curves(stats, tmp_path / "c.png")
    with Image.open(png) as im:
        assert im.info["dpi"] == pytest.approx((R.DPI, R.DPI), abs=0.5) and R.DPI >= 150
        assert im.width >= 1500  # two panels at 5.5 in each


def test_wandb_offline_is_skipped_with_a_message(sweep: Path, tmp_path: Path, capsys, monkeypatch) -> None:
    monkeypatch.setenv("WANDB_MODE", "offline")
    with pytest.raises(R.WandbUnavailable):
        R.wandb_runs("voxinv")
    assert R.main([str(sweep), "--out", str(tmp_path / "w"), "--wandb", "voxinv", "--no-plots"]) == 0
    assert "W&B skipped: WANDB_MODE=offline" in capsys.readouterr().err
    assert R.main(["--wandb", "voxinv"]) == 2  # nothing else to report


def test_incomplete_runs_flagged_bookkeeping_keys_pooled_resumed_wall_time(tmp_path: Path) -> None:
    """An interrupted run is left out and listed, an early-stopped one pooled and flagged; runs that
    differ only in resume=/logger=/device= are one configuration; a resumed run's compute time is the
    total over its segments (the history's clock), not its last segment's."""
    root = tmp_path / "sweep"
    make_run(root / "0", overrides=["loss=stft", "seed=0"], si_sdr=1.0, seed=0)
    make_run(root / "1", overrides=["loss=stft", "seed=1", "resume=true", "logger=wandb"], si_sdr=3.0, seed=1)
    make_run(root / "2", overrides=["loss=stft", "seed=2", "logger=[csv,wandb]", "device=cpu"], si_sdr=5.0, seed=2)
    stopped = make_run(root / "3", overrides=["loss=stft", "seed=3"], si_sdr=7.0, seed=3)
    killed = make_run(root / "4", overrides=["loss=stft", "seed=4"], si_sdr=-50.0, seed=4)
    for d, why in ((stopped, "early_stop"), (killed, "interrupted at step 3; exported the current codes")):
        m = json.loads((d / "metrics.json").read_text())
        (d / "metrics.json").write_text(json.dumps({**m, "stopped": why}))
    resumed = root / "1" / "metrics.json"  # segments: 17.2 s in the history's clock, the last one 6.97 s
    m = json.loads(resumed.read_text())
    m["history"][-1]["wall_s"], m["wall_time_s"] = 17.2, 6.97
    resumed.write_text(json.dumps(m))

    runs = R.find_runs([root])
    assert [r.interrupted for r in runs] == [False, False, False, False, True]
    assert runs[3].incomplete == "early_stop" and runs[0].incomplete is None
    assert runs[1].values()["compute_s"] == pytest.approx(17.2)
    s = R.build_report(runs, tmp_path / "rep", plots=False)
    (group,) = s["groups"]  # one configuration: loss=stft
    assert group["n"] == 4 and group["mean"]["si_sdr"] == pytest.approx(4.0)  # the killed run is not pooled
    assert list(group["incomplete"].values()) == ["early_stop"]
    assert list(s["interrupted"].values()) == ["interrupted at step 3; exported the current codes"]
    md = (tmp_path / "rep" / "report.md").read_text()
    assert "1 of 4 runs stopped before their configured steps" in md and "1 interrupted run(s) left out" in md
