"""Free bits for the linear VAE: exact loss and exact global minimum.

docs/THEORY.md, "Free bits". The KL term of the learnable-Sigma linear VAE is replaced by
Kingma et al.'s (2016) free-bits form with groups of size one, the KL averaged over the
data (not per minibatch):

    L_FB = 1/(2 eta_dec^2) E||U(W^T x + b_e + eps) + b_d - y||^2 + beta sum_j max(lam, KL_j)
    KL_j = 1/2 [ (E mu_j^2 + sigma_j^2)/eta_enc^2 - 1 - log(sigma_j^2/eta_enc^2) ]

(no log 2 pi constant; mu = W^T x + b_e). The minimum reduces exactly to a small problem
over N in R^{d1 x d*} (whitened mode coordinates, n_j = row j):

    min L_FB = min_N [ r + tr(D (I + N^T N)^{-1}) ]/(2 eta_dec^2)
                     + beta sum_j max(lam, 1/2 log(1 + |n_j|^2)),   D = diag(zeta_i^2),

which this module solves to ~1e-12 from several starts, the closed forms (aligned per-mode
solution, reverse water-filling when every latent is pinned at KL = lam) among them.
numpy/scipy only.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.optimize import minimize

from postcollapse._checks import check_int_at_least, check_positive
from postcollapse.theory.hierarchical import data_stats
from postcollapse.theory.spectrum import Spectrum

__all__ = [
    "FreeBitsOptimum",
    "freebits_optimum",
    "freebits_loss",
    "freebits_kl",
    "freebits_reduced_loss",
    "freebits_aligned",
    "freebits_waterfilling",
    "FlatFreeBitsLoss",
    "FREEBITS_REGIMES",
    "check_free_bits",
    "equal_diagonal_rotation",
]

FREEBITS_REGIMES = ("aligned", "all pinned", "mixed")


# Largest free-bits level accepted, in nats per latent: exp(2 lambda) and the products the
# closed forms take with it stay finite in float64 (exp(2 * 354) is the limit).
MAX_FREE_BITS = 300.0


def check_free_bits(lam) -> float:
    """Return the free-bits level lambda as a float, or raise unless it is finite and >= 0."""
    if isinstance(lam, bool) or not isinstance(lam, int | float | np.integer | np.floating):
        raise TypeError(f"free bits lambda must be a number, got {type(lam).__name__}")
    lam = float(lam)
    if not np.isfinite(lam) or lam < 0:
        raise ValueError(f"free bits lambda must be a finite number >= 0 (nats), got {lam:g}")
    if lam > MAX_FREE_BITS:
        raise ValueError(
            f"free bits lambda = {lam:g} nats per latent is out of range: the optimum needs "
            f"exp(2 lambda), which overflows float64; use lambda <= {MAX_FREE_BITS:g}"
        )
    return lam


def _scalars(beta, lam, eta_enc, eta_dec):
    return (check_positive("beta", beta), check_free_bits(lam),
            check_positive("eta_enc", eta_enc), check_positive("eta_dec", eta_dec))


def _terms(st, U, W, sigma2, b_e, b_d, eta_enc):
    """(reconstruction E||...||^2, KL_j (d1,)) from central moments."""
    M = U @ W.T
    e = M @ st.mean_x + U @ b_e + b_d - st.mean_y
    recon = (np.sum((M @ st.cov_x) * M) - 2.0 * np.sum(M * st.cov_yx) + st.s_yy + e @ e
             + np.einsum("ij,ij->j", U, U) @ sigma2)
    m = W.T @ st.mean_x + b_e
    emu2 = np.einsum("ij,ij->j", W, st.cov_x @ W) + m * m
    ratio = sigma2 / eta_enc**2
    kl = 0.5 * (emu2 / eta_enc**2 + ratio - 1.0 - np.log(ratio))
    return max(float(recon), 0.0), kl


def _check_lin(st, U, W, sigma2, b_e, b_d):
    d0, dy = st.mean_x.shape[0], st.mean_y.shape[0]
    U, W = np.asarray(U, dtype=np.float64), np.asarray(W, dtype=np.float64)
    if U.ndim != 2 or U.shape[0] != dy:
        raise ValueError(f"U must have shape (d2={dy}, d1), got {U.shape}")
    d1 = U.shape[1]
    if W.shape != (d0, d1):
        raise ValueError(f"W must have shape (d0={d0}, d1={d1}), got {W.shape}")
    sigma2 = np.broadcast_to(np.asarray(sigma2, dtype=np.float64), (d1,))
    b_e, b_d = np.asarray(b_e, dtype=np.float64), np.asarray(b_d, dtype=np.float64)
    if b_e.shape != (d1,) or b_d.shape != (dy,):
        raise ValueError(f"b_e must have shape ({d1},) and b_d ({dy},)")
    if not np.all(np.isfinite(sigma2)) or np.any(sigma2 <= 0):
        raise ValueError("sigma2 must hold finite encoder variances > 0")
    return U, W, sigma2, b_e, b_d


def freebits_kl(data, *, W, sigma2, b_e, eta_enc=1.0) -> np.ndarray:
    """Per-latent KL_j averaged over the data (module docstring), shape (d1,)."""
    eta_enc = check_positive("eta_enc", eta_enc)
    st = data_stats(data)
    W = np.asarray(W, dtype=np.float64)
    U = np.zeros((st.mean_y.shape[0], W.shape[1]))
    U, W, sigma2, b_e, b_d = _check_lin(st, U, W, sigma2, b_e, np.zeros(U.shape[0]))
    return _terms(st, U, W, sigma2, b_e, b_d, eta_enc)[1]


def freebits_loss(data, *, U, W, sigma2, b_e, b_d, beta, lam, eta_enc=1.0, eta_dec=1.0) -> float:
    """Exact free-bits loss L_FB of a linear VAE (module docstring; no log 2 pi constant).

    Parameters
    ----------
    data : Moments or tuple
        ``postcollapse.theory.Moments`` or ``(x, y)`` (y None: plain VAE).
    U (d2, d1), W (d0, d1), sigma2 (d1,), b_e (d1,), b_d (d2,) : arrays
        Linear VAE parameters (sigma2: encoder variances).
    beta : float > 0
    lam : float >= 0
        Free bits per latent dimension, in nats.
    eta_enc, eta_dec : float > 0

    Returns
    -------
    float
    """
    beta, lam, eta_enc, eta_dec = _scalars(beta, lam, eta_enc, eta_dec)
    st = data_stats(data)
    U, W, sigma2, b_e, b_d = _check_lin(st, U, W, sigma2, b_e, b_d)
    recon, kl = _terms(st, U, W, sigma2, b_e, b_d, eta_enc)
    return float(recon / (2 * eta_dec**2) + beta * np.sum(np.maximum(lam, kl)))


@dataclass(frozen=True)
class FlatFreeBitsLoss:
    """The two parts of L_FB over one flat vector, with exact derivatives (for SLSQP).

    The vector is ``[U.ravel(), W.ravel(), b_e, b_d, log sigma2]``. :meth:`parts` returns the
    scaled reconstruction term recon/(2 eta_dec^2) with its gradient and the KL_j with their
    Jacobian, so that the max() can be handled exactly on its epigraph.
    """

    stats: object
    latent_dim: int
    beta: float
    lam: float
    eta_enc: float
    eta_dec: float

    @classmethod
    def build(cls, data, *, latent_dim, beta, lam, eta_enc=1.0, eta_dec=1.0):
        d1 = check_int_at_least("latent_dim", latent_dim, 1)
        beta, lam, eta_enc, eta_dec = _scalars(beta, lam, eta_enc, eta_dec)
        return cls(data_stats(data), d1, beta, lam, eta_enc, eta_dec)

    @property
    def size(self) -> int:
        d0, dy, d1 = self.stats.mean_x.shape[0], self.stats.mean_y.shape[0], self.latent_dim
        return dy * d1 + d0 * d1 + d1 + dy + d1

    def unpack(self, theta) -> dict:
        d0, dy, d1 = self.stats.mean_x.shape[0], self.stats.mean_y.shape[0], self.latent_dim
        theta = np.asarray(theta, dtype=np.float64)
        if theta.shape != (self.size,):
            raise ValueError(f"theta must have shape ({self.size},), got {theta.shape}")
        i = 0
        U = theta[i : i + dy * d1].reshape(dy, d1)
        i += dy * d1
        W = theta[i : i + d0 * d1].reshape(d0, d1)
        i += d0 * d1
        b_e = theta[i : i + d1]
        i += d1
        b_d = theta[i : i + dy]
        i += dy
        return {"U": U.copy(), "W": W.copy(), "b_e": b_e.copy(), "b_d": b_d.copy(),
                "sigma2": np.exp(theta[i : i + d1])}

    def init(self, rng: np.random.Generator) -> np.ndarray:
        d0 = self.stats.mean_x.shape[0]
        dy, d1 = self.stats.mean_y.shape[0], self.latent_dim
        theta = rng.normal(size=self.size)
        spread = np.sqrt(max(np.trace(self.stats.cov_x), 1e-300) / d0)
        theta[dy * d1 : dy * d1 + d0 * d1] /= spread
        theta[-d1:] = rng.normal(0.0, 0.5, d1)
        return theta

    def parts(self, theta):
        """Return (recon/(2 eta_dec^2), its gradient (size,), KL (d1,), Jacobian (d1, size))."""
        st, p = self.stats, self.unpack(theta)
        U, W, b_e, b_d, s2 = p["U"], p["W"], p["b_e"], p["b_d"], p["sigma2"]
        d0, dy, d1 = st.mean_x.shape[0], st.mean_y.shape[0], self.latent_dim
        q2, a = self.eta_enc**2, 1.0 / (2 * self.eta_dec**2)
        recon, kl = _terms(st, U, W, s2, b_e, b_d, self.eta_enc)
        M = U @ W.T
        e = M @ st.mean_x + U @ b_e + b_d - st.mean_y
        gM = 2.0 * (M @ st.cov_x - st.cov_yx + np.outer(e, st.mean_x))
        gU = gM @ W + 2.0 * np.outer(e, b_e) + 2.0 * U * s2
        gW = gM.T @ U
        gbe = 2.0 * U.T @ e
        gbd = 2.0 * e
        gls = np.einsum("ij,ij->j", U, U) * s2
        grad = a * np.concatenate([gU.ravel(), gW.ravel(), gbe, gbd, gls])
        m = W.T @ st.mean_x + b_e
        AW = st.cov_x @ W
        jac = np.zeros((d1, self.size))
        off_w, off_be = dy * d1, dy * d1 + d0 * d1
        off_ls = off_be + d1 + dy
        for j in range(d1):
            dWj = (AW[:, j] + st.mean_x * m[j]) / q2  # d KL_j / d W[:, j]
            jac[j, off_w + np.arange(d0) * d1 + j] = dWj
            jac[j, off_be + j] = m[j] / q2
            jac[j, off_ls + j] = 0.5 * (s2[j] / q2 - 1.0)
        return a * recon, grad, kl, jac

    def loss(self, theta) -> float:
        r, _, kl, _ = self.parts(theta)
        return float(r + self.beta * np.sum(np.maximum(self.lam, kl)))


# ---------------------------------------------------------------------------------------
# The reduced problem and its closed forms


def freebits_reduced_loss(N, zeta, *, residual=0.0, beta, lam, eta_dec=1.0) -> float:
    """The reduced free-bits objective of N (d1, d*) (module docstring).

    Parameters
    ----------
    N : array (d1, d*)
        Row j is latent j's signal-to-noise direction n_j = V_j / sigma_j in whitened mode
        coordinates (eta_enc = 1).
    zeta : array (d*,)
        Singular values of Z.
    residual : float
        r, the regression residual.
    """
    beta, lam, _, eta_dec = _scalars(beta, lam, 1.0, eta_dec)
    N = np.asarray(N, dtype=np.float64)
    z2 = np.asarray(zeta, dtype=np.float64) ** 2
    if N.ndim != 2 or N.shape[1] != z2.size:
        raise ValueError(f"N must have shape (latent_dim, {z2.size}), got {N.shape}")
    R = np.linalg.inv(np.eye(N.shape[0]) + N @ N.T)  # Woodbury, k x k
    distortion = np.sum(z2) - np.sum((R @ (N * z2)) * N)
    rates = 0.5 * np.log1p(np.sum(N * N, axis=1))
    return float((residual + distortion) / (2 * eta_dec**2)
                 + beta * np.sum(np.maximum(lam, rates)))


def freebits_aligned(zeta, *, latent_dim, residual=0.0, beta, lam, eta_dec=1.0):
    """The aligned (one latent per mode) solution: an upper bound on min L_FB.

    Returns
    -------
    loss : float
    rates : ndarray (d1,)
        kappa_j = max(lam, 1/2 log(zeta_j^2/(beta eta_dec^2))_+) (lam for latents past d*).
    """
    d1 = check_int_at_least("latent_dim", latent_dim, 1)
    beta, lam, _, eta_dec = _scalars(beta, lam, 1.0, eta_dec)
    z2 = np.asarray(zeta, dtype=np.float64) ** 2
    k = min(d1, z2.size)
    b = beta * eta_dec**2
    with np.errstate(divide="ignore"):
        free = 0.5 * np.log(np.where(z2[:k] > b, z2[:k] / b, 1.0))
    rates = np.full(d1, lam)
    rates[:k] = np.maximum(lam, free)
    distortion = residual + np.sum(z2[k:]) + np.sum(z2[:k] * np.exp(-2.0 * rates[:k]))
    return float(distortion / (2 * eta_dec**2) + beta * np.sum(rates)), rates


def freebits_waterfilling(zeta, *, latent_dim, residual=0.0, beta, lam, eta_dec=1.0):
    """Every latent pinned at KL = lam, the SNR reverse-water-filled over the top d1 modes.

    p_i = (zeta_i/mu - 1)_+ with sum_i p_i = d1 (e^{2 lam} - 1); an upper bound on min L_FB,
    equal to it in the all-pinned regime.

    Returns
    -------
    loss : float
    p : ndarray (d*,)
        SNR of each mode (zero past the top d1).
    """
    d1 = check_int_at_least("latent_dim", latent_dim, 1)
    beta, lam, _, eta_dec = _scalars(beta, lam, 1.0, eta_dec)
    zeta = np.asarray(zeta, dtype=np.float64)
    k = min(d1, zeta.size)
    total = d1 * np.expm1(2.0 * lam)
    z = zeta[:k]
    p = np.zeros(zeta.size)
    if total > 0 and z.size and z[0] > 0:
        # Water level: with the top m modes "wet", 1/mu = (total + m) / sum_{i<=m} zeta_i.
        for m in range(k, 0, -1):
            inv_mu = (total + m) / np.sum(z[:m])
            if z[m - 1] * inv_mu - 1.0 > 0:
                break
        p[:m] = np.maximum(z[:m] * inv_mu - 1.0, 0.0)
    distortion = residual + np.sum(zeta[k:] ** 2) + np.sum(z**2 / (1.0 + p[:k]))
    return float(distortion / (2 * eta_dec**2) + beta * d1 * lam), p


@dataclass(frozen=True, eq=False)
class FreeBitsOptimum:
    """Global minimum of the free-bits linear VAE.

    Attributes
    ----------
    loss : float
        min L_FB (no log 2 pi constant).
    regime : str
        "aligned" (the per-mode solution is optimal), "all pinned" (every latent at
        KL = lam, reverse water-filling is optimal) or "mixed" (neither closed form).
    snr : ndarray (d*,)
        p_i, the signal-to-noise ratio mode i receives: diagonal of N^T N in mode
        coordinates (0: mode i gets no signal, whatever the per-latent KL says).
    kl : ndarray (d1,)
        Per-latent KL_j at the optimum (>= lam up to the solver tolerance, or below lam for
        a latent that carries nothing).
    N : ndarray (d1, d*)
        The reduced-problem minimiser.
    aligned_loss, waterfilling_loss : float
        The two closed-form upper bounds.
    U, W, sigma2, b_e, b_d : ndarray
        A global minimiser of the full model.
    """

    loss: float
    regime: str
    snr: np.ndarray
    kl: np.ndarray
    N: np.ndarray
    aligned_loss: float
    waterfilling_loss: float
    U: np.ndarray
    W: np.ndarray
    sigma2: np.ndarray
    b_e: np.ndarray
    b_d: np.ndarray
    beta: float
    lam: float
    eta_enc: float
    eta_dec: float

    @property
    def signal_modes(self) -> np.ndarray:
        """Modes that receive signal (snr > 1e-8), as a bool array (d*,)."""
        return self.snr > 1e-8


def equal_diagonal_rotation(p) -> np.ndarray:
    """Orthogonal Q (k, k) such that Q diag(p) Q^T has a constant diagonal (= mean of p).

    The constructive Schur-Horn step (Chan and Li, 1983): k - 1 plane rotations, each
    fixing one diagonal entry at the mean. Used to build an all-pinned start whose latents
    all carry the same rate.
    """
    d = np.array(p, dtype=np.float64)
    k = d.size
    mu = float(d.mean()) if k else 0.0
    Q = np.eye(k)
    unfixed = list(range(k))
    tol = 1e-14 * max(1.0, abs(mu))
    while len(unfixed) > 1:
        big = [i for i in unfixed if d[i] > mu + tol]
        small = [j for j in unfixed if d[j] < mu - tol]
        if not big or not small:
            break
        i, j = big[0], small[0]
        c2 = (mu - d[j]) / (d[i] - d[j])
        c, s = np.sqrt(c2), np.sqrt(1.0 - c2)
        G = np.eye(k)
        G[i, i], G[i, j], G[j, i], G[j, j] = c, s, -s, c
        Q = G @ Q
        d[j] = d[i] + d[j] - mu
        d[i] = mu
        unfixed.remove(i)
    return Q


def _reduced_fg(x, z2, d1, ds, gamma, residual, beta, eta_dec):
    """Reduced objective over (u, t): n_j = u_j/|u_j| sqrt(gamma + t_j^2); value and grad."""
    Umat = x[: d1 * ds].reshape(d1, ds)
    t = x[d1 * ds :]
    norm = np.sqrt(np.sum(Umat * Umat, axis=1)) + 1e-300
    uh = Umat / norm[:, None]
    rho2 = gamma + t * t
    rho = np.sqrt(rho2)
    N = uh * rho[:, None]
    # Woodbury: (I + N^T N)^{-1} = I - N^T R N with R = (I_k + N N^T)^{-1} (k x k), so
    # every step costs O(k^2 d*) however many modes there are.
    R = np.linalg.inv(np.eye(d1) + N @ N.T)
    ND = N * z2  # N D
    RND = R @ ND
    a = 1.0 / (2 * eta_dec**2)
    val = (a * (residual + np.sum(z2) - np.sum(RND * N))
           + beta * 0.5 * np.sum(np.log1p(rho2)))
    # d tr(D Q) / dN = -2 N Q D Q, and N Q = R N.
    gN = -2.0 * a * (RND - (RND @ N.T) @ (R @ N)) + beta * N / (1.0 + rho2)[:, None]
    proj = np.sum(gN * uh, axis=1)
    gU = (rho / norm)[:, None] * (gN - uh * proj[:, None])
    gt = t / np.where(rho > 0, rho, 1.0) * proj
    return float(val), np.concatenate([gU.ravel(), gt])


def _start_from_N(N, gamma, rng):
    """(u, t) for a start N; zero rows get a random direction."""
    N = np.array(N, dtype=np.float64)
    norms = np.sqrt(np.sum(N * N, axis=1))
    zero = norms < 1e-12
    if zero.any():
        N[zero] = rng.normal(size=(int(zero.sum()), N.shape[1]))
        N[zero] *= np.sqrt(max(gamma, 1e-6)) / np.linalg.norm(N[zero], axis=1)[:, None]
        norms = np.sqrt(np.sum(N * N, axis=1))
    t = np.sqrt(np.maximum(norms**2 - gamma, 0.0))
    return np.concatenate([N.ravel(), t])


def freebits_optimum(
    spec: Spectrum,
    *,
    latent_dim: int,
    beta: float,
    lam: float,
    eta_enc: float = 1.0,
    eta_dec: float = 1.0,
    n_starts: int = 8,
    seed: int = 0,
) -> FreeBitsOptimum:
    """Exact global minimum of the free-bits linear VAE (learnable diagonal Sigma).

    Solves the reduced d1 x d* problem with L-BFGS (gradient tolerance 1e-13) from the two
    closed forms and ``n_starts`` random starts, on the exact reformulation "every latent
    at KL >= lam" (a latent below lam can always be raised to lam for free, which never
    increases the reconstruction term); the minimum returned is never above either closed
    form.

    Parameters
    ----------
    spec : Spectrum
    latent_dim : int >= 1
    beta : float > 0
    lam : float >= 0
        Free bits per latent dimension (nats). 0 gives the plain beta-VAE.
    eta_enc, eta_dec : float > 0
    n_starts : int >= 0
        Random starts in addition to the closed-form ones.
    seed : int
        Seed of the random starts.

    Returns
    -------
    FreeBitsOptimum
    """
    if not isinstance(spec, Spectrum):
        raise TypeError(
            f"expected a Spectrum (postcollapse.theory.spectrum), got {type(spec).__name__}"
        )
    d1 = check_int_at_least("latent_dim", latent_dim, 1)
    n_starts = check_int_at_least("n_starts", n_starts, 0)
    beta, lam, eta_enc, eta_dec = _scalars(beta, lam, eta_enc, eta_dec)
    rng = np.random.default_rng(seed)
    zeta = np.asarray(spec.zeta, dtype=np.float64)
    ds = zeta.size
    r = float(spec.residual)
    kw = {"residual": r, "beta": beta, "lam": lam, "eta_dec": eta_dec}
    l_al, rates = freebits_aligned(zeta, latent_dim=d1, **kw)
    l_wf, p_wf = freebits_waterfilling(zeta, latent_dim=d1, **kw)
    gamma = float(np.expm1(2.0 * lam))

    if ds == 0:  # no signal at all: every latent pinned on nothing
        best_N = np.zeros((d1, 0))
        best = l_al
    else:
        z2 = zeta**2
        starts = []
        n_al = np.zeros((d1, ds))
        for j in range(d1):
            col = j if j < ds else 0
            n_al[j, col] = np.sqrt(np.expm1(2.0 * rates[j]))
        starts.append(n_al)
        k = min(d1, ds)
        p_pad = np.zeros(d1)
        p_pad[:k] = p_wf[:k]
        q = equal_diagonal_rotation(p_pad)
        n_wf = np.zeros((d1, ds))
        n_wf[:, :k] = q[:, :k] * np.sqrt(p_wf[:k])  # N^T N = diag(p), |n_j|^2 = gamma
        starts.append(n_wf)
        # Random starts on the strongest modes (a little mass elsewhere): the optimum puts
        # its SNR there, and L-BFGS from a start spread over hundreds of weak modes is slow.
        top = min(ds, 2 * d1 + 2)
        for _ in range(n_starts):
            n0 = 1e-3 * rng.normal(size=(d1, ds))
            n0[:, :top] = rng.normal(size=(d1, top))
            starts.append(n0 * np.sqrt(max(gamma, 0.1)))
        best, best_x = np.inf, None
        opts = {"maxiter": 20000, "maxfun": 40000, "gtol": 1e-13, "ftol": 1e-16, "maxcor": 30}
        for i, n0 in enumerate(starts):
            if i < 2:  # the closed forms can be saddles: nudge them off
                n0 = n0 + 1e-7 * rng.normal(size=n0.shape)
            x0 = _start_from_N(n0, gamma, rng)
            res = minimize(_reduced_fg, x0, jac=True, method="L-BFGS-B",
                           args=(z2, d1, ds, gamma, r, beta, eta_dec), options=opts)
            if res.fun < best:
                best, best_x = float(res.fun), res.x
        Umat = best_x[: d1 * ds].reshape(d1, ds)
        t = best_x[d1 * ds :]
        uh = Umat / (np.linalg.norm(Umat, axis=1)[:, None] + 1e-300)
        best_N = uh * np.sqrt(gamma + t * t)[:, None]
        best = freebits_reduced_loss(best_N, zeta, **kw)
    tol = 1e-9 * max(1.0, abs(best))
    if l_al <= best + tol:
        regime = "aligned"
    elif l_wf <= best + tol:
        regime = "all pinned"
    else:
        regime = "mixed"
    loss = float(best)

    # Full parameters (eta_enc = 1 units, then rescaled): sigma_j^2 = 1/(1 + |n_j|^2),
    # V_j = sigma_j n_j, W = A^{-1/2} G V^T, optimal linear decoder.
    s2 = 1.0 / (1.0 + np.sum(best_N * best_N, axis=1))
    V = best_N * np.sqrt(s2)[:, None]  # (d1, d*)
    if spec.has_vectors and ds:
        W = spec.whitened_G @ V.T * eta_enc
    else:
        W = np.zeros((spec.d0, d1))
    sigma2 = s2 * eta_enc**2
    if spec.has_vectors and ds:
        # U = C W (W^T A W + S)^{-1} with C W = F diag(zeta) V^T eta_enc in mode coordinates.
        cw = spec.F @ (zeta[:, None] * V.T) * eta_enc
        K = (V @ V.T + np.diag(s2)) * eta_enc**2
        U = np.linalg.solve(K, cw.T).T
    else:
        U = np.zeros((spec.d2, d1))
    P = best_N.T @ best_N
    kl = 0.5 * np.log1p(np.sum(best_N * best_N, axis=1))
    return FreeBitsOptimum(
        loss=loss, regime=regime, snr=np.diag(P).copy() if ds else np.zeros(0), kl=kl,
        N=best_N, aligned_loss=l_al, waterfilling_loss=l_wf,
        U=U, W=W, sigma2=sigma2, b_e=-(W.T @ spec.mean_x), b_d=spec.mean_y.copy(),
        beta=beta, lam=lam, eta_enc=eta_enc, eta_dec=eta_dec,
    )
