"""Streaming, shifted, mergeable central moments of (x, y).

Everything the linear theory needs from data is the first and second central moments
(THEORY.md, "Moments"): biases are learnable, so only ``A = Cov(x)``, ``C = Cov(y, x)``
and ``s_yy = E||y - E y||^2`` (population normalisation 1/N) enter.

Each chunk is centred on its own float64 mean before its cross-products are formed, and
chunks are combined with the pairwise update of Chan, Golub & LeVeque (1979). Raw sums of
``X^T X`` on data far from zero lose every significant digit when the mean is removed
afterwards; centred partial sums do not. Merging is exact and associative up to rounding,
so moments of shards computed apart (out of core, on a cluster) combine by ``merge``.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from postcollapse._checks import (
    NonFiniteDataError,
    check_2d,
    check_finite_array,
    check_int_at_least,
    check_same_rows,
)

__all__ = ["Moments", "as_moments"]

DEFAULT_CHUNK = 4096


def _centre(name: str, chunk: np.ndarray, row_offset: int) -> tuple[np.ndarray, np.ndarray]:
    """Return (float64 mean, float64 centred copy) of one chunk; report NaN/inf rows."""
    c = np.array(chunk, dtype=np.float64, copy=True)
    mean = c.mean(axis=0)
    if not np.isfinite(mean).all():
        # NaN and inf propagate into the mean, so the full scan runs only on bad data.
        try:
            check_finite_array(name, chunk)
        except ValueError as exc:
            if row_offset:
                bad = np.argwhere(~np.isfinite(np.asarray(chunk)))[0]
                raise NonFiniteDataError(
                    str(exc).replace(f"row {bad[0]},", f"row {bad[0] + row_offset},")
                ) from None
            raise
        raise ValueError(f"{name} overflows float64 when averaged")  # pragma: no cover
    c -= mean
    return mean, c


def _shifted_chunks(name, a, shift, buf, chunk_size):
    """Yield (start, a[start:stop] - shift) as float64 in one reused buffer (one pass).

    ``shift=None``: the rows themselves when they already are C-contiguous float64 (no
    copy at all), else a float64 copy in the buffer.
    """
    for start in range(0, a.shape[0], chunk_size):
        rows = a[start : start + chunk_size]
        if shift is None and rows.dtype == np.float64 and rows.flags.c_contiguous:
            yield start, np.asarray(rows)
            continue
        b = buf[: rows.shape[0]]
        if shift is None:
            np.copyto(b, rows, casting="unsafe")
        else:
            np.subtract(rows, shift, out=b, casting="unsafe")
        yield start, b


def _first_shift(name, a, k):
    """The shift for ``a``: its first chunk's mean, or None (no shift) for float64 data
    whose first chunk is near zero (mean^2 <= 100 var in every column): there the final
    correction n m m^T removes at most about two digits of 16, and skipping the shift
    saves a full pass over the data."""
    first = np.asarray(a[:k], dtype=np.float64)
    shift = first.mean(axis=0)
    if not np.isfinite(shift).all():
        _centre(name, a[:k], 0)  # raises with the position of the first bad value
    if a.dtype == np.float64 and np.all(shift**2 <= 100.0 * first.var(axis=0)):
        return None, np.zeros_like(shift)
    return shift, shift


def _check_sum(name, s, chunk, start):
    if not np.isfinite(s).all():
        _centre(name, chunk, start)  # raises with the position of the first bad value
        raise ValueError(f"{name} overflows float64 when summed")  # pragma: no cover


def _bulk(cls, x, y, chunk_size):
    """Moments of whole arrays: fixed shift, reused buffers, BLAS syrk accumulation.

    Shift by the first chunk's mean (THEORY.md: accumulate after subtracting a fixed
    shift; skipped for float64 data already near zero, see ``_first_shift``), subtract it
    in one fused pass into a reused buffer, form B^T B in a reused buffer (numpy
    dispatches ``b.T @ b`` to BLAS syrk and mirrors the triangle: measured as fast as
    scipy's in-place dsyrk, without importing scipy.linalg) and add it to one
    accumulator. The mean correction n dm dm^T is applied once; dm = mean - shift is
    small, so it cancels nothing.
    """
    n, d0 = x.shape
    k = min(n, chunk_size)
    shift_x, sx = _first_shift("x", x, k)
    bx = np.empty((k, d0))
    acc = np.zeros((d0, d0))
    prod = np.empty((d0, d0))
    tx = np.zeros(d0)
    if y is None:
        ys = ((start, None) for start in range(0, n, chunk_size))
    else:
        d2 = y.shape[1]
        shift_y, sy = _first_shift("y (target)", y, k)
        by = np.empty((k, d2))
        acc_yx = np.zeros((d2, d0))
        prod_yx = np.empty((d2, d0))
        ty = np.zeros(d2)
        syy = 0.0
        ys = _shifted_chunks("y (target)", y, shift_y, by, chunk_size)
    xs = _shifted_chunks("x", x, shift_x, bx, chunk_size)
    for (start, b), (_, c) in zip(xs, ys, strict=True):
        s = b.sum(axis=0)
        _check_sum("x", s, x[start : start + chunk_size], start)
        tx += s
        np.matmul(b.T, b, out=prod)  # syrk: b and b.T share one buffer
        acc += prod
        if c is not None:
            t = c.sum(axis=0)
            _check_sum("y (target)", t, y[start : start + chunk_size], start)
            ty += t
            np.matmul(c.T, b, out=prod_yx)
            acc_yx += prod_yx
            syy += float(np.einsum("ij,ij->", c, c))
    dx = tx / n
    m_xx = acc
    m_xx -= n * np.outer(dx, dx)
    if y is None:
        return cls(n, sx + dx, m_xx)
    dy = ty / n
    return cls(n, sx + dx, m_xx, sy + dy, acc_yx - n * np.outer(dy, dx),
               syy - n * float(dy @ dy))


@dataclass(frozen=True, eq=False)
class Moments:
    """Central moments of x (and of a target y) over ``n_samples`` rows.

    Attributes
    ----------
    n_samples : int
    mean_x : ndarray of shape (d0,)
    m_xx : ndarray of shape (d0, d0)
        Sum over rows of (x - mean_x)(x - mean_x)^T.
    y_mean : ndarray of shape (d2,) or None
        None for a plain VAE (target y = x); use ``mean_y`` for the target mean.
    m_yx : ndarray of shape (d2, d0) or None
        Sum over rows of (y - mean_y)(x - mean_x)^T.
    m_yy : float or None
        Sum over rows of ||y - mean_y||^2.
    """

    n_samples: int
    mean_x: np.ndarray
    m_xx: np.ndarray
    y_mean: np.ndarray | None = None
    m_yx: np.ndarray | None = None
    m_yy: float | None = None

    # ------------------------------------------------------------------ constructors
    @classmethod
    def empty(cls, d0: int, d2: int | None = None) -> Moments:
        """Moments of no rows: the identity of ``merge``. ``d2=None`` means y = x."""
        d0 = check_int_at_least("d0", d0, 1)
        if d2 is None:
            return cls(0, np.zeros(d0), np.zeros((d0, d0)))
        d2 = check_int_at_least("d2", d2, 1)
        return cls(0, np.zeros(d0), np.zeros((d0, d0)), np.zeros(d2), np.zeros((d2, d0)), 0.0)

    @classmethod
    def from_arrays(cls, x, y=None, *, chunk_size: int = DEFAULT_CHUNK) -> Moments:
        """Moments of arrays (or memory maps) ``x`` (n, d0) and ``y`` (n, d2), by chunks.

        ``y=None`` is the plain VAE (target = x). Rows are read ``chunk_size`` at a time,
        so a memory-mapped ``x`` never has to fit in memory.
        """
        x = check_2d("x", x, min_rows=0)
        if y is not None:
            y = check_2d("y (target)", y, min_rows=0)
            check_same_rows(x, y)
        chunk_size = check_int_at_least("chunk_size", chunk_size, 1)
        if x.shape[0] == 0:
            return cls.empty(x.shape[1], None if y is None else y.shape[1])
        return _bulk(cls, x, y, chunk_size)

    # ------------------------------------------------------------------ updates
    def update(self, x, y=None) -> Moments:
        """Return the moments of these rows and the chunk ``x`` (and ``y``) together."""
        x = check_2d("x", x, min_rows=0)
        if x.shape[1] != self.d0:
            raise ValueError(f"x chunk has {x.shape[1]} columns, expected {self.d0}")
        if self.plain and y is not None:
            raise ValueError("these moments are of a plain VAE (y = x); do not pass y")
        if not self.plain:
            if y is None:
                raise ValueError("these moments have a separate target; pass y with x")
            y = check_2d("y (target)", y, min_rows=0)
            check_same_rows(x, y, x_name="x chunk", y_name="y chunk")
            if y.shape[1] != self.d2:
                raise ValueError(f"y chunk has {y.shape[1]} columns, expected {self.d2}")
        if x.shape[0] == 0:
            return self
        n = x.shape[0]
        mx, xc = _centre("x", x, self.n_samples)
        # X^T X of a C-contiguous X: numpy dispatches xc.T @ xc to BLAS syrk.
        chunk = Moments(n, mx, xc.T @ xc)
        if not self.plain:
            my, yc = _centre("y (target)", y, self.n_samples)
            chunk = Moments(n, mx, chunk.m_xx, my, yc.T @ xc, float(np.einsum("ij,ij->", yc, yc)))
        return self.merge(chunk)

    def merge(self, other: Moments) -> Moments:
        """Combine with the moments of disjoint rows (Chan et al. pairwise update)."""
        if not isinstance(other, Moments):
            raise TypeError(f"can only merge Moments, got {type(other).__name__}")
        if other.d0 != self.d0 or other.plain != self.plain or other.d2 != self.d2:
            raise ValueError(
                f"cannot merge moments of shape (d0={other.d0}, d2={other.d2}, "
                f"plain={other.plain}) into (d0={self.d0}, d2={self.d2}, plain={self.plain})"
            )
        if other.n_samples == 0:
            return self
        if self.n_samples == 0:
            return other
        na, nb = self.n_samples, other.n_samples
        n = na + nb
        dx = other.mean_x - self.mean_x
        w = na * nb / n
        mean_x = self.mean_x + dx * (nb / n)
        m_xx = self.m_xx + other.m_xx + w * np.outer(dx, dx)
        if self.plain:
            return Moments(n, mean_x, m_xx)
        dy = other.y_mean - self.y_mean
        return Moments(
            n,
            mean_x,
            m_xx,
            self.y_mean + dy * (nb / n),
            self.m_yx + other.m_yx + w * np.outer(dy, dx),
            self.m_yy + other.m_yy + w * float(dy @ dy),
        )

    # ------------------------------------------------------------------ views
    @property
    def plain(self) -> bool:
        """True for a plain VAE: the target is the input."""
        return self.y_mean is None

    @property
    def d0(self) -> int:
        return self.mean_x.shape[0]

    @property
    def d2(self) -> int:
        return self.d0 if self.plain else self.y_mean.shape[0]

    def _require_rows(self) -> None:
        if self.n_samples < 1:
            raise ValueError("moments of zero rows: feed data with update() first")

    @property
    def cov_x(self) -> np.ndarray:
        """A = Cov(x), shape (d0, d0), population normalisation."""
        self._require_rows()
        return self.m_xx / self.n_samples

    @property
    def cov_yx(self) -> np.ndarray:
        """C = Cov(y, x), shape (d2, d0)."""
        self._require_rows()
        return self.cov_x if self.plain else self.m_yx / self.n_samples

    @property
    def s_yy(self) -> float:
        """E ||y - E y||^2."""
        self._require_rows()
        if self.plain:
            return float(np.trace(self.m_xx)) / self.n_samples
        return float(self.m_yy) / self.n_samples

    @property
    def mean_y(self) -> np.ndarray:
        """E y, shape (d2,) (equal to E x for a plain VAE)."""
        return self.mean_x if self.plain else self.y_mean


def as_moments(data) -> Moments:
    """The ``Moments`` of ``data``, the one adapter behind every ``data`` argument.

    Parameters
    ----------
    data : Moments, Dataset, tuple or ndarray
        A ``Moments`` (returned as it is); an object with a ``moments()`` method (a
        ``postcollapse.data.Dataset``); a tuple ``(x, y)`` or ``(x,)`` with x of shape
        (n_samples, d0) and y of shape (n_samples, d2) (y None, or a 1-tuple, is the plain
        VAE, y = x); or an array x of shape (n_samples, d0) (plain VAE).

    Returns
    -------
    Moments
    """
    if isinstance(data, Moments):
        return data
    if isinstance(data, tuple):
        if len(data) not in (1, 2):
            raise ValueError(
                f"data tuple must be (x, y) or (x,), got a tuple of length {len(data)}"
            )
        return Moments.from_arrays(*data)
    if callable(getattr(data, "moments", None)):
        return data.moments()
    if isinstance(data, np.ndarray):
        return Moments.from_arrays(data)
    raise TypeError(
        "data must be a postcollapse.theory.Moments, a Dataset, an (x, y) tuple of arrays "
        f"(y None for the plain VAE) or an array x (n_samples, d0), got {type(data).__name__}"
    )
