"""Peak memory of streaming a memory-mapped ``.npy`` into Moments.

Writes one float64 ``.npy`` file, then measures in a fresh subprocess per case the growth
of peak RSS (VmHWM after resetting it via /proc/self/clear_refs; else ``ru_maxrss``) and
the peak of Python/numpy allocations (``tracemalloc``) while computing the moments, side
by side:

  stream      postcollapse.data.load(path).moments(chunk_size=c)   (memory-mapped; streamed
              pages released with madvise as it goes)
  mmap_naive  Moments.from_arrays(np.load(path, mmap_mode="r"), chunk_size=c)   (memory map
              without page release: the mapped file pages stay resident, RSS -> file size)
  in_memory   Moments.from_arrays(np.load(path))   (reads the whole file)

printed against one chunk (c * d * 8 bytes), the d x d moments (d * d * 8) and the file
size; also the streamed moments' agreement with the in-memory ones and the time taken.

Usage: python benchmarks/bench_streaming.py [--smoke] [--rows N] [--cols D] [--keep DIR]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time

import numpy as np

CHILD = r"""
import json, os, resource, sys, time, tracemalloc
import numpy as np
from postcollapse.data import load
from postcollapse.theory import Moments, spectrum  # imported before the baseline

def status_mib(key):
    with open("/proc/self/status") as fh:
        for line in fh:
            if line.startswith(key + ":"):
                return int(line.split()[1]) / 1024.0
    raise KeyError(key)

def reset_peak():
    # Linux: writing 5 to clear_refs resets the peak RSS (VmHWM) to the current RSS, so
    # the growth is measured from now, not from an earlier peak during the imports.
    try:
        with open("/proc/self/clear_refs", "w") as fh:
            fh.write("5")
        return status_mib("VmRSS"), True
    except OSError:
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0, False

def peak_mib(exact):
    if exact:
        return status_mib("VmHWM")
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0

case, path, chunk = sys.argv[1], sys.argv[2], int(sys.argv[3])
if case == "stream":
    ds = load(path)
    run = lambda: ds.moments(chunk_size=chunk)
elif case == "mmap_naive":
    x = np.load(path, mmap_mode="r")
    run = lambda: Moments.from_arrays(x, chunk_size=chunk)
else:
    run = lambda: Moments.from_arrays(np.load(path), chunk_size=chunk)
base, exact = reset_peak()
tracemalloc.start()
t0 = time.perf_counter()
m = run()
dt = time.perf_counter() - t0
_, traced = tracemalloc.get_traced_memory()
tracemalloc.stop()
np.save(sys.argv[4], np.concatenate([[m.n_samples], m.mean_x, m.m_xx.ravel()]))
print(json.dumps({"rss_growth_mib": peak_mib(exact) - base, "traced_peak_mib": traced / 2**20,
                  "seconds": dt}))
"""


def run_case(case: str, path: str, chunk: int, out: str) -> dict:
    env = dict(os.environ, OMP_NUM_THREADS="1", OPENBLAS_NUM_THREADS="1", MKL_NUM_THREADS="1")
    proc = subprocess.run([sys.executable, "-c", CHILD, case, path, str(chunk), out],
                          capture_output=True, text=True, env=env, timeout=1800)
    if proc.returncode != 0:
        raise RuntimeError(f"{case} failed:\n{proc.stderr}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--smoke", action="store_true", help="tiny fast run")
    p.add_argument("--rows", type=int, default=None)
    p.add_argument("--cols", type=int, default=None)
    p.add_argument("--keep", default=None, help="write the .npy here and keep it")
    args = p.parse_args()
    n = args.rows or (20_000 if args.smoke else 400_000)
    d = args.cols or (64 if args.smoke else 256)
    chunks = [1024] if args.smoke else [4096, 16384]

    tmp = tempfile.TemporaryDirectory() if args.keep is None else None
    folder = args.keep or tmp.name
    path = os.path.join(folder, f"stream_{n}x{d}.npy")
    rng = np.random.default_rng(0)
    t0 = time.perf_counter()
    # Written in blocks through a memory map, so this process never holds the whole array.
    mm = np.lib.format.open_memmap(path, mode="w+", dtype=np.float64, shape=(n, d))
    mix = rng.normal(size=(d, d)) / np.sqrt(d)
    for s in range(0, n, 50_000):
        k = min(50_000, n - s)
        mm[s : s + k] = 3.0 + rng.normal(size=(k, d)) @ mix
    mm.flush()
    del mm
    file_mib = os.path.getsize(path) / 2**20
    moments_mib = d * d * 8 / 2**20
    print(f"# file {path}: {n} x {d} float64, {file_mib:.0f} MiB "
          f"(written in {time.perf_counter() - t0:.1f} s); d x d moments {moments_mib:.2f} MiB")
    print(f"{'case':<11} {'chunk rows':>10} {'chunk MiB':>9} {'chunk+dd':>9} "
          f"{'RSS growth':>10} {'traced peak':>11} {'x chunk':>8} {'x file':>7} {'seconds':>8}")
    results = {}
    ref_out = os.path.join(folder, "ref.npy")
    for chunk in chunks:
        chunk_mib = chunk * d * 8 / 2**20
        bound = chunk_mib + moments_mib
        for case in ("stream", "mmap_naive", "in_memory"):
            if case == "in_memory" and chunk != chunks[0]:
                continue
            out = os.path.join(folder, f"{case}_{chunk}.npy")
            r = run_case(case, path, chunk, out)
            results[(case, chunk)] = out
            print(f"{case:<11} {chunk:>10} {chunk_mib:>9.1f} {bound:>9.1f} "
                  f"{r['rss_growth_mib']:>10.1f} {r['traced_peak_mib']:>11.1f} "
                  f"{r['rss_growth_mib'] / bound:>8.2f} {r['rss_growth_mib'] / file_mib:>7.3f} "
                  f"{r['seconds']:>8.2f}")
    ref = np.load(results[("in_memory", chunks[0])])
    os.replace(results[("in_memory", chunks[0])], ref_out)
    for chunk in chunks:
        got = np.load(results[("stream", chunk)])
        m_ref, m_got = ref[1 + d :], got[1 + d :]
        rel = np.abs(m_got - m_ref).max() / np.abs(m_ref).max()
        print(f"# streamed (chunk {chunk}) vs in-memory moments: n equal {got[0] == ref[0]}, "
              f"max rel. difference of the scatter matrix {rel:.1e}")
    if tmp is not None:
        tmp.cleanup()
    return 0


if __name__ == "__main__":
    sys.exit(main())
