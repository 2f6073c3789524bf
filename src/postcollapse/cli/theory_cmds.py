"""``postcollapse thresholds`` and ``postcollapse optimum``: the theory from data.

Both read DATA ("synthetic", "mnist", or a path), stream it into moments, and print either
a readable table or (``--json``) one JSON object on stdout. numpy/scipy only: this module
and everything it imports must never import torch (checked by the tests).
"""

from __future__ import annotations

import json
import sys

import numpy as np

from postcollapse.cli.cluster import (
    add_cluster_options,
    add_column_options,
    cluster_client,
    load_moments,
)
from postcollapse.cli.helptext import examples

__all__ = ["register", "cmd_thresholds", "cmd_optimum"]

_DATA_HELP = (
    "'synthetic' (the paper's regression set-up), 'mnist' (5,000 embedded digits), or a "
    "path: .npy, .npz (arrays x and optional y), .csv, IDX[.gz], or a folder with "
    "train-images-idx3-ubyte[.gz]; a folder or glob of .npy shards; .parquet files or a "
    "folder of them"
)
_TARGET_HELP = (
    "target: 'same' for a plain VAE (target = x), or another DATA whose inputs are the "
    "target. Default: the data's own y if it has one (synthetic, .npz with y), else 'same'"
)
_TEXT_TOP = 20  # modes shown in the text table when --top is not given


def register(subparsers) -> None:
    """Add the ``thresholds`` and ``optimum`` sub-commands."""
    from postcollapse.theory import SIGMA_MODES

    p = subparsers.add_parser(
        "thresholds",
        help="collapse threshold beta_i* of every mode, from data",
        description=(
            "Compute zeta (singular values of Z = C A^{-1/2}) and the critical betas "
            "beta_i* = zeta_i^2 / eta_dec^2: mode i collapses at the global minimum of the "
            "linear VAE iff beta >= beta_i*."
        ),
        epilog=examples(
            "postcollapse thresholds mnist --top 5",
            "postcollapse thresholds mnist --eta-dec learn --keep 2   # learned decoder variance",
            "postcollapse thresholds x.npy --target y.npy --json      # conditional model",
            "postcollapse thresholds shards/ --workers 2              # .npy shards on 2 workers",
        ),
    )
    p.add_argument("data", metavar="DATA", help=_DATA_HELP)
    p.add_argument("--target", default=None, metavar="DATA|same", help=_TARGET_HELP)
    _add_eta_dec(p)
    _add_keep(p)
    p.add_argument("--top", type=int, default=None, metavar="K",
                   help=f"report only the K largest modes (default: all in JSON, "
                        f"{_TEXT_TOP} in the table)")
    p.add_argument("--json", action="store_true", help="one JSON object on stdout")
    add_column_options(p)
    add_cluster_options(p)
    p.set_defaults(func=cmd_thresholds)

    p = subparsers.add_parser(
        "optimum",
        help="closed-form global minimum of the linear VAE at one beta",
        description=(
            "Closed-form global minimiser (U, W, Sigma, biases) and minimum loss of the "
            "linear (conditional) VAE on DATA at the given beta and latent dimension."
        ),
        epilog=examples(
            "postcollapse optimum synthetic --latent-dim 5 --beta 5 --save opt.npz",
            "postcollapse optimum mnist --latent-dim 5 --beta 3 --eta-dec learn --json",
            "postcollapse optimum synthetic --latent-dim 3 --beta 1 --levels 2 --beta2 2 "
            "--latent-dim2 3 --sigma1 1",
            "postcollapse optimum mnist --latent-dim 5 --beta 1 --free-bits 0.5 --json",
        ),
    )
    p.add_argument("data", metavar="DATA", help=_DATA_HELP)
    p.add_argument("--latent-dim", type=int, required=True, metavar="K",
                   help="latent dimension d1 (>= 1)")
    p.add_argument("--beta", type=float, required=True, metavar="B", help="KL weight (> 0)")
    p.add_argument("--target", default=None, metavar="DATA|same", help=_TARGET_HELP)
    p.add_argument("--sigma", choices=SIGMA_MODES, default="learnable",
                   help="encoder variance: learnable diagonal (default) or fixed at the prior")
    _add_eta_dec(p)
    p.add_argument("--eta-enc", type=float, default=1.0, metavar="F",
                   help="prior standard deviation eta_enc (default 1)")
    p.add_argument("--save", default=None, metavar="FILE.npz",
                   help="write U, W, sigma2, b_e, b_d (and lambda, theta, zeta) to FILE.npz "
                        "(default: nothing written)")
    p.add_argument("--json", action="store_true", help="one JSON object on stdout")
    from postcollapse.cli.extensions_cmds import add_arguments as add_extension_arguments

    add_extension_arguments(p)  # --levels 2 / --free-bits (two-level VAE, free bits)
    add_column_options(p)
    add_cluster_options(p)
    p.set_defaults(func=cmd_optimum)


def _eta_dec_value(text: str):
    """argparse type of --eta-dec: 'learn' or a number (validated by the command)."""
    if text == "learn":
        return text
    try:
        return float(text)
    except ValueError:
        import argparse

        raise argparse.ArgumentTypeError(
            f"must be a number > 0 or 'learn', got {text!r}"
        ) from None


def _add_eta_dec(p) -> None:
    p.add_argument("--eta-dec", type=_eta_dec_value, default=1.0, metavar="F|learn",
                   help="decoder standard deviation eta_dec (default 1), or 'learn': the "
                        "decoder variance is learned (objective: the beta-NLL with its "
                        "Gaussian normaliser; docs/THEORY.md, learned decoder variance)")


def _add_keep(p) -> None:
    p.add_argument("--keep", type=int, default=None, metavar="K",
                   help="also report the beta interval in which exactly K modes survive "
                        "(lo <= beta < hi), for the given or learned eta_dec (default: not "
                        "reported)")


def _keep_interval(spec, keep, eta_dec) -> tuple[float, float]:
    from postcollapse._checks import check_int_at_least
    from postcollapse.theory import beta_interval

    keep = check_int_at_least("--keep", keep, 0)
    if keep > spec.d_star:
        raise ValueError(f"--keep {keep} exceeds the number of modes d* = {spec.d_star}; "
                         f"use --keep 0..{spec.d_star}")
    return beta_interval(spec, keep, eta_dec=eta_dec)


def _json_float(x: float):
    return None if not np.isfinite(x) else float(x)


def _spectrum_of(args, *, vectors: bool = True):
    """Load DATA (+ target) and return (Dataset, Spectrum)."""
    from postcollapse.theory import spectrum

    with cluster_client(args) as client:  # None unless --workers / --scheduler
        ds, m = load_moments(args, client=client)
    return ds, spectrum(m, vectors=vectors)


def _header_lines(ds, spec) -> list[str]:
    kind = "plain VAE (target = x)" if ds.plain else "conditional (target y)"
    return [
        f"data       {ds.name}  [{kind}]",
        f"n_samples  {spec.n_samples}",
        f"dims       d0 = {spec.d0}, d2 = {spec.d2}",
        f"rank       {spec.rank} of {spec.d0}"
        + ("" if spec.rank == spec.d0 else "  (rank-deficient Cov(x): constant or duplicated "
           "columns carry no information and are dropped)"),
        f"residual   {spec.residual:.6g}",
    ]


def _header_json(ds, spec) -> dict:
    """The leading fields of both commands' --json object (as in ``_header_lines``)."""
    return {
        "data": ds.name,
        "plain": bool(ds.plain),
        "n_samples": int(spec.n_samples),
        "d0": int(spec.d0),
        "d2": int(spec.d2),
        "rank": int(spec.rank),
    }


def cmd_thresholds(args) -> int:
    from postcollapse._checks import check_int_at_least
    from postcollapse.theory import check_eta_dec, thresholds

    eta_dec = check_eta_dec(args.eta_dec, "--eta-dec")
    top = None if args.top is None else check_int_at_least("--top", args.top, 1)
    if args.keep is not None:
        check_int_at_least("--keep", args.keep, 0)
    ds, spec = _spectrum_of(args, vectors=False)  # thresholds need singular values only
    zeta = spec.zeta
    beta = thresholds(spec, eta_dec=eta_dec)
    keep = None if args.keep is None else _keep_interval(spec, args.keep, eta_dec)
    if args.json:
        k = zeta.size if top is None else min(top, zeta.size)
        out = {
            **_header_json(ds, spec),
            "d_star": int(zeta.size),
            "zeta": [float(z) for z in zeta[:k]],
            "zeta2": [float(z) ** 2 for z in zeta[:k]],
            "beta_thresholds": [float(b) for b in beta[:k]],
            "residual": float(spec.residual),
            "eta_dec": eta_dec,
        }
        if keep is not None:
            out["keep"] = args.keep
            out["keep_beta_interval"] = [_json_float(keep[0]), _json_float(keep[1])]
        json.dump(out, sys.stdout)
        sys.stdout.write("\n")
        return 0
    k = min(zeta.size, _TEXT_TOP if top is None else top)
    lines = _header_lines(ds, spec)
    if eta_dec == "learn":
        lines.append("eta_dec    learned   (beta_i* = d2 zeta_i^2 / (r + sum_{j>=i} zeta_j^2 "
                     "+ (i-1) zeta_i^2); mode i collapses iff beta >= beta_i*)")
    else:
        lines.append(f"eta_dec    {eta_dec:g}   (beta_i* = zeta_i^2 / eta_dec^2; mode i "
                     "collapses iff beta >= beta_i*)")
    if keep is not None:
        upper = f" < {keep[1]:.6g}" if np.isfinite(keep[1]) else ""  # no "< inf" in the text
        lines.append(f"keep       exactly {args.keep} mode(s) survive for "
                     f"{keep[0]:.6g} <= beta{upper}")
    lines.append("")
    lines.append(f"{'mode':>5}  {'zeta':>12}  {'zeta^2':>12}  {'beta*':>12}")
    for i in range(k):
        lines.append(f"{i + 1:>5}  {zeta[i]:>12.6g}  {zeta[i] ** 2:>12.6g}  {beta[i]:>12.6g}")
    if k < zeta.size:
        lines.append(f"  ... {zeta.size - k} more mode(s); use --top K or --json")
    print("\n".join(lines))
    return 0


def cmd_optimum(args) -> int:
    from postcollapse._checks import check_int_at_least, check_positive
    from postcollapse.cli.extensions_cmds import cmd_optimum_extension, wants_extension
    from postcollapse.theory import optimum, thresholds

    if wants_extension(args):
        return cmd_optimum_extension(args, spectrum_of=_spectrum_of, header_json=_header_json,
                                     header_lines=_header_lines)
    latent_dim = check_int_at_least("--latent-dim", args.latent_dim, 1)
    beta = check_positive("--beta", args.beta)
    from postcollapse.theory import check_eta_dec

    eta_dec = check_eta_dec(args.eta_dec, "--eta-dec")
    eta_enc = check_positive("--eta-enc", args.eta_enc)
    if args.save is not None and not str(args.save).endswith(".npz"):
        raise ValueError(f"--save must name a .npz file, got {args.save!r}")
    ds, spec = _spectrum_of(args)
    opt = optimum(spec, latent_dim=latent_dim, beta=beta, sigma=args.sigma,
                  eta_enc=eta_enc, eta_dec=eta_dec)
    if args.save is not None:
        from postcollapse._io import atomic_savez

        atomic_savez(
            args.save, U=opt.U, W=opt.W, sigma2=opt.sigma2, b_e=opt.b_e, b_d=opt.b_d,
            lam=opt.lam, theta=opt.theta, zeta=spec.zeta, loss=opt.loss, beta=beta,
            eta_enc=eta_enc, eta_dec=opt.eta_dec, eta_dec2=opt.eta_dec2, nll=opt.nll,
        )
    thr = thresholds(spec, eta_dec=eta_dec, sigma=args.sigma)
    if args.json:
        out = {
            **_header_json(ds, spec),
            "latent_dim": latent_dim,
            "beta": beta,
            "sigma": opt.sigma,
            "eta_enc": eta_enc,
            "eta_dec": opt.eta_dec,
            "eta_dec_learned": opt.eta_dec_learned,
            "eta_dec2": opt.eta_dec2,
            "loss": float(opt.loss),
            "nll": float(opt.nll),
            "active_modes": int(opt.n_active),
            "active": [bool(a) for a in opt.active],
            "sigma2": [float(s) for s in opt.sigma2],
            "lambda": [float(v) for v in opt.lam],
            "theta": [float(v) for v in opt.theta],
            "zeta": [float(z) for z in spec.zeta_padded(latent_dim)],
            "beta_thresholds": [float(b) for b in thr[:latent_dim]],
            "residual": float(spec.residual),
            "saved": args.save,
        }
        json.dump(out, sys.stdout)
        sys.stdout.write("\n")
        return 0
    lines = _header_lines(ds, spec)
    lines += [
        f"beta       {beta:g}   latent_dim {latent_dim}   sigma {opt.sigma}   "
        f"eta_enc {eta_enc:g}   eta_dec {opt.eta_dec:.6g}"
        + ("  (learned: eta_dec^2 = " + f"{opt.eta_dec2:.10g})" if opt.eta_dec_learned else ""),
        f"loss       {opt.loss:.10g}   (L_VAE, without the log 2 pi constant)",
        f"nll        {opt.nll:.10g}   (beta-NLL per example, with (d2/2) log(2 pi eta_dec^2))"
        + ("  <- minimised" if opt.eta_dec_learned else ""),
        f"active     {opt.n_active} of {latent_dim} latent dimensions",
        "",
        f"{'dim':>4}  {'zeta':>11}  {'beta*':>11}  {'sigma^2':>11}  {'lambda':>11}  "
        f"{'theta':>11}  state",
    ]
    zeta = spec.zeta_padded(latent_dim)
    for i in range(latent_dim):
        j = int(opt.mode[i])
        z = zeta[j] if j < zeta.size else 0.0
        b = thr[j] if j < thr.size else 0.0
        state = "active" if opt.active[i] else "collapsed"
        lines.append(
            f"{i + 1:>4}  {z:>11.5g}  {b:>11.5g}  {opt.sigma2[i]:>11.5g}  {opt.lam[i]:>11.5g}  "
            f"{opt.theta[i]:>11.5g}  {state}"
        )
    if args.save is not None:
        lines.append(f"\nsaved U, W, sigma2, b_e, b_d to {args.save}")
    print("\n".join(lines))
    return 0
