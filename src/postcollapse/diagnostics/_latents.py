"""Read encoder outputs (mu, logvar) from a file: the input of ``postcollapse diagnose``."""

from __future__ import annotations

import csv
import os
import re
import zipfile
from pathlib import Path

import numpy as np

from postcollapse._checks import check_2d, check_finite_array
from postcollapse.data.files import read_npz_member

__all__ = ["load_latents"]

_COL = re.compile(r"^(mu|logvar)_(\d+)$")


def load_latents(path: str | os.PathLike) -> tuple[np.ndarray, np.ndarray]:
    """Load posterior means and log-variances.

    Parameters
    ----------
    path : str or PathLike
        An ``.npz`` holding arrays ``mu`` and ``logvar`` of shape (n_samples, latent_dim),
        or a ``.csv`` with a header naming columns ``mu_1..mu_K`` and ``logvar_1..logvar_K``
        (any order; other columns are ignored).

    Returns
    -------
    mu, logvar : ndarray, shape (n_samples, latent_dim), float64

    Raises
    ------
    ValueError
        Missing arrays or columns, shapes that disagree, non-numeric or non-finite values.
    OSError
        The file cannot be read.
    """
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix == ".npz":
        mu, logvar = _load_npz(path)
    elif suffix == ".csv":
        mu, logvar = _load_csv(path)
    else:
        raise ValueError(
            f"{path}: unsupported latents file type {suffix or '(none)'!r}; use an .npz with "
            "arrays 'mu' and 'logvar' or a .csv with columns mu_1..mu_K, logvar_1..logvar_K"
        )
    mu = check_2d(f"{path.name}: mu", mu, min_rows=1)
    logvar = check_2d(f"{path.name}: logvar", logvar, min_rows=1)
    if mu.shape != logvar.shape:
        raise ValueError(
            f"{path.name}: mu has shape {mu.shape} but logvar has shape {logvar.shape}; "
            "they must agree (n_samples, latent_dim)"
        )
    mu = mu.astype(np.float64)
    logvar = logvar.astype(np.float64)
    check_finite_array(f"{path.name}: mu", mu)
    check_finite_array(f"{path.name}: logvar", logvar)
    return mu, logvar


def _load_npz(path: Path):
    if not path.exists():
        raise FileNotFoundError(2, "No such file or directory", str(path))
    if not zipfile.is_zipfile(path):
        raise ValueError(f"{path.name} is not a readable .npz file (not a zip archive)")
    try:
        with np.load(path, allow_pickle=False) as f:
            keys = list(f.keys())
            missing = [k for k in ("mu", "logvar") if k not in keys]
            if missing:
                raise ValueError(
                    f"{path.name} lacks array(s) {', '.join(missing)} (it has: "
                    f"{', '.join(keys) or 'nothing'}); save with np.savez(..., mu=mu, "
                    "logvar=logvar)"
                )
            return read_npz_member(path, f, "mu"), read_npz_member(path, f, "logvar")
    except (zipfile.BadZipFile, EOFError, NotImplementedError) as exc:
        raise ValueError(f"{path.name} is not a readable .npz file ({exc})") from None


def _load_csv(path: Path):
    with open(path, newline="") as fh:
        reader = csv.reader(fh)
        try:
            header = [h.strip() for h in next(reader)]
        except StopIteration:
            raise ValueError(f"{path.name} is empty; expected a header mu_1..mu_K, "
                             "logvar_1..logvar_K") from None
        cols: dict[str, dict[int, int]] = {"mu": {}, "logvar": {}}
        for j, h in enumerate(header):
            m = _COL.match(h)
            if m:
                cols[m.group(1)][int(m.group(2))] = j
        for kind in ("mu", "logvar"):
            if not cols[kind]:
                raise ValueError(
                    f"{path.name} has no {kind}_1.. columns (header: {','.join(header)[:80]}); "
                    "expected columns mu_1..mu_K, logvar_1..logvar_K"
                )
        k_mu, k_lv = sorted(cols["mu"]), sorted(cols["logvar"])
        for kind, ks in (("mu", k_mu), ("logvar", k_lv)):
            if ks != list(range(1, len(ks) + 1)):
                raise ValueError(
                    f"{path.name}: {kind} columns must be numbered 1..K without gaps, got "
                    f"{', '.join(f'{kind}_{k}' for k in ks)}"
                )
        if len(k_mu) != len(k_lv):
            raise ValueError(
                f"{path.name} has {len(k_mu)} mu columns but {len(k_lv)} logvar columns; "
                "they must agree"
            )
        idx_mu = [cols["mu"][k] for k in k_mu]
        idx_lv = [cols["logvar"][k] for k in k_lv]
        rows_mu, rows_lv = [], []
        for line_no, row in enumerate(reader, start=2):
            if not row or all(not c.strip() for c in row):
                continue
            if len(row) != len(header):
                raise ValueError(
                    f"{path.name} line {line_no} has {len(row)} fields, the header has "
                    f"{len(header)}"
                )
            try:
                rows_mu.append([float(row[j]) for j in idx_mu])
                rows_lv.append([float(row[j]) for j in idx_lv])
            except ValueError:
                raise ValueError(
                    f"{path.name} line {line_no} holds a value that is not a number"
                ) from None
    if not rows_mu:
        raise ValueError(f"{path.name} has a header but no data rows")
    return np.array(rows_mu), np.array(rows_lv)
