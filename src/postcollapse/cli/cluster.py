"""Shared command-line options for running a command on a Dask cluster, and where data live.

- ``add_cluster_options(parser, *, sweep=False)``: ``--workers N`` / ``--scheduler ADDRESS``
  (and, for sweeps, ``--cell-betas`` and ``--worker-threads``).
- ``add_column_options(parser)``: ``--columns`` / ``--target-columns`` of Parquet data.
- ``cluster_client(args)``: a context manager yielding None (in-process, the default) or a
  ``distributed.Client`` (a ``LocalCluster`` started for this run, or an existing
  scheduler), closed on exit.
- ``load_moments(args, client=None)``: the data's moments, read where the data live: a
  ``.npy`` file (memory-mapped), a folder or glob of ``.npy`` shards, Parquet files, or
  any other DATA (loaded by one worker on a cluster).
- ``sweep_function(args, client)``: ``postcollapse.train.sweep`` or, on a cluster, the
  cell-by-cell ``postcollapse.scale.distributed_sweep`` with the same arguments.

Nothing here imports dask, pyarrow or torch at module level: without the ``scale`` extra
the flags give a one-line error naming the install command.
"""

from __future__ import annotations

import glob
import logging
import os
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

__all__ = [
    "INSTALL_HINT",
    "DataSource",
    "add_cluster_options",
    "add_column_options",
    "require_scale",
    "cluster_client",
    "npy_shards",
    "load_moments",
    "sweep_function",
]

INSTALL_HINT = "pip install 'postcollapse[scale]'"


def add_cluster_options(parser, *, sweep: bool = False) -> None:
    """Add ``--workers`` / ``--scheduler`` (and sweep cell options) to a sub-parser."""
    g = parser.add_argument_group("cluster (needs the scale extra: " + INSTALL_HINT + ")")
    one = g.add_mutually_exclusive_group()
    one.add_argument("--workers", type=int, default=None, metavar="N",
                     help="run on a local Dask cluster of N single-threaded worker processes "
                          "(default: in this process, no cluster)")
    one.add_argument("--scheduler", default=None, metavar="ADDRESS",
                     help="run on an existing Dask scheduler, e.g. tcp://host:8786 (default: "
                          "none)")
    if sweep:
        g.add_argument("--cell-betas", type=int, default=None, metavar="K",
                       help="betas per cell (one seed each) on a cluster; default: all betas "
                            "per cell with >= 8 seeds, else chunks giving at least 8 cells")
        g.add_argument("--worker-threads", type=int, default=1, metavar="T",
                       help="torch threads per worker while it trains a cell (default 1)")


def add_column_options(parser) -> None:
    """Add ``--columns`` / ``--target-columns`` (Parquet DATA) to a sub-parser."""
    parser.add_argument("--columns", default=None, metavar="A,B,...",
                        help="Parquet DATA: the input columns (default: every numeric "
                             "column that is not a target column)")
    parser.add_argument("--target-columns", default=None, metavar="A,B,...",
                        help="Parquet DATA: the target columns (a conditional VAE); "
                             "default: none (target = inputs)")


def require_scale(flag: str = "--workers / --scheduler") -> None:
    """Raise a one-line ValueError naming the install command when dask is missing."""
    try:
        import dask  # noqa: F401
        import distributed  # noqa: F401
    except ImportError:
        raise ValueError(
            f"{flag} needs dask.distributed, which is not installed; install the scale extra: "
            f"{INSTALL_HINT}"
        ) from None


@contextmanager
def cluster_client(args):
    """Yield None (no cluster flag) or a ``distributed.Client`` for this command.

    ``--workers N`` starts a ``LocalCluster`` of N single-threaded worker processes that
    is shut down on exit; ``--scheduler ADDRESS`` connects to a running scheduler (left
    running on exit).
    """
    workers = getattr(args, "workers", None)
    address = getattr(args, "scheduler", None)
    if workers is None and address is None:
        yield None
        return
    if workers is not None and address is not None:
        raise ValueError("give --workers or --scheduler, not both")
    require_scale("--workers" if workers is not None else "--scheduler")
    from distributed import Client, LocalCluster

    from postcollapse._checks import check_int_at_least

    if workers is not None:
        workers = check_int_at_least("--workers", workers, 1)
        cluster = LocalCluster(n_workers=workers, threads_per_worker=1, processes=True,
                               dashboard_address=None, silence_logs=logging.ERROR)
        try:
            with Client(cluster) as client:
                yield client
        finally:
            cluster.close()
        return
    try:
        client = Client(address, timeout="20s")
    except (OSError, ValueError) as exc:
        raise ValueError(
            f"cannot reach the Dask scheduler at --scheduler {address}: {exc}; start one "
            "with `dask scheduler` (and workers with `dask worker ADDRESS --nthreads 1`)"
        ) from None
    with client:
        yield client


# ---------------------------------------------------------------------------- data


@dataclass(frozen=True)
class DataSource:
    """What the report header needs to know about DATA read without a ``Dataset``."""

    name: str
    plain: bool


def npy_shards(spec) -> list[str] | None:
    """The sorted ``.npy`` files of a folder or glob holding only ``.npy`` shards, else None."""
    if not isinstance(spec, str | os.PathLike):
        return None
    spec = os.fspath(spec)
    path = Path(spec).expanduser()
    if path.is_dir():
        files = sorted(str(p) for p in path.iterdir() if p.suffix.lower() == ".npy")
    elif not path.exists() and glob.has_magic(spec):
        files = sorted(glob.glob(os.path.expanduser(spec)))
        if files and not all(f.lower().endswith(".npy") for f in files):
            return None
    else:
        return None
    return [os.path.abspath(f) for f in files] or None


def _spec_moments(data, target):
    """(name, plain, Moments) of any DATA, loaded here (a worker, on a cluster)."""
    from postcollapse.data import load

    ds = load(data, target=target)
    return ds.name, ds.plain, ds.moments()


def _chunk_rows_of(paths, target_paths) -> int:
    import numpy as np

    from postcollapse.data import default_chunk_rows

    def cols(p):
        a = np.load(p, mmap_mode="r", allow_pickle=False)
        return 1 if a.ndim == 1 else int(a.shape[1])

    d = cols(paths[0]) + (0 if target_paths is None else cols(target_paths[0]))
    return default_chunk_rows(d)


def load_moments(args, *, client=None):
    """Moments of the command's DATA (and target), read where they live.

    Returns
    -------
    source : Dataset or DataSource
        Has ``name`` and ``plain``.
    moments : postcollapse.theory.Moments
    """
    data = args.data
    target = getattr(args, "target", None)
    columns = getattr(args, "columns", None)
    target_columns = getattr(args, "target_columns", None)
    from postcollapse.data.parquet import is_parquet

    if is_parquet(data):
        if target not in (None, "same"):
            raise ValueError("a Parquet DATA takes its target from --target-columns, "
                             f"not --target {target}")
        if target == "same":
            target_columns = None
        if client is not None:
            from postcollapse.scale import moments_from_parquet

            src, m = moments_from_parquet(data, columns=columns, target_columns=target_columns,
                                          scheduler=client)
        else:
            from postcollapse.data.parquet import parquet_moments

            src, m = parquet_moments(data, columns=columns, target_columns=target_columns)
        return DataSource(src.name, src.plain), m
    if columns is not None or target_columns is not None:
        raise ValueError("--columns / --target-columns choose columns of Parquet DATA; "
                         f"{data} is not a .parquet file or folder")
    shards = npy_shards(data)
    single_npy = str(data).lower().endswith(".npy") and Path(data).expanduser().is_file()
    if shards is not None or (client is not None and single_npy):
        paths = shards if shards is not None else [os.path.abspath(os.path.expanduser(data))]
        targets = None
        if target not in (None, "same"):
            targets = npy_shards(target)
            if targets is None and str(target).lower().endswith(".npy"):
                targets = [os.path.abspath(os.path.expanduser(target))]
            if targets is None:
                raise ValueError(f"with .npy shards as DATA, --target must be .npy shards too "
                                 f"(one per input shard), got {target}")
        name = str(data) if targets is None else f"{data} -> {target}"
        if client is not None:
            from postcollapse.scale import moments_from_files

            m = moments_from_files(paths, target_paths=targets, scheduler=client,
                                   chunk_rows=_chunk_rows_of(paths, targets))
        else:
            from postcollapse.data import load

            m = None
            for i, p in enumerate(paths):
                part = load(p, target=None if targets is None else targets[i]).moments()
                m = part if m is None else m.merge(part)
        return DataSource(name, targets is None), m
    if client is not None:  # read by a worker: nothing is sent from here
        name, plain, m = client.submit(_spec_moments, data, target, pure=False).result()
        return DataSource(name, plain), m
    from postcollapse.data import load

    ds = load(data, target=target)
    return ds, ds.moments()


def sweep_function(args, client):
    """``postcollapse.train.sweep``, or on a cluster the cell-by-cell distributed sweep."""
    if client is None:
        from postcollapse.train import sweep

        return sweep
    import functools

    from postcollapse.scale import distributed_sweep

    return functools.partial(distributed_sweep, client=client,
                             cell_betas=getattr(args, "cell_betas", None),
                             threads=getattr(args, "worker_threads", 1))
