"""``postcollapse locate DATA ...``: bracket every mode's observed critical beta."""

from __future__ import annotations

import argparse
import json
import math
import sys

from postcollapse.cli.helptext import examples

__all__ = ["register", "run"]

DEFAULT_OUT = "locate-out"


def register(subparsers) -> None:
    from postcollapse._checks import ACTIVE_VAR_THRESHOLD
    from postcollapse.locate.run import LOCATE_ACTIVE_THRESHOLD
    from postcollapse.models import SIGMA_KINDS  # torch-free: the choice lists only
    from postcollapse.train import DTYPES, OPTIMIZERS

    p = subparsers.add_parser(
        "locate",
        help="measure each mode's critical beta by bisection (brackets to --rtol)",
        description="For each latent mode i, find the beta at which the trained model goes "
        "from i to i-1 active units: brackets start around the predicted beta_i*, widen when "
        "the observation lies outside, and are refined (all modes and seeds in one batched "
        "training per round) until every bracket is narrower than --rtol. Writes "
        "OUT/thresholds.csv and OUT/locate.json after every round.",
        epilog=examples(
            "postcollapse locate synthetic --latent-dim 5 --out runs/locate-linear",
            "postcollapse locate synthetic --model relu --sigma linear --seeds 3 --rtol 0.02 "
            "--out runs/locate-relu",
            "postcollapse locate mnist --latent-dim 5 --json --out runs/locate-mnist",
            note="A unit is active when Var_x E[z_i|x] > --active-threshold T. For the "
                 "linear model Var(mu_i) = 1 - beta/beta_i* at the optimum, so the rule "
                 "places the observed threshold at (1 - T) beta_i*, an offset of the rule, "
                 "not of training: the default T is 0.001 (-0.1%) for L-BFGS on an exact "
                 "loss and the sweep's 0.01 for Adam, which stops with collapsing units "
                 "still near Var 0.001.",
        ),
    )
    p.add_argument("data", metavar="DATA",
                   help="'synthetic', 'mnist', or a data file / folder (.npy, .npz, .csv, "
                        ".parquet, IDX[.gz])")
    p.add_argument("--target", default=None, help="target data (conditional VAE); "
                   "'same' forces a plain VAE (default: y of an .npz DATA, else y = x)")
    p.add_argument("--model", default="linear",
                   help="linear, relu or tanh (or ENCODER-DECODER, e.g. relu-linear; default "
                        "linear)")
    p.add_argument("--sigma", default="learnable", choices=SIGMA_KINDS,
                   help="encoder variance: prior, learnable, linear or mlp (default "
                        "learnable)")
    p.add_argument("--latent-dim", type=int, default=5, metavar="K",
                   help="latent dimension d1; modes 1..K are located (default 5)")
    p.add_argument("--hidden", type=int, default=8, help="MLP hidden width (default 8)")
    p.add_argument("--seeds", type=int, default=1, help="number of seeds 0..N-1 (default 1)")
    p.add_argument("--rtol", type=float, default=0.01,
                   help="relative bracket width to reach, upper/lower - 1 (default 0.01)")
    p.add_argument("--active-threshold", type=float, default=None, metavar="T",
                   help="a unit is active when Var_x E[z_i|x] > T (default: "
                   f"{LOCATE_ACTIVE_THRESHOLD:g} for L-BFGS on an exact loss, else "
                   f"{ACTIVE_VAR_THRESHOLD:g})")
    p.add_argument("--steps", type=int, default=None,
                   help="training steps per round at most (default: the sweep's)")
    p.add_argument("--batch-size", type=int, default=None, help="default: full batch")
    p.add_argument("--lr", type=float, default=None,
                   help="Adam's learning rate (default: the sweep's, 1e-3)")
    p.add_argument("--optimizer", default=None, choices=OPTIMIZERS,
                   help="default: the sweep's")
    p.add_argument("--dtype", default=None, choices=DTYPES, help="default: the sweep's")
    p.add_argument("--init", default="cold", choices=("cold", "linear"),
                   help="how members start: cold or linear (the linear optimum of each "
                        "beta; default cold)")
    p.add_argument("--eta-dec", type=float, default=1.0, metavar="F",
                   help="decoder standard deviation eta_dec (default 1)")
    p.add_argument("--device", default="auto",
                   help="auto, cpu or cuda (default auto: cuda when available)")
    p.add_argument("--out", default=DEFAULT_OUT, help=f"output folder (default {DEFAULT_OUT})")
    p.add_argument("--resume", action="store_true",
                   help="continue an interrupted locate in OUT from its last finished round")
    p.add_argument("--json", action="store_true",
                   help='print one JSON object {"modes": [...]} on stdout instead of a table')
    p.add_argument("--quiet", action="store_true", help="no progress on stderr")
    p.set_defaults(func=run)


def _fmt(v: float) -> str:
    return "nan" if not math.isfinite(v) else f"{v:.5g}"


def run(args: argparse.Namespace) -> int:
    from postcollapse._checks import check_int_at_least, check_positive
    from postcollapse.locate import locate

    check_int_at_least("--seeds", args.seeds, 1)
    check_positive("--rtol", args.rtol)
    options = {k: v for k, v in (("steps", args.steps), ("batch_size", args.batch_size),
                                 ("lr", args.lr), ("optimizer", args.optimizer),
                                 ("dtype", args.dtype),
                                 ("init", None if args.init == "cold" else args.init))
               if v is not None}
    try:
        res = locate(args.data, target=args.target, model=args.model, sigma=args.sigma,
                     latent_dim=args.latent_dim, hidden=args.hidden,
                     seeds=range(args.seeds), rtol=args.rtol, eta_dec=args.eta_dec,
                     active_threshold=args.active_threshold,
                     device=args.device, out=args.out, resume=args.resume,
                     progress=not args.quiet, **options)
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
