"""Collapse metrics from encoder outputs (mu, logvar), streamed over batches.

Works on torch tensors (CPU or CUDA) or numpy arrays, for any Gaussian encoder
q(z|x) = N(mu(x), diag(exp(logvar(x)))) and prior p(z) = N(0, eta_enc^2 I): nothing here
depends on postcollapse's own models.

Metrics (per latent dimension i, over the data seen):

- ``kl[i]``: E_x KL(q(z_i|x) || N(0, eta_enc^2)) =
  E_x 1/2 (sigma_i^2/eta_enc^2 + mu_i^2/eta_enc^2 - 1 - log(sigma_i^2/eta_enc^2)).
- ``mu_var[i]``: Cov_x(mu_i) with the population normalisation 1/N; ``active[i]`` is
  ``mu_var[i] > threshold`` (active units, Burda et al. 2016, threshold 0.01).
- ``frac_below[i]``: the fraction of inputs with KL_i(x) < epsilon; ``collapsed[i]`` is
  ``frac_below[i] >= 1 - delta``; ``collapse_rate`` is the fraction of dimensions that are
  (epsilon, delta)-collapsed (Lucas et al. 2019).
- ``sigma_mean[i]``, ``sigma_std[i]``: mean and (population) std over x of
  sigma_i(x) = exp(logvar_i(x) / 2).
- ``mi[i]``: an estimate of I(x; z_i); see :func:`mutual_information`.

Streaming: means and variances merge batch by batch (Chan et al.'s parallel form of
Welford's update, float64), the collapse counts are per-dimension integer counters, and the
mutual information uses a bounded uniform reservoir subsample of the (mu, logvar) rows
(Vitter's algorithm R), so memory does not grow with the data.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch

from postcollapse._checks import ACTIVE_VAR_THRESHOLD, check_int_at_least, check_positive

__all__ = [
    "CollapseMonitor",
    "CollapseSummary",
    "collapse_metrics",
    "kl_per_dim",
    "mutual_information",
]

_GH_NODES = 24


def _as_tensor(name: str, a) -> torch.Tensor:
    if isinstance(a, torch.Tensor):
        t = a.detach()
    else:
        try:
            arr = np.asarray(a)
            if not arr.flags.writeable:  # torch warns on read-only buffers
                arr = arr.copy()
            t = torch.as_tensor(arr)
        except (TypeError, ValueError) as exc:
            raise TypeError(f"{name} must be a torch tensor or numeric array ({exc})") from None
    if not (t.is_floating_point() or t.dtype in (torch.int32, torch.int64)):
        raise TypeError(f"{name} must hold real numbers, got dtype {t.dtype}")
    return t.to(torch.float64)


def _check_pair(mu, logvar) -> tuple[torch.Tensor, torch.Tensor, bool]:
    """float64 tensors (m, n, d) and whether the input had no model axis."""
    mu = _as_tensor("mu", mu)
    logvar = _as_tensor("logvar", logvar)
    if mu.shape != logvar.shape:
        raise ValueError(
            f"mu and logvar must have the same shape, got {tuple(mu.shape)} and "
            f"{tuple(logvar.shape)}"
        )
    if mu.ndim not in (2, 3):
        raise ValueError(
            "mu and logvar must be (n_samples, latent_dim) or (n_models, n_samples, "
            f"latent_dim), got shape {tuple(mu.shape)}"
        )
    if mu.shape[-1] == 0 or mu.shape[-2] == 0:
        raise ValueError(f"mu and logvar are empty (shape {tuple(mu.shape)})")
    for name, t in (("mu", mu), ("logvar", logvar)):
        bad = ~torch.isfinite(t)
        if bool(bad.any()):
            first = tuple(int(i) for i in torch.nonzero(bad)[0])
            raise ValueError(
                f"{name} holds {int(bad.sum())} non-finite value(s) (NaN or inf); the first "
                f"is at index {first}"
            )
    single = mu.ndim == 2
    if single:
        mu, logvar = mu[None], logvar[None]
    return mu, logvar, single


def kl_per_dim(mu, logvar, *, eta_enc: float = 1.0):
    """KL(N(mu, exp(logvar)) || N(0, eta_enc^2)) elementwise.

    Parameters
    ----------
    mu, logvar : tensor or array, same shape (..., latent_dim)
    eta_enc : float > 0
        Prior std.

    Returns
    -------
    Same type and shape as ``mu`` (float64 for arrays; the input dtype for tensors).
    """
    eta = check_positive("eta_enc", eta_enc)
    if isinstance(mu, torch.Tensor):
        lv = logvar - 2.0 * math.log(eta)
        return 0.5 * (torch.exp(lv) + mu * mu / (eta * eta) - 1.0 - lv)
    mu = np.asarray(mu, dtype=np.float64)
    lv = np.asarray(logvar, dtype=np.float64) - 2.0 * math.log(eta)
    return 0.5 * (np.exp(lv) + mu * mu / (eta * eta) - 1.0 - lv)


def _gauss_hermite(n: int) -> tuple[np.ndarray, np.ndarray]:
    """Nodes and weights for E[f(t)], t ~ N(0, 1)."""
    t, w = np.polynomial.hermite_e.hermegauss(n)
    return t, w / w.sum()


def mutual_information(mu, logvar, *, chunk_size: int | None = None) -> np.ndarray:
    """Aggregate-posterior estimate of I(x; z_i) for each latent dimension, in nats.

    Estimator. With q(z_i) the aggregate posterior, I(x; z_i) = E_x KL(q(z_i|x) || q(z_i)).
    On M rows (mu_m, sigma_m) -- the whole set, or a uniform subsample of it -- q(z_i) is
    replaced by the mixture q_M(z) = 1/M sum_m N(z; mu_m, sigma_m^2) of the same M
    posteriors, and

        I_M = 1/M sum_n E_{z ~ N(mu_n, sigma_n^2)} [ log N(z; mu_n, sigma_n^2) - log q_M(z) ].

    The inner expectation is one-dimensional and is computed by Gauss-Hermite quadrature
    (24 nodes, deterministic) rather than by Monte Carlo draws.

    Bias. Each term is KL(q(z_i|x_n) || q_M) >= 0, and because q_M contains q(z_i|x_n)
    with weight 1/M, each term is at most log M: the estimate saturates at log M and is
    biased *down* when the true information approaches log M (well-separated, narrow
    posteriors -- strongly active dimensions). It is consistent as M grows. For collapsed
    dimensions (all posteriors ~ prior) it is ~0, which is what a collapse diagnostic needs.
    Using the sample mixture instead of the true q(z_i) also adds an O(1/M) bias of either
    sign. Compare dimensions with each other, not with log M.

    Parameters
    ----------
    mu, logvar : array or tensor, shape (M, latent_dim) or (n_models, M, latent_dim)
    chunk_size : int, optional
        Rows per block of the M x M computation; by default blocks of about 4 million
        float64 values (memory ~ chunk_size * M * latent_dim * 24 * 8 bytes).

    Returns
    -------
    ndarray, shape (latent_dim,) or (n_models, latent_dim)
    """
    mu_t, lv_t, single = _check_pair(mu, logvar)
    if chunk_size is not None:
        chunk_size = check_int_at_least("chunk_size", chunk_size, 1)
    out = _mi_tensor(mu_t, lv_t, chunk_size=chunk_size).cpu().numpy()
    return out[0] if single else out


def _mi_tensor(mu: torch.Tensor, lv: torch.Tensor, *, chunk_size: int | None = None):
    """mu, lv: float64 (m, M, d) -> (m, d)."""
    m, n, d = mu.shape
    if chunk_size is None:
        chunk_size = max(1, (1 << 22) // (m * d * _GH_NODES * n))
    nodes, weights = _gauss_hermite(_GH_NODES)
    t = torch.as_tensor(nodes, dtype=mu.dtype, device=mu.device)
    w = torch.as_tensor(weights, dtype=mu.dtype, device=mu.device)
    # (m, d, M) layout: the mixture runs over the last axis
    mu_c = mu.transpose(1, 2)
    lv_c = lv.transpose(1, 2)
    inv_var = torch.exp(-lv_c)
    half_log_2pi = 0.5 * math.log(2.0 * math.pi)
    log_norm = -0.5 * lv_c - half_log_2pi  # log-density constant of each component
    total = torch.zeros(m, d, dtype=mu.dtype, device=mu.device)
    sd = torch.exp(0.5 * lv_c)
    for start in range(0, n, chunk_size):
        sl = slice(start, min(start + chunk_size, n))
        # z: (m, d, c, q) -- quadrature points of the posteriors in this chunk
        z = mu_c[:, :, sl, None] + sd[:, :, sl, None] * t
        # log q(z | x_n) at its own nodes: -t^2/2 + const
        log_own = log_norm[:, :, sl, None] - 0.5 * t * t
        # log q_M(z): logsumexp over all M components -> (m, d, c, q)
        diff = z[..., None] - mu_c[:, :, None, None, :]  # (m, d, c, q, M)
        comp = log_norm[:, :, None, None, :] - 0.5 * diff * diff * inv_var[:, :, None, None, :]
        log_mix = torch.logsumexp(comp, dim=-1) - math.log(n)
        total += ((log_own - log_mix) * w).sum(dim=(-1, -2))
    return total / n


@dataclass(frozen=True)
class CollapseSummary:
    """Immutable result of :meth:`CollapseMonitor.summary` / :func:`collapse_metrics`.

    Per-dimension arrays have shape (latent_dim,), or (n_models, latent_dim) when the
    monitor was fed (n_models, n, latent_dim) tensors; totals are then (n_models,) arrays.
    All arrays are float64 (bool for masks), read-only numpy.

    Attributes
    ----------
    n_samples : int
    kl : ndarray           per-dimension mean KL to the prior N(0, eta_enc^2), nats
    kl_total : float       sum of ``kl`` over dimensions
    mu_mean, mu_var : ndarray   mean and population variance of mu_i over the data
    active : ndarray bool  ``mu_var > threshold``
    active_units : int     number of active dimensions
    frac_below : ndarray   fraction of inputs with KL_i(x) < epsilon
    collapsed : ndarray bool    ``frac_below >= 1 - delta``
    collapse_rate : float  fraction of (epsilon, delta)-collapsed dimensions
    sigma_mean, sigma_std : ndarray  mean and population std of sigma_i(x) over the data
    mi : ndarray or None   aggregate-posterior estimate of I(x; z_i) (nats) on a reservoir
                           of ``mi_samples`` rows; None when disabled
    mi_total : float or None    sum of ``mi`` over dimensions (not I(x; z) itself)
    mi_samples : int       rows the MI estimate used
    threshold, epsilon, delta, eta_enc : float   the settings used
    """

    n_samples: int
    kl: np.ndarray
    kl_total: float | np.ndarray
    mu_mean: np.ndarray
    mu_var: np.ndarray
    active: np.ndarray
    active_units: int | np.ndarray
    frac_below: np.ndarray
    collapsed: np.ndarray
    collapse_rate: float | np.ndarray
    sigma_mean: np.ndarray
    sigma_std: np.ndarray
    mi: np.ndarray | None
    mi_total: float | np.ndarray | None
    mi_samples: int
    threshold: float
    epsilon: float
    delta: float
    eta_enc: float

    @property
    def latent_dim(self) -> int:
        return int(self.kl.shape[-1])

    def to_dict(self) -> dict:
        """JSON-ready dictionary (lists for arrays)."""

        def conv(v):
            if isinstance(v, np.ndarray):
                return v.tolist()
            if isinstance(v, np.generic):
                return v.item()
            return v

        keys = (
            "n_samples", "latent_dim", "kl_total", "active_units", "collapse_rate", "mi_total",
            "kl", "mu_mean", "mu_var", "active", "frac_below", "collapsed", "sigma_mean",
            "sigma_std", "mi", "mi_samples", "threshold", "epsilon", "delta", "eta_enc",
        )
        return {k: conv(getattr(self, k)) for k in keys}


class _Welford:
    """Running mean and sum of squared deviations, merged batch by batch (Chan et al.)."""

    def __init__(self):
        self.n = 0
        self.mean = None
        self.m2 = None

    def update(self, x: torch.Tensor) -> None:
        """x: (m, b, d) float64."""
        b = x.shape[1]
        bmean = x.mean(dim=1)
        bm2 = ((x - bmean[:, None]) ** 2).sum(dim=1)
        if self.n == 0:
            self.mean, self.m2, self.n = bmean, bm2, b
            return
        n_new = self.n + b
        delta = bmean - self.mean
        self.mean = self.mean + delta * (b / n_new)
        self.m2 = self.m2 + bm2 + delta * delta * (self.n * b / n_new)
        self.n = n_new

    def var(self) -> torch.Tensor:
        return self.m2 / self.n


class CollapseMonitor:
    """Accumulate collapse metrics over batches inside any PyTorch training loop.

    >>> monitor = CollapseMonitor(latent_dim=8)        # doctest: +SKIP
    >>> for x in loader:                               # doctest: +SKIP
    ...     mu, logvar = encoder(x)
    ...     monitor.update(mu, logvar)                 # detached; no graph is kept
    >>> s = monitor.summary(); s.active_units, s.kl    # doctest: +SKIP

    Call :meth:`reset` at the start of each evaluation pass (or epoch). The metrics of a
    pass made *during* training mix encoders from different steps; for a clean reading run
    one pass over the data after training (or an epoch) under ``torch.no_grad()``.

    Parameters
    ----------
    latent_dim : int, optional
        Expected latent dimension; checked on every update when given.
    threshold : float > 0
        Active-unit threshold on Cov_x(mu_i); the default 0.01 (Burda et al. 2016) is the
        rule the sweeps, the reproduction and the CLI use too.
    epsilon : float > 0
        KL level (nats) under which a dimension counts as collapsed for an input.
    delta : float in [0, 1)
        A dimension is (epsilon, delta)-collapsed when KL_i(x) < epsilon on at least a
        1 - delta fraction of inputs (Lucas et al. 2019).
    eta_enc : float > 0
        Prior std: p(z) = N(0, eta_enc^2 I).
    mi_samples : int >= 0
        Reservoir size for the mutual-information estimate (0 disables it). The estimate
        costs O(mi_samples^2 * latent_dim) at :meth:`summary`.
    seed : int or numpy Generator
        Randomness of the reservoir subsample.

    Notes
    -----
    Inputs may be (n, latent_dim) or (n_models, n, latent_dim) (a batch of models, as the
    K-batched models of postcollapse produce); the accumulators live in float64 on the
    device of the first update; the reservoir lives on the CPU.
    """

    def __init__(
        self,
        latent_dim: int | None = None,
        *,
        threshold: float = ACTIVE_VAR_THRESHOLD,
        epsilon: float = 0.01,
        delta: float = 0.01,
        eta_enc: float = 1.0,
        mi_samples: int = 500,
        seed: int | np.random.Generator = 0,
    ):
        if latent_dim is not None:
            latent_dim = check_int_at_least("latent_dim", latent_dim, 1)
        self.latent_dim = latent_dim
        self.threshold = check_positive("threshold", threshold)
        self.epsilon = check_positive("epsilon", epsilon)
        if isinstance(delta, bool) or not isinstance(delta, int | float | np.floating):
            raise TypeError(f"delta must be a number, got {type(delta).__name__}")
        if not 0.0 <= float(delta) < 1.0:
            raise ValueError(f"delta must be in [0, 1), got {delta:g}")
        self.delta = float(delta)
        self.eta_enc = check_positive("eta_enc", eta_enc)
        self.mi_samples = check_int_at_least("mi_samples", mi_samples, 0)
        self._seed = seed
        self.reset()

    # ------------------------------------------------------------------ state
    def reset(self) -> None:
        """Forget everything seen so far (settings and the random stream restart)."""
        self._rng = (
            self._seed if isinstance(self._seed, np.random.Generator)
            else np.random.default_rng(self._seed)
        )
        self._shape: tuple[int, int] | None = None  # (n_models, latent_dim)
        self._single = True
        self._mu = _Welford()
        self._sigma = _Welford()
        self._kl_sum = None
        self._below = None
        self._n = 0
        self._res_mu = None
        self._res_lv = None
        self._res_fill = 0

    @property
    def n_samples(self) -> int:
        return self._n

    # ----------------------------------------------------------------- update
    @torch.no_grad()
    def update(self, mu, logvar) -> None:
        """Add a batch of encoder outputs.

        Parameters
        ----------
        mu, logvar : tensor or array, shape (batch, latent_dim) or
            (n_models, batch, latent_dim)
            Posterior means and log-variances; CPU or CUDA; detached internally.
        """
        mu, lv, single = _check_pair(mu, logvar)
        m, b, d = mu.shape
        if self.latent_dim is not None and d != self.latent_dim:
            raise ValueError(
                f"mu has latent dimension {d}, but the monitor was built with "
                f"latent_dim={self.latent_dim}"
            )
        if self._shape is None:
            self._shape = (m, d)
            self._single = single
        elif self._shape != (m, d) or self._single != single:
            raise ValueError(
                f"batch shape {tuple(mu.shape)} disagrees with earlier batches "
                f"(n_models, latent_dim) = {self._shape}; call reset() to start over"
            )
        dev = self._mu.mean.device if self._mu.mean is not None else mu.device
        mu, lv = mu.to(dev), lv.to(dev)

        kl = kl_per_dim(mu, lv, eta_enc=self.eta_enc)  # (m, b, d)
        below = (kl < self.epsilon).sum(dim=1)
        if self._kl_sum is None:
            self._kl_sum = kl.sum(dim=1)
            self._below = below
        else:
            self._kl_sum += kl.sum(dim=1)
            self._below += below
        self._mu.update(mu)
        self._sigma.update(torch.exp(0.5 * lv))
        self._reservoir_add(mu, lv)
        self._n += b

    def _reservoir_add(self, mu: torch.Tensor, lv: torch.Tensor) -> None:
        cap = self.mi_samples
        if cap == 0:
            return
        m, b, d = mu.shape
        if self._res_mu is None:
            self._res_mu = torch.zeros(m, cap, d, dtype=torch.float64)
            self._res_lv = torch.zeros(m, cap, d, dtype=torch.float64)
        # algorithm R: item number t (0-based, global) goes to slot j ~ U{0..t} if j < cap
        t = self._n + np.arange(b)
        slots = np.where(t < cap, t, self._rng.integers(0, t + 1))
        keep = slots < cap
        if not keep.any():
            return
        pos = np.nonzero(keep)[0]
        sl = slots[pos]
        # the later item wins when two items of this batch draw the same slot
        _, last = np.unique(sl[::-1], return_index=True)
        pos = pos[::-1][last]
        sl = slots[pos]
        idx = torch.as_tensor(pos, device=mu.device)
        self._res_mu[:, torch.as_tensor(sl)] = mu[:, idx].cpu()
        self._res_lv[:, torch.as_tensor(sl)] = lv[:, idx].cpu()
        self._res_fill = min(cap, self._n + b)

    # ---------------------------------------------------------------- summary
    @torch.no_grad()
    def summary(self) -> CollapseSummary:
        """Metrics over everything seen since the last :meth:`reset`."""
        if self._n == 0:
            raise ValueError("the monitor has seen no data: call update(mu, logvar) first")
        n = self._n

        def arr(t):
            a = t.detach().cpu().numpy().astype(np.float64)
            return a

        kl = arr(self._kl_sum / n)
        mu_mean = arr(self._mu.mean)
        mu_var = arr(self._mu.var())
        sigma_mean = arr(self._sigma.mean)
        sigma_std = np.sqrt(np.maximum(arr(self._sigma.var()), 0.0))
        frac_below = arr(self._below.to(torch.float64) / n)
        active = mu_var > self.threshold
        collapsed = frac_below >= 1.0 - self.delta
        mi = None
        mi_used = 0
        if self.mi_samples > 0 and self._res_fill >= 2:
            mi_used = self._res_fill
            mi = arr(_mi_tensor(self._res_mu[:, :mi_used], self._res_lv[:, :mi_used]))
        fields = dict(
            kl=kl, mu_mean=mu_mean, mu_var=mu_var, active=active, frac_below=frac_below,
            collapsed=collapsed, sigma_mean=sigma_mean, sigma_std=sigma_std, mi=mi,
        )
        totals = dict(
            kl_total=kl.sum(axis=-1),
            active_units=active.sum(axis=-1),
            collapse_rate=collapsed.mean(axis=-1),
            mi_total=None if mi is None else mi.sum(axis=-1),
        )
        if self._single:
            fields = {k: (None if v is None else v[0]) for k, v in fields.items()}
            totals = {k: (None if v is None else v[0]) for k, v in totals.items()}
            totals["kl_total"] = float(totals["kl_total"])
            totals["active_units"] = int(totals["active_units"])
            totals["collapse_rate"] = float(totals["collapse_rate"])
            if totals["mi_total"] is not None:
                totals["mi_total"] = float(totals["mi_total"])
        for v in (*fields.values(), *totals.values()):
            if isinstance(v, np.ndarray):
                v.setflags(write=False)
        return CollapseSummary(
            n_samples=n, mi_samples=mi_used, threshold=self.threshold, epsilon=self.epsilon,
            delta=self.delta, eta_enc=self.eta_enc, **fields, **totals,
        )


def collapse_metrics(
    mu,
    logvar,
    *,
    threshold: float = ACTIVE_VAR_THRESHOLD,
    epsilon: float = 0.01,
    delta: float = 0.01,
    eta_enc: float = 1.0,
    mi_samples: int = 500,
    seed: int | np.random.Generator = 0,
    batch_size: int = 4096,
) -> CollapseSummary:
    """All collapse metrics of encoder outputs over a whole data set, in one call.

    Parameters
    ----------
    mu, logvar : tensor or array, shape (n_samples, latent_dim) or
        (n_models, n_samples, latent_dim)
    threshold, epsilon, delta, eta_enc, mi_samples, seed
        As in :class:`CollapseMonitor`. With ``mi_samples >= n_samples`` the MI estimate
        uses every row (no subsampling).
    batch_size : int
        Rows per internal update (bounds the memory of the KL computation).

    Returns
    -------
    CollapseSummary
    """
    mu_t, lv_t, single = _check_pair(mu, logvar)
    batch_size = check_int_at_least("batch_size", batch_size, 1)
    mon = CollapseMonitor(
        threshold=threshold, epsilon=epsilon, delta=delta, eta_enc=eta_enc,
        mi_samples=mi_samples, seed=seed,
    )
    for start in range(0, mu_t.shape[1], batch_size):
        sl = slice(start, start + batch_size)
        if single:
            mon.update(mu_t[0, sl], lv_t[0, sl])
        else:
            mon.update(mu_t[:, sl], lv_t[:, sl])
    return mon.summary()
