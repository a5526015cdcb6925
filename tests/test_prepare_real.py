"""``make data`` (experiments/benchmarks/prepare_real.py) makes every clip of its recipe or fails loudly."""

from __future__ import annotations

import importlib.util
import shutil
from pathlib import Path

import pytest
import yaml

SCRIPT = Path(__file__).resolve().parents[1] / "experiments" / "benchmarks" / "prepare_real.py"
TEXT = "he was not an ill disposed young man."


@pytest.mark.skipif(shutil.which("espeak-ng") is None, reason="espeak-ng not installed")
def test_a_clip_that_cannot_be_made_fails_the_run(tmp_path, monkeypatch, capsys):
    spec = importlib.util.spec_from_file_location("prepare_real", SCRIPT)
    pr = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(pr)
    recipe = yaml.safe_load((SCRIPT.parent / "real.yaml").read_text())
    recipe.update(clips=[], packages={}, synthetic=[
        {"id": "a", "speaker": "s/flite", "program": "flite", "voice": "slt", "text": TEXT},
        {"id": "b", "speaker": "s/espeak", "program": "espeak-ng", "voice": "en-us", "text": TEXT},
    ])  # fmt: skip
    (tmp_path / "r.yaml").write_text(yaml.safe_dump(recipe))
    which = shutil.which
    monkeypatch.setattr(pr.shutil, "which", lambda p: None if p == "flite" else which(p))  # flite "absent"
    args = ["--recipe", str(tmp_path / "r.yaml"), "--out", str(tmp_path / "out"), "--no-install"]
    assert pr.main(args) == 1
    err = capsys.readouterr().err
    assert "made 1 of the recipe's 2 clips" in err and err.count("\n") == 1
    assert pr.main([*args, "--allow-missing"]) == 0  # the rest is still written
    assert (tmp_path / "out" / "b.wav").is_file() and not (tmp_path / "out" / "a.wav").exists()
