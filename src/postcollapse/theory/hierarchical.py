"""Two-level (hierarchical) linear VAE: exact loss and closed-form global minimum.

docs/THEORY.md, "Two-level linear VAE". The model is the Markovian hierarchical VAE of
Dang et al. (2023) with a linear encoder and decoder at each level:

    q(z1|x)  = N(W1^T x + b1, S1),        q(z2|z1) = N(W2^T z1 + b2, S2)
    p(z2)    = N(0, eta_enc^2 I),          p(z1|z2) = N(U2 z2 + c2, eta_dec^2 I)
    p(y|z1)  = N(U1 z1 + c1, eta_dec^2 I)

with S1, S2 diagonal, and the loss (no log 2 pi constants, averaged over the data, the
expectations over the encoder noise exact)

    L = 1/(2 eta^2) E||U1 z1 + c1 - y||^2
      + beta1/2 [ E||z1 - U2 z2 - c2||^2/eta^2 - log det S1 + d1 log eta^2 - d1 ]
      + beta2/2 [ (E||z2||^2 + tr S2)/eta_enc^2 - log det S2 + d2 log eta_enc^2 - d2 ]

where eta = eta_dec, d1 and d2 are the latent dimensions of the two levels. The closed form
covers S1 = sigma1^2 I fixed with S2 learnable (Dang et al.'s setting, any d2 including
d2 < d1), and both variances learnable (level 2 collapses completely for beta2 > beta1; the
loss is unbounded below for beta2 < beta1). numpy only.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import NamedTuple

import numpy as np

from postcollapse._checks import check_finite_array, check_int_at_least, check_positive
from postcollapse.theory.moments import Moments
from postcollapse.theory.spectrum import Spectrum

__all__ = [
    "HierarchicalOptimum",
    "HierarchicalParams",
    "hierarchical_optimum",
    "hierarchical_loss",
    "hierarchical_loss_and_grad",
    "FlatHierarchicalLoss",
    "HIERARCHICAL_REGIMES",
]

HIERARCHICAL_REGIMES = ("sigma1 fixed", "level 2 collapsed", "flat valley")

_PARAM_NAMES = ("W1", "b1", "s1", "U1", "c1", "W2", "b2", "s2", "U2", "c2")


class HierarchicalParams(NamedTuple):
    """Parameters of the two-level linear VAE (or, from the gradient, their derivatives).

    W1 (d0, d1), b1 (d1,), s1 (d1,) = diag S1, U1 (dy, d1), c1 (dy,),
    W2 (d1, d2), b2 (d2,), s2 (d2,) = diag S2, U2 (d1, d2), c2 (d1,).
    """

    W1: np.ndarray
    b1: np.ndarray
    s1: np.ndarray
    U1: np.ndarray
    c1: np.ndarray
    W2: np.ndarray
    b2: np.ndarray
    s2: np.ndarray
    U2: np.ndarray
    c2: np.ndarray


class _Stats(NamedTuple):
    mean_x: np.ndarray
    mean_y: np.ndarray
    cov_x: np.ndarray
    cov_yx: np.ndarray
    s_yy: float


def data_stats(data) -> _Stats:
    """Central moments of ``data``: a Moments (duck-typed) or an (x, y) / (x,) tuple / array x."""
    if isinstance(data, np.ndarray):
        data = (data,)
    if isinstance(data, tuple):
        if len(data) not in (1, 2):
            raise ValueError(
                f"data tuple must be (x, y) or (x,), got a tuple of length {len(data)}"
            )
        x = data[0]
        y = data[1] if len(data) == 2 else None
        data = Moments.from_arrays(x, y)
    needed = ("mean_x", "mean_y", "cov_x", "cov_yx", "s_yy")
    if not all(hasattr(data, a) for a in needed):
        raise TypeError(
            "data must be a postcollapse.theory.Moments or an (x, y) tuple of arrays "
            f"(y None for the plain VAE), got {type(data).__name__}"
        )
    return _Stats(
        np.asarray(data.mean_x, dtype=np.float64),
        np.asarray(data.mean_y, dtype=np.float64),
        np.asarray(data.cov_x, dtype=np.float64),
        np.asarray(data.cov_yx, dtype=np.float64),
        float(data.s_yy),
    )


def _check_hparams(st: _Stats, p: HierarchicalParams) -> HierarchicalParams:
    d0, dy = st.mean_x.shape[0], st.mean_y.shape[0]
    p = HierarchicalParams(*(np.asarray(a, dtype=np.float64) for a in p))
    if p.W1.ndim != 2 or p.W1.shape[0] != d0:
        raise ValueError(f"W1 must have shape (d0={d0}, d1), got {p.W1.shape}")
    d1 = p.W1.shape[1]
    if p.W2.ndim != 2 or p.W2.shape[0] != d1:
        raise ValueError(f"W2 must have shape (d1={d1}, d2), got {p.W2.shape}")
    d2 = p.W2.shape[1]
    shapes = {"b1": (d1,), "s1": (d1,), "U1": (dy, d1), "c1": (dy,), "b2": (d2,),
              "s2": (d2,), "U2": (d1, d2), "c2": (d1,)}
    for name, shape in shapes.items():
        a = getattr(p, name)
        if a.shape != shape:
            raise ValueError(f"{name} must have shape {shape}, got {a.shape}")
    for name in _PARAM_NAMES:
        check_finite_array(name, getattr(p, name))
    for name in ("s1", "s2"):
        if np.any(getattr(p, name) <= 0):
            raise ValueError(f"{name} (encoder variances) must be > 0")
    return p


def _hloss(st: _Stats, p: HierarchicalParams, beta1, beta2, eta_enc, eta_dec, *, grad):
    """Loss (and gradient as HierarchicalParams) from central moments."""
    W1, b1, s1, U1, c1, W2, b2, s2, U2, c2 = p
    d1, d2 = s1.shape[0], s2.shape[0]
    e2, q2 = eta_dec**2, eta_enc**2
    # Reconstruction E||U1 z1 + c1 - y||^2.
    M = U1 @ W1.T
    e = M @ st.mean_x + U1 @ b1 + c1 - st.mean_y
    MA = M @ st.cov_x
    u1c = np.einsum("ij,ij->j", U1, U1)
    recon = np.sum(MA * M) - 2.0 * np.sum(M * st.cov_yx) + st.s_yy + e @ e + u1c @ s1
    # Moments of z1 under the encoder.
    m1 = W1.T @ st.mean_x + b1
    AW1 = st.cov_x @ W1
    K = W1.T @ AW1 + np.diag(s1)
    # Level-1 KL term: E||z1 - U2 z2 - c2||^2, z2 = W2^T z1 + b2 + eps2.
    B = np.eye(d1) - U2 @ W2.T
    q = B @ m1 - U2 @ b2 - c2
    BK = B @ K
    u2c = np.einsum("ij,ij->j", U2, U2)
    T1 = np.sum(BK * B) + q @ q + u2c @ s2
    # Level-2 term: E||z2||^2 + tr S2.
    pz = W2.T @ m1 + b2
    KW2 = K @ W2
    T2 = np.sum(W2 * KW2) + pz @ pz + np.sum(s2)
    loss = (
        recon / (2 * e2)
        + beta1 / 2 * (T1 / e2 - np.sum(np.log(s1)) + d1 * np.log(e2) - d1)
        + beta2 / 2 * (T2 / q2 - np.sum(np.log(s2)) + d2 * np.log(q2) - d2)
    )
    if not grad:
        return float(loss), None
    a, k1, k2 = 1.0 / (2 * e2), beta1 / (2 * e2), beta2 / (2 * q2)
    # recon
    gM = 2.0 * (MA - st.cov_yx + np.outer(e, st.mean_x))
    gU1 = a * (gM @ W1 + 2.0 * np.outer(e, b1) + 2.0 * U1 * s1)
    gW1 = a * (gM.T @ U1)
    gb1 = a * 2.0 * (U1.T @ e)
    gc1 = a * 2.0 * e
    gs1 = a * u1c
    # T1
    dK = k1 * (B.T @ B) + k2 * (W2 @ W2.T)
    dB = k1 * 2.0 * (BK + np.outer(q, m1))
    dm1 = k1 * 2.0 * (B.T @ q) + k2 * 2.0 * (W2 @ pz)
    dk = -k1 * 2.0 * q  # d/dk of T1 part, k = U2 b2 + c2
    gU2 = -dB @ W2 + np.outer(dk, b2) + k1 * 2.0 * U2 * s2
    gW2 = -dB.T @ U2 + k2 * 2.0 * (KW2 + np.outer(m1, pz))
    gb2 = U2.T @ dk + k2 * 2.0 * pz
    gc2 = dk
    gs2 = k1 * u2c + k2 - beta2 / 2 / s2
    # K = W1^T A W1 + diag(s1); m1 = W1^T mx + b1
    gW1 = gW1 + 2.0 * AW1 @ dK + np.outer(st.mean_x, dm1)
    gs1 = gs1 + np.diag(dK) - beta1 / 2 / s1
    gb1 = gb1 + dm1
    return float(loss), HierarchicalParams(gW1, gb1, gs1, gU1, gc1, gW2, gb2, gs2, gU2, gc2)


def _check_weights(beta1, beta2, eta_enc, eta_dec):
    return (
        check_positive("beta", beta1),
        check_positive("beta2", beta2),
        check_positive("eta_enc", eta_enc),
        check_positive("eta_dec", eta_dec),
    )


def hierarchical_loss(data, params, *, beta, beta2, eta_enc=1.0, eta_dec=1.0) -> float:
    """Exact loss of a two-level linear VAE (module docstring; no log 2 pi constants).

    Parameters
    ----------
    data : Moments or tuple
        A ``postcollapse.theory.Moments`` or ``(x, y)`` with x (n, d0), y (n, dy) or None
        (plain VAE, y = x).
    params : HierarchicalParams
        W1 (d0, d1), b1 (d1,), s1 (d1,), U1 (dy, d1), c1 (dy,), W2 (d1, d2), b2 (d2,),
        s2 (d2,), U2 (d1, d2), c2 (d1,); s1 and s2 are the encoder variances.
    beta, beta2 : float > 0
        KL weights beta1 (level 1) and beta2 (level 2).
    eta_enc, eta_dec : float > 0
        Prior standard deviation of z2, decoder standard deviation of z1 and y.

    Returns
    -------
    float
    """
    beta, beta2, eta_enc, eta_dec = _check_weights(beta, beta2, eta_enc, eta_dec)
    st = data_stats(data)
    p = _check_hparams(st, HierarchicalParams(*params))
    return _hloss(st, p, beta, beta2, eta_enc, eta_dec, grad=False)[0]


def hierarchical_loss_and_grad(
    data, params, *, beta, beta2, eta_enc=1.0, eta_dec=1.0
) -> tuple[float, HierarchicalParams]:
    """Loss and analytic gradient (a HierarchicalParams of derivatives; s1, s2: d/d variance)."""
    beta, beta2, eta_enc, eta_dec = _check_weights(beta, beta2, eta_enc, eta_dec)
    st = data_stats(data)
    p = _check_hparams(st, HierarchicalParams(*params))
    return _hloss(st, p, beta, beta2, eta_enc, eta_dec, grad=True)


@dataclass(frozen=True)
class FlatHierarchicalLoss:
    """The two-level loss as a function of one flat vector, for ``scipy.optimize.minimize``.

    The vector holds W1, b1, U1, c1, W2, b2, U2, c2 (raveled, in that order), then
    log s1 (only when ``sigma1`` is None, i.e. learnable), then log s2. With ``sigma1`` a
    number the level-1 variances are fixed at sigma1^2.
    """

    stats: _Stats
    latent_dim: int
    latent_dim2: int
    beta: float
    beta2: float
    sigma1: float | None
    eta_enc: float
    eta_dec: float

    @classmethod
    def build(cls, data, *, latent_dim, latent_dim2, beta, beta2, sigma1=None, eta_enc=1.0,
              eta_dec=1.0):
        d1 = check_int_at_least("latent_dim", latent_dim, 1)
        d2 = check_int_at_least("latent_dim2", latent_dim2, 1)
        beta, beta2, eta_enc, eta_dec = _check_weights(beta, beta2, eta_enc, eta_dec)
        if sigma1 is not None:
            sigma1 = check_positive("sigma1", sigma1)
        return cls(data_stats(data), d1, d2, beta, beta2, sigma1, eta_enc, eta_dec)

    def _shapes(self):
        d0, dy = self.stats.mean_x.shape[0], self.stats.mean_y.shape[0]
        d1, d2 = self.latent_dim, self.latent_dim2
        return [("W1", (d0, d1)), ("b1", (d1,)), ("U1", (dy, d1)), ("c1", (dy,)),
                ("W2", (d1, d2)), ("b2", (d2,)), ("U2", (d1, d2)), ("c2", (d1,))]

    @property
    def size(self) -> int:
        n = sum(int(np.prod(s)) for _, s in self._shapes()) + self.latent_dim2
        return n + (self.latent_dim if self.sigma1 is None else 0)

    def unpack(self, theta) -> HierarchicalParams:
        theta = np.asarray(theta, dtype=np.float64)
        if theta.shape != (self.size,):
            raise ValueError(f"theta must have shape ({self.size},), got {theta.shape}")
        out, i = {}, 0
        for name, shape in self._shapes():
            n = int(np.prod(shape))
            out[name] = theta[i : i + n].reshape(shape).copy()
            i += n
        if self.sigma1 is None:
            out["s1"] = np.exp(theta[i : i + self.latent_dim])
            i += self.latent_dim
        else:
            out["s1"] = np.full(self.latent_dim, self.sigma1**2)
        out["s2"] = np.exp(theta[i : i + self.latent_dim2])
        return HierarchicalParams(**out)

    def pack(self, params: HierarchicalParams) -> np.ndarray:
        parts = [np.ravel(getattr(params, name)) for name, _ in self._shapes()]
        if self.sigma1 is None:
            parts.append(np.log(params.s1))
        parts.append(np.log(params.s2))
        return np.concatenate(parts).astype(np.float64)

    def init(self, rng: np.random.Generator, *, scale: float = 1.0) -> np.ndarray:
        """A random starting vector (weights on W1 scaled to the data's spread)."""
        p = {name: rng.normal(0.0, scale, shape) for name, shape in self._shapes()}
        spread = np.sqrt(max(np.trace(self.stats.cov_x), 1e-300) / self.stats.mean_x.shape[0])
        p["W1"] /= spread
        p["s1"] = np.exp(rng.normal(0.0, 0.5, self.latent_dim))
        p["s2"] = np.exp(rng.normal(0.0, 0.5, self.latent_dim2))
        return self.pack(HierarchicalParams(**p))

    def __call__(self, theta) -> tuple[float, np.ndarray]:
        p = self.unpack(theta)
        loss, g = _hloss(self.stats, p, self.beta, self.beta2, self.eta_enc, self.eta_dec,
                         grad=True)
        parts = [np.ravel(getattr(g, name)) for name, _ in self._shapes()]
        if self.sigma1 is None:
            parts.append(g.s1 * p.s1)
        parts.append(g.s2 * p.s2)
        return loss, np.concatenate(parts)


# ---------------------------------------------------------------------------------------
# Closed form


@dataclass(frozen=True, eq=False)
class HierarchicalOptimum:
    """Global minimum of the two-level linear VAE.

    Attributes
    ----------
    loss : float
        min L (no log 2 pi constants).
    regime : str
        "sigma1 fixed" (Dang et al.'s setting), "level 2 collapsed" (both variances
        learnable, beta2 > beta1) or "flat valley" (both learnable, beta2 == beta1: the same
        value is reached along a flat valley; the reported minimiser has level 2 collapsed).
    active_level1 : ndarray of bool, shape (d1,)
        Level-1 latent i carries information about mode i (lambda_i > 0).
    active_level2 : ndarray of bool, shape (d2,)
        Level-2 latent j is active (omega_j > 0).
    lambda1 : ndarray, shape (d1,)
        Singular values of the whitened level-1 encoder A^{1/2} W1, latent i on mode i.
    decoder1 : ndarray, shape (d1,)
        Singular values of U1 (latent i on mode i).
    omega : ndarray, shape (d2,)
        Singular values of U2 (latent j of level 2).
    level2_mode : ndarray of int, shape (d2,)
        The level-1 latent (= mode) that level-2 latent j serves.
    s : ndarray, shape (d1,)
        Variance of z1 along each level-1 latent at the optimum (lambda1^2 + S1).
    zeta : ndarray, shape (d1,)
        The singular values of Z the level-1 latents serve (zero past d*).
    params : HierarchicalParams
        A global minimiser (biases included).
    zeta_threshold1, zeta_threshold2 : float
        Level 1 serves mode i iff zeta_i > zeta_threshold1 (for a mode level 2 serves; one
        it does not, when d2 < d1, needs zeta_i > sqrt(beta) sigma1); level 2 is active on level-1
        latent i iff zeta_i > zeta_threshold2 (and it is among the d2 of largest gain).
        0 means every direction, even one with no signal; inf means none.
    """

    loss: float
    regime: str
    active_level1: np.ndarray
    active_level2: np.ndarray
    lambda1: np.ndarray
    decoder1: np.ndarray
    omega: np.ndarray
    level2_mode: np.ndarray
    s: np.ndarray
    zeta: np.ndarray
    params: HierarchicalParams
    zeta_threshold1: float
    zeta_threshold2: float
    beta: float
    beta2: float
    sigma1: float | None
    eta_enc: float
    eta_dec: float

    @property
    def n_active_level1(self) -> int:
        return int(self.active_level1.sum())

    @property
    def n_active_level2(self) -> int:
        return int(self.active_level2.sum())


def _g(s, bp):
    """Level-2 cost per direction of z1-variance s: s below b', b'(1 + log(s/b')) above."""
    s = np.asarray(s, dtype=np.float64)
    return np.where(s > bp, bp * (1.0 + np.log(np.maximum(s, bp) / bp)), s)


def _level1_params(spec: Spectrum, zeta, lam1, s, sigma2_1):
    """Level-1 weights putting latent i on mode i with whitened singular value lam1[i]."""
    d1 = zeta.shape[0]
    f_cols = np.zeros((spec.d2, d1))
    g_cols = np.zeros((spec.d0, d1))
    k = min(d1, spec.d_star)
    if k:
        f_cols[:, :k] = spec.F[:, :k]
        g_cols[:, :k] = spec.whitened_G[:, :k]
    W1 = g_cols * lam1
    U1 = f_cols * (zeta * lam1 / s)
    return W1, -(W1.T @ spec.mean_x), U1, spec.mean_y.copy(), sigma2_1


def hierarchical_optimum(
    spec: Spectrum,
    *,
    latent_dim: int,
    latent_dim2: int,
    beta: float,
    beta2: float,
    sigma1: float | None = None,
    eta_enc: float = 1.0,
    eta_dec: float = 1.0,
) -> HierarchicalOptimum:
    """Closed-form global minimum of the two-level linear VAE (docs/THEORY.md).

    Parameters
    ----------
    spec : Spectrum
        From :func:`postcollapse.theory.spectrum` (with vectors, for the parameters).
    latent_dim, latent_dim2 : int >= 1
        d1 and d2, the latent dimensions of the two levels (d2 < d1 allowed).
    beta, beta2 : float > 0
        KL weights of level 1 and level 2.
    sigma1 : float > 0 or None
        Fixed level-1 encoder standard deviation (S1 = sigma1^2 I, S2 learnable: Dang et
        al.'s setting). None: both S1 and S2 learnable.
    eta_enc, eta_dec : float > 0

    Returns
    -------
    HierarchicalOptimum

    Raises
    ------
    ValueError
        With both variances learnable and beta2 < beta: the loss is unbounded below.
    """
    if not isinstance(spec, Spectrum):
        raise TypeError(
            f"expected a Spectrum (postcollapse.theory.spectrum), got {type(spec).__name__}"
        )
    d1 = check_int_at_least("latent_dim", latent_dim, 1)
    d2 = check_int_at_least("latent_dim2", latent_dim2, 1)
    beta1, beta2, eta_enc, eta_dec = _check_weights(beta, beta2, eta_enc, eta_dec)
    e2 = eta_dec**2
    bp = beta2 * e2 / beta1  # b' = beta2 eta^2 / beta1
    zeta = spec.zeta_padded(d1)
    tail = spec.residual + float(np.sum(spec.zeta[d1:] ** 2))
    if not spec.has_vectors:
        raise ValueError(
            "this Spectrum was computed with vectors=False; use spectrum(moments) for the "
            "hierarchical optimum"
        )

    if sigma1 is None:
        if beta2 < beta1:
            raise ValueError(
                f"the two-level loss with both encoder variances learnable is unbounded below "
                f"for beta2 < beta (regime 'unbounded', beta2={beta2:g} < beta={beta1:g}): "
                "fix the level-1 variance (sigma1) or use beta2 >= beta"
            )
        from postcollapse.theory.optimum import optimum

        # Level 2 collapses completely; level 1 is the one-level VAE at beta1 whose prior
        # is the level-2 decoder N(0, eta_dec^2 I).
        one = optimum(spec, latent_dim=d1, beta=beta1, sigma="learnable",
                      eta_enc=eta_dec, eta_dec=eta_dec)
        s = one.theta**2 + one.sigma2
        params = HierarchicalParams(
            W1=one.W, b1=one.b_e, s1=one.sigma2, U1=one.U, c1=one.b_d,
            W2=np.zeros((d1, d2)), b2=np.zeros(d2), s2=np.full(d2, eta_enc**2),
            U2=np.zeros((d1, d2)), c2=np.zeros(d1),
        )
        # one.mode is the identity for learnable Sigma: latent i serves mode i.
        return HierarchicalOptimum(
            loss=one.loss,
            regime="flat valley" if beta2 == beta1 else "level 2 collapsed",
            active_level1=one.active.copy(),
            active_level2=np.zeros(d2, dtype=bool),
            lambda1=one.theta.copy(),
            decoder1=one.lam.copy(),
            omega=np.zeros(d2),
            level2_mode=np.full(d2, -1),
            s=s,
            zeta=zeta,
            params=params,
            zeta_threshold1=float(np.sqrt(beta1) * eta_dec),
            zeta_threshold2=float("inf"),
            beta=beta1, beta2=beta2, sigma1=None, eta_enc=eta_enc, eta_dec=eta_dec,
        )

    sigma1 = check_positive("sigma1", sigma1)
    v1 = sigma1**2
    z2 = zeta**2
    # With the level-2 log branch available: h(s) = zeta^2 v1/s + beta1 g(s), s >= v1.
    s_low = zeta * sigma1 / np.sqrt(beta1)
    s_root = np.where(zeta * sigma1 <= beta2 * e2 / np.sqrt(beta1), s_low, z2 * v1 / (beta2 * e2))
    s_with = np.maximum(v1, s_root)
    h_with = z2 * v1 / s_with + beta1 * _g(s_with, bp)
    # Without level 2 on this direction: h0(s) = zeta^2 v1/s + beta1 s.
    s_without = np.maximum(v1, s_low)
    h_without = z2 * v1 / s_without + beta1 * s_without
    gain = h_without - h_with  # >= 0
    # Level 2 serves the d2 directions of largest gain (stable: ties go to stronger modes).
    order = np.argsort(-gain, kind="stable")
    served = order[: min(d2, d1)]
    served = served[gain[served] > 0]
    use = np.zeros(d1, dtype=bool)
    use[served] = True
    s = np.where(use, s_with, s_without)
    h = np.where(use, h_with, h_without)
    loss = (tail + float(np.sum(h)) + d1 * beta1 * e2 * (np.log(e2 / v1) - 1.0)) / (2 * e2)

    lam1 = np.sqrt(np.maximum(s - v1, 0.0))
    active1 = s > v1
    W1, b1, U1, c1, s1 = _level1_params(spec, zeta, lam1, s, np.full(d1, v1))
    # Level 2: a plain learnable-Sigma VAE on z1 (mean 0, covariance diag(s)) at b'.
    level2_mode = np.full(d2, -1)
    level2_mode[: served.size] = np.sort(served)
    omega = np.zeros(d2)
    W2 = np.zeros((d1, d2))
    U2 = np.zeros((d1, d2))
    s2 = np.full(d2, eta_enc**2)
    for j, i in enumerate(level2_mode):
        if i < 0:
            continue
        gap = s[i] - bp  # > 0 since the gain is positive
        omega[j] = np.sqrt(gap) / eta_enc
        U2[i, j] = omega[j]
        W2[i, j] = eta_enc * np.sqrt(gap) / s[i]
        s2[j] = bp * eta_enc**2 / s[i]
    params = HierarchicalParams(W1=W1, b1=b1, s1=s1, U1=U1, c1=c1, W2=W2, b2=np.zeros(d2),
                                s2=s2, U2=U2, c2=np.zeros(d1))
    return HierarchicalOptimum(
        loss=float(loss),
        regime="sigma1 fixed",
        active_level1=active1,
        active_level2=omega > 0,
        lambda1=lam1,
        decoder1=zeta * lam1 / s,
        omega=omega,
        level2_mode=level2_mode,
        s=s,
        zeta=zeta,
        params=params,
        zeta_threshold1=float(np.sqrt(beta1) * sigma1 if v1 <= bp else np.sqrt(beta2) * eta_dec),
        zeta_threshold2=float(0.0 if v1 > bp else beta2 * e2 / (np.sqrt(beta1) * sigma1)),
        beta=beta1, beta2=beta2, sigma1=sigma1, eta_enc=eta_enc, eta_dec=eta_dec,
    )
