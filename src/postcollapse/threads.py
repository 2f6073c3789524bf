"""CPU thread policy: how many torch / BLAS threads a piece of work should use.

Threads pay only when the work per operation is large and cores are free. Small batched
models (a few hundred thousand multiply-adds per step) gain nothing from a second thread,
and with another busy process on the machine every extra thread makes each step wait for
a descheduled peer (measured on 2 cores: 2 threads 2.3x slower than 1 next to one busy
process). :func:`choose_threads` therefore picks

- the requested number when one is given (``--threads``), else
- 1 thread for work below :data:`WORK_PER_THREAD`, else
- one thread per :data:`WORK_PER_THREAD` of work, at most the cores that are free now
  (the cores this process may run on, ``os.sched_getaffinity``, minus the other
  processes running at this moment, from ``/proc/loadavg``; ``os.getloadavg`` elsewhere).

:func:`torch_threads` applies a choice for the duration of a ``with`` block and restores
the previous torch and BLAS settings afterwards: library code never changes the thread
state of the caller's process for good.
"""

from __future__ import annotations

import os
import statistics
import time
from contextlib import contextmanager
from dataclasses import asdict, dataclass

from postcollapse._checks import check_int_at_least

__all__ = ["ThreadChoice", "thread_choice", "choose_threads", "torch_threads", "cpu_cores",
           "busy_elsewhere", "WORK_PER_THREAD"]

#: Multiply-adds per step below which one thread is used, and per extra thread above it.
#: Measured on a 2-core machine: a 20-member ReLU sweep (hidden 8) at batch 128
#: (5.5e5 per step) ran faster on 1 thread than on 2 even when idle; at full batch
#: (2,000 rows, 8.6e6) 2 threads were 1.9x faster when idle.
WORK_PER_THREAD = 1 << 21


def cpu_cores() -> int:
    """Cores this process may run on (its CPU affinity; ``os.cpu_count()`` elsewhere)."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):  # pragma: no cover - not Linux
        return max(1, os.cpu_count() or 1)


def busy_elsewhere(*, samples: int = 5, interval: float = 0.004) -> float:
    """Other processes running now: the median over ``samples`` reads of the runnable
    count in ``/proc/loadavg`` minus this process; the 1-minute load average where
    ``/proc/loadavg`` does not exist."""
    counts = []
    for i in range(samples):
        try:
            with open("/proc/loadavg") as fh:
                running = int(fh.read().split()[3].split("/")[0])
        except (OSError, ValueError, IndexError):
            try:
                return float(os.getloadavg()[0])
            except (AttributeError, OSError):  # pragma: no cover
                return 0.0
        counts.append(max(0, running - 1))  # the reader itself is running
        if i + 1 < samples:
            time.sleep(interval)
    return float(statistics.median(counts))


@dataclass(frozen=True)
class ThreadChoice:
    """A thread count and how it was chosen (recorded in a run's metadata).

    ``source`` is "requested" or "auto"; ``work`` the multiply-adds per step the choice
    was made for; ``cores`` the usable cores and ``busy`` the other running processes
    seen (None when requested).
    """

    threads: int
    source: str
    work: int | None = None
    cores: int | None = None
    busy: float | None = None

    def to_dict(self) -> dict:
        return asdict(self)


def thread_choice(work_size: int | None, *, requested: int | None = None) -> ThreadChoice:
    """Choose the number of threads for work of ``work_size`` multiply-adds per step.

    Parameters
    ----------
    work_size : int or None
        Rough multiply-adds of one step (e.g. members x rows x parameters per member);
        None: unknown, only the free cores count.
    requested : int, optional
        An explicit count (``--threads``): returned as is.

    Returns
    -------
    ThreadChoice
    """
    if requested is not None:
        return ThreadChoice(check_int_at_least("threads", requested, 1), "requested", work_size)
    cores = cpu_cores()
    if work_size is not None and work_size < WORK_PER_THREAD:
        return ThreadChoice(1, "auto", int(work_size), cores, None)
    busy = busy_elsewhere()
    free = max(1, int(cores - busy + 0.5))
    n = min(cores, free)
    if work_size is not None:
        n = min(n, max(1, int(work_size) // WORK_PER_THREAD))
    return ThreadChoice(max(1, n), "auto", None if work_size is None else int(work_size),
                        cores, busy)


def choose_threads(work_size: int | None, *, requested: int | None = None) -> int:
    """The thread count of :func:`thread_choice`."""
    return thread_choice(work_size, requested=requested).threads


@contextmanager
def torch_threads(n: int | None):
    """Run the block with ``n`` torch intra-op threads and ``n`` BLAS threads (through
    threadpoolctl when installed); restore the previous settings afterwards.

    ``n`` None leaves everything as it is. Imports torch.
    """
    if n is None:
        yield
        return
    import torch

    n = check_int_at_least("threads", n, 1)
    before = torch.get_num_threads()
    try:
        from threadpoolctl import threadpool_limits
    except ImportError:  # pragma: no cover - threadpoolctl is optional
        threadpool_limits = None
    limits = threadpool_limits(limits=n) if threadpool_limits is not None else None
    try:
        if before != n:
            torch.set_num_threads(n)
        yield
    finally:
        if torch.get_num_threads() != before:
            torch.set_num_threads(before)
        if limits is not None:
            limits.restore_original_limits()
