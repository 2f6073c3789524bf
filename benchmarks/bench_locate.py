"""Locating every mode to 1% vs one 16-point grid sweep, same training settings, one run.

Synthetic data (2,000 rows, 5 modes), latent 5, Sigma(x) linear. For each model the grid is
16 log-spaced betas from 0.1 x beta_5* to 2 x beta_1* (one batched sweep); ``locate`` brackets
all 5 modes to ``--rtol``. Both train the same seeds with the same optimiser, learning rate,
steps and batch size. Prints the wall time of each, the rounds and members locate needed,
and the ratio locate / grid (target: at most ~3x).

    python benchmarks/bench_locate.py            # relu and linear, Adam to convergence
    python benchmarks/bench_locate.py --smoke    # relu, 300 steps, rtol 0.05
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch

from postcollapse.data import load
from postcollapse.locate import locate
from postcollapse.theory import spectrum, thresholds
from postcollapse.train import sweep

SETTINGS = {
    "relu": {"model": "relu", "sigma": "linear", "hidden": 8, "lr": 3e-3,
             "batch_size": 500},
    "tanh": {"model": "tanh", "sigma": "linear", "hidden": 8, "lr": 3e-3,
             "batch_size": 500},
    "linear": {"model": "linear", "sigma": "learnable", "optimizer": "lbfgs",
               "dtype": "float64"},
}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--smoke", action="store_true")
    ap.add_argument("--models", default=None, help="comma list of relu, tanh, linear")
    ap.add_argument("--steps", type=int, default=None)
    ap.add_argument("--seeds", type=int, default=1)
    ap.add_argument("--rtol", type=float, default=None)
    ap.add_argument("--hidden", type=int, default=None,
                    help="hidden width of the MLP models (default 8, the paper's)")
    ap.add_argument("--max-points", type=int, default=None,
                    help="locate's max_points (default: LOCATE_DEFAULTS)")
    ap.add_argument("--scout", type=int, default=None,
                    help="locate's scout grid size (default: LOCATE_DEFAULTS)")
    ap.add_argument("--start-width", type=float, default=None,
                    help="locate's start_width (default: LOCATE_DEFAULTS)")
    args = ap.parse_args()
    torch.set_num_threads(1)
    steps = args.steps or (300 if args.smoke else None)  # None: the sweep's rule and budget
    rtol = args.rtol or (0.05 if args.smoke else 0.01)
    models = (args.models or ("relu" if args.smoke else "relu,linear")).split(",")
    data = load("synthetic")
    th = thresholds(spectrum(data.moments()))[:5]
    grid = [float(b) for b in np.geomspace(0.1 * th[-1], 2.0 * th[0], 16)]
    seeds = list(range(args.seeds))
    print(f"synthetic, latent 5, seeds {seeds}, rtol {rtol}, torch threads 1, MLP hidden "
          f"{args.hidden or 8}")
    print(f"{'model':>7} {'grid s':>8} {'locate s':>9} {'rounds':>6} {'members':>7} "
          f"{'ratio':>6}  widest bracket")
    for name in models:
        opts = dict(SETTINGS[name])
        if args.hidden is not None and "hidden" in opts:
            opts["hidden"] = args.hidden
        if opts.get("optimizer") != "lbfgs" and steps is not None:
            opts["steps"] = steps
        t0 = time.perf_counter()
        sweep(data, betas=grid, seeds=seeds, latent_dim=5, **opts)
        t_grid = time.perf_counter() - t0
        t0 = time.perf_counter()
        search = {k: v for k, v in (("max_points", args.max_points), ("scout", args.scout),
                                    ("start_width", args.start_width)) if v is not None}
        res = locate(data, latent_dim=5, seeds=seeds, rtol=rtol, **search, **opts)
        t_loc = time.perf_counter() - t0
        widest = max((m.width for m in res.modes), default=float("nan"))
        print(f"{name:>7} {t_grid:8.1f} {t_loc:9.1f} {len(res.rounds):6d} "
              f"{res.members_trained:7d} {t_loc / t_grid:6.2f}  {widest:.4f}")


if __name__ == "__main__":
    main()
