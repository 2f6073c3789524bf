"""Run every benchmark in this folder, one after the other (``--smoke``: tiny versions).

Each script prints its own side-by-side ratios; this runner only sequences them and
reports which ones failed. Usage: python benchmarks/run_all.py [--smoke]
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

SCRIPTS = ("bench_thresholds.py", "bench_startup.py", "bench_streaming.py", "bench_sweep.py",
           "bench_threads.py", "bench_scale.py", "bench_cluster.py", "bench_learned_variance.py",
           "bench_free_bits.py")


def main(argv: list[str]) -> int:
    here = Path(__file__).resolve().parent
    failed = []
    for name in SCRIPTS:
        print(f"\n=== {name} {' '.join(argv)}", flush=True)
        rc = subprocess.call([sys.executable, str(here / name), *argv])
        if rc:
            failed.append(f"{name} (exit {rc})")
    if failed:
        print("\nfailed: " + ", ".join(failed), file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
