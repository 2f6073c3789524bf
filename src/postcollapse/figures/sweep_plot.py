"""Figures 1, 2, 4, 5 of the paper: training loss and mean sigma_i against beta.

Trained points come from a sweep's result rows (read by
:func:`postcollapse.reproduce.reading.rows_to_arrays`); the theory (min L_VAE, sigma_i* of
Prop. 3, the thresholds beta_i*) from :class:`postcollapse.figures.TheoryCurves`.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

import numpy as np

from postcollapse.figures.curves import TheoryCurves
from postcollapse.reproduce.reading import rows_to_arrays

__all__ = ["loss_sigma_figure"]

_MODE_COLOURS = ("tab:blue", "tab:orange", "tab:green", "tab:red", "tab:purple",
                 "tab:brown", "tab:pink", "tab:olive", "tab:cyan", "tab:gray")


def _threshold_lines(ax, thresholds, *, label: bool) -> None:
    lo, hi = ax.get_xlim()
    first = True
    placed: list[tuple[float, int]] = []  # (axes fraction on the log axis, level)
    for i, t in enumerate(thresholds):
        if not (t > 0 and lo <= t <= hi):
            continue
        ax.axvline(t, color="0.45", ls="--", lw=1.0, zorder=1,
                   label=r"theory $\beta_i^*=\zeta_i^2$" if (label and first) else None)
        first = False
        # Labels sit above the axes (clear of the data); nearby thresholds (MNIST's lie
        # within a factor 2) are staggered upwards.
        frac = (np.log(t) - np.log(lo)) / (np.log(hi) - np.log(lo))
        level = 0
        while any(abs(frac - p) < 0.035 and lv == level for p, lv in placed):
            level += 1
        placed.append((frac, level))
        ax.annotate(rf"$\beta_{i + 1}^*$", xy=(t, 1.0), xycoords=("data", "axes fraction"),
                    xytext=(0, 2 + 10 * level), textcoords="offset points", ha="center",
                    va="bottom", fontsize=8, color="0.3", annotation_clip=False)


def loss_sigma_figure(
    rows: Iterable[Mapping],
    curves: TheoryCurves,
    *,
    title: str = "",
    observed_collapse: float | None = None,
    loss_label: str = "theory: min $L_{VAE}$ (linear, learnable $\\Sigma$)",
):
    """Two panels against beta (log scale): training loss, and mean sigma_i per mode.

    Parameters
    ----------
    rows : iterable of dict
        Sweep result rows with keys beta, seed, loss, active_units, sigma_1..sigma_K.
    curves : TheoryCurves
        Dense theory; ``curves.sigma.shape[1]`` is the latent dimension.
    title : str
        Figure title.
    observed_collapse : float, optional
        Observed complete-collapse beta, drawn as a dotted red line.

    Returns
    -------
    matplotlib.figure.Figure (Agg canvas; never shown).
    """
    from matplotlib.figure import Figure

    latent_dim = curves.sigma.shape[1]
    a = rows_to_arrays(rows, latent_dim=latent_dim)
    ubeta = np.unique(a["beta"])
    n_seeds = len(np.unique(a["seed"])) if a["seed"].size else 0

    fig = Figure(figsize=(13.0, 4.6), layout="constrained")
    ax_l, ax_s = fig.subplots(1, 2)
    if title:
        fig.suptitle(title, fontsize=12)

    # -- loss panel
    ax_l.plot(curves.betas, curves.loss, color="k", lw=1.6, label=loss_label, zorder=2)
    if ubeta.size:
        mean_loss = np.array([a["loss"][a["beta"] == b].mean() for b in ubeta])
        if n_seeds > 1:
            ax_l.scatter(a["beta"], a["loss"], s=10, color="tab:blue", alpha=0.35, zorder=3)
        ax_l.plot(ubeta, mean_loss, "o", color="tab:blue", ms=5, zorder=4,
                  label="trained" + (f" (mean of {n_seeds} seeds)" if n_seeds > 1 else ""))
    ax_l.set_xscale("log")
    ax_l.set_xlabel(r"$\beta$")
    ax_l.set_ylabel(r"training loss $L$ (neg. ELBO, no $\log 2\pi$ term)")

    # -- sigma panel: one legend entry per mode (theory line + trained markers, same colour)
    handles, labels = [], []
    for i in range(latent_dim):
        c = _MODE_COLOURS[i % len(_MODE_COLOURS)]
        (line,) = ax_s.plot(curves.betas, curves.sigma[:, i], color=c, lw=1.4, alpha=0.9,
                            zorder=2)
        entry = [line]
        if ubeta.size:
            m = np.array([a["sigma"][a["beta"] == b, i].mean() for b in ubeta])
            (pts,) = ax_s.plot(ubeta, m, "o", color=c, ms=4.5, mfc="none", mew=1.3, zorder=4)
            entry.append(pts)
        handles.append(tuple(entry))
        labels.append(rf"mode {i + 1}: $\sigma_{i + 1}^*$, $\bar\sigma_{{({i + 1})}}$")
    ax_s.set_xscale("log")
    ax_s.set_xlabel(r"$\beta$")
    ax_s.set_ylabel(r"mean encoder std $\bar\sigma_i$ (over the training set)")

    lo = min(curves.betas.min(), ubeta.min() if ubeta.size else np.inf)
    hi = max(curves.betas.max(), ubeta.max() if ubeta.size else -np.inf)
    for ax in (ax_l, ax_s):
        ax.set_xlim(lo / 1.1, hi * 1.1)
        ax.grid(True, which="major", alpha=0.25)
        _threshold_lines(ax, curves.thresholds, label=ax is ax_l)
        if observed_collapse is not None and np.isfinite(observed_collapse):
            ax.axvline(observed_collapse, color="tab:red", ls=":", lw=1.8, zorder=1,
                       label="observed complete collapse" if ax is ax_l else None)
    ax_l.legend(fontsize=8, loc="lower right")
    from matplotlib.legend_handler import HandlerTuple

    ax_s.legend(handles, labels, handler_map={tuple: HandlerTuple(ndivide=None)},
                fontsize=8, loc="center left", bbox_to_anchor=(1.01, 0.5),
                title="line: theory (Prop. 3)\nmarker: trained,\n$i$-th smallest $\\bar\\sigma$",
                title_fontsize=8)
    return fig
