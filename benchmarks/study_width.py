"""How far the linear theory carries: located thresholds of ReLU / Tanh VAEs against width.

For each model (relu, tanh; Sigma(x) linear, latent 5, synthetic data) and hidden width
(8, 32, 128 by default) it runs ``postcollapse.locate`` with the same training settings and
seeds, plus an optimiser control at the smallest width (the same model trained 3x longer
at a third of the learning rate) and, with ``--control linear-init``, the same model started
at the linear theory's global optimum of each beta (``init="linear"``): if it keeps the
modes that the cold start loses, the width can hold them and the optimiser did not find
them. It also trains the linear-init start at every other (beta, seed) of the finished cold
run (``OUT/<model>-h<width>-linear-init-paired``) for the warm-vs-cold loss table;
``--only-control`` trains only the control cells (the width cells of OUT are read).
Every run writes ``OUT/<model>-h<width>[-control]/`` and resumes from there, so an
interrupted study continues where it stopped. At the end it
prints one Markdown table per model: mode, predicted, observed per width, relative error,
converged fraction.

    nice -n 10 python benchmarks/study_width.py --out study-out
    python benchmarks/study_width.py --smoke --out /tmp/study   # seconds
"""

from __future__ import annotations

import argparse
import math
from pathlib import Path

import torch

from postcollapse.data import load
from postcollapse.locate import load_locate, locate
from postcollapse.train import load_sweep, sweep
from postcollapse.train.config import DEFAULT_STEPS


def _fmt(v: float, pct: bool = False) -> str:
    if not math.isfinite(v):
        return "-"
    return f"{100 * v:+.1f}%" if pct else f"{v:.4g}"


def table(runs: dict[str, object]) -> str:
    """Markdown table: mode, predicted, then observed (rel. error, converged) per run."""
    labels = list(runs)
    first = next(iter(runs.values()))
    head = "| mode | predicted | " + " | ".join(labels) + " |"
    lines = [head, "|" + " --- |" * (2 + len(labels))]
    for i, m in enumerate(first.modes):
        cells = []
        for lab in labels:
            r = runs[lab].modes[i]
            note = "" if r.monotone else ", not monotone"
            cells.append(f"{_fmt(r.observed)} ({_fmt(r.rel_error, True)}; "
                         f"conv {_fmt(r.converged_fraction)}; {r.seeds} seeds{note})")
        lines.append(f"| {m.mode} | {_fmt(m.predicted)} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def warm_vs_cold(cold, warm, data, paired=()) -> str:
    """Per (beta, seed) trained by both runs: the final loss of the linear-init start minus
    the cold start's, and both against the linear optimum's min_loss at that beta.
    ``paired``: rows of linear-init members trained at the cold run's other betas."""
    from postcollapse.theory import min_loss, spectrum

    def losses(run):
        return {(round(m["beta"], 10), m["seed"]): m["loss"]
                for r in run.rounds for m in r["members"] if m.get("loss") is not None}

    c, w = losses(cold), losses(warm)
    w.update({(round(r["beta"], 10), r["seed"]): r["loss"] for r in paired})
    common = sorted(set(c) & set(w))
    if not common:
        return "warm vs cold: no (beta, seed) trained by both runs"
    spec = spectrum(data.moments())
    betas = sorted({b for b, _ in common})
    th = dict(zip(betas, min_loss(spec, betas, latent_dim=5, sigma="learnable"), strict=True))
    lines = ["| beta | seed | cold loss | linear-init loss | warm - cold | cold gap | "
             "warm gap |", "|" + " --- |" * 7]
    diffs = []
    for b, s in common:
        d = w[b, s] - c[b, s]
        diffs.append(d)
        lines.append(f"| {b:.4g} | {s} | {c[b, s]:.5g} | {w[b, s]:.5g} | {d:+.3g} | "
                     f"{_fmt(c[b, s] / th[b] - 1, True)} | {_fmt(w[b, s] / th[b] - 1, True)} |")
    rel = [d / c[k] for d, k in zip(diffs, common, strict=True)]
    big = [r for r in rel if abs(r) > 0.01]  # beyond the ~0.3% spread of equal minima
    lines.append(f"\nlinear-init ends lower in {sum(d < 0 for d in diffs)} of {len(diffs)} "
                 f"members (beta, seed); median (warm - cold) / cold "
                 f"{sorted(rel)[len(rel) // 2]:+.2%}; beyond 1%: {len(big)} members, warm "
                 f"lower in {sum(r < 0 for r in big)}"
                 + (f" (by {-max(big):.1%} to {-min(big):.1%})" if big else ""))
    return "\n".join(lines)


def pair_warm(data, out: Path, model: str, width: int, args) -> None:
    """Train the linear-init start (a sweep, ``OUT/<model>-h<width>-linear-init-paired``) at
    every (beta, seed) that the finished cold locate run trained and the linear-init locate
    run did not, with the same options, so every cold member has a warm partner."""
    cold, warm = (out / f"{model}-h{width}{tag}" for tag in ("", "-linear-init"))
    if not ((cold / "locate.json").exists() and (warm / "locate.json").exists()):
        return
    c, w = load_locate(cold), load_locate(warm)
    if not c.done:
        return
    have = {(round(m["beta"], 10), m["seed"]) for r in w.rounds for m in r["members"]}
    members = sorted({(m["beta"], m["seed"]) for r in c.rounds for m in r["members"]
                      if (round(m["beta"], 10), m["seed"]) not in have})
    if members:
        budget = {} if args.steps is None else {"steps": args.steps}
        sweep(data, members=members, model=model, sigma="linear", hidden=width, latent_dim=5,
              lr=args.lr, batch_size=args.batch_size, init="linear",
              active_threshold=c.config.get("active_threshold", 0.01),
              out=out / f"{model}-h{width}-linear-init-paired", resume=True, progress=True,
              **budget)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default="study-out")
    ap.add_argument("--smoke", action="store_true")
    ap.add_argument("--models", default="relu,tanh")
    ap.add_argument("--widths", default="8,32,128")
    ap.add_argument("--seeds", type=int, default=3)
    ap.add_argument("--steps", type=int, default=None,
                    help="step budget per member (default: the sweep's, 20000 for Adam; "
                         "members stop earlier when the convergence rule says so)")
    ap.add_argument("--lr", type=float, default=3e-3)
    ap.add_argument("--batch-size", type=int, default=500)
    ap.add_argument("--rtol", type=float, default=0.02)
    ap.add_argument("--no-control", action="store_true")
    ap.add_argument("--control", default="optimizer",
                    help="controls at the smallest width, comma-separated: optimizer (3x "
                         "steps, lr/3), linear-init (start at the linear optimum; default "
                         "optimizer)")
    ap.add_argument("--only-control", action="store_true",
                    help="train only the control cells (report every run found in OUT)")
    ap.add_argument("--report", action="store_true",
                    help="only print the tables of the runs found in OUT (finished or not)")
    args = ap.parse_args()
    torch.set_num_threads(1)
    if args.smoke:
        args.widths, args.seeds, args.steps, args.rtol = "8", 1, 200, 0.1
    widths = [int(w) for w in args.widths.split(",")]
    data = load("synthetic")
    out = Path(args.out)
    models = args.models.split(",")
    plan = [(f"h{w}", w, args.steps, args.lr, {}) for w in widths]
    controls = [] if args.no_control else args.control.split(",")
    for name in controls:
        if name not in ("optimizer", "linear-init"):
            raise SystemExit(f"--control: unknown control {name!r} (optimizer, linear-init)")
    if "optimizer" in controls:
        plan.append((f"h{widths[0]} control", widths[0],
                     3 * (args.steps or DEFAULT_STEPS["adam"]), args.lr / 3, {}))
    if "linear-init" in controls:
        plan.append((f"h{widths[0]} linear-init", widths[0], args.steps, args.lr,
                     {"init": "linear"}))
    # Width-major: the small, cheap runs of every model finish first.
    for label, width, steps, lr, extra in ([] if args.report else plan):
        if args.only_control and label in (f"h{w}" for w in widths):
            continue
        for model in models:
            folder = out / f"{model}-{label.replace(' ', '-')}"
            budget = {} if steps is None else {"steps": steps}
            locate(data, latent_dim=5, model=model, sigma="linear", hidden=width,
                   seeds=range(args.seeds), rtol=args.rtol, lr=lr,
                   batch_size=args.batch_size, out=folder, resume=True, progress=True,
                   **budget, **extra)
    warm_label = f"h{widths[0]} linear-init"
    if "linear-init" in controls and not args.report:
        for model in models:  # the linear-init start at every (beta, seed) of the cold run
            pair_warm(data, out, model, widths[0], args)
    for model in models:
        runs = {}
        for label, *_ in plan:
            folder = out / f"{model}-{label.replace(' ', '-')}"
            if (folder / "locate.json").exists():
                runs[label] = load_locate(folder)
        if runs:
            budget = (f"{args.steps} Adam steps" if args.steps else
                      f"Adam to convergence (at most {DEFAULT_STEPS['adam']} steps)")
            print(f"\n### {model} (Sigma(x) linear, latent 5, {args.seeds} seeds, "
                  f"{budget}, lr {args.lr}, batch {args.batch_size})\n")
            print(table(runs))
            if warm_label in runs and f"h{widths[0]}" in runs:
                paired = out / f"{model}-h{widths[0]}-linear-init-paired"
                rows = load_sweep(paired).rows if (paired / "results.csv").exists() else ()
                print("\n" + warm_vs_cold(runs[f"h{widths[0]}"], runs[warm_label], data, rows))


if __name__ == "__main__":
    main()
