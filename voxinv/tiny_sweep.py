"""Tiny in-process sweeps shaped like a Hydra multirun: for the analysis notebook, demos and tests.

It sits above :mod:`voxinv.run` (it runs inversions), so the report (:mod:`voxinv.eval.report`)
only reads run directories and never imports the runner.

Not Hydra's multirun (``python -m voxinv.run -m``, used for every real sweep): its basic sweeper runs
the cross product of comma lists, and these calls take a list of configurations that is not one
(e.g. ``[["codes=gumbel"], ["codes=softmax_ste", "loss=mel"]]``); from a notebook it would also parse
the kernel's ``sys.argv`` and reconfigure its logging. Configs are still composed by Hydra (``compose``).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from voxinv import rundir


def run_tiny_sweep(
    out: str | Path, configs: Sequence[Sequence[str]], seeds: Sequence[int] = (0,), common: Sequence[str] = ()
) -> Path:
    """Run ``configs`` × ``seeds`` through :func:`voxinv.run.run` into ``out/<i>`` shaped like a Hydra
    multirun (``.hydra/overrides.yaml`` per run); keep them tiny (each runs in this process)."""
    import yaml
    from hydra import compose, initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra

    from voxinv.run import CONF_DIR, run

    out = Path(out)
    i = 0
    for cfg_ov in configs:
        for seed in seeds:
            ov = [*cfg_ov, f"seed={seed}", *common]
            GlobalHydra.instance().clear()
            with initialize_config_dir(config_dir=CONF_DIR, version_base="1.3"):
                cfg = compose(config_name="config", overrides=ov)
            d = out / str(i)
            rundir.atomic_write(d / rundir.OVERRIDES, yaml.safe_dump(ov))
            run(cfg, d)
            i += 1
    GlobalHydra.instance().clear()
    return out
