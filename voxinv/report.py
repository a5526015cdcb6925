"""``python -m voxinv.report SWEEP_DIR [SWEEP_DIR …] [--out DIR] [--group-by KEYS]``: see :mod:`voxinv.eval.report.cli`."""

from __future__ import annotations

import sys

from voxinv.eval.report import main

if __name__ == "__main__":
    sys.exit(main())
