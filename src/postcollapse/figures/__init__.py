"""Figures of the paper, drawn with matplotlib's object API (Agg canvas, never shown).

Each function takes results (sweep rows, decoded samples) and theory
(:class:`TheoryCurves`) and returns a :class:`matplotlib.figure.Figure`; :func:`save_figure`
writes it as PNG and PDF atomically.
"""

from __future__ import annotations

from postcollapse.figures.curves import TheoryCurves, theory_curves, theory_sigma
from postcollapse.figures.locate_plot import locate_figure
from postcollapse.figures.samples import montage, samples_figure
from postcollapse.figures.save import save_figure
from postcollapse.figures.sweep_plot import loss_sigma_figure

__all__ = [
    "TheoryCurves",
    "theory_curves",
    "theory_sigma",
    "loss_sigma_figure",
    "locate_figure",
    "samples_figure",
    "montage",
    "save_figure",
]
