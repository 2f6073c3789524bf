"""Input validation shared by every layer.

Each check raises ``ValueError`` (or ``TypeError``) with a one-line message that names the
offending input and what was expected, so the CLI can print it as it is.
"""

from __future__ import annotations

import math
from numbers import Real

import numpy as np

__all__ = [
    "ACTIVE_VAR_THRESHOLD",
    "NonFiniteDataError",
    "check_positive",
    "check_int_at_least",
    "check_choice",
    "check_betas",
    "check_seeds",
    "check_finite_array",
    "check_same_rows",
    "check_2d",
]

# The active-unit rule used everywhere (sweeps, reproduction, monitor, CLI): a latent unit is
# active when the variance over the data of its posterior mean, Var_x E[z_i|x], exceeds this
# (Burda et al., 2016).
ACTIVE_VAR_THRESHOLD = 0.01


class NonFiniteDataError(ValueError):
    """Input data hold NaN or inf. A ``ValueError``, so callers that catch those still work;
    readers catch this type (not the message text) to add the file and row to the message."""


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


def check_choice(name: str, value, choices) -> str:
    """Return ``value`` if it is one of ``choices``, else raise naming the allowed ones."""
    if value not in choices:
        raise ValueError(f"{name} must be one of {', '.join(map(str, choices))}; got {value!r}")
    return value


def check_betas(betas, name: str = "betas") -> np.ndarray:
    """Return ``betas`` as a non-empty 1-D float64 array of finite numbers > 0, else raise."""
    try:
        b = np.atleast_1d(np.asarray(betas, dtype=np.float64))
    except (TypeError, ValueError):
        raise TypeError(f"{name} must be numbers, got {betas!r}") from None
    if b.ndim != 1:
        raise ValueError(f"{name} must be a 1-D grid, got shape {b.shape}")
    if b.size == 0:
        raise ValueError(f"{name} is empty; pass at least one beta")
    bad = ~(np.isfinite(b) & (b > 0))
    if bad.any():
        i = int(np.argmax(bad))
        raise ValueError(f"{name} must be finite numbers > 0; {name}[{i}] is {b[i]:g}")
    return b


def check_seeds(seeds) -> tuple[int, ...]:
    """A non-empty sequence of distinct ints >= 0 as a tuple (a bare int is refused: it would
    read as a count)."""
    if isinstance(seeds, int | np.integer):
        raise TypeError(f"seeds must be a sequence of ints such as range({seeds}), "
                        f"got the int {seeds}")
    out = tuple(check_int_at_least("seed", s, 0) for s in seeds)
    if not out or len(set(out)) != len(out):
        raise ValueError(f"seeds must be non-empty and distinct, got {list(out)}")
    return out


def check_same_rows(x, y, *, x_name: str = "x", y_name: str = "the target y") -> None:
    """Raise ValueError unless input ``x`` and target ``y`` have the same number of rows.

    ``x`` and ``y`` are arrays (their first axis counts) or row counts; the names say what
    they are in the message ("x has 5 rows but the target y has 4; ...").
    """
    n_x = x if isinstance(x, int | np.integer) else x.shape[0]
    n_y = y if isinstance(y, int | np.integer) else y.shape[0]
    if n_y != n_x:
        raise ValueError(
            f"{x_name} has {n_x} rows but {y_name} has {n_y}; "
            "they must have the same number of rows"
        )


def check_finite_array(name: str, a: np.ndarray) -> None:
    """Raise if ``a`` holds NaN or inf: say how many and where the first one is."""
    bad = ~np.isfinite(a)
    if bad.any():
        n_nan = int(np.isnan(a).sum())
        n_inf = int(bad.sum()) - n_nan
        first = tuple(int(i) for i in np.argwhere(bad)[0])
        where = f"row {first[0]}, column {first[1]}" if len(first) == 2 else f"index {first}"
        raise NonFiniteDataError(
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
