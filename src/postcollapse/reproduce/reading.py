"""Reading results: sweep rows to arrays, observed collapse by :data:`COLLAPSE_RULE`, and the
gaps between trained models and the closed-form optimum.

How "observed collapse" is read from a sweep: a latent dimension counts as active when the
variance over the training set of its posterior mean exceeds ``ACTIVE_VAR_THRESHOLD``
(Burda et al., 2016: the sweep's ``active_units``). The observed number of active modes at
a beta is the median over seeds. The observed complete-collapse beta is the smallest grid
beta from which on every grid point (every seed) has 0 active units; the bracket below it
is the largest grid beta that still has an active unit. No interpolation.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

import numpy as np

from postcollapse._checks import ACTIVE_VAR_THRESHOLD
from postcollapse.reproduce.prose import prose
from postcollapse.train.results import parse_flag

__all__ = [
    "COLLAPSE_RULE",
    "COLLAPSE_TOL",
    "LINEAR_LOSS_TOL",
    "LINEAR_SIGMA_TOL",
    "CollapseReading",
    "TheoryGaps",
    "row_ok",
    "rows_to_arrays",
    "read_collapse",
    "theory_gaps",
]

COLLAPSE_RULE = prose("collapse_rule").format(threshold=ACTIVE_VAR_THRESHOLD)

# What the report calls agreement: relative error of the complete-collapse beta per data
# set (other data sets: 0.25), and the linear model's largest loss and sigma gaps.
COLLAPSE_TOL = {"synthetic": 0.15, "mnist": 0.25}
LINEAR_LOSS_TOL = 1e-3
LINEAR_SIGMA_TOL = 0.02


def row_ok(r: Mapping) -> bool:
    """True when a sweep row has a finite loss and did not diverge."""
    try:
        loss = float(r["loss"])
    except (TypeError, ValueError):
        return False
    return bool(np.isfinite(loss)) and not parse_flag(r.get("diverged", False))


def rows_to_arrays(rows: Iterable[Mapping], *, latent_dim: int) -> dict[str, np.ndarray]:
    """Stack sweep rows into arrays, one entry per row, sorted by (beta, seed).

    Returns
    -------
    dict with ``beta`` (m,), ``seed`` (m,), ``loss`` (m,), ``active_units`` (m,) and
    ``sigma`` (m, latent_dim): column i is the (i+1)-th *smallest* mean sigma of the row, so
    that it pairs with mode i+1 of the theory (the strongest mode has the smallest sigma*).
    Rows that diverged (``diverged`` true or non-finite loss) are dropped.
    """
    kept = [r for r in rows if row_ok(r)]
    kept.sort(key=lambda r: (float(r["beta"]), int(r.get("seed", 0))))
    sig = np.array(
        [[float(r[f"sigma_{i + 1}"]) for i in range(latent_dim)] for r in kept], dtype=float
    ).reshape(len(kept), latent_dim)
    return {
        "beta": np.array([float(r["beta"]) for r in kept], dtype=float),
        "seed": np.array([int(r.get("seed", 0)) for r in kept], dtype=int),
        "loss": np.array([float(r["loss"]) for r in kept], dtype=float),
        "active_units": np.array([int(float(r["active_units"])) for r in kept], dtype=int),
        "sigma": np.sort(sig, axis=1),
    }


@dataclass(frozen=True)
class CollapseReading:
    """Predicted vs observed collapse of one sweep (see :data:`COLLAPSE_RULE`).

    ``observed`` is None when the largest grid beta still has an active unit; then
    ``lower`` is that beta and the observed onset is beyond the grid.
    """

    predicted: float
    observed: float | None
    lower: float | None
    rel_error: float | None
    betas: list[float]
    predicted_active: list[int]
    observed_active: list[float]  # median over seeds
    observed_active_min: list[int]
    observed_active_max: list[int]

    @property
    def n_active_agree(self) -> int:
        """Grid betas at which the observed median equals the predicted active modes."""
        return int(sum(kp == ko for kp, ko in zip(self.predicted_active, self.observed_active,
                                                   strict=True)))


def read_collapse(rows: Iterable[Mapping], thresholds, *, latent_dim: int) -> CollapseReading:
    """Read the observed collapse from sweep rows by :data:`COLLAPSE_RULE`.

    Parameters
    ----------
    rows : iterable of dict
        Sweep rows with at least ``beta`` and ``active_units``.
    thresholds : array_like
        beta_i* descending; only the first ``latent_dim`` count.
    """
    t = np.asarray(thresholds, dtype=float).reshape(-1)[:latent_dim]
    rows = [r for r in rows if row_ok(r)]
    if not rows:
        raise ValueError("no finite sweep rows to read collapse from (every run diverged?)")
    betas = sorted({float(r["beta"]) for r in rows})
    act = {b: [int(float(r["active_units"])) for r in rows if float(r["beta"]) == b]
           for b in betas}
    observed = None
    lower = None
    for b in reversed(betas):
        if max(act[b]) > 0:
            lower = b
            break
        observed = b
    predicted = float(t[0])
    rel = None if observed is None else (observed - predicted) / predicted
    return CollapseReading(
        predicted=predicted,
        observed=observed,
        lower=lower,
        rel_error=rel,
        betas=betas,
        predicted_active=[int(np.sum(t > b)) for b in betas],
        observed_active=[float(np.median(act[b])) for b in betas],
        observed_active_min=[min(act[b]) for b in betas],
        observed_active_max=[max(act[b]) for b in betas],
    )


@dataclass(frozen=True)
class TheoryGaps:
    """Largest relative gaps between trained rows and the closed-form optimum.

    ``loss`` = max |L - L*| / |L*|; ``loss_signed`` the gap of largest magnitude with its
    sign (negative: the trained model beat the linear optimum); ``sigma`` =
    max_i |sigma_(i) - sigma_i*| / sigma_i* (trained sigmas sorted ascending, paired with
    modes 1..d1); ``loss_beta`` / ``sigma_beta`` the betas at which they occur. All NaN when
    there is no finite row.
    """

    loss: float
    loss_signed: float
    loss_beta: float
    sigma: float
    sigma_beta: float


def theory_gaps(rows: Iterable[Mapping], spec, *, latent_dim: int) -> TheoryGaps:
    """The :class:`TheoryGaps` of sweep rows against the linear model's optimum.

    Parameters
    ----------
    rows : iterable of dict
        Sweep rows with ``beta``, ``loss`` and ``sigma_1..sigma_{latent_dim}``.
    spec : postcollapse.theory.Spectrum
        Spectrum of the training data.
    """
    from postcollapse.figures import theory_sigma
    from postcollapse.theory import min_loss

    a = rows_to_arrays(rows, latent_dim=latent_dim)
    if a["beta"].size == 0:
        return TheoryGaps(loss=math.nan, loss_signed=math.nan, loss_beta=math.nan,
                          sigma=math.nan, sigma_beta=math.nan)
    lstar = np.asarray(min_loss(spec, a["beta"], latent_dim=latent_dim, sigma="learnable"))
    rel = (a["loss"] - lstar) / np.abs(lstar)
    j = int(np.argmax(np.abs(rel)))
    sstar = theory_sigma(spec.zeta_padded(latent_dim), a["beta"])
    srel = np.abs(a["sigma"] - sstar) / sstar
    k = np.unravel_index(int(np.argmax(srel)), srel.shape)
    return TheoryGaps(
        loss=float(abs(rel[j])),
        loss_signed=float(rel[j]),
        loss_beta=float(a["beta"][j]),
        sigma=float(srel[k]),
        sigma_beta=float(a["beta"][k[0]]),
    )
