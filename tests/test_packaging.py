"""A built wheel is a working install: it ships the Hydra configs (voxinv/conf) and the version."""

from __future__ import annotations

import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

import voxinv

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> zipfile.ZipFile:
    """``pip wheel . --no-deps`` of a copy of the tree (the build leaves build/ and *.egg-info behind)."""
    src = tmp_path_factory.mktemp("src")
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(REPO / name, src / name)
    shutil.copytree(REPO / "voxinv", src / "voxinv", ignore=shutil.ignore_patterns("__pycache__"))
    out = tmp_path_factory.mktemp("wheel")
    cmd = [sys.executable, "-m", "pip", "wheel", str(src), "--no-deps", "--no-build-isolation", "-q", "-w", str(out)]
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    (whl,) = out.glob("voxinv-*.whl")
    return zipfile.ZipFile(whl)


def test_wheel_ships_every_config(wheel):
    names = set(wheel.namelist())
    assert "voxinv/conf/config.yaml" in names
    conf = REPO / "voxinv" / "conf"
    want = {f"voxinv/conf/{p.relative_to(conf).as_posix()}" for p in conf.rglob("*.yaml")}
    assert want <= names, sorted(want - names)
    assert {"voxinv/cli.py", "voxinv/run.py", "voxinv/invert/loggers.py"} <= names


def test_wheel_version_is_the_package_version(wheel):
    (meta,) = [n for n in wheel.namelist() if n.endswith(".dist-info/METADATA")]
    assert f"Version: {voxinv.__version__}\n" in wheel.read(meta).decode()
    entry = next(n for n in wheel.namelist() if n.endswith("entry_points.txt"))
    assert "voxinv = voxinv.cli:main" in wheel.read(entry).decode()
