"""Start-up and whole-process cost of ``postcollapse thresholds`` on a .npy file.

Side by side in one run, each contender a fresh interpreter (timings interleaved, ratio
per repeat, median reported):

  bare     python -c "import numpy; x = np.load(FILE); x.T @ x"
  ours     python -m postcollapse thresholds FILE

on a 60,000 x 784 float64 ``.npy`` written by the benchmark (``--smoke``: 3,000 x 64).
Also the import time of ``postcollapse.theory`` and of the CLI parser against a bare
``import numpy``. Target: ours <= 1.3 x bare. One BLAS thread for every process.

Usage: python benchmarks/bench_startup.py [--smoke] [--repeats R]
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np


def _time(cmd: list[str], env: dict) -> float:
    t0 = time.perf_counter()
    subprocess.run(cmd, check=True, env=env, stdout=subprocess.DEVNULL)
    return time.perf_counter() - t0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--smoke", action="store_true", help="tiny fast run")
    ap.add_argument("--repeats", type=int, default=None)
    args = ap.parse_args()
    n, d = (3000, 64) if args.smoke else (60000, 784)
    repeats = args.repeats or (2 if args.smoke else 5)
    env = dict(os.environ)
    for var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
        env[var] = "1"
    py = sys.executable
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "x.npy"
        rng = np.random.default_rng(0)
        x = rng.random((n, d)) * np.linspace(0.1, 1.0, d)  # pixel-like, in [0, 1)
        np.save(path, x)
        del x
        contenders = {
            "bare": [py, "-c", f"import numpy as np; x = np.load({str(path)!r}); x.T @ x"],
            "ours": [py, "-m", "postcollapse", "thresholds", str(path)],
            "import numpy": [py, "-c", "import numpy"],
            "import theory": [py, "-c", "import postcollapse.theory"],
            "cli parser": [py, "-c", "from postcollapse.cli import build_parser; "
                           "build_parser()"],
        }
        for cmd in contenders.values():  # warm the page cache and the .pyc files
            _time(cmd, env)
        times = {k: [] for k in contenders}
        for _ in range(repeats):
            for key, cmd in contenders.items():
                times[key].append(_time(cmd, env))
    ratios = [o / b for o, b in zip(times["ours"], times["bare"], strict=True)]
    print(f"{n} x {d} float64 .npy, {repeats} interleaved repeats, 1 BLAS thread")
    for key, ts in times.items():
        print(f"  {key:14s} median {statistics.median(ts):6.3f} s  (min {min(ts):.3f})")
    print(f"  thresholds / (np.load + X^T X): median {statistics.median(ratios):.2f}x "
          f"(per repeat {', '.join(f'{r:.2f}' for r in ratios)}; target <= 1.3x)")


if __name__ == "__main__":
    main()
