"""``postcollapse reproduce``: the paper's Figures 1-5 with theory overlays, and a report.

Imports nothing heavy at module level (torch and matplotlib load inside the command).
"""

from __future__ import annotations

import argparse
import sys

from postcollapse.cli.helptext import examples
from postcollapse.reproduce.presets import FIGURES, PRESETS

__all__ = ["register", "cmd_reproduce", "summary_lines", "diverged_line", "EXIT_DIVERGED"]

#: Exit status of a reproduction that finished with some members diverged.
EXIT_DIVERGED = 3


def register(subparsers) -> None:
    """Add the ``reproduce`` sub-command."""
    p = subparsers.add_parser(
        "reproduce",
        help="reproduce the paper's Figures 1-5 and write a report",
        description=(
            "Train the paper's models across beta grids around the predicted collapse "
            "thresholds, draw Figures 1-5 with the theory (PNG + PDF + CSV), and write "
            "OUT/report.md and a self-contained OUT/report.html comparing predicted and "
            "observed collapse. Re-running with the same --out resumes finished sweeps. "
            "--preset quick runs everything on 2 CPU cores in about 10 minutes; --preset "
            "paper uses the paper's settings (hidden 2048 on MNIST, trained long) and is "
            "meant for a GPU."
        ),
        epilog=examples(
            "postcollapse reproduce all --preset quick --out results/quick",
            "postcollapse reproduce fig4 --out results/fig4          # one figure",
            "postcollapse reproduce all --preset paper --device cuda --out results/paper",
            note="Exit status: 0 when every member trained; 3 when the report was written "
                 "but some members diverged (stderr says how many); 2 for bad input or an "
                 "output folder that cannot be written (checked before training); 130 when "
                 "interrupted.",
        ),
    )
    p.add_argument("figure", nargs="?", default="all", choices=(*FIGURES, "all"), metavar="FIGURE",
                   help="fig1 | fig2 | fig3 | fig4 | fig5 | all (default all)")
    # PRESETS also holds "test" (the test suite's tiny run), hidden by the metavar.
    p.add_argument("--preset", default="quick", choices=PRESETS, metavar="{quick,paper}",
                   help="quick (CPU, minutes; default) or paper (the paper's settings, GPU)")
    p.add_argument("--out", default=None, metavar="DIR",
                   help="output folder (default results/PRESET)")
    p.add_argument("--device", default="auto", metavar="{auto,cpu,cuda}",
                   help="torch device for training (default auto: cuda if available)")
    p.add_argument("--seeds", type=int, default=None, metavar="N",
                   help="seeds per beta (default 1)")
    p.add_argument("--mnist", default="mnist", metavar="DATA",
                   help="MNIST data for fig2/fig3: 'mnist' (embedded 5,000 images, default) "
                        "or a path to IDX files / a folder holding them")
    p.add_argument("--threads", type=int, default=None, metavar="N",
                   help="torch CPU threads (default 1 for --preset quick: on a shared 2-core "
                        "machine 2 threads made these small batched models 10-18x slower; "
                        "for paper chosen per sweep from its size and the free cores)")
    p.add_argument("-q", "--quiet", action="store_true",
                   help="no progress on stderr")
    p.set_defaults(func=cmd_reproduce)


def cmd_reproduce(args: argparse.Namespace) -> int:
    from postcollapse._io import check_writable_dir
    from postcollapse.reproduce import reproduce

    if args.seeds is not None and args.seeds < 1:
        raise ValueError(f"--seeds must be >= 1, got {args.seeds}")
    if args.threads is not None and args.threads < 1:
        raise ValueError(f"--threads must be >= 1, got {args.threads}")
    out = args.out or f"results/{args.preset}"
    check_writable_dir(out, "--out")  # before any training
    threads = args.threads if args.threads is not None else (
        None if args.preset == "paper" else 1)
    trainer = None
    if threads is not None:  # the CLI owns its process: set for good, and for every sweep
        import functools

        import torch

        from postcollapse.train import sweep

        torch.set_num_threads(threads)
        trainer = functools.partial(sweep, threads=threads)

    def log(msg: str) -> None:
        print(msg, file=sys.stderr, flush=True)

    summary = reproduce(
        args.figure,
        out=out,
        preset=args.preset,
        device=args.device,
        seeds=args.seeds,
        mnist=args.mnist,
        progress=(not args.quiet) and sys.stderr.isatty(),
        log=None if args.quiet else log,
        trainer=trainer,
    )
    for line in summary_lines(summary):
        print(line)
    print(f"report: {out}/report.md, {out}/report.html ({summary.wall_seconds:.0f} s)")
    line = diverged_line(summary)
    if line:
        print(f"postcollapse reproduce: {line}", file=sys.stderr)
        return EXIT_DIVERGED
    return 0


def diverged_line(summary) -> str:
    """'N of K members diverged (fig1: n, ...)' over the sweep figures ('' when none did)."""
    counts = [(f.name, f.n_diverged, f.n_rows) for f in summary.figures
              if getattr(f, "n_diverged", 0)]
    if not counts:
        return ""
    total = sum(getattr(f, "n_rows", 0) for f in summary.figures)
    bad = sum(n for _, n, _ in counts)
    per = ", ".join(f"{name}: {n} of {k}" for name, n, k in counts)
    return (f"{bad} of {total} members diverged ({per}); see the diverged and fault columns "
            "of OUT/FIG/sweep/results.csv and the report")


def summary_lines(summary) -> list[str]:
    """One line per figure of a :class:`~postcollapse.reproduce.ReproduceSummary`."""
    lines = []
    for f in summary.figures:
        if f.kind == "sweep":
            c = f.collapse
            obs = "beyond grid" if c.observed is None else f"{c.observed:.4g}"
            rel = "" if c.rel_error is None else f" ({100 * c.rel_error:+.1f}%)"
            line = (f"{f.name}: complete collapse predicted {c.predicted:.4g}, "
                    f"observed {obs}{rel}")
            if f.linear:
                line += f"; loss gap {f.gaps.loss:.2e}, sigma gap {f.gaps.sigma:.2e}"
        else:
            line = f"{f.name}: active units {f.observed_active} vs theory {f.theory_modes}"
        lines.append(line)
    ext = getattr(summary, "extensions", None)
    if ext is not None:
        gh, gf = ext.max_gap
        lines.append(f"ext: two levels and free bits (linear), largest loss gap {gh:.2e} "
                     f"and {gf:.2e}")
    return lines
