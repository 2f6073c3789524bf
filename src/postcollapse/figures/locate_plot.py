"""Observed against predicted critical beta per mode (the output of ``locate``)."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

import numpy as np

__all__ = ["locate_figure"]

_MODEL_COLOURS = ("tab:blue", "tab:orange", "tab:green", "tab:red", "tab:purple",
                  "tab:brown", "tab:pink", "tab:olive")
_MARKERS = ("o", "s", "^", "D", "v", "P", "X", "*")


def _field(m, name):
    return m[name] if isinstance(m, Mapping) else getattr(m, name)


def locate_figure(results: Mapping[str, Sequence], *, title: str = "",
                  active_threshold: float | None = None):
    """Log-log plot of the observed critical beta of each mode against the predicted one,
    and below it the relative error in percent.

    Parameters
    ----------
    results : mapping label -> sequence of ModeThreshold (or dicts with mode, predicted,
        observed, lower, upper, monotone)
        One colour per label (a model, a width, ...); the error bars span the seeds'
        brackets (lower .. upper); an open marker flags a mode whose count was not
        monotone in beta; modes without an observation are left out.
    title : str
    active_threshold : float, optional
        The active-unit rule of a linear model among ``results``: a dotted line marks
        -100 * active_threshold %, where that rule flips at the linear optimum.

    Returns
    -------
    matplotlib.figure.Figure
        Not shown; save it with :func:`postcollapse.figures.save_figure`.
    """
    from matplotlib.figure import Figure

    fig = Figure(figsize=(5.4, 6.4), layout="constrained")
    ax, ax_rel = fig.subplots(2, 1, height_ratios=(3, 1.4), sharex=True)
    lo, hi = math.inf, 0.0
    for k, (label, modes) in enumerate(results.items()):
        colour, marker = _MODEL_COLOURS[k % len(_MODEL_COLOURS)], _MARKERS[k % len(_MARKERS)]
        pts = [m for m in modes
               if np.isfinite(_field(m, "observed")) and _field(m, "predicted") > 0]
        if not pts:
            continue
        p = np.array([_field(m, "predicted") for m in pts], dtype=float)
        o = np.array([_field(m, "observed") for m in pts], dtype=float)
        err = np.array([[o_ - _field(m, "lower"), _field(m, "upper") - o_]
                        for m, o_ in zip(pts, o, strict=True)]).T
        # Offset the labels' points slightly in x so that coincident modes stay readable.
        shift = 1.0 + 0.012 * (k - (len(results) - 1) / 2)
        mono = np.array([bool(_field(m, "monotone")) for m in pts])
        ax.errorbar(p[mono] * shift, o[mono], yerr=err[:, mono], fmt=marker, color=colour,
                    ms=5, capsize=3, lw=1.0, label=label)
        if (~mono).any():
            ax.errorbar(p[~mono] * shift, o[~mono], yerr=err[:, ~mono], fmt=marker,
                        mfc="white", color=colour, ms=5, capsize=3, lw=1.0,
                        label=f"{label} (count not monotone)")
        rel = 100 * (o / p - 1)
        rel_err = 100 * err / p
        ax_rel.errorbar(p * shift, rel, yerr=rel_err, fmt=marker, color=colour, ms=4,
                        capsize=2, lw=0.8)
        lo = min(lo, p.min(), (o - err[0]).min())
        hi = max(hi, p.max(), (o + err[1]).max())
    if hi > 0:
        span = np.array([lo / 1.5, hi * 1.5])
        ax.plot(span, span, color="0.4", ls="--", lw=1.0, zorder=0,
                label=r"theory: observed $=\beta_i^*$")
        ax.set_xlim(*span)
        ax.set_ylim(*span)
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax_rel.axhline(0.0, color="0.4", ls="--", lw=1.0, zorder=0)
    # At the linear optimum Var_x(mu_i) = eta_enc^2 (1 - beta / beta_i*), so the active-unit
    # rule (Var > t) flips at beta_i* (1 - t) for eta_enc = 1.
    if active_threshold is not None:
        ax_rel.axhline(-100 * active_threshold, color="0.4", ls=":", lw=1.0, zorder=0,
                       label=f"where Var(mu) = {active_threshold:g} at the linear optimum")
        ax_rel.legend(fontsize=7, loc="best")
    ax_rel.margins(y=0.25)  # room for the legend without hiding a point at the extremes
    ax_rel.set_xlabel(r"predicted $\beta_i^* = \zeta_i^2/\eta_{dec}^2$")
    ax_rel.set_ylabel("observed / predicted - 1 (%)")
    ax_rel.grid(True, which="both", alpha=0.25)
    ax.set_ylabel(r"observed critical $\beta$ (median over seeds)")
    ax.grid(True, which="both", alpha=0.25)
    ax.legend(fontsize=8, loc="upper left")
    if title:
        ax.set_title(title, fontsize=10)
    return fig
