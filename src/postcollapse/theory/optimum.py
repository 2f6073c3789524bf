"""Closed-form global minimum of the linear (conditional) VAE, fixed or learned eta_dec.

THEORY.md, "Global minimum": Sigma learnable (Theorem 2, Prop. 3), fixed at the prior
(Theorem 1), or any fixed diagonal (Prop. 2 with the corrected, sorted pairing).
Write b = beta * eta_dec^2; beta and eta_dec enter only through b (except in the KL of a
fixed Sigma, which carries beta alone).

THEORY.md, "Learned decoder variance": with ``eta_dec="learn"`` the decoder variance
v = eta_dec^2 is a parameter too and the objective is the beta-NLL
L_VAE(v) + (d2/2) log(2 pi v). At fixed v the minimum over the rest is the closed form
above; over v it is a one-dimensional problem with a closed-form minimiser on each piece
of constant active-mode count k (see :func:`learned_eta_dec2`).

One closed form serves :func:`optimum`, :func:`min_loss` and :func:`optimal_sigma2`
(``_closed_form``), vectorised over (beta, v) pairs.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import NamedTuple

import numpy as np

from postcollapse._checks import check_betas, check_int_at_least, check_positive
from postcollapse.theory.spectrum import LEARN, Spectrum, check_eta_dec

__all__ = [
    "Optimum",
    "optimum",
    "min_loss",
    "optimal_sigma2",
    "learned_eta_dec2",
    "SIGMA_MODES",
]

SIGMA_MODES = ("learnable", "prior")

LOG_2PI = float(np.log(2.0 * np.pi))


@dataclass(frozen=True, eq=False)
class Optimum:
    """A global minimiser of L_VAE (or, with a learned eta_dec, of the beta-NLL) and its value.

    Attributes
    ----------
    U : ndarray of shape (d2, d1)
    W : ndarray of shape (d0, d1)
    sigma2 : ndarray of shape (d1,)
        Encoder variances sigma_i^2.
    b_e : ndarray of shape (d1,)
    b_d : ndarray of shape (d2,)
    lam, theta : ndarray of shape (d1,)
        Singular values of U and of V = A^{1/2} W per latent dimension.
    mode : ndarray of int of shape (d1,)
        The mode (0-based index into zeta) that each latent dimension serves.
    loss : float
        L_VAE at the optimum (no log 2 pi constant); with a learned eta_dec, L_VAE at the
        learned v (the NLL is what was minimised).
    active : ndarray of bool of shape (d1,)
        Latent dimensions that carry information (lambda_i > 0).
    beta, eta_enc : float
    eta_dec : float
        The decoder standard deviation used (the learned one when ``eta_dec_learned``).
    sigma : str
        "learnable", "prior" or "fixed".
    eta_dec2 : float
        v = eta_dec^2.
    nll : float
        Per-example beta-NLL = loss + (d2/2) log(2 pi v) (the beta-weighted negative ELBO
        with its constant).
    eta_dec_learned : bool
        True when v was optimised (``eta_dec="learn"``).
    """

    U: np.ndarray
    W: np.ndarray
    sigma2: np.ndarray
    b_e: np.ndarray
    b_d: np.ndarray
    lam: np.ndarray
    theta: np.ndarray
    mode: np.ndarray
    loss: float
    active: np.ndarray
    beta: float
    eta_enc: float
    eta_dec: float
    sigma: str
    eta_dec2: float = float("nan")
    nll: float = float("nan")
    eta_dec_learned: bool = False

    @property
    def n_active(self) -> int:
        return int(self.active.sum())


class _Closed(NamedTuple):
    """The closed form at n (beta, v) pairs; per-dimension arrays are (n, d1)."""

    sigma2: np.ndarray
    lam: np.ndarray
    theta: np.ndarray
    active: np.ndarray
    mode: np.ndarray  # (d1,) mode served by each latent dimension
    loss: np.ndarray  # (n,) L_VAE, no log 2 pi constant


def _check_spec(spec, latent_dim):
    if not isinstance(spec, Spectrum):
        raise TypeError(
            f"expected a Spectrum (postcollapse.theory.spectrum), got {type(spec).__name__}"
        )
    return check_int_at_least("latent_dim", latent_dim, 1)


def _fixed_sigma2(sigma, d1: int) -> np.ndarray:
    s2 = np.asarray(sigma, dtype=np.float64).reshape(-1)
    if s2.shape != (d1,):
        raise ValueError(
            f"sigma as fixed variances must have length latent_dim={d1}, got {s2.size}"
        )
    if not np.all(np.isfinite(s2)) or np.any(s2 <= 0):
        raise ValueError("fixed encoder variances sigma_i^2 must be finite and > 0")
    return s2


def _sigma_kind(sigma, d1: int, eta_enc: float):
    """(label, fixed variances (d1,) or None for learnable Sigma)."""
    if isinstance(sigma, str):
        if sigma not in SIGMA_MODES:
            raise ValueError(
                f"sigma must be one of {SIGMA_MODES} or an array of variances, got {sigma!r}"
            )
        return sigma, (None if sigma == "learnable" else np.full(d1, eta_enc**2))
    return "fixed", _fixed_sigma2(sigma, d1)


def _kl_var(s2: np.ndarray, eta_enc: float) -> np.ndarray:
    """Per-dimension sigma^2/eta^2 - 1 - log(sigma^2/eta^2) (>= 0)."""
    r = s2 / eta_enc**2
    return r - 1.0 - np.log(r)


def _pairing(s2: np.ndarray) -> np.ndarray:
    """Mode served by each latent dimension: the smallest sigma serves the strongest mode."""
    order = np.argsort(s2, kind="stable")
    mode = np.empty(s2.size, dtype=int)
    mode[order] = np.arange(s2.size)
    return mode


def _closed_form(zeta, const, beta, v, s2, eta_enc) -> _Closed:
    """min over (U, W, Sigma, biases) of L_VAE at fixed beta and v = eta_dec^2 (THEORY.md).

    zeta : (d1,) zeta_padded(d1), descending; const = r + sum of all zeta^2;
    beta, v : (n,); s2 : None (learnable Sigma) or fixed variances (d1,) in dimension order.
    """
    beta = beta[:, None]
    v = v[:, None]
    d1 = zeta.size
    if s2 is None:
        b = beta * v
        z2 = zeta**2
        active = z2 > b
        safe_z2 = np.where(active, z2, 1.0)
        gap = np.where(active, z2 - b, 0.0)
        sigma2 = np.where(active, b * eta_enc**2 / safe_z2, eta_enc**2)
        lam = np.sqrt(gap) / eta_enc
        theta = eta_enc * np.sqrt(gap / safe_z2)
        gain = np.where(active, z2 - b * (1.0 - np.log(np.where(active, b / safe_z2, 1.0))), 0.0)
        loss = (const - gain.sum(-1)) / (2.0 * v[:, 0])
        return _Closed(sigma2, lam, theta, active, np.arange(d1), loss)
    mode = _pairing(s2)
    z = zeta[mode]
    sig = np.sqrt(s2)
    sb, sv = np.sqrt(beta), np.sqrt(v)
    s = sb * sv * sig / eta_enc
    gap = np.maximum(z - s, 0.0)
    active = gap > 0
    lam = np.sqrt(sb * sv / (sig * eta_enc) * gap)
    theta = np.sqrt(sig * eta_enc / (sb * sv) * gap)
    loss = (const - (gap**2).sum(-1)) / (2.0 * v[:, 0]) + beta[:, 0] / 2.0 * float(
        np.sum(_kl_var(s2, eta_enc))
    )
    sigma2 = np.broadcast_to(s2, gap.shape).copy()
    return _Closed(sigma2, lam, theta, active, mode, loss)


def _nll(loss, v, d2):
    return loss + 0.5 * d2 * (LOG_2PI + np.log(v))


def _learned_v(spec: Spectrum, d1: int, beta: np.ndarray, s2, eta_enc: float) -> np.ndarray:
    """The learned decoder variance v* at each beta (n,) (THEORY.md, learned variance).

    NLL(v) = L*(v) + (d2/2) log(2 pi v) is C^1 in v and, on the piece where exactly the top
    k modes are active, has the closed-form stationary point

      learnable Sigma:  v_k = R_k / (d2 - k beta)               (none when d2 <= k beta)
      fixed Sigma:      sqrt(v_k) = (sqrt(beta) P_k + sqrt(beta P_k^2 + 4 d2 R_k)) / (2 d2)

    with R_k = r + sum_{i>k} zeta_i^2 (every mode past k) and P_k = sum_{i<=k} zeta_i c_i,
    c_i = sigma_i / eta_enc of the dimension serving mode i. The self-consistent k is the one
    whose v_k lies inside its own piece; evaluating the NLL at each piece's minimiser (v_k
    clipped to the piece) and taking the lowest finds it without testing strict inequalities
    that rounding can break at a threshold (and picks the lowest NLL on a tie).
    """
    d2 = spec.d2
    z_all = spec.zeta
    z2_all = z_all**2
    const = spec.residual + float(z2_all.sum())
    if not const > 0:
        raise ValueError(
            "the target has zero variance, so a learned decoder variance runs to 0 and the "
            "NLL is unbounded below; fix eta_dec to a number"
        )
    kmax = min(d1, spec.d_star)
    # R_k, k = 0..kmax, by a reverse cumulative sum (no cancellation).
    tail = np.concatenate([np.cumsum(z2_all[::-1])[::-1], [0.0]]) + spec.residual
    R = tail[: kmax + 1].copy()
    # A residual below the spectrum's rank tolerance is zero (the rank cut made it so).
    if R[kmax] <= spec.rtol * const:
        R[kmax] = 0.0
    k = np.arange(kmax + 1)
    zk = z_all[:kmax]  # the modes that can be active, in mode order
    if s2 is None:
        c = np.ones(kmax)
    else:
        c = np.sqrt(np.sort(s2))[:kmax] / eta_enc  # sorted pairing: smallest sigma, top mode
    # Mode i is active at v iff v < zeta_i^2 / (beta c_i^2); piece k is [bp_{k+1}, bp_k).
    bp = zk**2 / c**2  # times 1/beta
    bnd_hi = np.concatenate([[np.inf], bp])  # upper end of piece k (times 1/beta)
    bnd_lo = np.concatenate([bp, [0.0]])  # lower end of piece k
    b = beta[:, None]
    if s2 is None:
        room = d2 - k * b  # (n, kmax+1)
        if R[kmax] == 0.0 and np.any(room[:, kmax] > 0):
            bad = float(beta[np.argmax(room[:, kmax] > 0)])
            raise ValueError(
                f"with eta_dec='learn' the NLL is unbounded below at beta={bad:g}: the top "
                f"{kmax} mode(s) explain the target exactly (r + sum_(i>{kmax}) zeta_i^2 = 0) "
                f"and d2={d2} > {kmax} * beta, so v -> 0; use beta >= {d2 / kmax:g}, "
                + (f"a latent_dim below {kmax}, " if kmax > 1 else "")
                + "or a fixed eta_dec"
            )
        with np.errstate(divide="ignore", invalid="ignore"):
            vk = np.where(room > 0, R / np.where(room > 0, room, 1.0), np.inf)
    else:
        P = np.concatenate([[0.0], np.cumsum(zk * c)])  # (kmax+1,)
        sq = (np.sqrt(b) * P + np.sqrt(b * P**2 + 4.0 * d2 * R)) / (2.0 * d2)
        vk = sq**2
    vk = np.clip(vk, bnd_lo / b, bnd_hi / b)
    n = beta.size
    flat_b = np.repeat(beta, kmax + 1)
    flat_v = vk.reshape(-1)
    cf = _closed_form(spec.zeta_padded(d1), const, flat_b, flat_v, s2, eta_enc)
    nll = _nll(cf.loss, flat_v, d2).reshape(n, kmax + 1)
    best = np.argmin(nll, axis=1)
    return vk[np.arange(n), best]


def _resolve_v(spec, d1, beta, eta_dec, s2, eta_enc):
    """(v per beta (n,), learned?)."""
    if eta_dec == LEARN:
        return _learned_v(spec, d1, beta, s2, eta_enc), True
    return np.full(beta.shape, eta_dec**2), False


def learned_eta_dec2(
    spec: Spectrum, betas, *, latent_dim: int, sigma="learnable", eta_enc: float = 1.0
) -> np.ndarray:
    """The learned decoder variance v* = eta_dec^2 at the global minimum of the beta-NLL.

    Learnable Sigma with the top k modes active: v* = (r + sum_{i>k} zeta_i^2) / (d2 - k beta)
    (THEORY.md, "Learned decoder variance"); Sigma fixed (at the prior or any diagonal):
    sqrt(v*) = (sqrt(beta) P_k + sqrt(beta P_k^2 + 4 d2 R_k)) / (2 d2) with
    P_k = sum_{i<=k} zeta_i sigma_i / eta_enc.

    Parameters
    ----------
    spec : Spectrum
    betas : array_like of shape (n,)
    latent_dim : int
    sigma : {"learnable", "prior"} or array_like of shape (latent_dim,)
    eta_enc : float

    Returns
    -------
    ndarray of shape (n,)

    Raises
    ------
    ValueError
        When the NLL is unbounded below (learnable Sigma, the kept modes explain y exactly
        and d2 > k beta: v -> 0), or the target has zero variance.
    """
    d1 = _check_spec(spec, latent_dim)
    eta_enc = check_positive("eta_enc", eta_enc)
    beta = check_betas(betas)
    _, s2 = _sigma_kind(sigma, d1, eta_enc)
    return _learned_v(spec, d1, beta, s2, eta_enc)


def optimum(
    spec: Spectrum,
    *,
    latent_dim: int,
    beta: float,
    sigma="learnable",
    eta_enc: float = 1.0,
    eta_dec=1.0,
) -> Optimum:
    """Closed-form global minimum of L_VAE, or of the beta-NLL when eta_dec is learned.

    Parameters
    ----------
    spec : Spectrum
        From :func:`postcollapse.theory.spectrum`.
    latent_dim : int
        d1, the number of latent dimensions.
    beta : float
        KL weight, > 0.
    sigma : {"learnable", "prior"} or array-like of shape (latent_dim,)
        Encoder variance: learnable diagonal, fixed at eta_enc^2 I, or these fixed
        variances sigma_i^2.
    eta_enc : float
        Prior standard deviation.
    eta_dec : float or "learn"
        Decoder standard deviation, or ``"learn"``: v = eta_dec^2 is optimised too, on the
        beta-NLL L_VAE(v) + (d2/2) log(2 pi v) (THEORY.md, "Learned decoder variance").

    Returns
    -------
    Optimum
        U* = F Lambda P, W* = A^{-1/2} G Theta P. For a fixed unequal Sigma the dimension
        with the smallest sigma serves the strongest mode (THEORY.md, Prop. 2 corrected).

    Raises
    ------
    ValueError
        With ``eta_dec="learn"`` when the NLL is unbounded below (see
        :func:`learned_eta_dec2`).
    """
    d1 = _check_spec(spec, latent_dim)
    eta_enc = check_positive("eta_enc", eta_enc)
    eta_dec = check_eta_dec(eta_dec)
    beta = check_positive("beta", beta)
    label, s2 = _sigma_kind(sigma, d1, eta_enc)
    betas = np.array([beta])
    v, learned = _resolve_v(spec, d1, betas, eta_dec, s2, eta_enc)
    const = spec.residual + float(np.sum(spec.zeta**2))
    cf = _closed_form(spec.zeta_padded(d1), const, betas, v, s2, eta_enc)
    mode = cf.mode
    lam, theta = cf.lam[0], cf.theta[0]
    # Columns of F and A^{-1/2} G for each latent dimension's mode (zero past d_star).
    f_cols = np.zeros((spec.d2, d1))
    g_cols = np.zeros((spec.d0, d1))
    valid = mode < spec.d_star
    if valid.any():
        spec._need_vectors()
        f_cols[:, valid] = spec.F[:, mode[valid]]
        g_cols[:, valid] = spec.whitened_G[:, mode[valid]]
    U = f_cols * lam
    W = g_cols * theta
    loss = float(cf.loss[0])
    v0 = float(v[0])
    return Optimum(
        U=U,
        W=W,
        sigma2=cf.sigma2[0],
        b_e=-(W.T @ spec.mean_x),
        b_d=spec.mean_y.copy(),
        lam=lam,
        theta=theta,
        mode=mode,
        loss=loss,
        active=cf.active[0],
        beta=beta,
        eta_enc=eta_enc,
        eta_dec=float(np.sqrt(v0)),
        sigma=label,
        eta_dec2=v0,
        nll=float(_nll(loss, v0, spec.d2)),
        eta_dec_learned=learned,
    )


def min_loss(
    spec: Spectrum,
    betas,
    *,
    latent_dim: int,
    sigma="learnable",
    eta_enc: float = 1.0,
    eta_dec=1.0,
    nll: bool = False,
) -> np.ndarray:
    """The optimum's L_VAE (or beta-NLL) for each beta in ``betas`` (shape of ``betas``).

    The same closed form as :func:`optimum`, vectorised: ``min_loss(...)[j]`` equals
    ``optimum(..., beta=betas[j]).loss`` (``.nll`` with ``nll=True``).

    Parameters
    ----------
    spec : Spectrum
    betas : array_like
    latent_dim : int
    sigma : {"learnable", "prior"} or array_like of shape (latent_dim,)
    eta_enc : float
    eta_dec : float or "learn"
        With ``"learn"`` the minimised objective is the beta-NLL; ``nll=False`` then gives
        L_VAE at the learned v (no log 2 pi term), ``nll=True`` the minimum NLL itself.
    nll : bool, default False
        Add the Gaussian normaliser (d2/2) log(2 pi eta_dec^2): the per-example beta-NLL.
    """
    d1 = _check_spec(spec, latent_dim)
    eta_enc = check_positive("eta_enc", eta_enc)
    eta_dec = check_eta_dec(eta_dec)
    beta = np.asarray(betas, dtype=np.float64)
    if not np.all(np.isfinite(beta)) or np.any(beta <= 0):
        raise ValueError("every beta must be a finite number > 0")
    _, s2 = _sigma_kind(sigma, d1, eta_enc)
    flat = beta.reshape(-1)
    if flat.size == 0:
        return np.zeros(beta.shape)
    v, _ = _resolve_v(spec, d1, flat, eta_dec, s2, eta_enc)
    const = spec.residual + float(np.sum(spec.zeta**2))
    out = _closed_form(spec.zeta_padded(d1), const, flat, v, s2, eta_enc).loss
    if nll:
        out = _nll(out, v, spec.d2)
    return out.reshape(beta.shape)


def optimal_sigma2(
    spec_or_zeta, betas, *, latent_dim: int, sigma="learnable", eta_enc: float = 1.0,
    eta_dec=1.0,
) -> np.ndarray:
    """Encoder variances sigma_i^2 at the global minimum for each beta (Prop. 3, THEORY.md).

    Learnable Sigma: sigma_i^2 = beta v eta_enc^2 / zeta_i^2 while zeta_i^2 > beta v, else
    eta_enc^2 (v = eta_dec^2, or the learned v with ``eta_dec="learn"``). Fixed Sigma
    ("prior" or an array) returns those variances.

    Parameters
    ----------
    spec_or_zeta : Spectrum or array_like of shape (m,)
        Bare zeta (>= 0) is sorted descending and padded with zeros / cut to latent_dim;
        ``eta_dec="learn"`` needs a Spectrum (r and d2 enter).
    betas : array_like of shape (n,)
    latent_dim : int
    sigma : {"learnable", "prior"} or array_like of shape (latent_dim,)
    eta_enc : float
    eta_dec : float or "learn"

    Returns
    -------
    ndarray of shape (n, latent_dim)
        Column i is latent dimension i; with learnable Sigma or the prior it serves mode i.
    """
    d1 = check_int_at_least("latent_dim", latent_dim, 1)
    eta_enc = check_positive("eta_enc", eta_enc)
    eta_dec = check_eta_dec(eta_dec)
    beta = check_betas(betas)
    _, s2 = _sigma_kind(sigma, d1, eta_enc)
    if isinstance(spec_or_zeta, Spectrum):
        zeta = spec_or_zeta.zeta_padded(d1)
    elif eta_dec == LEARN:
        raise TypeError(
            "optimal_sigma2 with eta_dec='learn' needs a Spectrum (the learned variance "
            "depends on the residual r and on d2), not bare zeta: pass spectrum(moments)"
        )
    else:
        z = np.asarray(spec_or_zeta, dtype=np.float64).reshape(-1)
        if not np.all(np.isfinite(z)) or np.any(z < 0):
            raise ValueError("zeta must hold finite values >= 0")
        zeta = np.zeros(d1)
        z = np.sort(z)[::-1][:d1]
        zeta[: z.size] = z
    if s2 is not None:
        return np.broadcast_to(s2, (beta.size, d1)).copy()
    v, _ = _resolve_v(spec_or_zeta, d1, beta, eta_dec, s2, eta_enc)
    return _closed_form(zeta, 0.0, beta, v, None, eta_enc).sigma2
