"""Beta grids: log-spaced around the predicted thresholds (sweeps), and one beta per number
of surviving modes (the prior-samples figure)."""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

from postcollapse._checks import check_int_at_least

__all__ = ["beta_grid", "sample_betas"]


def beta_grid(
    thresholds,
    *,
    n: int,
    lo: float = 0.1,
    hi: float = 2.0,
    bracket: Sequence[float] = (0.93, 1.07),
    bracket_modes: int = 1,
) -> np.ndarray:
    """Log-spaced betas around the thresholds, refined next to the first few of them.

    Parameters
    ----------
    thresholds : array_like (d1,)
        beta_i*, descending (zeros, i.e. modes beyond the rank, are ignored).
    n : int
        Number of log-spaced points from ``lo * min beta_i*`` to ``hi * beta_1*``.
    bracket : sequence of float
        Factors f: the points f * beta_i* are added for i <= ``bracket_modes``.

    Returns
    -------
    ndarray (m,), increasing, unique.
    """
    t = np.asarray(thresholds, dtype=float).reshape(-1)
    t = np.sort(t[t > 0])[::-1]
    if t.size == 0:
        raise ValueError("thresholds are all zero: the data carry no signal to collapse")
    pts = [np.geomspace(lo * t[-1], hi * t[0], check_int_at_least("n", n, 2))]
    pts += [np.asarray(bracket, dtype=float) * ti for ti in t[:bracket_modes]]
    return np.unique(np.round(np.concatenate(pts), 12))


def sample_betas(thresholds, *, latent_dim: int) -> list[tuple[int, float]]:
    """Betas at which theory keeps k = latent_dim, ..., 1, 0 modes (Figure 3).

    Inside the interval [beta_{k+1}*, beta_k*) the geometric midpoint; below the smallest
    latent threshold 0.5 * beta_{d1}*; above the largest 1.5 * beta_1*.

    Returns
    -------
    list of (k, beta), k descending.
    """
    t = np.asarray(thresholds, dtype=float).reshape(-1)[:latent_dim]
    out = []
    for k in range(latent_dim, -1, -1):
        if k == latent_dim:
            beta = 0.5 * t[k - 1]
        elif k == 0:
            beta = 1.5 * t[0]
        else:
            beta = math.sqrt(t[k] * t[k - 1])
        if beta > 0:
            out.append((k, float(beta)))
    return out
