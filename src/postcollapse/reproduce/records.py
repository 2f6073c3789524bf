"""Typed records of a reproduction: what each figure run returns, and the summary of all.

The report (:mod:`postcollapse.reproduce.report`), the CLI's summary lines and
``OUT/summary.json`` (:meth:`ReproduceSummary.to_json`) all read these records.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from typing import ClassVar

import numpy as np

from postcollapse.reproduce.presets import FigureConfig
from postcollapse.reproduce.reading import CollapseReading, TheoryGaps

__all__ = [
    "DataInfo",
    "FigureRecord",
    "SweepFigure",
    "SamplesFigure",
    "ReproduceSummary",
    "jsonable",
]


def jsonable(obj):
    """``obj`` with tuples as lists, numpy scalars as Python numbers, non-finite floats as
    None (JSON has no NaN)."""
    if isinstance(obj, dict):
        return {k: jsonable(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [jsonable(v) for v in obj]
    if isinstance(obj, np.generic):
        obj = obj.item()
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    return obj


@dataclass(frozen=True)
class DataInfo:
    """The training data of a figure: name and shape (n_samples x d0 -> d2)."""

    name: str
    n_samples: int
    d0: int
    d2: int


@dataclass(frozen=True)
class FigureRecord:
    """Fields every figure run records.

    ``zeta`` and ``thresholds`` (beta_i* = zeta_i^2) have ``latent_dim`` entries; ``betas``
    are the betas trained; ``train_seconds`` the training time recorded by the sweep (also
    when it was resumed), ``wall_seconds`` the time of this run; ``files`` are relative to
    the output folder.
    """

    kind: ClassVar[str] = ""

    name: str
    title: str
    config: FigureConfig
    data: DataInfo
    zeta: list[float]
    thresholds: list[float]
    betas: list[float]
    train_seconds: float
    device: str
    files: list[str]
    wall_seconds: float

    def to_json(self) -> dict:
        """The record as JSON-ready dict (with its ``kind``), as in ``summary.json``."""
        return jsonable({"name": self.name, "kind": self.kind, **asdict(self)})


@dataclass(frozen=True)
class SweepFigure(FigureRecord):
    """A loss / sigma figure (fig1, fig2, fig4, fig5): predicted vs observed collapse.

    ``collapse_within_tolerance`` is ``|collapse.rel_error| <= collapse_tolerance``;
    ``gaps`` are measured against the linear model's optimum (``linear``: the trained model
    is the linear one, so the gaps are a test of the theory); ``n_rows`` runs, of which
    ``n_converged`` stopped on a flat loss and ``n_diverged`` diverged.
    """

    kind: ClassVar[str] = "sweep"

    collapse: CollapseReading
    collapse_tolerance: float
    collapse_within_tolerance: bool
    gaps: TheoryGaps
    linear: bool
    n_rows: int
    n_converged: int
    n_diverged: int
    n_active_agree: int


@dataclass(frozen=True)
class SamplesFigure(FigureRecord):
    """The prior-samples figure (fig3): one beta per number of modes theory keeps.

    ``theory_modes[i]`` and ``observed_active[i]`` belong to ``betas[i]``; ``n_agree``
    counts the betas where they are equal.
    """

    kind: ClassVar[str] = "samples"

    theory_modes: list[int]
    observed_active: list[int]
    n_agree: int


@dataclass(frozen=True)
class ReproduceSummary:
    """One reproduction: the figure records and the environment they ran in.

    ``located`` holds the :class:`~postcollapse.reproduce.locating.LocatedFigure` of each
    figure whose thresholds were located, ``located_figure`` their figure (relative path).
    """

    preset: str
    figures: list[FigureRecord]
    device: str
    torch: str
    torch_threads: int
    wall_seconds: float
    collapse_rule: str
    extensions: object = None  # reproduce.extensions.ExtensionsRecord, when run
    located: list = field(default_factory=list)
    located_figure: str | None = None

    def located_mode1(self, name: str) -> dict | None:
        """The located mode 1 of figure ``name`` (None when it was not located)."""
        rec = next((r for r in self.located if r.name == name), None)
        return None if rec is None else rec.mode(1)

    def to_json(self) -> dict:
        """The content of ``OUT/summary.json``."""
        head = {"preset": self.preset, "figures": [f.to_json() for f in self.figures]}
        skip = {*head, "extensions"}
        rest = {k: v for k, v in asdict(self).items() if k not in skip}
        if self.extensions is not None:
            rest["extensions"] = self.extensions.to_json()
        return jsonable({**head, **rest})
