"""Free-bits sweeps with and without the smoothing continuation, side by side.

The linear free-bits VAE (``sweep(..., free_bits=0.3)``) on 300 rows of 5-d data far from
zero, betas 0.5 (aligned regime), 3 and 12 (all latents pinned at KL = lambda, on the kink
of max(lambda, KL_j)). Each optimiser is run twice in one process, with
``free_bits_smoothing`` off (the exact max) and on (the continuation,
``train.trainers.FreeBitsContinuation``); it prints the wall time, iterations, the largest
relative gap to the closed form ``theory.freebits_optimum`` and the members that
converged, and the ratio of the wall times.

    python benchmarks/bench_free_bits.py            # L-BFGS and Adam, ~5 min on one core
    python benchmarks/bench_free_bits.py --smoke    # L-BFGS, beta 12, 1000 iterations
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch

from postcollapse.train import sweep


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--smoke", action="store_true")
    p.add_argument("--threads", type=int, default=1)
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    rng = np.random.default_rng(0)
    x = rng.normal(size=(300, 5)) * [3.0, 1.6, 1.0, 0.6, 0.3] + 5.0
    if args.smoke:
        runs = [("lbfgs", {"betas": [12.0], "seeds": [1], "steps": 1000, "dtype": "float64"})]
    else:
        runs = [("lbfgs", {"betas": [0.5, 3.0, 12.0], "seeds": [1, 2], "steps": 3000,
                           "dtype": "float64"}),
                ("adam", {"betas": [0.5, 3.0, 12.0], "seeds": [1, 2], "steps": 40000})]
    print(f"free bits 0.3, latent 3, {x.shape[0]} rows, {args.threads} thread(s)")
    print(f"{'optimizer':>9} {'smoothing':>9} {'wall s':>8} {'iters':>6} {'max gap':>9} "
          f"{'converged':>9}")
    for opt, kw in runs:
        walls = {}
        for smooth in (False, True):
            t0 = time.perf_counter()
            res = sweep((x, None), free_bits=0.3, latent_dim=3, optimizer=opt,
                        free_bits_smoothing=smooth, device="cpu", **kw)
            walls[smooth] = time.perf_counter() - t0
            gap = max(abs(r["theory_gap"]) for r in res.rows)
            conv = sum(bool(r["converged"]) for r in res.rows)
            print(f"{opt:>9} {'on' if smooth else 'off':>9} {walls[smooth]:8.2f} "
                  f"{res.timing['steps']:6d} {gap:9.2e} {conv:>5d}/{len(res.rows)}")
        print(f"{opt}: wall time off / on = {walls[False] / walls[True]:.2f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
