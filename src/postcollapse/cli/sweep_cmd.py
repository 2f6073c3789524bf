"""``postcollapse sweep DATA ...``: train a whole beta x seed grid of VAEs at once."""

from __future__ import annotations

import argparse
import sys

from postcollapse.cli.cluster import add_cluster_options, cluster_client, sweep_function
from postcollapse.cli.helptext import examples

__all__ = ["register", "parse_betas", "eta_dec_arg", "run", "diverged_line", "EXIT_DIVERGED"]

DEFAULT_OUT = "sweep-out"
#: Exit status of a sweep that finished with some members diverged.
EXIT_DIVERGED = 3


def parse_betas(text: str, *, log: bool = False) -> list[float]:
    """'START:STOP:NUM' (linear, or geometric with ``log``) or 'b1,b2,...' -> list of floats."""
    import numpy as np

    from postcollapse._checks import check_betas

    text = text.strip()
    try:
        if ":" in text:
            parts = text.split(":")
            if len(parts) != 3:
                raise ValueError
            start, stop, num = float(parts[0]), float(parts[1]), int(parts[2])
            if num < 1 or start <= 0 or stop <= 0:
                raise ValueError
            grid = np.geomspace(start, stop, num) if log else np.linspace(start, stop, num)
            values = [float(v) for v in grid]
        else:
            values = [float(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise ValueError(
            f"--betas must be START:STOP:NUM (START, STOP > 0, NUM >= 1) or a comma-separated "
            f"list of numbers > 0; got {text!r}"
        ) from None
    return check_betas(values, "--betas").tolist()


def eta_dec_arg(text: str):
    """argparse type of --eta-dec: 'learn' or a number (validated by the sweep)."""
    if text == "learn":
        return text
    try:
        return float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be a number > 0 or 'learn', got {text!r}") from None


def register(subparsers) -> None:
    from postcollapse._checks import ACTIVE_VAR_THRESHOLD
    from postcollapse.models import SIGMA_KINDS  # torch-free: the choice lists only
    from postcollapse.train import DTYPE_CHOICES, OPTIMIZER_CHOICES
    from postcollapse.train.config import INITS

    p = subparsers.add_parser(
        "sweep",
        help="train linear / ReLU / Tanh (conditional) VAEs across a beta grid at once",
        description="Train one VAE per (beta, seed), all as one batched model, and write "
        "OUT/results.csv (one row per member) and OUT/sweep.json (config, data summary and "
        "the closed-form theory for the same data).",
        epilog=examples(
            "postcollapse sweep synthetic --betas 1,3,10,30 --out runs/linear",
            "postcollapse sweep synthetic --model relu --sigma linear --betas 0.5:30:20 "
            "--log-betas --seeds 3 --out runs/relu",
            "postcollapse sweep mnist --eta-dec learn --betas 20,50,120 --out runs/learned",
            "postcollapse sweep synthetic --betas 1,3,10,30 --out runs/linear --resume  # after "
            "a kill",
            note="Exit status: 0 when every member trained; 3 when the sweep finished but "
                 "some members failed (a non-finite loss, or a loss that rose far above its "
                 "start; results are still written, those rows have diverged=True and a "
                 "fault, and stderr says how many); 2 for bad input or an output folder that "
                 "cannot be written (checked before training); 130 when interrupted "
                 "(continue with --resume). Killed at any point, even with SIGKILL, a sweep "
                 "loses at most --checkpoint-seconds of training and --resume continues it "
                 "to the same results.",
        ),
    )
    p.add_argument("data", metavar="DATA",
                   help="'synthetic', 'mnist', or a data file / folder (.npy, .npz, .csv, "
                        ".parquet, IDX[.gz], a folder of .npy shards)")
    p.add_argument("--target", default=None, help="target data (conditional VAE); "
                   "'same' forces a plain VAE (default: y of an .npz DATA, else y = x)")
    p.add_argument("--model", default="linear",
                   help="linear, relu or tanh (or ENCODER-DECODER, e.g. relu-linear; default "
                        "linear)")
    p.add_argument("--sigma", default="learnable", choices=SIGMA_KINDS,
                   help="encoder variance: prior (fixed at eta_enc^2), learnable (one "
                        "diagonal), linear or mlp (a function of x) (default learnable)")
    p.add_argument("--latent-dim", type=int, default=5, metavar="K",
                   help="latent dimension d1 (default 5)")
    p.add_argument("--hidden", type=int, default=8, help="MLP hidden width (default 8)")
    p.add_argument("--betas", default=None, help="START:STOP:NUM or b1,b2,...; default: 40 "
                   "log-spaced betas from 0.1 x beta_K* to 2 x beta_1* of the data")
    p.add_argument("--log-betas", action="store_true", help="geometric START:STOP:NUM grid")
    p.add_argument("--seeds", type=int, default=1, help="number of seeds 0..N-1 (default 1)")
    length = p.add_mutually_exclusive_group()
    length.add_argument("--steps", type=int, default=None,
                        help="training steps at most (default: 20000 for Adam, 2000 for "
                             "L-BFGS; members stop earlier when converged)")
    length.add_argument("--epochs", type=int, default=None,
                        help="training length in epochs instead of steps (default: --steps)")
    p.add_argument("--batch-size", type=int, default=None, help="default: full batch")
    p.add_argument("--lr", type=float, default=1e-3,
                   help="Adam's initial learning rate (default 1e-3)")
    p.add_argument("--optimizer", default="auto", choices=OPTIMIZER_CHOICES,
                   help="default auto: lbfgs when the loss is exact (linear decoder) and the "
                   "batch full, else adam")
    p.add_argument("--device", default="auto",
                   help="auto, cpu or cuda (default auto: cuda when available)")
    p.add_argument("--dtype", default="auto", choices=DTYPE_CHOICES,
                   help="default auto: float64 for lbfgs, float32 for adam")
    p.add_argument("--tol", type=float, default=None,
                   help="convergence tolerance on the relative change of the objective "
                        "(default: 1e-6 for Adam, 1e-12 for float64 L-BFGS, 1e-7 for "
                        "float32 L-BFGS; 0 disables)")
    p.add_argument("--lr-decay", type=_decay, default=0.5, metavar="FACTOR",
                   help="Adam: multiply a member's learning rate by FACTOR when its "
                   "fixed-noise training objective plateaus ('none': fixed rate; default 0.5)")
    p.add_argument("--patience", type=int, default=3,
                   help="Adam: checks without improvement before the rate decays (default 3)")
    p.add_argument("--active-threshold", type=float, default=ACTIVE_VAR_THRESHOLD, metavar="T",
                   help="a unit is active when the variance over the data of its posterior "
                   f"mean exceeds T (default {ACTIVE_VAR_THRESHOLD:g})")
    p.add_argument("--init", default="cold", choices=INITS,
                   help="how members start: cold (random initialisation) or linear (the "
                        "linear theory's global optimum of each beta, embedded in the "
                        "network; MLPs need --hidden >= --latent-dim; default cold)")
    p.add_argument("--eta-enc", type=float, default=1.0, metavar="F",
                   help="prior standard deviation eta_enc (default 1)")
    p.add_argument("--eta-dec", type=eta_dec_arg, default=1.0, metavar="F|learn",
                   help="decoder standard deviation (default 1), or 'learn': each member "
                        "learns it, trained on the beta-NLL (results gain the learned eta_dec)")
    p.add_argument("--out", default=DEFAULT_OUT, help=f"output folder (default {DEFAULT_OUT})")
    p.add_argument("--resume", action="store_true", help="continue an interrupted sweep in OUT")
    p.add_argument("--threads", type=int, default=None, metavar="N",
                   help="torch / BLAS CPU threads (default: from the size of the model and "
                        "the cores free now; 1 for small models or a busy machine)")
    p.add_argument("--checkpoint-seconds", type=float, default=60.0, metavar="S",
                   help="wall time between checkpoints in OUT (default 60; 0: at every "
                        "convergence check)")
    p.add_argument("--quiet", action="store_true", help="no progress bar, no table")
    add_cluster_options(p, sweep=True)
    add_extension_options(p)
    p.set_defaults(func=run)


def _decay(text: str):
    return None if text.strip().lower() == "none" else float(text)


def add_extension_options(p) -> None:
    """--levels 2 (--beta2, --latent-dim2, --sigma1) and --free-bits (--free-bits-mode)."""
    from postcollapse.cli.extensions_cmds import add_arguments
    from postcollapse.train.config import FREE_BITS_MODES

    add_arguments(p)
    p.add_argument("--free-bits-mode", default="dataset", choices=FREE_BITS_MODES,
                   help="dataset: max(LAMBDA, KL_j) of KL_j averaged over the whole data "
                        "(the theory's objective, full batch only); batch: max applied to "
                        "each minibatch's average (what minibatch training optimises; "
                        "default dataset)")


def extension_kwargs(args) -> dict:
    """The two-level / free-bits options of the sweep call (empty when none was given)."""
    out = {}
    if args.levels != 1 or any(getattr(args, n) is not None
                               for n in ("beta2", "latent_dim2", "sigma1")):
        out.update(levels=args.levels, beta2=args.beta2, latent_dim2=args.latent_dim2,
                   sigma1=args.sigma1)
    if args.free_bits is not None:
        out.update(free_bits=args.free_bits, free_bits_mode=args.free_bits_mode)
    elif args.free_bits_mode != "dataset":
        raise ValueError("--free-bits-mode needs --free-bits LAMBDA")
    return out


def _default_betas(data, target, latent_dim: int, eta_dec, sigma: str = "learnable"
                   ) -> list[float]:
    import numpy as np

    from postcollapse.data import load
    from postcollapse.theory import check_eta_dec, spectrum, thresholds

    th = thresholds(spectrum(load(data, target=target).moments()),
                    eta_dec=check_eta_dec(eta_dec, "--eta-dec"),
                    sigma="prior" if sigma == "prior" else "learnable")
    th = th[th > 0][:latent_dim]
    if th.size == 0:
        raise ValueError("the data have no signal (all zeta are 0); give --betas")
    return [float(b) for b in np.geomspace(0.1 * th[-1], 2.0 * th[0], 40)]


def run(args: argparse.Namespace) -> int:
    if args.threads is not None and (args.workers is not None or args.scheduler is not None):
        raise ValueError("--threads is for a local sweep; on a cluster use --worker-threads")
    with cluster_client(args) as client:  # None unless --workers / --scheduler
        extra = {} if client is not None else {"threads": args.threads}
        return _run(args, sweep_function(args, client), **extra)


def _run(args: argparse.Namespace, sweep, **extra) -> int:
    import math

    from postcollapse._checks import check_int_at_least
    from postcollapse._io import check_writable_dir

    check_int_at_least("--seeds", args.seeds, 1)
    if args.threads is not None:
        check_int_at_least("--threads", args.threads, 1)
    if not math.isfinite(args.checkpoint_seconds) or args.checkpoint_seconds < 0:
        raise ValueError(f"--checkpoint-seconds must be a finite number >= 0, got "
                         f"{args.checkpoint_seconds}")
    check_writable_dir(args.out, "--out")  # before any data is read or trained
    if args.betas is None:
        betas = _default_betas(args.data, args.target, args.latent_dim, args.eta_dec,
                               args.sigma)
    else:
        betas = parse_betas(args.betas, log=args.log_betas)
    try:
        res = sweep(
            args.data, target=args.target, betas=betas, model=args.model, sigma=args.sigma,
            latent_dim=args.latent_dim, hidden=args.hidden, seeds=range(args.seeds),
            steps=args.steps, epochs=args.epochs, batch_size=args.batch_size, lr=args.lr,
            optimizer=args.optimizer, device=args.device, dtype=args.dtype, tol=args.tol,
            eta_enc=args.eta_enc, eta_dec=args.eta_dec, out=args.out, resume=args.resume,
            progress=not args.quiet, checkpoint_seconds=args.checkpoint_seconds,
            lr_decay=args.lr_decay, patience=args.patience,
            active_threshold=args.active_threshold, **extra, **extension_kwargs(args),
            **({"init": args.init} if args.init != "cold" else {}),
        )
    except KeyboardInterrupt as exc:
        msg = str(exc) or "interrupted"
        print(f"postcollapse sweep: {msg}; rerun with --resume", file=sys.stderr)
        return 130
    if not args.quiet:
        print(f"{'beta':>10} {'seed':>4} {'loss':>12} {'theory':>12} {'AU':>3} {'th':>3}  state")
        for r in res.rows:
            state = ("diverged" if r["diverged"]
                     else "converged" if r["converged"] else "max steps")
            print(f"{r['beta']:10.4g} {r['seed']:4d} {r['loss']:12.6g} {r['theory_loss']:12.6g} "
                  f"{r['active_units']:3d} {r['theory_active']:3d}  {state}")
    print(f"wrote {args.out}/results.csv ({len(res.rows)} rows), {args.out}/sweep.json, "
          f"{args.out}/model.pt")
    line = diverged_line(res.rows, args.out)
    if line:
        print(f"postcollapse sweep: {line}", file=sys.stderr)
        return EXIT_DIVERGED
    return 0


def diverged_line(rows, where) -> str:
    """'N of K members diverged ...' for the rows of a finished sweep ('' when none did)."""
    from postcollapse.train.results import parse_flag

    bad = [r for r in rows if parse_flag(r.get("diverged", False))]
    if not bad:
        return ""
    first = ", ".join(f"beta={float(r['beta']):.4g} seed={r['seed']}" for r in bad[:3])
    more = "" if len(bad) <= 3 else f" and {len(bad) - 3} more"
    return (f"{len(bad)} of {len(rows)} members diverged ({first}{more}); their rows in "
            f"{where}/results.csv have diverged=True and a fault; a smaller --lr or "
            "--dtype float64 may help")
