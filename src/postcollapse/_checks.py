"""Input validation shared by every layer.

Each check raises ``ValueError`` (or ``TypeError``) with a one-line message that names the
offending input and what was expected, so the CLI can print it as it is.
"""

from __future__ import annotations

import math
from numbers import Real

import numpy as np

__all__ = ["check_positive", "check_int_at_least", "check_finite_array", "check_2d"]


def check_positive(name: str, value) -> float:
    """Return ``value`` as a float, or raise if it is not a finite number > 0."""
    if isinstance(value, bool) or not isinstance(value, Real | np.floating | np.integer):
        raise TypeError(f"{name} must be a number, got {type(value).__name__}")
    value = float(value)
    if not math.isfinite(value) or value <= 0:
        raise ValueError(f"{name} must be a finite number > 0, got {value:g}")
    return value


def check_int_at_least(name: str, value, minimum: int) -> int:
    """Return ``value`` as an int, or raise if it is not an integer >= ``minimum``."""
    if isinstance(value, bool) or not isinstance(value, int | np.integer):
        raise TypeError(f"{name} must be an integer, got {type(value).__name__}")
    if value < minimum:
        raise ValueError(f"{name} must be >= {minimum}, got {value}")
    return int(value)


def check_finite_array(name: str, a: np.ndarray) -> None:
    """Raise if ``a`` holds NaN or inf: say how many and where the first one is."""
    bad = ~np.isfinite(a)
    if bad.any():
        n_nan = int(np.isnan(a).sum())
        n_inf = int(bad.sum()) - n_nan
        first = tuple(int(i) for i in np.argwhere(bad)[0])
        where = f"row {first[0]}, column {first[1]}" if len(first) == 2 else f"index {first}"
        raise ValueError(
            f"{name} holds {n_nan} NaN and {n_inf} inf value(s); the first is at {where}"
        )


def check_2d(name: str, a: np.ndarray, *, min_rows: int = 2) -> np.ndarray:
    """Return ``a`` as a 2-D array (a 1-D array becomes one column); check its row count."""
    a = np.asarray(a)
    if a.ndim == 1:
        a = a[:, None]
    if a.ndim != 2:
        raise ValueError(f"{name} must be a 2-D array (n_samples, n_features), got shape {a.shape}")
    if a.shape[0] < min_rows:
        raise ValueError(f"{name} has {a.shape[0]} row(s); at least {min_rows} are needed")
    if not (np.issubdtype(a.dtype, np.number) or a.dtype == bool):
        raise TypeError(f"{name} must be numeric, got dtype {a.dtype}")
    return a
