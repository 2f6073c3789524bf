"""``postcollapse thresholds`` of a memory-mapped float32 ``.npy`` larger than memory needs.

Writes one float32 ``.npy`` (default 4.29 GB: 4,194,304 x 256) into a temporary folder,
then measures side by side, each command in a fresh subprocess (OMP_NUM_THREADS=1):

  read        one sequential read of the file (64 MiB ``readinto``), the yardstick
  in-process  ``postcollapse thresholds FILE --json``
  cluster     ``postcollapse thresholds FILE --json --workers 2`` (a 2-process LocalCluster
              started by the command; each worker memory-maps its own row blocks)

and prints the time of in-process as a ratio to the read, the cluster's as a ratio to
in-process, the peak RSS of the in-process command (ru_maxrss of the child; it must stay
under 1 GiB although the file is over 4 GB) and of the largest process of the cluster
run, and the agreement of the two results. The file is deleted at the end.

Usage: python benchmarks/bench_cluster.py [--smoke] [--rows N] [--cols D] [--dir DIR]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time

import numpy as np

WRAPPER = r"""
import json, resource, subprocess, sys, time
t = time.perf_counter()
p = subprocess.run(sys.argv[1:], capture_output=True, text=True)
dt = time.perf_counter() - t
peak = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024.0
print(json.dumps({"rc": p.returncode, "seconds": dt, "peak_mib": peak,
                  "stdout": p.stdout, "stderr": p.stderr[-2000:]}))
"""


def write_file(path: str, rows: int, cols: int) -> None:
    """A float32 .npy of (rows, cols), written block by block (never whole in memory)."""
    rng = np.random.default_rng(0)
    block_rows = 1 << 14
    mix = rng.standard_normal((cols, cols)).astype(np.float32) / np.sqrt(cols)
    base = (rng.standard_normal((block_rows, cols)).astype(np.float32) @ mix) + 3.0
    out = np.lib.format.open_memmap(path, mode="w+", dtype=np.float32, shape=(rows, cols))
    for i, start in enumerate(range(0, rows, block_rows)):
        stop = min(start + block_rows, rows)
        # each block a different scaled / shifted copy: a full-rank, non-trivial spectrum
        out[start:stop] = base[: stop - start] * np.float32(1.0 + 0.01 * (i % 7)) + np.float32(
            0.001 * i)
        if i % 64 == 63:
            out.flush()
    out.flush()
    del out


def sequential_read(path: str) -> float:
    buf = bytearray(64 << 20)
    t = time.perf_counter()
    with open(path, "rb", buffering=0) as fh:
        while fh.readinto(buf):
            pass
    return time.perf_counter() - t


def measure(cmd: list[str], env: dict) -> dict:
    p = subprocess.run([sys.executable, "-c", WRAPPER, *cmd], capture_output=True, text=True,
                       env=env, check=True)
    res = json.loads(p.stdout)
    if res["rc"] != 0:
        raise SystemExit(f"command failed ({' '.join(cmd)}): {res['stderr']}")
    res["json"] = json.loads(res["stdout"])
    return res


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--smoke", action="store_true", help="a 64 MiB file")
    ap.add_argument("--rows", type=int, default=None)
    ap.add_argument("--cols", type=int, default=256)
    ap.add_argument("--dir", default=None, help="where to write the file (default: temp)")
    args = ap.parse_args()
    rows = args.rows or ((1 << 16) if args.smoke else (1 << 22))
    env = {**os.environ, "OMP_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1",
           "MKL_NUM_THREADS": "1"}
    with tempfile.TemporaryDirectory(dir=args.dir, prefix="bench-cluster-") as tmp:
        path = os.path.join(tmp, "x.npy")
        t = time.perf_counter()
        write_file(path, rows, args.cols)
        size = os.path.getsize(path)
        print(f"file      {rows} x {args.cols} float32, {size / 1e9:.2f} GB "
              f"({size / 2**30:.2f} GiB), written in {time.perf_counter() - t:.1f} s")
        print(f"machine   {platform.machine()}, {os.cpu_count()} cores; 1 BLAS thread per "
              "process; the file is in the page cache after writing (a warm read)")
        read = sequential_read(path)
        base = [sys.executable, "-m", "postcollapse", "thresholds", path, "--json"]
        inproc = measure(base, env)
        cluster = measure([*base, "--workers", "2"], env)
        read2 = sequential_read(path)
        small = os.path.join(tmp, "small.npy")
        np.save(small, np.random.default_rng(1).standard_normal((1000, args.cols)))
        startup = measure([sys.executable, "-m", "postcollapse", "thresholds", small, "--json",
                           "--workers", "2"], env)
    a = np.asarray(inproc["json"]["zeta2"])
    b = np.asarray(cluster["json"]["zeta2"])
    rel = float(np.max(np.abs(a - b) / np.abs(a)))
    read = min(read, read2)
    print(f"read      {read:8.2f} s  ({size / read / 2**30:.2f} GiB/s, best of 2)")
    print(f"in-proc   {inproc['seconds']:8.2f} s  = {inproc['seconds'] / read:6.1f}x the read; "
          f"peak RSS {inproc['peak_mib']:.0f} MiB "
          f"({'under' if inproc['peak_mib'] < 1024 else 'OVER'} 1 GiB)")
    ratio = cluster["seconds"] / inproc["seconds"]
    print(f"cluster   {cluster['seconds']:8.2f} s  = {ratio:6.2f}x in-process (2 workers, "
          f"incl. starting them); largest process {cluster['peak_mib']:.0f} MiB")
    print(f"start-up  {startup['seconds']:8.2f} s  (the cluster command on a 1,000-row file); "
          f"without it {(cluster['seconds'] - startup['seconds']) / inproc['seconds']:.2f}x "
          "in-process")
    print(f"agreement max relative difference of zeta^2: {rel:.2e}")


if __name__ == "__main__":
    main()
