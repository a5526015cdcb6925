"""The metric registry (:mod:`voxinv.eval.formats`) is the one place a metric is described: registering one
makes it a column of ``python -m voxinv.eval``'s table and of the sweep report's table and paired
differences (its header, format and direction), and the run guard names its packages."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import pytest
import yaml
from omegaconf import OmegaConf

from voxinv.eval import formats as F
from voxinv.eval import report as R
from voxinv.eval.evaluate import format_table
from voxinv.eval.formats import Metric

# what a contributor writes (one line in formats.METRICS, or register() from a plug-in)
SNR = Metric(
    "snr_test",
    "SNR dB",
    "{:.1f}",
    True,
    "plain signal-to-noise ratio (a test metric)",
    group="signal",
    packages=("voxinv_no_such_package",),
    views={"eval": 15, "report": 15, "paired": 15},
)


@pytest.fixture
def snr():
    F.register(SNR)
    yield SNR
    del F.METRIC[SNR.key]


def _sweep(root: Path) -> Path:
    """Configurations loss=a (SNR 11, 13) and loss=b (SNR 14, 16) on targets t0, t1; SNR only in the
    ``eval`` section (what ``python -m voxinv.eval`` merges), as a new grader's score would be."""
    for loss, base in (("a", 11.0), ("b", 14.0)):
        for seed in (0, 1):
            d = root / f"{loss}{seed}"
            (d / ".hydra").mkdir(parents=True)
            m = {
                "signal": {"si_sdr": 1.0 + seed, "mel": 0.1},
                "final": {"total": 1.0},
                "target": {"name": f"t{seed}"},
                "steps": 10,
                "seed": seed,
                "wall_time_s": 10.0,
                "history": [],
                "eval": {"snr_test": base + 2 * seed, "pesq": 3.0},
            }
            (d / "metrics.json").write_text(json.dumps(m))
            (d / "config.yaml").write_text(yaml.safe_dump({"seed": seed, "loss": loss}))
            (d / ".hydra" / "overrides.yaml").write_text(yaml.safe_dump([f"loss={loss}", f"seed={seed}"]))
    return root


def _report(root: Path, out: Path) -> tuple[str, dict]:
    s = R.build_report(R.find_runs([root]), out, baseline="loss=a", plots=False)
    return (out / "report.md").read_text(), s


def test_register_rejects_a_second_definition(snr):
    with pytest.raises(ValueError, match="registered already"):
        F.register(SNR)
    assert F.register(SNR, replace=True) is SNR


def test_views_are_the_tables_columns():
    """The registry's views are exactly the columns the tables had as their own lists."""
    assert F.columns("eval")[:3] == ("si_sdr", "mrstft", "mel") and F.columns("eval")[-1] == "code_emb_cos"
    assert F.columns("report") == F.REPORT_COLUMNS and F.columns("report")[-1] == "ac_gain_per_s"
    assert F.columns("bench") == tuple(
        "mrmel mrstft spk spk_ge2e spk_dvec wer dnsmos_ovrl env code_sem code_ac si_sdr wall_s".split()
    )
    assert [F.METRIC[k].long for k in ("mrmel", "spk_dvec", "code_ac")] == ["MR log-mel", "spk d-vector", "ac % = enc"]
    assert F.group_packages()["perceptual"] == ["pesq", "pystoi", "speechmos", "onnxruntime"]
    assert F.chance() == {"code_sem_acc": 100 / 8192, "code_ac_acc": 100 / 21}


def test_a_registered_metric_is_an_eval_column(snr):
    results = {"run_a": {"si_sdr": 1.234, "mrstft": 2.0, "snr_test": 12.345}}
    del F.METRIC[SNR.key]
    assert "SNR" not in format_table(results)  # unregistered: no column
    F.register(SNR)
    head, row = format_table(results).splitlines()
    assert head.split() == ["SI-SDR", "dB", "SNR", "dB", "MRSTFT"]  # position 15: after SI-SDR (10)
    assert row.split() == ["run_a", "1.23", "12.3", "2.000"]  # its format


def test_a_registered_metric_is_a_report_column(snr, tmp_path):
    root = _sweep(tmp_path / "sweep")
    del F.METRIC[SNR.key]
    md, s = _report(root, tmp_path / "before")
    assert "SNR" not in md and all("snr_test" not in g["mean"] for g in s["groups"])  # unregistered: not read
    F.register(SNR)
    md, s = _report(root, tmp_path / "after")
    lines = md.splitlines()
    i = next(i for i, ln in enumerate(lines) if ln.startswith("| config"))  # the configurations table
    head, *rows = [[c.strip() for c in ln.split("|")[1:-1]] for ln in lines[i : lines.index("", i)]]
    assert head[2:4] == ["**SI-SDR dB** ↑", "SNR dB ↑"]  # header + direction, position 15: after SI-SDR (10)
    cells = [(r[0], r[3]) for r in rows[1:]]
    assert cells == [  # best first by SI-SDR (a tie: first seen), mean ± std in its format; a signal score: best found
        ("`loss=a`", "12.0 ± 1.4"),
        ("`loss=b`", "15.0 ± 1.4"),
        ("*best in-gamut found (best single run per metric, real targets)*", "16.0"),
    ]
    assert "**SNR dB** plain signal-to-noise ratio" in md  # its doc in the column notes
    (paired,) = s["paired"]
    assert paired["mean"]["snr_test"] == pytest.approx(3.0) and paired["better"]["snr_test"] == 2  # higher better
    assert "+3.0 ± 0.0 (2/2)" in md
    assert all("pesq" not in g["mean"] for g in s["groups"])  # eval scores no sweep view shows stay out


def test_the_guard_names_a_registered_metrics_package(snr, caplog):
    from voxinv.invert.guard import missing_packages

    mel = {"_target_": "voxinv.invert.losses.MultiScaleMel", "fft_sizes": [512], "n_mels": 80, "hop_ratio": 0.25}
    cfg = OmegaConf.create(
        {"loss": {"weights": {"mel": 1.0}, "mel": mel}, "schedule": {}, "eval": {"which": ["signal"]}}
    )
    with caplog.at_level(logging.WARNING, logger="voxinv"):
        missing_packages(cfg)
    assert "voxinv_no_such_package" in caplog.text and "pip install voxinv_no_such_package" in caplog.text
