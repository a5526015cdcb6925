"""``python -m voxinv`` = the ``voxinv`` command."""

from voxinv.cli import main

raise SystemExit(main())
