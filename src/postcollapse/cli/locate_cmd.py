"""``postcollapse locate DATA ...``: bracket every mode's observed critical beta."""

from __future__ import annotations

import argparse
import json
import math
import sys

from postcollapse.cli.cluster import add_cluster_options, cluster_client
from postcollapse.cli.helptext import examples
from postcollapse.cli.options import (
    add_extension_options,
    add_model_options,
    add_training_options,
    extension_kwargs,
    training_kwargs,
)

__all__ = ["register", "run"]

DEFAULT_OUT = "locate-out"


def register(subparsers) -> None:
    from postcollapse._checks import ACTIVE_VAR_THRESHOLD
    from postcollapse.locate.run import LOCATE_ACTIVE_THRESHOLD

    p = subparsers.add_parser(
        "locate",
        help="measure each mode's critical beta by bisection (brackets to --rtol)",
        description="For each latent mode i, find the beta at which the trained model goes "
        "from i to i-1 active units: brackets start around the predicted beta_i*, widen when "
        "the observation lies outside, and are refined (all modes and seeds in one batched "
        "training per round) until every bracket is narrower than --rtol. Writes "
        "OUT/thresholds.csv and OUT/locate.json after every round. Takes the sweep's model "
        "and training options; with --levels 2 it locates the level-1 modes against beta "
        "(--beta2 fixed), with --free-bits the beta at which each mode stops receiving "
        "signal, and with --eta-dec learn the learned-variance thresholds.",
        epilog=examples(
            "postcollapse locate synthetic --latent-dim 5 --out runs/locate-linear",
            "postcollapse locate synthetic --model relu --sigma linear --seeds 3 --rtol 0.02 "
            "--out runs/locate-relu",
            "postcollapse locate mnist --latent-dim 5 --json --out runs/locate-mnist",
            "postcollapse locate synthetic --eta-dec learn --latent-dim 3 "
            "--out runs/locate-learned",
            "postcollapse locate synthetic --levels 2 --beta2 3 --sigma1 1 "
            "--out runs/locate-two-level",
            "postcollapse locate synthetic --free-bits 0.1 --out runs/locate-free-bits",
            "postcollapse locate synthetic --seeds 4 --workers 2 --out runs/locate-cluster",
            note="A unit is active when Var_x E[z_i|x] > --active-threshold T. For the "
                 "linear model Var(mu_i) = 1 - beta/beta_i* at the optimum, so the rule "
                 "places the observed threshold at (1 - T) beta_i*, an offset of the rule, "
                 "not of training: the default T is 0.001 (-0.1%) for L-BFGS on an exact "
                 "loss and the sweep's 0.01 for Adam, which stops with collapsing units "
                 "still near Var 0.001. "
                 "What is counted: --levels 2, the level-1 latents whose posterior mean "
                 "varies (eigenvalues of Cov_x(mu1) > T; modes with zeta_i^2 > beta2 "
                 "eta_dec^2 never collapse with a fixed --sigma1 and are skipped); "
                 "--free-bits, the data modes receiving signal (eigenvalues of Cov_x(mu) > "
                 "T: every latent keeps KL >= LAMBDA, so units are no collapse measure; "
                 "modes the all-pinned water-filling feeds never lose signal and are "
                 "skipped). docs/THEORY.md has the predictions.",
        ),
    )
    add_model_options(p, latent_help="latent dimension d1; modes 1..K are located")
    p.add_argument("--rtol", type=float, default=0.01,
                   help="relative bracket width to reach, upper/lower - 1 (default 0.01)")
    p.add_argument("--active-threshold", type=float, default=None, metavar="T",
                   help="a unit is active when Var_x E[z_i|x] > T (default: "
                   f"{LOCATE_ACTIVE_THRESHOLD:g} for L-BFGS on an exact loss, else "
                   f"{ACTIVE_VAR_THRESHOLD:g})")
    add_training_options(p, steps_help="training steps per member and round at most")
    p.add_argument("--out", default=DEFAULT_OUT, help=f"output folder (default {DEFAULT_OUT})")
    p.add_argument("--resume", action="store_true",
                   help="continue an interrupted locate in OUT from its last finished round")
    p.add_argument("--json", action="store_true",
                   help='print one JSON object {"modes": [...]} on stdout instead of a table')
    p.add_argument("--quiet", action="store_true", help="no progress on stderr")
    add_cluster_options(p, sweep=True)
    add_extension_options(p)
    p.set_defaults(func=run)


def _fmt(v: float) -> str:
    return "nan" if not math.isfinite(v) else f"{v:.5g}"


def run(args: argparse.Namespace) -> int:
    from postcollapse._checks import check_positive
    from postcollapse.locate import locate

    check_positive("--rtol", args.rtol)
    kwargs = {**training_kwargs(args), **extension_kwargs(args)}
    with cluster_client(args) as client:  # None unless --workers / --scheduler
        trainer = None
        if client is not None:
            from postcollapse.scale import ClusterTrainer

            trainer = ClusterTrainer(client, threads=args.worker_threads,
                                     cell_betas=args.cell_betas)
        try:
            res = locate(args.data, rtol=args.rtol, active_threshold=args.active_threshold,
                         out=args.out, resume=args.resume, progress=not args.quiet,
                         **({} if trainer is None else {"trainer": trainer}), **kwargs)
        except KeyboardInterrupt:
            print("postcollapse locate: interrupted; finished rounds are in "
                  f"{args.out}/locate.json, rerun with --resume", file=sys.stderr)
            return 130
    if args.json:
        obj = res.modes_json()
        for m in obj["modes"]:
            for k, v in m.items():
                if isinstance(v, float) and not math.isfinite(v):
                    m[k] = None
        print(json.dumps(obj))
        return 0
    print(f"{'mode':>4} {'predicted':>10} {'observed':>10} {'lower':>10} {'upper':>10} "
          f"{'rel_err':>8} {'seeds':>5} {'conv':>5}  note")
    for m in res.modes:
        print(f"{m.mode:4d} {_fmt(m.predicted):>10} {_fmt(m.observed):>10} "
              f"{_fmt(m.lower):>10} {_fmt(m.upper):>10} "
              f"{(f'{m.rel_error:+.2%}' if math.isfinite(m.rel_error) else 'nan'):>8} "
              f"{m.seeds:5d} {_fmt(m.converged_fraction):>5}  {m.note}")
    state = "" if res.done else " (not finished: max rounds)"
    print(f"wrote {args.out}/thresholds.csv, {args.out}/locate.json "
          f"({len(res.rounds)} rounds, {res.members_trained} members){state}")
    return 0
