"""Reproduce the paper's Figures 1-5 with theory overlays, and write a report.

``reproduce(["fig1", ...], preset="quick", out="results/quick")`` runs one beta sweep per
figure (``postcollapse.train.sweep``, each in ``OUT/<fig>/sweep`` so that a second call
resumes finished sweeps), draws the figures (PNG + PDF), writes the data behind every
figure as CSV, and writes ``OUT/summary.json``, ``OUT/report.md`` and a self-contained
``OUT/report.html`` that compare the predicted and the observed collapse.

Where things are: :mod:`~postcollapse.reproduce.presets` (figures and presets as data),
:mod:`~postcollapse.reproduce.grids` (beta grids), :mod:`~postcollapse.reproduce.reading`
(sweep rows, observed collapse by :data:`COLLAPSE_RULE`, gaps to theory),
:mod:`~postcollapse.reproduce.runs` (one run per figure),
:mod:`~postcollapse.reproduce.records` (the typed records the runs return),
:mod:`~postcollapse.reproduce.locating` (the located thresholds, beyond the paper) and
:mod:`~postcollapse.reproduce.report` (Markdown and HTML).

The library never prints: progress goes through the ``log`` callable (the CLI passes one
that writes to stderr) and the sweep's own progress bar (stderr, ``progress=True``).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence

from postcollapse._checks import ACTIVE_VAR_THRESHOLD
from postcollapse._io import atomic_write_json
from postcollapse.reproduce.extensions import EXTENSIONS_PRESETS, extensions_section
from postcollapse.reproduce.grids import beta_grid, sample_betas
from postcollapse.reproduce.locating import LOCATE_TABLE, LocatedFigure, locate_section
from postcollapse.reproduce.presets import FIGURES, PRESETS, FigureConfig, figure_config
from postcollapse.reproduce.reading import (
    COLLAPSE_RULE,
    CollapseReading,
    TheoryGaps,
    read_collapse,
    theory_gaps,
)
from postcollapse.reproduce.records import (
    FigureRecord,
    ReproduceSummary,
    SamplesFigure,
    SweepFigure,
)
from postcollapse.reproduce.report import write_report
from postcollapse.reproduce.runs import RunContext, samples_figure, sweep_figure

__all__ = [
    "FIGURES",
    "PRESETS",
    "DEVICES",
    "COLLAPSE_RULE",
    "ACTIVE_VAR_THRESHOLD",
    "FigureConfig",
    "CollapseReading",
    "TheoryGaps",
    "FigureRecord",
    "SweepFigure",
    "SamplesFigure",
    "ReproduceSummary",
    "LocatedFigure",
    "LOCATE_TABLE",
    "figure_config",
    "beta_grid",
    "sample_betas",
    "read_collapse",
    "theory_gaps",
    "reproduce",
    "write_report",
]

DEVICES = ("auto", "cpu", "cuda")  # and "cuda:N"


def resolve_figures(figures: str | Sequence[str]) -> list[str]:
    """Figure names in :data:`FIGURES` order, with "all" expanded and duplicates removed."""
    if isinstance(figures, str):
        figures = [figures]
    out: list[str] = []
    for f in figures:
        if f == "all":
            out.extend(FIGURES)
        elif f in FIGURES:
            out.append(f)
        else:
            raise ValueError(f"figure must be one of {', '.join(FIGURES)} or 'all', got {f!r}")
    return sorted(set(out), key=FIGURES.index)


def reproduce(
    figures: str | Sequence[str] = "all",
    *,
    out,
    preset: str = "quick",
    device: str = "auto",
    seeds: int | None = None,
    mnist: str = "mnist",
    progress: bool = False,
    log: Callable[[str], None] | None = None,
    trainer: Callable | None = None,
    extensions: bool | None = None,
    located: bool | None = None,
) -> ReproduceSummary:
    """Run the sweeps of the chosen figures, draw them, and write the report.

    Parameters
    ----------
    figures : "all", "fig1".."fig5", or a sequence of them
    out : path
        Output folder; ``OUT/<fig>/`` holds each figure's PNG, PDF, CSV and sweep.
        Finished sweeps found there are resumed, not recomputed.
    preset : "quick" | "paper" | "test"
        quick: all figures on 2 CPU cores in minutes; paper: the paper's settings (GPU);
        test: a tiny run for the test suite.
    device : "auto" | "cpu" | "cuda" | "cuda:N"
    seeds : int, optional
        Number of seeds per beta (default: the preset's, 1).
    mnist : str
        DATA spec for the MNIST figures (default the embedded 5,000-image subset; a path to
        IDX files for full MNIST).
    progress : bool
        Show the sweep's progress bars (stderr).
    log : callable(str), optional
        Receives one line per stage (the CLI prints them to stderr).
    trainer : callable, optional
        Trains a sweep; called as ``trainer(dataset, betas=..., model=..., out=...,
        resume=True, ...)`` like :func:`postcollapse.train.sweep` (the default), and returns
        an object with ``rows``, ``members``, ``model`` and optionally ``timing``.
    extensions : bool, optional
        Also run the section beyond the paper (two-level VAE and free bits, linear models;
        :mod:`~postcollapse.reproduce.extensions`; about a minute in the quick preset).
        Default: when ``figures`` is "all".
    located : bool, optional
        Locate the critical betas the preset affords (:data:`LOCATE_TABLE`) with
        :func:`postcollapse.locate` and report them (default: on for quick and paper, off
        for test).

    Returns
    -------
    ReproduceSummary
        Its :meth:`~ReproduceSummary.to_json` is the content of ``OUT/summary.json``.
    """
    names = resolve_figures(figures)
    if extensions is None:
        extensions = "all" in ([figures] if isinstance(figures, str) else list(figures))
    if preset not in PRESETS:
        raise ValueError(f"preset must be one of {', '.join(PRESETS[:2])}, got {preset!r}")
    if device not in DEVICES and not str(device).startswith("cuda:"):
        raise ValueError(f"device must be auto, cpu or cuda, got {device!r}")
    import torch

    if trainer is None:
        from postcollapse.train import sweep as trainer
    from postcollapse._io import check_writable_dir

    out = check_writable_dir(out, "out")  # a read-only or full folder fails before training
    ctx = RunContext(out=out, trainer=trainer, device=device, progress=progress,
                     log=log or (lambda s: None), mnist=mnist)
    t_all = time.perf_counter()
    records = []
    for name in names:
        cfg = figure_config(name, preset, seeds=seeds)
        run = samples_figure if name == "fig3" else sweep_figure
        records.append(run(ctx, cfg))
    ext = None
    if extensions and preset in EXTENSIONS_PRESETS:
        ext = extensions_section(ctx, EXTENSIONS_PRESETS[preset])
    if located is None:
        located = preset != "test"
    found, found_figure = (locate_section(ctx, names, preset, seeds=seeds) if located
                           else ([], None))
    summary = ReproduceSummary(
        preset=preset,
        figures=records,
        device=device,
        torch=torch.__version__,
        torch_threads=torch.get_num_threads(),
        wall_seconds=time.perf_counter() - t_all,
        collapse_rule=COLLAPSE_RULE,
        extensions=ext,
        located=found,
        located_figure=found_figure,
    )
    atomic_write_json(out / "summary.json", summary.to_json())
    write_report(summary, out)
    ctx.log(f"wrote {out / 'report.md'} and {out / 'report.html'} "
            f"({summary.wall_seconds:.0f} s)")
    return summary
