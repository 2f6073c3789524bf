"""Train an arbitrary list of (beta, seed) members on a Dask cluster: the trainer of
``postcollapse.locate`` on a cluster.

``ClusterTrainer(client)`` is called as ``trainer(data, members=[(beta, seed), ...],
**sweep_options)``, like ``postcollapse.train.sweep``. It groups the members by seed, cuts
each seed's betas into cells (:func:`~postcollapse.scale.cells.train_cell`, one batched
training per cell on one worker), and returns the rows in the order of ``members``.
Members are independent (a member's initialisation, batch order and noise depend only on
its seed), so the rows are those of one in-process training of all the members.
"""

from __future__ import annotations

import math
import os
import time
from dataclasses import dataclass, field

from postcollapse._checks import check_int_at_least
from postcollapse.scale.cells import DEFAULT_MIN_CELLS, train_cell

__all__ = ["ClusterTrainer", "MembersResult", "member_cells"]

# Options of the sweep that have no meaning for one cell of a round.
_DROPPED = ("progress", "callback")


def _key(beta: float, seed: int) -> tuple[float, int]:
    return float(f"{float(beta):.12g}"), int(seed)


def member_cells(members, *, cell_betas: int | None = None) -> list[tuple[int, list[float]]]:
    """Cut members into cells: ``[(seed, [beta, ...]), ...]``, one seed each, betas sorted.

    ``cell_betas`` betas per cell at most; default: chunks small enough for at least
    ``DEFAULT_MIN_CELLS`` cells in all (one cell per seed when there are that many seeds).
    """
    by_seed: dict[int, list[float]] = {}
    for b, s in members:
        by_seed.setdefault(int(s), []).append(float(b))
    total = sum(len(v) for v in by_seed.values())
    if cell_betas is None:
        cell_betas = max(1, math.ceil(total / DEFAULT_MIN_CELLS))
    cell_betas = check_int_at_least("cell_betas", cell_betas, 1)
    cells = []
    for s in sorted(by_seed):
        betas = sorted(set(by_seed[s]))
        for lo in range(0, len(betas), cell_betas):
            cells.append((s, betas[lo: lo + cell_betas]))
    return cells


@dataclass
class MembersResult:
    """Rows of the members (in their order), and how the round went."""

    rows: list[dict]
    timing: dict = field(default_factory=dict)


class ClusterTrainer:
    """``trainer(data, members=[(beta, seed), ...], **options)`` on a Dask cluster.

    Parameters
    ----------
    client : distributed.Client
    threads : int or None, default 1
        torch threads per worker while it trains a cell.
    cell_betas : int, optional
        Betas per cell (see :func:`member_cells`).
    retries : int, default 3
        Times a failed cell (e.g. its worker died) is run again.
    """

    def __init__(self, client, *, threads: int | None = 1, cell_betas: int | None = None,
                 retries: int = 3):
        self.client = client
        self.threads = threads
        self.cell_betas = cell_betas
        self.retries = check_int_at_least("retries", retries, 0)
        self._scattered: tuple[object, object] | None = None

    def _payload(self, data):
        """A spec (path, "synthetic") travels as is; anything else is scattered once."""
        if isinstance(data, str | os.PathLike):
            return os.fspath(data)
        if self._scattered is None or self._scattered[0] is not data:
            self._scattered = (data, self.client.scatter(data, broadcast=False))
        return self._scattered[1]

    def __call__(self, data, *, members, **options) -> MembersResult:
        for k in _DROPPED:
            options.pop(k, None)
        members = [_key(b, s) for b, s in members]
        cells = member_cells(members, cell_betas=self.cell_betas)
        t0 = time.perf_counter()
        payload = self._payload(data)
        futures = [self.client.submit(train_cell, payload, betas=betas, seed=seed,
                                      threads=self.threads, pure=False,
                                      retries=self.retries, **options)
                   for seed, betas in cells]
        results = self.client.gather(futures)
        by_key = {}
        for res in results:
            for r in res["rows"]:
                by_key[_key(r["beta"], r["seed"])] = r
        missing = [m for m in members if m not in by_key]
        if missing:
            raise ValueError(f"the cluster returned no row for beta={missing[0][0]}, "
                             f"seed={missing[0][1]}")
        return MembersResult(
            rows=[by_key[m] for m in members],
            timing={"total_time": time.perf_counter() - t0, "cells": len(cells),
                    "cell_seconds": float(sum(r.get("seconds", 0.0) for r in results)),
                    "workers": sorted({f"{r.get('host')}:{r.get('pid')}" for r in results})})
