"""Thread policy under load: the default sweep against the best fixed thread count.

Starts its own busy process (a pure-Python spin loop with a hard deadline, stopped at the
end), then runs the same sweep as whole processes, as users run them, interleaved:

  default   sweep(...) with no threads option (postcollapse.threads chooses)
  1 thread  sweep(..., threads=1)
  2 threads sweep(..., threads=2)       (torch's own default on a 2-core machine)

Sweep: 20 betas, ReLU VAE (hidden 8, Sigma(x) linear, latent 5), 2,000 synthetic rows,
1,000 Adam steps, mini-batch 128 and full batch. Prints median wall times (whole process
and training alone) and default / best-of(1, 2) threads; target <= 1.1x. The children get
no OMP_NUM_THREADS, so torch starts with its default.

    python benchmarks/bench_threads.py            # 3 repeats
    python benchmarks/bench_threads.py --smoke    # 4 betas, 100 steps, 1 repeat
    python benchmarks/bench_threads.py --steps 200 --timeout 120   # shorter, bounded
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time

CHILD = """
import json, sys, time
t0 = time.perf_counter()
from postcollapse.data import synthetic
from postcollapse.train import sweep
import numpy as np
n_betas, steps, batch, threads = json.loads(sys.argv[1])
x, y = synthetic(n_samples=2000, d0=5, d2=5, seed=0)
res = sweep((x, y), betas=list(np.geomspace(0.1, 30.0, n_betas)), model="relu",
            sigma="linear", latent_dim=5, hidden=8, steps=steps, batch_size=batch,
            tol=0.0, device="cpu", eval_samples=1, threads=threads)
print(json.dumps({"train": res.timing["train_time"], "wall": time.perf_counter() - t0,
                  "threads": res.timing["threads"]}))
"""

SPIN = "import time\nend = time.time() + {limit}\nwhile time.time() < end:\n    pass\n"


def _child(n_betas, steps, batch, threads, env, timeout) -> dict:
    t0 = time.perf_counter()
    try:
        out = subprocess.run([sys.executable, "-c", CHILD,
                              json.dumps([n_betas, steps, batch, threads])],
                             check=True, capture_output=True, text=True, env=env,
                             timeout=timeout).stdout
    except subprocess.TimeoutExpired:  # a lower bound: the run was stopped
        return {"train": timeout, "wall": timeout, "threads": {"threads": threads},
                "timed_out": True}
    res = json.loads(out.strip().splitlines()[-1])
    res["wall"] = time.perf_counter() - t0
    return res


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--smoke", action="store_true", help="tiny and fast")
    ap.add_argument("--repeats", type=int, default=None)
    ap.add_argument("--busy", type=int, default=1, help="busy processes to start (default 1)")
    ap.add_argument("--steps", type=int, default=None, help="Adam steps (default 1000)")
    ap.add_argument("--timeout", type=float, default=600.0,
                    help="seconds after which one sweep is stopped (its time a lower bound)")
    ap.add_argument("--limit", type=float, default=900.0,
                    help="seconds after which a busy process stops by itself")
    args = ap.parse_args()
    n_betas, steps = (4, 100) if args.smoke else (20, args.steps or 1000)
    repeats = args.repeats or (1 if args.smoke else 3)
    env = {k: v for k, v in os.environ.items()
           if k not in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS")}
    contenders = {"default": None, "1 thread": 1, "2 threads": 2}
    busy = [subprocess.Popen([sys.executable, "-c", SPIN.format(limit=args.limit)])
            for _ in range(args.busy)]
    try:
        time.sleep(1.0)
        print(f"{n_betas} betas, {steps} steps, {args.busy} busy process(es), "
              f"{os.cpu_count()} cores, load {os.getloadavg()[0]:.1f} at start")
        for label, batch in (("batch 128", 128), ("full batch", None)):
            times = {k: [] for k in contenders}
            chosen = []
            for _ in range(repeats):
                for key, t in contenders.items():
                    r = _child(n_betas, steps, batch, t, env, args.timeout)
                    times[key].append(r)
                    if t is None:
                        chosen.append(r["threads"]["threads"])
            med = {k: {m: statistics.median(r[m] for r in v) for m in ("wall", "train")}
                   for k, v in times.items()}
            best = min(med["1 thread"]["wall"], med["2 threads"]["wall"])
            stopped = [k for k, v in times.items() if any(r.get("timed_out") for r in v)]
            print(f"  {label}: " + "; ".join(
                f"{k} {v['wall']:.2f} s (train {v['train']:.2f})" for k, v in med.items())
                + f"; default chose {chosen} threads"
                + (f"; stopped at the timeout (lower bounds): {stopped}" if stopped else ""),
                flush=True)
            print(f"    default / best fixed: {med['default']['wall'] / best:.2f}x whole "
                  f"process (target <= 1.1x); 2 threads / 1 thread "
                  f"{med['2 threads']['wall'] / med['1 thread']['wall']:.2f}x")
        print(f"  load {os.getloadavg()[0]:.1f} at end")
    finally:
        for p in busy:
            p.kill()
            p.wait()


if __name__ == "__main__":
    main()
