"""Where a ReLU VAE with a learned decoder variance collapses on the MNIST subset, against the
learned-variance prediction of the linear theory.

One batched sweep (``postcollapse.train.sweep(..., model="relu", eta_dec="learn")``): a
log-spaced beta grid across the learned-variance thresholds beta_i* = d2 zeta_i^2 /
(r + sum_{j>=i} zeta_j^2 + (i-1) zeta_i^2) (about 41-77 on the subset, latent 5). It prints,
per beta, the active modes measured (eigenvalues of Cov_x(mu) > 0.01) next to the
predicted count, the learned eta_dec next to the linear optimum's, and the ratio of the
measured complete-collapse beta to the predicted one (beta_1*). A measurement, not a
pass/fail: the ReLU model is not the linear model, so its thresholds may move.

    python benchmarks/bench_learned_variance.py            # ~5 min on one CPU core
    python benchmarks/bench_learned_variance.py --smoke    # 1,000 rows, 5 epochs
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch

from postcollapse.data import load
from postcollapse.theory import Moments, spectrum, thresholds
from postcollapse.train import sweep


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--smoke", action="store_true")
    p.add_argument("--rows", type=int, default=5000)
    p.add_argument("--epochs", type=int, default=60)
    p.add_argument("--betas", type=int, default=10)
    p.add_argument("--hidden", type=int, default=32)
    p.add_argument("--threads", type=int, default=1)
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    rows, epochs, n_betas = (1000, 5, 4) if args.smoke else (args.rows, args.epochs, args.betas)

    data = load("mnist")
    x = data.x[np.sort(np.random.default_rng(0).permutation(len(data.x))[:rows])]
    spec = spectrum(Moments.from_arrays(x))
    th = thresholds(spec, eta_dec="learn")
    betas = np.geomspace(0.5 * th[4], 2.0 * th[0], n_betas)
    t0 = time.perf_counter()
    res = sweep((x, None), betas=betas, model="relu", sigma="learnable", latent_dim=5,
                hidden=args.hidden, eta_dec="learn", optimizer="adam", lr=3e-3,
                batch_size=250, epochs=epochs, dtype="float32", device="cpu", tol=0,
                eval_samples=16)
    wall = time.perf_counter() - t0
    print(f"MNIST subset {rows} rows, ReLU MLP hidden {args.hidden}, latent 5, Adam lr 3e-3, "
          f"batch 250, {epochs} epochs, learned eta_dec; {wall:.0f} s")
    print("learned-variance thresholds beta_i*: "
          + ", ".join(f"{t:.2f}" for t in th[:6]))
    print(f"{'beta':>8} {'modes':>5} {'pred':>4} {'eta_dec':>8} {'linear':>8} {'nll':>10} "
          f"{'linear nll':>10}")
    v_lin = np.sqrt(res.theory["eta_dec2"])
    for r, vl, nl in zip(res.rows, v_lin, res.theory["min_nll"], strict=True):
        print(f"{r['beta']:8.2f} {r['active_modes']:5d} {r['theory_active']:4d} "
              f"{r['eta_dec']:8.4f} {vl:8.4f} {r['nll']:10.2f} {nl:10.2f}")
    alive = res.column("active_modes") > 0
    collapsed = res.column("beta")[~alive]
    if collapsed.size and alive.any():
        lo, hi = float(res.column("beta")[alive].max()), float(collapsed.min())
        where = "inside" if lo < th[0] <= hi else "outside"
        print(f"complete collapse measured between beta {lo:.2f} and {hi:.2f}; predicted "
              f"beta_1* = {th[0]:.2f} ({where} the bracket); ratio of the bracket's "
              f"geometric midpoint to beta_1* {np.sqrt(lo * hi) / th[0]:.3f}")
    else:
        print("complete collapse not bracketed by the grid")
    agree = int(np.sum(res.column("active_modes") == res.column("theory_active")))
    print(f"mode counts equal to the prediction at {agree} of {len(res.rows)} betas")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
