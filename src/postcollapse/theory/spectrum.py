"""The whitened cross-moment Z = C A^{-1/2}, its SVD, and the collapse thresholds.

THEORY.md, "Spectrum" and "Collapse thresholds". A^{-1/2} is the inverse square root on
the range of A: eigenvalues below ``rtol * lambda_max`` count as zero (those input
directions carry no variance, hence no information about y).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from postcollapse._checks import check_int_at_least, check_positive
from postcollapse.theory.moments import Moments

__all__ = [
    "Spectrum",
    "spectrum",
    "thresholds",
    "active_modes",
    "beta_interval",
    "LEARN",
    "check_eta_dec",
]

DEFAULT_RTOL = 1e-10

# The value of ``eta_dec`` that asks for a learned decoder variance v = eta_dec^2.
LEARN = "learn"


@dataclass(frozen=True, eq=False)
class Spectrum:
    """Spectral summary of (x, y) that determines the linear VAE's global minimum.

    Attributes
    ----------
    zeta : ndarray of shape (d_star,)
        Singular values of Z in descending order, d_star = min(rank A, d2).
    F : ndarray of shape (d2, d_star), or None
        Left singular vectors of Z (None when computed with ``vectors=False``; so are G and
        eigvecs).
    G : ndarray of shape (d0, d_star)
        Right singular vectors of Z (in the range of A).
    rank : int
        Numerical rank of A = Cov(x).
    residual : float
        r = s_yy - ||Z||_F^2 >= 0, the least-squares regression residual of y on x.
    eigvals : ndarray of shape (rank,)
        The kept eigenvalues of A, descending.
    eigvecs : ndarray of shape (d0, rank)
        Their eigenvectors.
    mean_x, mean_y : ndarray
        E x (d0,) and E y (d2,).
    s_yy : float
        E ||y - E y||^2.
    n_samples, d0, d2 : int
    plain : bool
        True when y = x.
    """

    zeta: np.ndarray
    F: np.ndarray | None
    G: np.ndarray | None
    rank: int
    residual: float
    eigvals: np.ndarray
    eigvecs: np.ndarray | None
    mean_x: np.ndarray
    mean_y: np.ndarray
    s_yy: float
    n_samples: int
    d0: int
    d2: int
    plain: bool
    rtol: float = DEFAULT_RTOL

    @property
    def d_star(self) -> int:
        return self.zeta.shape[0]

    @property
    def has_vectors(self) -> bool:
        return self.eigvecs is not None

    def _need_vectors(self) -> None:
        if not self.has_vectors:
            raise ValueError(
                "this Spectrum was computed with vectors=False; use spectrum(moments) for "
                "the singular vectors"
            )

    @property
    def a_inv_sqrt(self) -> np.ndarray:
        """A^{-1/2} on the range of A, shape (d0, d0)."""
        self._need_vectors()
        return (self.eigvecs / np.sqrt(self.eigvals)) @ self.eigvecs.T

    @property
    def Z(self) -> np.ndarray:
        """Z = C A^{-1/2} = F diag(zeta) G^T, shape (d2, d0)."""
        self._need_vectors()
        return (self.F * self.zeta) @ self.G.T

    @property
    def whitened_G(self) -> np.ndarray:
        """A^{-1/2} G, shape (d0, d_star): the input directions of W* (W* = A^{-1/2} G Theta)."""
        self._need_vectors()
        return (self.eigvecs / np.sqrt(self.eigvals)) @ (self.eigvecs.T @ self.G)

    def zeta_padded(self, k: int) -> np.ndarray:
        """The first ``k`` singular values, padded with zeros beyond d_star."""
        k = check_int_at_least("latent_dim", k, 1)
        out = np.zeros(k)
        m = min(k, self.d_star)
        out[:m] = self.zeta[:m]
        return out


def spectrum(moments: Moments, *, rtol: float = DEFAULT_RTOL, vectors: bool = True) -> Spectrum:
    """Compute Z = C A^{-1/2}, its SVD and the regression residual from moments.

    Parameters
    ----------
    moments : Moments
        Central moments of x (and y; plain VAE when y = x).
    rtol : float, default 1e-10
        Eigenvalues of A below ``rtol * max eigenvalue`` are treated as zero.
    vectors : bool, default True
        False skips the singular vectors (F, G, eigvecs are then None): enough for zeta,
        thresholds and the loss curve, and faster for a plain VAE (eigenvalues only).

    Returns
    -------
    Spectrum
    """
    if not isinstance(moments, Moments):
        raise TypeError(f"spectrum() needs a Moments, got {type(moments).__name__}")
    if moments.n_samples < 2:
        raise ValueError(
            f"the data have {moments.n_samples} row(s); at least 2 are needed for a covariance"
        )
    rtol = check_positive("rtol", rtol)
    a = moments.cov_x
    if vectors or not moments.plain:
        lam, q = np.linalg.eigh(a)  # LAPACK syevd, as scipy driver="evd"
        lam, q = lam[::-1], q[:, ::-1]
    else:
        lam = np.linalg.eigvalsh(a)[::-1]
        q = None
    lmax = lam[0] if lam.size else 0.0
    keep = lam > rtol * lmax if lmax > 0 else np.zeros(lam.shape, bool)
    rank = int(keep.sum())
    lam_k = lam[keep]
    q_k = None if q is None else np.ascontiguousarray(q[:, keep])
    s_yy = moments.s_yy
    if moments.plain:
        # Z = A^{1/2}: its singular values are sqrt(eigenvalues), F = G = eigenvectors.
        zeta = np.sqrt(lam_k)
        f = g = q_k
        residual = max(0.0, s_yy - float(lam_k.sum()))
    else:
        # Z restricted to the range of A: Zr = C Q_k diag(lam^-1/2) (d2, rank); Z = Zr Q_k^T.
        zr = (moments.cov_yx @ q_k) / np.sqrt(lam_k)
        if rank and not vectors:
            zeta = np.linalg.svd(zr, compute_uv=False)  # LAPACK gesdd, as scipy
            f = g = q_k = None
        elif rank:
            f, zeta, gr_t = np.linalg.svd(zr, full_matrices=False)
            g = q_k @ gr_t.T
        else:
            f = np.zeros((moments.d2, 0))
            zeta = np.zeros(0)
            g = np.zeros((moments.d0, 0))
        residual = max(0.0, s_yy - float(np.sum(zr * zr)))
    d_star = min(rank, moments.d2)
    return Spectrum(
        zeta=np.ascontiguousarray(zeta[:d_star]),
        F=None if f is None else np.ascontiguousarray(f[:, :d_star]),
        G=None if g is None else np.ascontiguousarray(g[:, :d_star]),
        rank=rank,
        residual=float(residual),
        eigvals=lam_k,
        eigvecs=q_k,
        mean_x=moments.mean_x.copy(),
        mean_y=moments.mean_y.copy(),
        s_yy=float(s_yy),
        n_samples=moments.n_samples,
        d0=moments.d0,
        d2=moments.d2,
        plain=moments.plain,
        rtol=rtol,
    )


def _zeta_of(spec_or_zeta) -> np.ndarray:
    if isinstance(spec_or_zeta, Spectrum):
        return spec_or_zeta.zeta
    zeta = np.asarray(spec_or_zeta, dtype=np.float64)
    if zeta.ndim != 1:
        raise ValueError(f"zeta must be a 1-D array, got shape {zeta.shape}")
    if not np.all(np.isfinite(zeta)) or np.any(zeta < 0):
        raise ValueError("zeta must hold finite values >= 0")
    return np.sort(zeta)[::-1]


def check_eta_dec(value, name: str = "eta_dec"):
    """Return ``value`` as a float > 0, or the string ``"learn"`` (learned decoder variance).

    Raises a one-line ValueError/TypeError naming ``name`` otherwise.
    """
    if isinstance(value, str):
        if value == LEARN:
            return LEARN
        raise ValueError(f"{name} must be a number > 0 or 'learn', got {value!r}")
    return check_positive(name, value)


def _learn_spectrum(spec_or_zeta, what: str) -> Spectrum:
    if not isinstance(spec_or_zeta, Spectrum):
        raise TypeError(
            f"{what} with eta_dec='learn' need a Spectrum (they depend on the residual r and "
            "on d2), not bare zeta: pass spectrum(moments)"
        )
    return spec_or_zeta


def learned_thresholds(spec: Spectrum, *, sigma: str = "learnable") -> np.ndarray:
    """Critical betas under a learned decoder variance (THEORY.md, "Learned decoder variance").

    With S_i = r + sum_{j >= i} zeta_j^2 (every mode from i on, r the regression residual):

    - learnable Sigma: beta_i* = d2 zeta_i^2 / (S_i + (i - 1) zeta_i^2)
    - Sigma at the prior: beta_i* = d2 zeta_i^2 / (S_i + zeta_i sum_{j < i} zeta_j)

    Mode i survives at the global minimum of the beta-NLL iff beta < beta_i*; the values do
    not depend on eta_enc or on the latent dimension (which only caps the count).

    Parameters
    ----------
    spec : Spectrum
    sigma : {"learnable", "prior"}

    Returns
    -------
    ndarray of shape (d_star,)
        Non-increasing; 0 for zeta_i = 0 (and for modes whose r + sum_{j>=i} zeta_j^2 is
        below the spectrum's rank tolerance ``rtol`` times its total: rounding only).
    """
    spec = _learn_spectrum(spec, "thresholds")
    if sigma not in ("learnable", "prior"):
        raise ValueError(f"sigma must be 'learnable' or 'prior' for thresholds, got {sigma!r}")
    z = spec.zeta
    z2 = z**2
    # S_i by a reverse cumulative sum (no cancellation from total - prefix).
    tail = np.cumsum(z2[::-1])[::-1] + spec.residual
    if sigma == "learnable":
        denom = tail + np.arange(z.size) * z2
    else:
        before = np.concatenate([[0.0], np.cumsum(z)[:-1]])
        denom = tail + z * before
    # Modes past the point where r + sum_{j>=i} zeta_j^2 falls below the rank tolerance carry
    # only rounding (they are zero): threshold 0, never active.
    pos = (z2 > 0) & (tail > spec.rtol * tail[0]) if z.size else z2 > 0
    return np.where(pos, spec.d2 * z2 / np.where(pos, denom, 1.0), 0.0)


def thresholds(spec_or_zeta, *, eta_dec=1.0, sigma: str = "learnable") -> np.ndarray:
    """Critical betas beta_i*, descending (THEORY.md).

    Mode i is collapsed at the global minimum iff beta >= beta_i*. With a fixed eta_dec,
    beta_i* = zeta_i^2 / eta_dec^2 for either Sigma mode. With ``eta_dec="learn"`` (learned
    decoder variance, needs a Spectrum) see :func:`learned_thresholds`; ``sigma`` matters
    only then.
    """
    eta_dec = check_eta_dec(eta_dec)
    if eta_dec == LEARN:
        return learned_thresholds(spec_or_zeta, sigma=sigma)
    if sigma not in ("learnable", "prior"):
        raise ValueError(f"sigma must be 'learnable' or 'prior' for thresholds, got {sigma!r}")
    zeta = _zeta_of(spec_or_zeta)
    return zeta**2 / eta_dec**2


def active_modes(
    spec_or_zeta, beta: float, *, eta_dec=1.0, latent_dim=None, sigma: str = "learnable"
) -> int:
    """Number of modes that survive at ``beta``: #{i <= d1 : beta < beta_i*}.

    ``eta_dec`` is a number (then zeta_i^2 > beta eta_dec^2) or ``"learn"`` (learned
    decoder variance, needs a Spectrum; see :func:`learned_thresholds`).
    """
    beta = check_positive("beta", beta)
    k = int(np.sum(thresholds(spec_or_zeta, eta_dec=eta_dec, sigma=sigma) > beta))
    if latent_dim is not None:
        k = min(k, check_int_at_least("latent_dim", latent_dim, 1))
    return k


def beta_interval(
    spec_or_zeta, k: int, *, eta_dec=1.0, sigma: str = "learnable"
) -> tuple[float, float]:
    """The betas that leave exactly ``k`` active modes: ``lo <= beta < hi``.

    ``lo = beta_{k+1}*`` (0 when k = d_star) and ``hi = beta_k*`` (inf for k = 0). When
    two thresholds coincide the interval is empty (lo == hi) for the k between them.
    ``eta_dec="learn"`` uses the learned-variance thresholds (needs a Spectrum). With a
    latent dimension d1 = k, every beta < hi keeps all k.
    """
    t = thresholds(spec_or_zeta, eta_dec=eta_dec, sigma=sigma)
    k = check_int_at_least("k", k, 0)
    if k > t.size:
        raise ValueError(f"k={k} exceeds the number of modes with nonzero zeta ({t.size})")
    hi = np.inf if k == 0 else float(t[k - 1])
    lo = 0.0 if k == t.size else float(t[k])
    return lo, hi
