"""Moments via postcollapse.scale (dask) vs one-process ``Moments.from_arrays``, side by side.

Cases, each timed on the same float64 array (shifted by 1e4) in one run, best of
``--repeats`` with the cases interleaved:

  one_process     Moments.from_arrays(x)                               (the reference)
  dask_threads    scale.moments(x, scheduler="threads")                (row blocks, one machine)
  files_threads   scale.moments_from_files(shards, scheduler="threads") (4 .npy shards)
  cluster_array   scale.moments(x) with a LocalCluster(2 workers x 1 thread, processes):
                  the array lives in this process and is shipped to the workers
  cluster_files   scale.moments_from_files(shards) on that cluster: each worker memory-maps
                  its shards, only d x d moments travel (the out-of-core case)

Printed: seconds, ratio to one_process (> 1: slower) and the largest deviation of the
covariance from the reference relative to its largest diagonal entry.

Usage: python benchmarks/bench_scale.py [--smoke] [--rows N] [--cols D] [--repeats R]
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
import warnings

import numpy as np


def _timed(fn):
    t = time.perf_counter()
    out = fn()
    return time.perf_counter() - t, out


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--smoke", action="store_true", help="tiny fast run (20,000 x 32)")
    p.add_argument("--rows", type=int, default=None, help="default 200,000")
    p.add_argument("--cols", type=int, default=None, help="default 256")
    p.add_argument("--repeats", type=int, default=None, help="default 3 (smoke: 1)")
    p.add_argument("--chunk-rows", type=int, default=None,
                   help="rows per dask block (default: about 32 MiB of float64)")
    p.add_argument("--no-cluster", action="store_true", help="skip the LocalCluster cases")
    args = p.parse_args(argv)
    n = args.rows or (20_000 if args.smoke else 200_000)
    d = args.cols or (32 if args.smoke else 256)
    repeats = args.repeats or (1 if args.smoke else 3)

    from postcollapse import scale
    from postcollapse.theory import Moments

    rng = np.random.default_rng(0)
    x = rng.standard_normal((n, d)) * np.linspace(0.5, 3.0, d) + 1e4
    print(f"# x: {n} x {d} float64 ({x.nbytes / 2**20:.0f} MiB), shifted by 1e4; "
          f"cpus {os.cpu_count()}, OMP_NUM_THREADS={os.environ.get('OMP_NUM_THREADS', 'unset')}")

    with tempfile.TemporaryDirectory() as tmp:
        bounds = np.linspace(0, n, 5).astype(int)
        shards = []
        for i, (lo, hi) in enumerate(zip(bounds[:-1], bounds[1:], strict=True)):
            shards.append(os.path.join(tmp, f"x{i}.npy"))
            np.save(shards[-1], x[lo:hi])

        cases = {
            "one_process": lambda: Moments.from_arrays(x),
            "dask_threads": lambda: scale.moments(x, chunk_rows=args.chunk_rows,
                                                  scheduler="threads"),
            "files_threads": lambda: scale.moments_from_files(shards, scheduler="threads"),
        }
        cluster = client = None
        if not args.no_cluster:
            from distributed import Client, LocalCluster

            t_start, cluster = _timed(lambda: LocalCluster(
                n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None))
            client = Client(cluster, set_as_default=False)
            # cluster_array ships the array inside the graph on purpose (that is the case
            # measured); distributed warns about the large graph every time.
            warnings.filterwarnings("ignore", message="Sending large graph")
            print(f"# LocalCluster(2 workers x 1 thread, processes) started in {t_start:.1f} s "
                  "(not counted below)")
            cases["cluster_array"] = lambda: scale.moments(x, chunk_rows=args.chunk_rows,
                                                           scheduler=client)
            cases["cluster_files"] = lambda: scale.moments_from_files(shards, scheduler=client)
        try:
            best = {k: np.inf for k in cases}
            results = {}
            for _ in range(repeats):
                for name, fn in cases.items():
                    t, results[name] = _timed(fn)
                    best[name] = min(best[name], t)
        finally:
            if client is not None:
                client.close()
                cluster.close()

    ref = results["one_process"]
    scale_xx = np.abs(np.diag(ref.m_xx)).max()
    print(f"{'case':<14} {'seconds':>8} {'vs one_process':>15} {'max |dA|/max A_ii':>18}")
    for name in cases:
        m = results[name]
        dev = np.abs(m.m_xx - ref.m_xx).max() / scale_xx
        print(f"{name:<14} {best[name]:>8.3f} {best[name] / best['one_process']:>14.2f}x "
              f"{dev:>18.1e}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
