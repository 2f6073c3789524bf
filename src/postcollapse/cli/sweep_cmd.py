"""``postcollapse sweep DATA ...``: train a whole beta x seed grid of VAEs at once."""

from __future__ import annotations

import argparse
import sys

from postcollapse.cli.cluster import add_cluster_options, cluster_client, sweep_function

__all__ = ["register", "parse_betas", "run"]

DEFAULT_OUT = "sweep-out"


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


def register(subparsers) -> None:
    from postcollapse.models import SIGMA_KINDS  # torch-free: the choice lists only
    from postcollapse.train import DTYPE_CHOICES, OPTIMIZER_CHOICES

    p = subparsers.add_parser(
        "sweep",
        help="train linear / ReLU / Tanh (conditional) VAEs across a beta grid at once",
        description="Train one VAE per (beta, seed), all as one batched model, and write "
        "OUT/results.csv (one row per member) and OUT/sweep.json (config, data summary and "
        "the closed-form theory for the same data).",
    )
    p.add_argument("data", metavar="DATA", help="'synthetic', 'mnist', or a data file / folder")
    p.add_argument("--target", default=None, help="target data (conditional VAE); "
                   "'same' forces a plain VAE")
    p.add_argument("--model", default="linear",
                   help="linear, relu or tanh (or ENCODER-DECODER, e.g. relu-linear)")
    p.add_argument("--sigma", default="learnable", choices=SIGMA_KINDS)
    p.add_argument("--latent-dim", type=int, default=5)
    p.add_argument("--hidden", type=int, default=8, help="MLP hidden width (default 8)")
    p.add_argument("--betas", default=None, help="START:STOP:NUM or b1,b2,...; default: 40 "
                   "log-spaced betas from 0.1 x beta_K* to 2 x beta_1* of the data")
    p.add_argument("--log-betas", action="store_true", help="geometric START:STOP:NUM grid")
    p.add_argument("--seeds", type=int, default=1, help="number of seeds 0..N-1 (default 1)")
    length = p.add_mutually_exclusive_group()
    length.add_argument("--steps", type=int, default=None)
    length.add_argument("--epochs", type=int, default=None)
    p.add_argument("--batch-size", type=int, default=None, help="default: full batch")
    p.add_argument("--lr", type=float, default=1e-3, help="Adam's initial learning rate")
    p.add_argument("--optimizer", default="auto", choices=OPTIMIZER_CHOICES,
                   help="default auto: lbfgs when the loss is exact (linear decoder) and the "
                   "batch full, else adam")
    p.add_argument("--device", default="auto", help="auto, cpu or cuda")
    p.add_argument("--dtype", default="auto", choices=DTYPE_CHOICES,
                   help="default auto: float64 for lbfgs, float32 for adam")
    p.add_argument("--tol", type=float, default=None, help="convergence tolerance")
    p.add_argument("--lr-decay", type=_decay, default=0.5, metavar="FACTOR",
                   help="Adam: multiply a member's learning rate by FACTOR when its "
                   "fixed-noise training objective plateaus ('none': fixed rate; default 0.5)")
    p.add_argument("--patience", type=int, default=3,
                   help="Adam: checks without improvement before the rate decays (default 3)")
    p.add_argument("--eta-enc", type=float, default=1.0)
    p.add_argument("--eta-dec", type=float, default=1.0)
    p.add_argument("--out", default=DEFAULT_OUT, help=f"output folder (default {DEFAULT_OUT})")
    p.add_argument("--resume", action="store_true", help="continue an interrupted sweep in OUT")
    p.add_argument("--quiet", action="store_true", help="no progress bar, no table")
    add_cluster_options(p, sweep=True)
    p.set_defaults(func=run)


def _decay(text: str):
    return None if text.strip().lower() == "none" else float(text)


def _default_betas(data, target, latent_dim: int, eta_dec: float) -> list[float]:
    import numpy as np

    from postcollapse.data import load
    from postcollapse.theory import spectrum, thresholds

    th = thresholds(spectrum(load(data, target=target).moments()), eta_dec=eta_dec)
    th = th[th > 0][:latent_dim]
    if th.size == 0:
        raise ValueError("the data have no signal (all zeta are 0); give --betas")
    return [float(b) for b in np.geomspace(0.1 * th[-1], 2.0 * th[0], 40)]


def run(args: argparse.Namespace) -> int:
    with cluster_client(args) as client:  # None unless --workers / --scheduler
        return _run(args, sweep_function(args, client))


def _run(args: argparse.Namespace, sweep) -> int:
    from postcollapse._checks import check_int_at_least

    check_int_at_least("--seeds", args.seeds, 1)
    if args.betas is None:
        betas = _default_betas(args.data, args.target, args.latent_dim, args.eta_dec)
    else:
        betas = parse_betas(args.betas, log=args.log_betas)
    try:
        res = sweep(
            args.data, target=args.target, betas=betas, model=args.model, sigma=args.sigma,
            latent_dim=args.latent_dim, hidden=args.hidden, seeds=range(args.seeds),
            steps=args.steps, epochs=args.epochs, batch_size=args.batch_size, lr=args.lr,
            optimizer=args.optimizer, device=args.device, dtype=args.dtype, tol=args.tol,
            eta_enc=args.eta_enc, eta_dec=args.eta_dec, out=args.out, resume=args.resume,
            progress=not args.quiet, lr_decay=args.lr_decay, patience=args.patience,
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
    return 0
