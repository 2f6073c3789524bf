"""Bracketing of each mode's critical beta from active-unit counts (pure Python, no torch).

The state is nothing but the observations: for each seed, the betas trained so far and the
number of active units found at each. Everything else is derived from them, so a run that
replays its observations (``--resume``) is in exactly the state it left.

For mode i and one seed, with n(beta) the observed active count:

- ``lower`` is the largest observed beta with n >= i, ``upper`` the smallest observed beta
  above it (n < i there, and at every beta above). The observed critical beta is the
  supremum of the betas that keep i units: it lies in [lower, upper].
- No beta with n >= i yet: the mode was lost below every observation, and the next round
  probes below the lowest one (the span doubling in log scale each time).
- No beta above ``lower``: the mode survives every observation; the next round probes above.
- Otherwise the bracket is cut into ``k + 1`` geometrically equal parts, k chosen to reach
  ``rtol`` in one round where at most ``max_points`` allow it (k-section).
- ``monotone`` is False when some beta below ``lower`` has n < i: the count rose again
  with beta, so "the" threshold depends on where one looks. It is reported, not hidden.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

__all__ = ["Observations", "SeedBracket", "seed_bracket", "next_points", "initial_points",
           "kpoints", "scout_points", "ROUND_DIGITS"]

ROUND_DIGITS = 12  # betas are rounded to 12 significant digits (exact replay from JSON)


def _round(beta: float) -> float:
    return float(f"{beta:.{ROUND_DIGITS}g}")


class Observations:
    """Active-unit counts per seed: ``counts[seed][beta] = n`` and converged flags."""

    def __init__(self):
        self.counts: dict[int, dict[float, int]] = {}
        self.converged: dict[int, dict[float, bool]] = {}

    def add(self, beta: float, seed: int, active: int, converged: bool = True) -> None:
        """Record one trained member."""
        beta = _round(beta)
        self.counts.setdefault(int(seed), {})[beta] = int(active)
        self.converged.setdefault(int(seed), {})[beta] = bool(converged)

    def has(self, beta: float, seed: int) -> bool:
        """True when (beta, seed) was trained already."""
        return _round(beta) in self.counts.get(int(seed), {})

    def betas(self, seed: int) -> list[float]:
        """The observed betas of ``seed``, ascending."""
        return sorted(self.counts.get(int(seed), {}))


@dataclass(frozen=True)
class SeedBracket:
    """Where mode ``mode`` of one seed stands.

    ``status`` is "bracketed" (lower and upper known), "below" (no beta keeps the mode:
    look lower), "above" (no beta above ``lower``: look higher) or "empty" (nothing
    observed). ``lower`` / ``upper`` are None where unknown; ``lowest`` / ``highest`` the
    extreme observed betas; ``monotone`` False when a beta below ``lower`` lost the mode
    (``dips`` lists those betas).
    """

    mode: int
    seed: int
    status: str
    lower: float | None
    upper: float | None
    lowest: float | None
    highest: float | None
    monotone: bool
    dips: tuple[float, ...]

    def width(self) -> float:
        """upper / lower - 1 (inf unless bracketed)."""
        if self.status != "bracketed":
            return math.inf
        return self.upper / self.lower - 1.0

    def done(self, rtol: float) -> bool:
        """True when bracketed to within ``rtol`` (relative)."""
        return self.width() <= rtol * (1 + 1e-9)

    @property
    def midpoint(self) -> float:
        """(lower + upper) / 2, NaN unless bracketed."""
        if self.status != "bracketed":
            return math.nan
        return 0.5 * (self.lower + self.upper)


def seed_bracket(obs: Observations, mode: int, seed: int) -> SeedBracket:
    """The bracket of ``mode`` (1-based) for ``seed`` from the observations."""
    counts = obs.counts.get(int(seed), {})
    betas = sorted(counts)
    if not betas:
        return SeedBracket(mode, seed, "empty", None, None, None, None, True, ())
    keep = [b for b in betas if counts[b] >= mode]
    if not keep:
        return SeedBracket(mode, seed, "below", None, betas[0], betas[0], betas[-1], True, ())
    lower = keep[-1]
    dips = tuple(b for b in betas if b < lower and counts[b] < mode)
    above = [b for b in betas if b > lower]
    if not above:
        return SeedBracket(mode, seed, "above", lower, None, betas[0], betas[-1], not dips,
                           dips)
    return SeedBracket(mode, seed, "bracketed", lower, above[0], betas[0], betas[-1],
                       not dips, dips)


def kpoints(lower: float, upper: float, *, rtol: float, max_points: int) -> list[float]:
    """Interior points cutting [lower, upper] into k + 1 geometrically equal parts, with the
    smallest k that reaches ``rtol`` (at most ``max_points``)."""
    ratio = upper / lower
    need = math.ceil(math.log(ratio) / math.log1p(rtol) - 1e-9) - 1
    k = max(1, min(max_points, need))
    return [lower * ratio ** (j / (k + 1)) for j in range(1, k + 1)]


def initial_points(predicted: float, *, start_width: float, rtol: float,
                   max_points: int) -> list[float]:
    """First-round betas of a mode predicted at ``predicted``: the bracket
    [p / (1 + w), p (1 + w)] and its k-section."""
    lo, hi = predicted / (1 + start_width), predicted * (1 + start_width)
    return [lo, *kpoints(lo, hi, rtol=rtol, max_points=max_points), hi]


def scout_points(predicted, n: int) -> list[float]:
    """``n`` log-spaced betas from min(predicted) / 10 to 2 max(predicted) (the first
    round's scout grid: a mode far from its prediction starts bracketed)."""
    lo, hi = min(predicted) / 10, max(predicted) * 2
    return [lo * (hi / lo) ** (j / max(n - 1, 1)) for j in range(n)]


def next_points(br: SeedBracket, predicted: float, *, start_width: float, rtol: float,
                max_points: int, max_factor: float) -> tuple[list[float], str | None]:
    """The betas the next round trains for this bracket, and why it stops (or None).

    Returns ``([], None)`` when the bracket is done, ``([], reason)`` when the search gave
    up (the mode lies beyond ``max_factor`` times its prediction either way).
    """
    if br.status == "empty":
        return initial_points(predicted, start_width=start_width, rtol=rtol,
                              max_points=max_points), None
    if br.status == "bracketed":
        if br.done(rtol):
            return [], None
        return kpoints(br.lower, br.upper, rtol=rtol, max_points=max_points), None
    w = (1 + start_width) ** 2
    if br.status == "below":
        # The lost mode: double the log-span below the prediction's bracket.
        span = max(w, predicted * (1 + start_width) / br.lowest)
        target = br.lowest / span
        if target < predicted / max_factor:
            if br.lowest <= predicted / max_factor * (1 + 1e-9):
                return [], f"no beta down to {br.lowest:.4g} keeps mode {br.mode}"
            target = predicted / max_factor
        ratio = br.lowest / target
        return [br.lowest / ratio ** (j / max_points) for j in range(1, max_points + 1)], None
    span = max(w, br.lower * (1 + start_width) / predicted)
    target = br.lower * span
    if target > predicted * max_factor:
        if br.lower >= predicted * max_factor * (1 - 1e-9):
            return [], f"mode {br.mode} is kept up to beta {br.lower:.4g}"
        target = predicted * max_factor
    ratio = target / br.lower
    return [br.lower * ratio ** (j / max_points) for j in range(1, max_points + 1)], None
