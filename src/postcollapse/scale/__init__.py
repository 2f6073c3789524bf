"""Out-of-core and distributed computation with Dask (the optional extra ``scale``).

When the data outgrow one machine the theory must still be computable: everything it
needs is the moments of (x, y), and ``Moments.merge`` combines moments of disjoint rows
exactly (Chan et al.), so each row block is reduced where it lives and only d x d
matrices travel.

- ``moments(x, y=None, *, chunk_rows=None)``: moments of dask / numpy / memory-mapped
  arrays, one ``Moments`` per row block, merged in a fixed tree (fan-in 8).
- ``moments_from_files(paths, *, target_paths=None)``: the same over ``.npy`` shards, each
  memory-mapped by the worker that reads it (only paths travel).
- ``spectrum(x, y=None, ...)``: ``moments`` then ``postcollapse.theory.spectrum``.
- ``map_betas(fn, betas, *, client=None, chunks=None)``: independent per-beta work (sweeps)
  spread over a cluster in beta chunks; rows come back in beta order.
- ``moments_from_parquet(spec, *, columns=None, target_columns=None)``: moments of Parquet
  files, one task per row group (pyarrow on the workers).
- ``distributed_sweep(data, *, betas, seeds, client, out, resume, ...)``: a training
  sweep cut into cells (one seed, a chunk of betas), each trained on a worker and kept in
  ``OUT/cells/`` as it finishes; resumable, and a cell whose worker dies is run again.
- ``ClusterTrainer(client)``: ``trainer(data, members=[(beta, seed), ...], **options)``
  on the cluster (members cut into cells by seed, rows in member order): the trainer of
  ``postcollapse.locate`` on a cluster.

Computations use the active ``distributed.Client`` when there is one and dask's default
scheduler otherwise (or ``scheduler=`` / ``client=`` when given).
"""

try:
    import dask  # noqa: F401
except ImportError as exc:  # pragma: no cover - the extra is installed in CI
    raise ImportError(
        "postcollapse.scale needs dask; install the extra: pip install 'postcollapse[scale]'"
    ) from exc

from postcollapse.scale.cells import distributed_sweep, plan_cells
from postcollapse.scale.members import ClusterTrainer, member_cells
from postcollapse.scale.moments import moments, moments_from_files, spectrum
from postcollapse.scale.parquet import moments_from_parquet
from postcollapse.scale.sweep import map_betas

__all__ = [
    "moments",
    "moments_from_files",
    "moments_from_parquet",
    "spectrum",
    "map_betas",
    "distributed_sweep",
    "plan_cells",
    "ClusterTrainer",
    "member_cells",
]
