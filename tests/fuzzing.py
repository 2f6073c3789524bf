"""Helpers for the hardening tests: one hypothesis property, a quick and a slow run.

``fast_and_slow(fast=30, slow=300, **strategies)(body)`` returns two tests of ``body``:
the first runs ``fast`` examples in the default suite, the second ``slow`` examples and is
marked ``slow``. Usage::

    test_x, test_x_slow = fast_and_slow(a=st.integers())(_x)
"""

from __future__ import annotations

import contextlib
import signal

import pytest
from hypothesis import HealthCheck, given, settings


def fast_and_slow(*, fast: int = 30, slow: int = 300, **strategies):
    def deco(body):
        def make(n):
            return settings(max_examples=n, deadline=None,
                            suppress_health_check=list(HealthCheck))(given(**strategies)(body))

        return make(fast), pytest.mark.slow(make(slow))

    return deco


@contextlib.contextmanager
def time_limit(seconds, what="call"):
    """Raise TimeoutError in the block after ``seconds`` (SIGALRM): a hang fails the test."""

    def boom(*_):
        raise TimeoutError(f"{what} still running after {seconds} s (a hang)")

    old = signal.signal(signal.SIGALRM, boom)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, old)
