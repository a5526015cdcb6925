"""Where voxinv's shipped files are: one home for every entry point (``voxinv.run``, the encoder trainer),
the experiments and the tests."""

from __future__ import annotations

from pathlib import Path

CONF_DIR = str(Path(__file__).resolve().parent / "conf")  # shipped inside the package (wheel and editable alike)
