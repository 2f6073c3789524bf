"""Registry of (conditional) linear-VAE problems with known answers.

Every problem builds its (x, y) arrays from an explicit ``np.random.default_rng(seed)``, so
the same arrays come back on every call. The "known answers" are structural facts a correct
theory must reproduce (rank of Cov x, d* = min(rank A, d2), residual zero or not, plain VAE
spectrum = PCA variances); the closed-form minima themselves are checked against direct
optimisation of ``vae_loss`` in the tests.

Usage::

    from problems import PROBLEMS, get_problem
    p = get_problem("plain")
    x, y = p.data()          # y is None for the plain VAE
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

__all__ = [
    "SIGMA_KINDS",
    "sigma_arg",
    "Problem",
    "PROBLEMS",
    "get_problem",
    "betas_between_thresholds",
    "moments_and_spectrum",
    "fixed_sigma2",
    "lbfgs_best",
]


@dataclass(frozen=True)
class Problem:
    """One test case.

    Attributes
    ----------
    name : str
    seed : int
        Seed of the ``np.random.default_rng`` that makes the data.
    make : callable (rng) -> (x, y)
        x (n, d0); y (n, d2) or None for the plain VAE.
    latent_dim : int
        d1 used by the tests.
    eta_enc, eta_dec : float
    rank : int
        Expected numerical rank of Cov(x).
    d_star : int
        Expected min(rank A, d2).
    residual_zero : bool
        Whether y is exactly linear in x (regression residual r == 0).
    """

    name: str
    seed: int
    make: Callable[[np.random.Generator], tuple[np.ndarray, np.ndarray | None]]
    latent_dim: int
    rank: int
    d_star: int
    residual_zero: bool
    eta_enc: float = 1.0
    eta_dec: float = 1.0
    notes: str = ""
    tags: tuple[str, ...] = field(default=())

    def data(self) -> tuple[np.ndarray, np.ndarray | None]:
        return self.make(np.random.default_rng(self.seed))

    @property
    def plain(self) -> bool:
        return self.data()[1] is None


def _gaussian(rng, n, scales, *, mean=None):
    """n samples of x = z diag(scales) R^T + mean with a random rotation R."""
    d = len(scales)
    q, _ = np.linalg.qr(rng.normal(size=(d, d)))
    x = (rng.normal(size=(n, d)) * np.asarray(scales)) @ q.T
    if mean is not None:
        x = x + mean
    return x


def _plain(rng):
    return _gaussian(rng, 300, [2.0, 1.5, 1.0, 0.6, 0.3], mean=np.arange(5.0)), None


def _conditional_d0_gt_d2(rng):
    x = _gaussian(rng, 300, [1.5, 1.2, 1.0, 0.7, 0.5, 0.3], mean=1.0)
    M = rng.normal(size=(3, 6)) / np.sqrt(6)
    return x, x @ M.T + 0.5  # exactly linear: r = 0


def _conditional_d0_lt_d2(rng):
    x = _gaussian(rng, 300, [1.4, 1.0, 0.6])
    M = rng.normal(size=(6, 3))
    return x, x @ M.T - 2.0  # d* = rank A = 3 < d2 = 6


def _nonlinear(rng):
    x = _gaussian(rng, 400, [1.2, 1.0, 0.8, 0.5])
    M = rng.normal(size=(3, 4))
    y = np.tanh(x @ M.T) + 0.3 * x[:, :3] ** 2 + 0.1 * rng.normal(size=(400, 3))
    return x, y


def _constant_column(rng):
    x = _gaussian(rng, 300, [1.5, 1.0, 0.7, 0.4])
    x = np.column_stack([x[:, :2], np.full(300, 3.0), x[:, 2:]])  # column 2 is constant
    return x, None


def _duplicated_column(rng):
    x = _gaussian(rng, 300, [1.5, 1.0, 0.7, 0.4])
    x = np.column_stack([x, x[:, 1]])  # column 4 == column 1
    M = rng.normal(size=(3, 5))
    y = x @ M.T + 0.2 * rng.normal(size=(300, 3))
    return x, y


def _synthetic_paper(rng):
    # The paper's synthetic setting: x ~ N(0, A), y = M x, d0 = d2 = 5.
    x = _gaussian(rng, 500, [2.5, 1.8, 1.2, 0.8, 0.4])
    M = rng.normal(size=(5, 5))
    return x, x @ M.T


PROBLEMS: dict[str, Problem] = {
    p.name: p
    for p in [
        Problem("plain", 0, _plain, latent_dim=3, rank=5, d_star=5, residual_zero=True,
                notes="plain VAE, y = x; zeta^2 are the PCA variances", tags=("plain",)),
        Problem("conditional_d0_gt_d2", 1, _conditional_d0_gt_d2, latent_dim=2, rank=6,
                d_star=3, residual_zero=True, notes="y = M x + b, d0=6 > d2=3"),
        Problem("conditional_d0_lt_d2", 2, _conditional_d0_lt_d2, latent_dim=2, rank=3,
                d_star=3, residual_zero=True, notes="y = M x + b, d0=3 < d2=6"),
        Problem("nonlinear_y", 3, _nonlinear, latent_dim=2, rank=4, d_star=3,
                residual_zero=False, notes="y nonlinear in x plus noise: residual r > 0"),
        Problem("constant_column", 4, _constant_column, latent_dim=3, rank=4, d_star=4,
                residual_zero=True, notes="plain VAE, x has a constant column (rank 4 of 5)",
                tags=("plain", "rank_deficient")),
        Problem("duplicated_column", 5, _duplicated_column, latent_dim=2, rank=4, d_star=3,
                residual_zero=False, notes="x has a duplicated column (rank 4 of 5)",
                tags=("rank_deficient",)),
        Problem("eta_enc", 6, _conditional_d0_gt_d2, latent_dim=2, rank=6, d_star=3,
                residual_zero=True, eta_enc=0.6, notes="prior variance eta_enc^2 = 0.36"),
        Problem("eta_dec", 7, _nonlinear, latent_dim=2, rank=4, d_star=3, residual_zero=False,
                eta_dec=1.7, notes="decoder variance eta_dec^2 = 2.89"),
        Problem("eta_both", 8, _plain, latent_dim=2, rank=5, d_star=5, residual_zero=True,
                eta_enc=1.5, eta_dec=0.7, tags=("plain",)),
        Problem("latent_below_dstar", 9, _synthetic_paper, latent_dim=2, rank=5, d_star=5,
                residual_zero=True, notes="d1 = 2 < d* = 5"),
        Problem("latent_above_dstar", 10, _conditional_d0_gt_d2, latent_dim=5, rank=6,
                d_star=3, residual_zero=True, notes="d1 = 5 > d* = 3: two dims always collapsed"),
    ]
}


def get_problem(name: str) -> Problem:
    return PROBLEMS[name]


def betas_between_thresholds(zeta, eta_dec=1.0, *, k_max=None) -> list[float]:
    """Betas strictly inside each interval of constant active-mode count (geometric midpoints),
    plus one above beta_1* (complete collapse). Away from thresholds, where optimisation of the
    exact loss is well conditioned."""
    t = np.sort(np.asarray(zeta, dtype=float) ** 2 / eta_dec**2)[::-1]
    t = t[t > 0]
    if k_max is not None:
        t = t[: k_max + 1]
    betas = [2.0 * t[0]]
    betas += [float(np.sqrt(t[i] * t[i + 1])) for i in range(len(t) - 1)]
    betas.append(0.5 * t[-1])
    return betas


# ---------------------------------------------------------------------------------------
# Helpers shared by the theory tests


def moments_and_spectrum(problem: Problem):
    """(x, y, Moments, Spectrum) of a problem."""
    from postcollapse.theory import Moments, spectrum

    x, y = problem.data()
    m = Moments.from_arrays(x, y)
    return x, y, m, spectrum(m)


SIGMA_KINDS = ("learnable", "prior", "fixed")


def sigma_arg(kind: str, latent_dim: int):
    """The ``sigma`` argument of optimum/min_loss for a kind in SIGMA_KINDS."""
    return fixed_sigma2(latent_dim) if kind == "fixed" else kind


def fixed_sigma2(latent_dim: int) -> np.ndarray:
    """Unequal fixed encoder variances, deliberately *not* sorted (tests the pairing)."""
    base = np.array([2.0, 0.05, 0.6, 1.3, 0.3, 0.9])
    return np.resize(base, latent_dim).copy()


def lbfgs_best(data, *, latent_dim, beta, sigma, eta_enc=1.0, eta_dec=1.0, seed=0, n_starts=3):
    """Best-of-starts L-BFGS minimum of the exact L_VAE (learnable sigma: over log sigma^2).

    Returns (best loss, best flat vector, FlatVAELoss).
    """
    from scipy.optimize import minimize

    from postcollapse.theory import FlatVAELoss

    f = FlatVAELoss.build(
        data, latent_dim=latent_dim, beta=beta, sigma=sigma, eta_enc=eta_enc, eta_dec=eta_dec
    )
    rng = np.random.default_rng(seed)
    best, best_x = np.inf, None
    for _ in range(n_starts):
        res = minimize(
            f, f.init(rng), jac=True, method="L-BFGS-B",
            options={"maxiter": 20000, "maxfun": 40000, "gtol": 1e-12, "ftol": 1e-15,
                     "maxcor": 30},
        )
        if res.fun < best:
            best, best_x = float(res.fun), res.x
    return best, best_x, f
