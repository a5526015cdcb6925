"""``python -m voxinv.run`` as a user meets it (subprocesses): a fast, project-specific ``--help``, one
line for a loss without terms and for a missing sweeper plugin, an Optuna search space of settings the
default run uses, no bar noise in a non-terminal log, a failed run's error in its run.log."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf

from voxinv.run import CONF_DIR, missing_plugin

REPO = Path(__file__).resolve().parents[1]


def voxinv_run(*args: str, cwd: Path, env: dict | None = None) -> subprocess.CompletedProcess:
    e = {**os.environ, "OMP_NUM_THREADS": "1", **(env or {})}
    e["PYTHONPATH"] = os.pathsep.join([str(REPO), e.get("PYTHONPATH", "")])
    return subprocess.run([sys.executable, "-m", "voxinv.run", *args], cwd=cwd, env=e, capture_output=True, text=True)


def test_help_lists_the_groups_without_importing_lightning(tmp_path):
    code = (
        "import sys, atexit; sys.argv = ['voxinv.run', '--help']; "
        "atexit.register(lambda: print('LOADED', [m for m in ('pytorch_lightning', 'torch', 'wandb') if m in sys.modules]));"
        "import voxinv.run as r; r.main()"
    )
    e = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")])}
    r = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, env=e, capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    assert "LOADED []" in r.stdout  # Hydra answered before anything heavy was imported
    lines = {ln.split(":")[0].strip(): ln for ln in r.stdout.splitlines() if ln.startswith("  ") and ":" in ln}
    assert "stft+mel*" in lines["loss"] and "_base_" not in lines["loss"]  # defaults marked, shared parts hidden
    assert {"codes", "init", "logger", "model", "schedule", "target"} <= set(lines)
    assert "many" in lines["logger"]


def test_a_loss_without_terms_is_one_line(tmp_path):
    r = voxinv_run("model=tiny", "target=synthetic", "loss=_base_", f"hydra.run.dir={tmp_path / 'run'}", cwd=tmp_path)
    assert r.returncode == 2 and r.stderr.count("\n") == 1 and "no term with a weight > 0" in r.stderr
    assert not (tmp_path / "run").exists()  # refused before anything is written: no empty run.log, no lock file


def test_an_error_during_the_run_is_in_run_log(tmp_path):
    model = tmp_path / "model"
    model.mkdir()
    r = voxinv_run(
        "model=voxtral", f"model.path={model}", "target=synthetic", f"hydra.run.dir={tmp_path / 'run'}", cwd=tmp_path
    )
    assert r.returncode != 0
    assert "run failed:" in (tmp_path / "run" / "run.log").read_text()  # the console's error, in run.log too


@pytest.mark.skipif(missing_plugin(["hydra/sweeper=optuna"]) is None, reason="the Optuna plugin is installed")
def test_optuna_without_the_plugin_is_one_line_with_the_install_hint(tmp_path):
    r = voxinv_run("-m", "hydra/sweeper=voxinv_optuna", "model=tiny", cwd=tmp_path)
    assert r.returncode == 2 and r.stderr.count("\n") == 1
    assert "pip install hydra-optuna-sweeper" in r.stderr


def test_optuna_search_space_holds_only_settings_the_default_run_uses():
    space = OmegaConf.load(Path(CONF_DIR) / "hydra" / "sweeper" / "voxinv_optuna.yaml").params
    with initialize_config_dir(config_dir=CONF_DIR, version_base="1.3"):
        cfg = compose("config")
    assert cfg.init.kind == "random"
    for key in space:
        assert OmegaConf.select(cfg, key) is not None, key
        assert not key.startswith("init."), f"{key}: init=random ignores it"


def test_non_terminal_log_has_evaluation_lines_not_bar_redraws(tmp_path, voxinv_cache):
    r = voxinv_run(
        "model=tiny", "target=synthetic", "target.n_frames=2", "device=cpu", "steps=2", "eval_every=1", "eval.which=[]",
        f"hydra.run.dir={tmp_path / 'run'}", cwd=tmp_path, env={"VOXINV_CACHE": str(voxinv_cache)},
    )  # fmt: skip
    assert r.returncode == 0, r.stderr
    assert "0/?" not in r.stdout and "\r" not in r.stdout and "invert:" not in r.stdout
    assert [ln.split(" - ")[1].split(":")[0] for ln in r.stdout.splitlines() if " - step " in ln] == [
        "step 0/2",
        "step 1/2",
        "step 2/2",
    ]
