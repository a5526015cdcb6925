"""Figures legible at a glance (150 dpi, ≥ 9-pt text, dB colour bars), shared by the sweep report
(:mod:`voxinv.eval.report.plots`) and the run's W&B media (:mod:`voxinv.invert.callbacks`).

Built with matplotlib's object API (``Figure``), never pyplot's global state, so library code leaves the
backend to the caller (a notebook's inline backend, ``MPLBACKEND``, …). matplotlib and PIL are imported
when a figure is made: importing this module costs nothing.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np

from voxinv import rundir

DPI = 150
FONT = 10  # pt; ticks and legends one smaller, never below 9
STYLE = {
    "font.size": FONT,
    "axes.titlesize": FONT,
    "axes.labelsize": FONT,
    "xtick.labelsize": FONT - 1,
    "ytick.labelsize": FONT - 1,
    "legend.fontsize": FONT - 1,
    "figure.titlesize": FONT + 1,
}
SPEC_FLOOR_DB = 80  # spectrogram colour range below the loudest bin
DIFF_DB = 20  # difference plots clip at ± this


def figure(**kw):
    """A constrained-layout ``Figure`` in :data:`STYLE`."""
    import matplotlib
    from matplotlib.figure import Figure

    with matplotlib.rc_context(STYLE):
        return Figure(layout="constrained", **kw)


def save_png(fig, path: str | Path, dpi: int = DPI) -> Path:
    """Save ``fig`` as a 256-colour palette PNG (a few times smaller than RGBA; reports are committed)."""
    import io

    from PIL import Image

    buf = io.BytesIO()
    fig.savefig(buf, dpi=dpi, format="png")
    buf.seek(0)
    img = Image.open(buf).convert("RGB").quantize(256)
    return rundir.atomic_write(path, lambda tmp: img.save(tmp, format="PNG", optimize=True, dpi=(dpi, dpi)))


def spectrogram_grid(rows: Sequence[tuple[str, np.ndarray, np.ndarray | None]], sr: int, hop: int, title: str = ""):
    """The spectrogram figure: one row per ``(name, dB spectrogram [freq, frames], difference to the
    reference in dB or None)``; left the spectrograms on one dB colour scale (:data:`SPEC_FLOOR_DB` below
    the loudest bin), right the differences (± :data:`DIFF_DB`, clipped). The first row's length and
    ``hop`` set the time axis. The spectrograms are computed by the caller."""
    import matplotlib

    vmax = max(float(s.max()) for _, s, _ in rows)
    ext = (0, rows[0][1].shape[1] * hop / sr, 0, sr / 2000)
    fig = figure(figsize=(11, 1.0 + 1.7 * len(rows)))
    with matplotlib.rc_context(STYLE):
        axes = fig.subplots(len(rows), 2, sharex=True, squeeze=False)
        im = imd = None
        for (name, spec, diff), (ax, axd) in zip(rows, axes):
            im = ax.imshow(
                spec,
                origin="lower",
                aspect="auto",
                vmin=vmax - SPEC_FLOOR_DB,
                vmax=vmax,
                extent=ext,
                interpolation="nearest",
            )
            ax.set_title(name, loc="left", fontsize=9)
            ax.set_ylabel("kHz")
            if diff is None:
                axd.axis("off")
                axd.text(0.0, 0.5, f"right: reconstruction − target, dB\n(white = equal, ±{DIFF_DB} dB clipped)")
                continue
            imd = axd.imshow(
                diff,
                origin="lower",
                aspect="auto",
                cmap="RdBu_r",
                vmin=-DIFF_DB,
                vmax=DIFF_DB,
                extent=ext,
                interpolation="nearest",
            )
        axes[-1, 0].set_xlabel("s")
        axes[-1, 1].set_xlabel("s")
        fig.colorbar(im, ax=axes[:, 0].tolist(), aspect=30, pad=0.01).set_label("level, dB")
        if imd is not None:
            fig.colorbar(imd, ax=axes[:, 1].tolist(), aspect=30, pad=0.01).set_label("reconstruction − target, dB")
        if title:
            fig.suptitle(title)
    return fig
