"""Exact L_VAE of arbitrary linear-VAE parameters, its gradient, and the origin Hessian.

The loss is THEORY.md's beta-weighted negative ELBO averaged over the data, without the
constant (d2/2) log(2 pi eta_dec^2); the expectation over the encoder noise is exact:

    L_VAE = 1/(2 eta_dec^2) * ( E||M x + c - y||^2 + Tr(U Sigma U^T) )
          + beta/(2 eta_enc^2) * E||W^T x + b_e||^2
          + beta/2 * sum_i ( sigma_i^2/eta_enc^2 - 1 - log(sigma_i^2/eta_enc^2) )

with M = U W^T (d2, d0) and c = U b_e + b_d (d2,). On central moments (A = Cov x,
C = Cov(y, x), s_yy = E||y - Ey||^2)

    E||M x + c - y||^2 = Tr(M A M^T) - 2 Tr(M C^T) + s_yy + ||M E[x] + c - E[y]||^2
    E||W^T x + b_e||^2 = Tr(W^T A W) + ||W^T E[x] + b_e||^2 .

Only numpy is used here (never torch): this module is the ground truth other parts are
checked against.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import NamedTuple

import numpy as np

from postcollapse._checks import check_2d, check_finite_array, check_int_at_least, check_positive

__all__ = [
    "vae_loss",
    "vae_nll",
    "vae_loss_and_grad",
    "VAEGrad",
    "FlatVAELoss",
    "origin_hessian",
    "origin_hessian_min_eig",
]


class _Stats(NamedTuple):
    """Central first and second moments (population 1/N), float64."""

    mean_x: np.ndarray  # (d0,)
    mean_y: np.ndarray  # (d2,)
    cov_x: np.ndarray  # (d0, d0)   A
    cov_yx: np.ndarray  # (d2, d0)  C
    s_yy: float  # E||y - E y||^2


class VAEGrad(NamedTuple):
    """Gradient of L_VAE; ``sigma2`` is d/d sigma_i^2, ``log_sigma2`` is d/d log sigma_i^2."""

    U: np.ndarray
    W: np.ndarray
    sigma2: np.ndarray
    log_sigma2: np.ndarray
    b_e: np.ndarray
    b_d: np.ndarray


def _arrays_to_stats(x, y) -> _Stats:
    x = check_2d("x", x, min_rows=1)
    check_finite_array("x", x)
    x = np.asarray(x, dtype=np.float64)
    if y is None:
        y = x
    else:
        y = check_2d("y", y, min_rows=1)
        check_finite_array("y", y)
        y = np.asarray(y, dtype=np.float64)
        if y.shape[0] != x.shape[0]:
            raise ValueError(
                f"x and y must have the same number of rows, got {x.shape[0]} and {y.shape[0]}"
            )
    n = x.shape[0]
    mx, my = x.mean(axis=0), y.mean(axis=0)
    xc, yc = x - mx, y - my
    return _Stats(mx, my, xc.T @ xc / n, yc.T @ xc / n, float(np.sum(yc * yc) / n))


def _as_stats(data) -> _Stats:
    """Accept a ``Moments`` (duck-typed) or an ``(x, y)`` / ``(x,)`` tuple / bare array x."""
    if isinstance(data, tuple):
        if len(data) == 1:
            return _arrays_to_stats(data[0], None)
        if len(data) == 2:
            return _arrays_to_stats(data[0], data[1])
        raise ValueError(f"data tuple must be (x, y) or (x,), got a tuple of length {len(data)}")
    if isinstance(data, np.ndarray):
        return _arrays_to_stats(data, None)
    needed = ("mean_x", "mean_y", "cov_x", "cov_yx", "s_yy")
    if all(hasattr(data, a) for a in needed):
        return _Stats(
            np.asarray(data.mean_x, dtype=np.float64),
            np.asarray(data.mean_y, dtype=np.float64),
            np.asarray(data.cov_x, dtype=np.float64),
            np.asarray(data.cov_yx, dtype=np.float64),
            float(data.s_yy),
        )
    raise TypeError(
        "data must be a postcollapse.theory.Moments or an (x, y) tuple of arrays "
        f"(y None for the plain VAE), got {type(data).__name__}"
    )


def _check_params(st: _Stats, U, W, sigma2, b_e, b_d):
    d0, d2 = st.mean_x.shape[0], st.mean_y.shape[0]
    U = np.asarray(U, dtype=np.float64)
    W = np.asarray(W, dtype=np.float64)
    if U.ndim != 2 or U.shape[0] != d2:
        raise ValueError(f"U must have shape (d2={d2}, d1), got {U.shape}")
    d1 = U.shape[1]
    if W.shape != (d0, d1):
        raise ValueError(f"W must have shape (d0={d0}, d1={d1}), got {W.shape}")
    sigma2 = np.broadcast_to(np.asarray(sigma2, dtype=np.float64), (d1,))
    b_e = np.asarray(b_e, dtype=np.float64)
    b_d = np.asarray(b_d, dtype=np.float64)
    if b_e.shape != (d1,):
        raise ValueError(f"b_e must have shape (d1={d1},), got {b_e.shape}")
    if b_d.shape != (d2,):
        raise ValueError(f"b_d must have shape (d2={d2},), got {b_d.shape}")
    for name, a in (("U", U), ("W", W), ("sigma2", sigma2), ("b_e", b_e), ("b_d", b_d)):
        check_finite_array(name, a)
    if np.any(sigma2 <= 0):
        raise ValueError(f"sigma2 must be > 0 (encoder variances), got min {sigma2.min():g}")
    return U, W, sigma2, b_e, b_d


def _loss_terms(st, U, W, sigma2, b_e, b_d, beta, eta_enc, eta_dec, *, grad):
    M = U @ W.T
    c = U @ b_e + b_d
    e = M @ st.mean_x + c - st.mean_y  # mean reconstruction error, (d2,)
    MA = M @ st.cov_x
    col2 = np.einsum("ij,ij->j", U, U)  # ||U[:, i]||^2
    recon = np.sum(MA * M) - 2.0 * np.sum(M * st.cov_yx) + st.s_yy + e @ e + col2 @ sigma2
    # Rounding can push the (nonnegative) reconstruction term a hair below zero.
    recon = max(recon, 0.0)
    m = W.T @ st.mean_x + b_e  # mean latent code, (d1,)
    AW = st.cov_x @ W
    kl_mean = np.sum(W * AW) + m @ m
    ratio = sigma2 / eta_enc**2
    kl_var = np.sum(ratio - 1.0 - np.log(ratio))
    s_dec = 1.0 / (2.0 * eta_dec**2)
    s_enc = beta / (2.0 * eta_enc**2)
    loss = float(s_dec * recon + s_enc * kl_mean + 0.5 * beta * kl_var)
    if not grad:
        return loss, None, recon
    gM = 2.0 * (MA - st.cov_yx + np.outer(e, st.mean_x))  # d recon / dM
    gc = 2.0 * e  # d recon / dc
    gU = s_dec * (gM @ W + np.outer(gc, b_e) + 2.0 * U * sigma2)
    gW = s_dec * (gM.T @ U) + s_enc * 2.0 * (AW + np.outer(st.mean_x, m))
    gb_e = s_dec * (U.T @ gc) + s_enc * 2.0 * m
    gb_d = s_dec * gc
    gs2 = s_dec * col2 + 0.5 * beta * (1.0 / eta_enc**2 - 1.0 / sigma2)
    return loss, VAEGrad(gU, gW, gs2, gs2 * sigma2, gb_e, gb_d), recon


def _check_scalars(beta, eta_enc, eta_dec):
    return (
        check_positive("beta", beta),
        check_positive("eta_enc", eta_enc),
        check_positive("eta_dec", eta_dec),
    )


def vae_loss(data, *, U, W, sigma2, b_e, b_d, beta, eta_enc=1.0, eta_dec=1.0) -> float:
    """Exact L_VAE (THEORY.md, no log 2 pi constant) of a linear VAE.

    Parameters
    ----------
    data : Moments or tuple
        A ``postcollapse.theory.Moments``, or ``(x, y)`` with x (n_samples, d0) and
        y (n_samples, d2); ``y`` None (or a 1-tuple / bare array) is the plain VAE, y = x.
        Arrays are evaluated directly (sample mean over rows), not through moments.
    U : array (d2, d1)
        Decoder weight.
    W : array (d0, d1)
        Encoder weight (latent mean is W^T x + b_e).
    sigma2 : array (d1,) or float
        Encoder variances sigma_i^2 (diagonal of Sigma), > 0.
    b_e : array (d1,)
    b_d : array (d2,)
    beta, eta_enc, eta_dec : float > 0

    Returns
    -------
    float
    """
    beta, eta_enc, eta_dec = _check_scalars(beta, eta_enc, eta_dec)
    if isinstance(data, tuple | np.ndarray):
        return _loss_on_arrays(data, U, W, sigma2, b_e, b_d, beta, eta_enc, eta_dec)
    st = _as_stats(data)
    U, W, sigma2, b_e, b_d = _check_params(st, U, W, sigma2, b_e, b_d)
    return _loss_terms(st, U, W, sigma2, b_e, b_d, beta, eta_enc, eta_dec, grad=False)[0]


def vae_nll(data, *, U, W, sigma2, b_e, b_d, beta, eta_enc=1.0, eta_dec=1.0) -> float:
    """Per-example beta-NLL: :func:`vae_loss` + (d2/2) log(2 pi eta_dec^2).

    The beta-weighted negative ELBO with its Gaussian constant: the objective when eta_dec
    is learned (THEORY.md, "Learned decoder variance"). Same arguments as :func:`vae_loss`.
    """
    loss = vae_loss(data, U=U, W=W, sigma2=sigma2, b_e=b_e, b_d=b_d, beta=beta,
                    eta_enc=eta_enc, eta_dec=eta_dec)
    d2 = np.asarray(b_d).reshape(-1).size
    return float(loss + 0.5 * d2 * np.log(2.0 * np.pi * float(eta_dec) ** 2))


def _loss_on_arrays(data, U, W, sigma2, b_e, b_d, beta, eta_enc, eta_dec) -> float:
    """The definition, evaluated sample by sample (an independent check of the moment form)."""
    if isinstance(data, np.ndarray):
        data = (data, None)
    if len(data) == 1:
        data = (data[0], None)
    if len(data) != 2:
        raise ValueError(f"data tuple must be (x, y) or (x,), got a tuple of length {len(data)}")
    x, y = data
    st = _arrays_to_stats(x, y)  # validates shapes/finiteness
    x = np.asarray(x, dtype=np.float64).reshape(x.shape[0], -1)
    y = x if y is None else np.asarray(y, dtype=np.float64).reshape(y.shape[0], -1)
    U, W, sigma2, b_e, b_d = _check_params(st, U, W, sigma2, b_e, b_d)
    mu = x @ W + b_e  # (n, d1)
    err = mu @ U.T + b_d - y  # (n, d2)
    recon = np.mean(np.sum(err * err, axis=1)) + np.einsum("ij,ij->j", U, U) @ sigma2
    kl_mean = np.mean(np.sum(mu * mu, axis=1))
    ratio = sigma2 / eta_enc**2
    kl_var = np.sum(ratio - 1.0 - np.log(ratio))
    return float(
        recon / (2.0 * eta_dec**2) + beta / (2.0 * eta_enc**2) * kl_mean + 0.5 * beta * kl_var
    )


def vae_loss_and_grad(
    data, *, U, W, sigma2, b_e, b_d, beta, eta_enc=1.0, eta_dec=1.0
) -> tuple[float, VAEGrad]:
    """L_VAE and its analytic gradient (same arguments as :func:`vae_loss`).

    Returns
    -------
    loss : float
    grad : VAEGrad
        Fields U (d2, d1), W (d0, d1), sigma2 (d1,) = dL/d sigma_i^2,
        log_sigma2 (d1,) = dL/d log sigma_i^2, b_e (d1,), b_d (d2,).
    """
    beta, eta_enc, eta_dec = _check_scalars(beta, eta_enc, eta_dec)
    st = _as_stats(data)
    U, W, sigma2, b_e, b_d = _check_params(st, U, W, sigma2, b_e, b_d)
    return _loss_terms(st, U, W, sigma2, b_e, b_d, beta, eta_enc, eta_dec, grad=True)[:2]


@dataclass(frozen=True)
class FlatVAELoss:
    """L_VAE as a function of one flat float64 vector, for ``scipy.optimize.minimize``.

    The vector is ``[U.ravel(), W.ravel(), b_e, b_d, log_sigma2, log_eta_dec2]``;
    ``log_sigma2`` is present only when ``sigma == "learnable"``. With ``sigma == "prior"``
    the variances are fixed at eta_enc^2; with an array they are fixed at those values
    (length latent_dim). With ``eta_dec == "learn"`` the last entry is log v, v = eta_dec^2,
    and the function is the beta-NLL L_VAE(v) + (d2/2) log(2 pi v) (the objective of a
    learned decoder variance; THEORY.md, "Learned decoder variance").

    Example
    -------
    >>> f = FlatVAELoss.build(moments, latent_dim=2, beta=0.5)          # doctest: +SKIP
    >>> res = scipy.optimize.minimize(f, f.init(rng), jac=True, method="L-BFGS-B")
    >>> params = f.unpack(res.x)     # dict U, W, sigma2, b_e, b_d
    """

    stats: _Stats
    latent_dim: int
    beta: float
    sigma: object  # "learnable" | "prior" | ndarray (latent_dim,)
    eta_enc: float
    eta_dec: object  # float | "learn"

    @classmethod
    def build(cls, data, *, latent_dim, beta, sigma="learnable", eta_enc=1.0, eta_dec=1.0):
        """Validate the settings and precompute the moments of ``data`` (see vae_loss)."""
        latent_dim = check_int_at_least("latent_dim", latent_dim, 1)
        learn = isinstance(eta_dec, str) and eta_dec == "learn"
        beta, eta_enc, eta_dec = _check_scalars(beta, eta_enc, 1.0 if learn else eta_dec)
        if learn:
            eta_dec = "learn"
        if isinstance(sigma, str):
            if sigma not in ("learnable", "prior"):
                raise ValueError(
                    f"sigma must be 'learnable', 'prior' or an array of variances, got {sigma!r}"
                )
        else:
            sigma = np.asarray(sigma, dtype=np.float64)
            if sigma.shape != (latent_dim,) or not np.all(np.isfinite(sigma)) or np.any(
                sigma <= 0
            ):
                raise ValueError(
                    f"sigma array must hold latent_dim={latent_dim} finite variances > 0, "
                    f"got shape {sigma.shape}"
                )
        return cls(_as_stats(data), latent_dim, beta, sigma, eta_enc, eta_dec)

    @property
    def d0(self) -> int:
        return self.stats.mean_x.shape[0]

    @property
    def d2(self) -> int:
        return self.stats.mean_y.shape[0]

    @property
    def size(self) -> int:
        d0, d1, d2 = self.d0, self.latent_dim, self.d2
        return (d2 * d1 + d0 * d1 + d1 + d2 + (d1 if self._learnable else 0)
                + (1 if self.learn_eta_dec else 0))

    @property
    def _learnable(self) -> bool:
        return isinstance(self.sigma, str) and self.sigma == "learnable"

    @property
    def learn_eta_dec(self) -> bool:
        """True when v = eta_dec^2 is the last entry of the vector (objective: beta-NLL)."""
        return isinstance(self.eta_dec, str)

    def _fixed_sigma2(self) -> np.ndarray:
        if isinstance(self.sigma, str):  # "prior"
            return np.full(self.latent_dim, self.eta_enc**2)
        return self.sigma

    def unpack(self, theta) -> dict:
        """Flat vector -> dict with U, W, sigma2, b_e, b_d (copies), and eta_dec2 (v)."""
        theta = np.asarray(theta, dtype=np.float64)
        if theta.shape != (self.size,):
            raise ValueError(f"theta must have shape ({self.size},), got {theta.shape}")
        d0, d1, d2 = self.d0, self.latent_dim, self.d2
        i = 0
        U = theta[i : i + d2 * d1].reshape(d2, d1)
        i += d2 * d1
        W = theta[i : i + d0 * d1].reshape(d0, d1)
        i += d0 * d1
        b_e = theta[i : i + d1]
        i += d1
        b_d = theta[i : i + d2]
        i += d2
        sigma2 = np.exp(theta[i : i + d1]) if self._learnable else self._fixed_sigma2()
        v = float(np.exp(theta[-1])) if self.learn_eta_dec else float(self.eta_dec) ** 2
        return {"U": U.copy(), "W": W.copy(), "sigma2": sigma2.copy(), "b_e": b_e.copy(),
                "b_d": b_d.copy(), "eta_dec2": v}

    def pack(self, *, U, W, b_e, b_d, sigma2=None, eta_dec2=None) -> np.ndarray:
        """Parameters -> flat vector (``sigma2`` used only when sigma is learnable,
        ``eta_dec2`` only when eta_dec is learned)."""
        parts = [np.ravel(U), np.ravel(W), np.ravel(b_e), np.ravel(b_d)]
        if self._learnable:
            if sigma2 is None:
                raise ValueError("sigma2 is needed to pack parameters when sigma is learnable")
            parts.append(np.log(np.broadcast_to(np.asarray(sigma2, float), (self.latent_dim,))))
        if self.learn_eta_dec:
            if eta_dec2 is None:
                raise ValueError("eta_dec2 is needed to pack parameters when eta_dec is learned")
            parts.append([np.log(check_positive("eta_dec2", eta_dec2))])
        out = np.concatenate([np.asarray(p, dtype=np.float64) for p in parts])
        if out.shape != (self.size,):
            raise ValueError(f"packed parameters have {out.size} entries, expected {self.size}")
        return out

    def init(self, rng: np.random.Generator, *, scale: float = 1.0) -> np.ndarray:
        """A random starting vector: N(0, scale^2) entries scaled to the data's spread."""
        spread = np.sqrt(max(np.trace(self.stats.cov_x), 1e-300) / self.d0)
        theta = rng.normal(0.0, scale, self.size)
        d0, d1, d2 = self.d0, self.latent_dim, self.d2
        theta[d2 * d1 : d2 * d1 + d0 * d1] /= spread
        if self.learn_eta_dec:  # log v around the target's variance per coordinate
            theta[-1] = np.log(max(self.stats.s_yy / d2, 1e-300)) + rng.normal(0.0, scale)
        return theta

    def __call__(self, theta) -> tuple[float, np.ndarray]:
        """Return (L_VAE, gradient w.r.t. the flat vector); the beta-NLL when eta_dec is
        learned."""
        p = self.unpack(theta)
        v = p["eta_dec2"]
        loss, g, recon = _loss_terms(
            self.stats, p["U"], p["W"], p["sigma2"], p["b_e"], p["b_d"],
            self.beta, self.eta_enc, float(np.sqrt(v)), grad=True,
        )
        parts = [g.U.ravel(), g.W.ravel(), g.b_e, g.b_d]
        if self._learnable:
            parts.append(g.log_sigma2)
        if self.learn_eta_dec:
            # L_VAE depends on v only through recon / (2 v); the normaliser adds (d2/2) log v.
            loss += 0.5 * self.d2 * np.log(2.0 * np.pi * v)
            parts.append([-recon / (2.0 * v) + 0.5 * self.d2])
        return loss, np.concatenate(parts)

    def loss(self, theta) -> float:
        return self(theta)[0]


# ---------------------------------------------------------------------------------------
# Origin Hessian (THEORY.md, Theorem 3)


def origin_hessian_min_eig(zeta1, *, sigma2, beta, eta_enc=1.0, eta_dec=1.0) -> float:
    """Smallest eigenvalue of the Hessian of L(U, V) at U = 0, V = 0 (Theorem 3).

    L(U, V) = ||U V^T - Z||_F^2 + Tr(U Sigma U^T) + c ||V||_F^2 with Sigma = sigma2 I and
    c = beta eta_dec^2 / eta_enc^2 (this is 2 eta_dec^2 L_VAE in V = A^{1/2} W, up to a
    constant). The value is ``sigma2 + c - sqrt((sigma2 - c)^2 + 4 zeta1^2)``; it is >= 0
    iff zeta1^2 <= sigma2 * c.

    Parameters
    ----------
    zeta1 : float >= 0
        Largest singular value of Z.
    sigma2 : float > 0
        Fixed encoder variance sigma^2.
    beta, eta_enc, eta_dec : float > 0
    """
    beta, eta_enc, eta_dec = _check_scalars(beta, eta_enc, eta_dec)
    sigma2 = check_positive("sigma2", sigma2)
    zeta1 = float(zeta1)
    if not np.isfinite(zeta1) or zeta1 < 0:
        raise ValueError(f"zeta1 must be a finite number >= 0, got {zeta1:g}")
    c = beta * eta_dec**2 / eta_enc**2
    return float(sigma2 + c - np.hypot(sigma2 - c, 2.0 * zeta1))


def origin_hessian(Z, *, sigma2, beta, eta_enc=1.0, eta_dec=1.0, latent_dim=1) -> np.ndarray:
    """Full Hessian of L(U, V) (see :func:`origin_hessian_min_eig`) at U = 0, V = 0.

    At the origin the quartic term ||U V^T||^2 contributes nothing, so the Hessian is exact:
    2 sigma_i^2 on U[:, i], 2c on V[:, i], and -2 Z_ab between U[a, i] and V[b, i].

    Parameters
    ----------
    Z : array (d2, d0)
    sigma2 : float or array (latent_dim,)
        Encoder variances (Sigma = diag(sigma2)).
    latent_dim : int >= 1
        d1.

    Returns
    -------
    H : array (d2*d1 + d0*d1, d2*d1 + d0*d1)
        Ordered as [U.ravel() (row-major, d2 x d1), V.ravel() (row-major, d0 x d1)].
    """
    beta, eta_enc, eta_dec = _check_scalars(beta, eta_enc, eta_dec)
    d1 = check_int_at_least("latent_dim", latent_dim, 1)
    Z = np.asarray(Z, dtype=np.float64)
    if Z.ndim != 2:
        raise ValueError(f"Z must be a 2-D array (d2, d0), got shape {Z.shape}")
    check_finite_array("Z", Z)
    s2 = np.broadcast_to(np.asarray(sigma2, dtype=np.float64), (d1,))
    if not np.all(np.isfinite(s2)) or np.any(s2 <= 0):
        raise ValueError("sigma2 must hold finite variances > 0")
    c = beta * eta_dec**2 / eta_enc**2
    d2, d0 = Z.shape
    nu = d2 * d1
    H = np.zeros((nu + d0 * d1, nu + d0 * d1))
    H[:nu, :nu] = np.diag(np.tile(2.0 * s2, d2))  # U[a, i] at index a*d1 + i
    H[nu:, nu:] = 2.0 * c * np.eye(d0 * d1)
    cross = -2.0 * np.kron(Z, np.eye(d1))  # [(a, i), (b, j)] = -2 Z_ab delta_ij
    H[:nu, nu:] = cross
    H[nu:, :nu] = cross.T
    return H
