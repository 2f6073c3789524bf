"""Beyond the one-level VAE: the two-level VAE's thresholds of both levels and the free-bits
regimes, theory against trained linear models (one row of panels per data set).

Left panel: active latents of level 1 and level 2 against beta1 (beta2 and sigma1 fixed),
the closed form (``theory.hierarchical_optimum``) as step lines on a dense grid and the
trained models as markers. Right panel: under free bits, the modes that receive signal
(snr_i > threshold; theory ``freebits_optimum`` and trained ``diagnostics.mode_signal``)
and the latents whose KL sits at lambda, against beta; the theory's regime is written
at each beta.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

__all__ = ["ExtensionPanel", "extensions_figure"]


@dataclass(frozen=True)
class ExtensionPanel:
    """The data of one row of panels (one data set).

    ``h_*``: two-level sweep over beta1 (``h_betas`` trained, ``h_dense`` theory grid);
    ``fb_*``: free-bits sweep over beta.
    """

    data: str
    beta2: float
    sigma1: float
    latent_dim: int
    latent_dim2: int
    h_dense: np.ndarray
    h_dense_level1: np.ndarray
    h_dense_level2: np.ndarray
    h_betas: np.ndarray
    h_level1: np.ndarray
    h_level2: np.ndarray
    free_bits: float
    fb_betas: np.ndarray
    fb_theory_signal: np.ndarray
    fb_signal: np.ndarray
    fb_pinned: np.ndarray
    fb_regime: Sequence[str]


def extensions_figure(panels: Sequence[ExtensionPanel], *, title: str = ""):
    """One row of two panels per data set (module docstring); returns a Figure."""
    from matplotlib.figure import Figure
    from matplotlib.ticker import MaxNLocator, NullFormatter

    fig = Figure(figsize=(12.0, 3.9 * len(panels) + 0.4), layout="constrained")
    axes = fig.subplots(len(panels), 2, squeeze=False)
    for (ax_h, ax_f), p in zip(axes, panels, strict=True):
        ax_h.step(p.h_dense, p.h_dense_level1, where="post", color="tab:blue", lw=1.6,
                  label="theory, level 1")
        ax_h.step(p.h_dense, p.h_dense_level2, where="post", color="tab:orange", lw=1.6,
                  ls="--", label="theory, level 2")
        ax_h.plot(p.h_betas, p.h_level1, "o", ms=8, mfc="none", color="tab:blue",
                  label="trained, level 1")
        ax_h.plot(p.h_betas, p.h_level2, "s", ms=5, color="tab:orange",
                  label="trained, level 2")
        ax_h.set_xscale("log")
        ax_h.set_xlabel(r"$\beta_1$")
        ax_h.set_ylabel("active latents")
        ax_h.set_ylim(-0.3, max(p.latent_dim, p.latent_dim2) + 0.5)
        ax_h.set_title(f"{p.data}: two levels, $\\beta_2$ = {p.beta2:.3g}, "
                       f"$\\sigma_1$ = {p.sigma1:.3g}, $d_1$ = {p.latent_dim}, "
                       f"$d_2$ = {p.latent_dim2}", fontsize=10)
        ax_h.legend(fontsize=8, loc="best")

        ax_f.plot(p.fb_betas, p.fb_theory_signal, "-", color="tab:green", lw=1.6,
                  drawstyle="steps-mid", label="theory: modes with signal")
        ax_f.plot(p.fb_betas, p.fb_signal, "o", ms=8, mfc="none", color="tab:green",
                  label="trained: modes with signal")
        ax_f.plot(p.fb_betas, p.fb_pinned, "x", ms=7, color="tab:red",
                  label=r"trained: latents at KL = $\lambda$")
        ax_f.set_xscale("log")
        ax_f.set_xlabel(r"$\beta$")
        ax_f.set_ylabel("count")
        top = p.latent_dim + 0.5
        ax_f.set_ylim(-0.3, top + 0.9)
        for b, r in zip(p.fb_betas, p.fb_regime, strict=True):
            ax_f.annotate(r.replace(" ", "\n"), xy=(b, top + 0.1), ha="center", va="bottom",
                          fontsize=7, color="0.3")
        ax_f.set_title(f"{p.data}: free bits, $\\lambda$ = {p.free_bits:g} nats, "
                       f"$d_1$ = {p.latent_dim}", fontsize=10)
        ax_f.legend(fontsize=8, loc="lower right")
        for ax in (ax_h, ax_f):
            ax.xaxis.set_minor_formatter(NullFormatter())
            ax.yaxis.set_major_locator(MaxNLocator(integer=True))
    if title:
        fig.suptitle(title)
    return fig
