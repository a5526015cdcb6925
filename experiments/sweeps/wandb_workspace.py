"""The ablation dashboard as code (wandb-workspaces): one W&B workspace view for the voxinv project.

    python experiments/sweeps/wandb_workspace.py --wandb [--entity ENTITY] [--project voxinv]

Sections: every evaluation on the trainer/global_step axis, the final (exported) metrics per run
one bar per run, training scalars, media (spectrograms, audio) and the per-run comparison table.
Saved only with ``--wandb`` and a W&B login; without them it says so in one line and exits 0 (runs
logged offline: ``wandb sync <run dir>/wandb/offline-run-*`` first). Needs ``pip install wandb-workspaces``.
"""

from __future__ import annotations

import argparse
import sys

# what voxinv logs (voxinv.invert.callbacks.EvalLogger, voxinv.invert.final.log_final)
STEP = "trainer/global_step"
EVAL = ["eval/si_sdr", "eval/objective", "eval/mel", "eval/code_sem_acc", "eval/code_ac_acc"]
FINAL = ["final/si_sdr", "final/mel", "final/loss_total", "final/code_sem_acc", "final/code_ac_acc"]
TRAIN = ["loss", "train/lr", "train/temperature"]
MEDIA = ["media/spectrogram", "media/reconstruction", "media/target"]
TABLE = "runs/comparison"


def workspace(entity: str, project: str, name: str = "voxinv ablations"):
    """The workspace definition (no network: building it is offline; ``.save()`` is not)."""
    import wandb_workspaces.reports.v2 as wr
    import wandb_workspaces.workspaces as ws

    return ws.Workspace(
        entity=entity,
        project=project,
        name=name,
        sections=[
            ws.Section(
                name="Evaluations (each at its own step)",
                panels=[wr.LinePlot(title=m, x=STEP, y=[m]) for m in EVAL],
                is_open=True,
            ),
            ws.Section(
                name="Final: the exported codes, one bar per run",
                panels=[wr.BarPlot(title=m, metrics=[m]) for m in FINAL],
                is_open=True,
            ),
            ws.Section(name="Training", panels=[wr.LinePlot(title=m, x=STEP, y=[m]) for m in TRAIN]),
            ws.Section(name="Media", panels=[wr.MediaBrowser(title="media", media_keys=MEDIA, gallery_axis="step")]),
            ws.Section(name="Runs side by side", panels=[wr.WeavePanelSummaryTable(table_name=TABLE)], is_open=True),
        ],
    )


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--wandb", action="store_true", help="build and save the workspace (needs a W&B login)")
    ap.add_argument("--entity", help="W&B entity (default: your default entity)")
    ap.add_argument("--project", default="voxinv")
    args = ap.parse_args(argv)
    if not args.wandb:
        print("wandb workspace: skipped (pass --wandb to build and save it)")
        return 0
    import wandb

    if not wandb.login(prompt=False, verify=False):
        print("wandb workspace: skipped, not logged in to W&B (`wandb login`, or set WANDB_API_KEY)")
        return 0
    try:
        import wandb_workspaces  # noqa: F401
    except ImportError:
        print("voxinv: error: wandb-workspaces is not installed: pip install wandb-workspaces", file=sys.stderr)
        return 2
    entity = args.entity or wandb.Api().default_entity
    view = workspace(entity, args.project).save()
    print(f"wandb workspace: saved {view.url}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
