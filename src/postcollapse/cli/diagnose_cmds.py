"""``postcollapse diagnose`` and ``postcollapse effective-beta``: diagnostics for any VAE.

``diagnose`` reads encoder outputs (mu, logvar) saved by the user's own model and prints
per-dimension KL, active units, the (epsilon, delta) collapse rate, sigma statistics and an
MI estimate. ``effective-beta`` converts a loss convention into beta * eta_dec^2 and, with
DATA, predicts which latent modes survive. Neither imports torch at module level
(``effective-beta`` never imports it at all).
"""

from __future__ import annotations

import json
import sys

from postcollapse.cli.helptext import examples
from postcollapse.cli.options import eta_dec_arg
from postcollapse.diagnostics._effective_beta import (
    LOSS_CONVENTIONS,
    NEAR_THRESHOLD_MARGIN,
)

__all__ = ["register", "cmd_diagnose", "cmd_effective_beta"]

_DATA_HELP = (
    "data to predict surviving modes on: 'mnist' (5,000 embedded digits), 'synthetic', or a "
    "path (.npy, .npz, .csv, IDX[.gz])"
)


def register(subparsers) -> None:
    """Add the ``diagnose`` and ``effective-beta`` sub-commands."""
    from postcollapse._checks import ACTIVE_VAR_THRESHOLD
    from postcollapse.diagnostics import BATCH_REDUCTIONS, KL_CONVENTIONS, RECON_CONVENTIONS

    p = subparsers.add_parser(
        "diagnose",
        help="collapse metrics of saved encoder outputs (mu, logvar)",
        description=(
            "Per-dimension KL to the prior, active units (Cov_x(mu_i) > threshold), "
            "(epsilon, delta) collapse (KL_i(x) < epsilon on >= 1 - delta of inputs), mean "
            "and std of sigma_i, and an aggregate-posterior estimate of I(x; z_i), from "
            "encoder outputs of any Gaussian-encoder VAE."
        ),
        epilog=examples(
            "postcollapse diagnose --latents my_latents.npz",
            "postcollapse diagnose --latents my_latents.csv --threshold 0.05 --json",
            note="Save mu and logvar of your encoder on (a sample of) the data, e.g. "
                 "np.savez('my_latents.npz', mu=mu, logvar=logvar).",
        ),
    )
    p.add_argument("--latents", required=True, metavar="FILE",
                   help="an .npz with arrays mu and logvar (n, K), or a .csv with columns "
                        "mu_1..mu_K, logvar_1..logvar_K")
    p.add_argument("--threshold", type=float, default=ACTIVE_VAR_THRESHOLD, metavar="F",
                   help=f"active-unit threshold on Cov_x(mu_i) (default {ACTIVE_VAR_THRESHOLD:g})")
    p.add_argument("--epsilon", type=float, default=0.01, metavar="F",
                   help="KL level in nats for (epsilon, delta) collapse (default 0.01)")
    p.add_argument("--delta", type=float, default=0.01, metavar="F",
                   help="allowed fraction of inputs above epsilon (default 0.01)")
    p.add_argument("--eta-enc", type=float, default=1.0, metavar="F",
                   help="prior standard deviation eta_enc (default 1)")
    p.add_argument("--mi-samples", type=int, default=500, metavar="M",
                   help="rows of the uniform subsample used for the MI estimate (0: off; "
                        "default 500)")
    p.add_argument("--seed", type=int, default=0, help="seed of the MI subsample (default 0)")
    p.add_argument("--json", action="store_true", help="one JSON object on stdout")
    p.set_defaults(func=cmd_diagnose)

    p = subparsers.add_parser(
        "effective-beta",
        help="convert a loss convention into beta * eta_dec^2 (and predict surviving modes)",
        description=(
            "Minimisers of RECON_WEIGHT * RECON + KLD_WEIGHT * KL are those of the paper's "
            "SE/(2 eta_dec^2) + beta KL at beta * eta_dec^2 = a_K / (2 a_R), where a_R and "
            "a_K are the coefficients of the per-sample squared error (summed over features) "
            "and KL (summed over latent dimensions). Spell the loss with --recon and --kl, "
            "or name a library's loss with --convention (--list-conventions shows them). "
            "With --data, print the thresholds zeta_i^2 and the predicted surviving modes."
        ),
        epilog=examples(
            "postcollapse effective-beta --convention pythae-betavae --beta 5 --data mnist",
            "postcollapse effective-beta --convention pytorch-vae-vanilla --kld-weight "
            "0.00025 --dim 12288",
            "postcollapse effective-beta --recon mse-mean --kl sum --kld-weight 0.01 "
            "--data mnist --latent-dim 5 --top 8",
        ),
    )
    p.add_argument("--convention", default=None, metavar="NAME",
                   choices=tuple(LOSS_CONVENTIONS),
                   help="a library's loss: " + ", ".join(LOSS_CONVENTIONS) + " (default: "
                        "none; spell the loss with --recon and --kl instead). It fixes "
                        "--recon, --kl, --recon-weight and the batch reductions")
    p.add_argument("--list-conventions", action="store_true",
                   help="print the named conventions with their loss and source, and exit")
    p.add_argument("--recon", default=None,
                   choices=(*RECON_CONVENTIONS, "bce"),
                   help="squared error summed / averaged over features, or Gaussian NLL with "
                        "std --eta-dec (summed / averaged over features); 'bce' explains why "
                        "a Bernoulli loss has no conversion (required without --convention; "
                        "no default)")
    p.add_argument("--kl", default=None, choices=KL_CONVENTIONS,
                   help="KL summed or averaged over latent dimensions (required without "
                        "--convention; no default)")
    p.add_argument("--kld-weight", type=float, default=None, metavar="W",
                   help="weight of the KL term (default 1); with --convention, the "
                        "library's kld_weight (PyTorch-VAE's M_N) where it has one")
    p.add_argument("--beta", type=float, default=None, metavar="B",
                   help="the convention's beta (default: the library's, 1 for pythae, 4 for "
                        "PyTorch-VAE BetaVAE); only with --convention")
    p.add_argument("--gamma", type=float, default=None, metavar="G",
                   help="the convention's gamma (pytorch-vae-beta-b; default 1000); only with "
                        "--convention")
    p.add_argument("--recon-weight", type=float, default=None, metavar="R",
                   help="weight of the reconstruction term (default 1)")
    p.add_argument("--eta-dec", type=eta_dec_arg, default=None, metavar="F|learn",
                   help="decoder std of the Gaussian NLL (gaussian-nll only; no default), or "
                        "'learn' for a trained decoder variance: the result is then the "
                        "beta of the beta-NLL and modes are predicted with the "
                        "learned-variance thresholds")
    p.add_argument("--dim", type=int, default=None, metavar="D",
                   help="number of features D (needed for *-mean unless --data; default: "
                        "the data's)")
    p.add_argument("--latent-dim", type=int, default=None, metavar="K",
                   help="latent dimension K (needed for --kl mean; caps predicted modes; "
                        "default none)")
    p.add_argument("--recon-batch", choices=BATCH_REDUCTIONS, default=None,
                   help="reconstruction reduced over the batch by mean (default) or sum")
    p.add_argument("--kl-batch", choices=BATCH_REDUCTIONS, default=None,
                   help="KL reduced over the batch by mean (default) or sum")
    p.add_argument("--batch-size", type=int, default=None, metavar="B",
                   help="batch size; needed only when --recon-batch and --kl-batch differ "
                        "(default: none)")
    p.add_argument("--data", default=None, metavar="DATA",
                   help=_DATA_HELP + " (default: none, only the conversion is printed)")
    p.add_argument("--top", type=int, default=None, metavar="K",
                   help="list only the K largest thresholds, in the table and in --json "
                        "(default: max(10, latent dim + 1); 0 lists all)")
    p.add_argument("--json", action="store_true", help="one JSON object on stdout")
    p.set_defaults(func=cmd_effective_beta)


def _fmt(v: float) -> str:
    return f"{v:.4g}"


def cmd_diagnose(args) -> int:
    from postcollapse._checks import check_int_at_least
    from postcollapse.diagnostics import collapse_metrics, load_latents

    mi_samples = check_int_at_least("--mi-samples", args.mi_samples, 0)
    mu, logvar = load_latents(args.latents)
    s = collapse_metrics(
        mu, logvar, threshold=args.threshold, epsilon=args.epsilon, delta=args.delta,
        eta_enc=args.eta_enc, mi_samples=mi_samples, seed=args.seed,
    )
    if args.json:
        out = {"latents": str(args.latents), **s.to_dict()}
        json.dump(out, sys.stdout)
        sys.stdout.write("\n")
        return 0
    k = s.latent_dim
    lines = [
        f"latents    {args.latents}",
        f"samples    {s.n_samples}   latent_dim {k}   prior N(0, {s.eta_enc:g}^2)",
        "",
        f"{'dim':>4}  {'KL':>9}  {'Var(mu)':>9}  {'active':>6}  {'P(KL<eps)':>9}  "
        f"{'collapsed':>9}  {'sigma':>9}  {'sd(sigma)':>9}  {'MI':>9}",
    ]
    for i in range(k):
        mi = "-" if s.mi is None else _fmt(s.mi[i])
        lines.append(
            f"{i + 1:>4}  {_fmt(s.kl[i]):>9}  {_fmt(s.mu_var[i]):>9}  "
            f"{'yes' if s.active[i] else 'no':>6}  {s.frac_below[i]:>9.3f}  "
            f"{'yes' if s.collapsed[i] else 'no':>9}  {_fmt(s.sigma_mean[i]):>9}  "
            f"{_fmt(s.sigma_std[i]):>9}  {mi:>9}"
        )
    lines += [
        "",
        f"KL total       {s.kl_total:.6g} nats",
        f"active units   {s.active_units} of {k}   (Var_x(mu_i) > {s.threshold:g})",
        f"collapse rate  {s.collapse_rate:.3g}   ({int(s.collapsed.sum())} of {k} dims have "
        f"KL_i < {s.epsilon:g} on >= {1 - s.delta:.3g} of inputs)",
    ]
    if s.mi is not None:
        lines.append(
            f"MI total       {s.mi_total:.6g} nats   (sum of per-dimension estimates on "
            f"{s.mi_samples} rows; each at most log {s.mi_samples})"
        )
    print("\n".join(lines))
    return 0


def _list_conventions(*, as_json: bool = False) -> int:
    if as_json:  # --json: one JSON list, as every other --json output is one JSON value
        rows = [{"name": c.name, "library": c.library, "loss": c.loss, "recon": c.recon,
                 "bernoulli": bool(c.bernoulli), "parameters": list(c.weights),
                 "defaults": dict(c.defaults or {}), "source": c.source, "note": c.note}
                for c in LOSS_CONVENTIONS.values()]
        json.dump(rows, sys.stdout, default=str)
        sys.stdout.write("\n")
        return 0
    for c in LOSS_CONVENTIONS.values():
        params = ", ".join(
            f"{k}={(c.defaults or {}).get(k, 'required')}" for k in c.weights
        ) or "none"
        kind = "Bernoulli (BCE): no conversion" if c.bernoulli else f"recon {c.recon}"
        print(f"{c.name}\n  {c.library}\n  loss    {c.loss}\n  {kind}; parameters: {params}"
              f"\n  source  {c.source}")
        if c.note:
            print(f"  note    {c.note}")
    return 0


def cmd_effective_beta(args) -> int:
    from postcollapse._checks import check_int_at_least
    from postcollapse.diagnostics import effective_beta

    if args.list_conventions:
        return _list_conventions(as_json=args.json)
    if args.convention is None and (args.recon is None or args.kl is None):
        raise ValueError(
            "pass --recon and --kl, or --convention NAME (see --list-conventions)"
        )
    top = None if args.top is None else check_int_at_least("--top", args.top, 0)
    data = None
    if args.data is not None:
        from postcollapse.data import load

        data = load(args.data)
    res = effective_beta(
        convention=args.convention, recon=args.recon, kl=args.kl, kld_weight=args.kld_weight,
        recon_weight=args.recon_weight, beta=args.beta, gamma=args.gamma,
        eta_dec=args.eta_dec, dim=args.dim, latent_dim=args.latent_dim,
        recon_batch=args.recon_batch, kl_batch=args.kl_batch, batch_size=args.batch_size,
        data=data,
    )
    pred = res.prediction
    if pred is not None:
        n_show = max(10, (pred.latent_dim or 0) + 1) if top is None else (top or None)
        n_show = pred.thresholds.size if n_show is None else min(n_show, pred.thresholds.size)
    if args.json:
        out = {
            "convention": args.convention,
            "recon": res.convention.recon if res.convention else args.recon,
            "kl": "sum" if res.convention else args.kl,
            "kld_weight": args.kld_weight, "recon_weight": args.recon_weight,
            "beta": args.beta, "gamma": args.gamma, "eta_dec": args.eta_dec,
            "dim": args.dim if data is None else int(data.d2),
            "recon_batch": args.recon_batch or "mean", "kl_batch": args.kl_batch or "mean",
            "batch_size": args.batch_size,
            "data": None if data is None else data.name,
            **res.to_dict(top=None if pred is None else n_show),
        }
        json.dump(out, sys.stdout)
        sys.stdout.write("\n")
        return 0
    learned = res.learned_variance
    unit = "beta" if learned else "beta * eta_dec^2"
    if learned:
        lines = [
            f"beta = {res.value:.6g}   (learned decoder variance: a beta-NLL, no eta_dec)",
            f"  (your loss = {res.recon_coef:.6g} * <Gaussian NLL summed over features, "
            f"learned variance> + {res.kl_coef:.6g} * <KL summed over latent dims>, "
            "<.> = batch mean;",
            "   beta = KL coefficient / NLL coefficient)",
        ]
    else:
        lines = [
            f"beta * eta_dec^2 = {res.value:.6g}",
            f"  (your loss = {res.recon_coef:.6g} * <SE summed over features> + "
            f"{res.kl_coef:.6g} * <KL summed over latent dims>, <.> = batch mean;",
            "   beta * eta_dec^2 = KL coefficient / (2 * SE coefficient))",
        ]
    if res.convention is not None:
        c = res.convention
        lines += [f"  convention {c.name}: {c.library}", f"    loss   {c.loss}",
                  f"    source {c.source}"]
        if c.note:
            lines.append(f"    note   {c.note}")
    if pred is not None:
        thr = pred.thresholds
        lines += [
            "",
            f"data       {data.name}   ({data.n_samples} samples, {data.d2} features)",
            f"{'mode':>5}  {'beta_i*' if learned else 'zeta^2':>10}  survives"
            + ("   (learned-variance thresholds)" if learned else ""),
        ]
        for i in range(n_show):
            capped = pred.latent_dim is not None and i >= pred.latent_dim
            alive = thr[i] > pred.effective_beta and not capped
            note = "yes" if alive else ("no (beyond latent_dim)" if capped else "no")
            lines.append(f"{i + 1:>5}  {thr[i]:>10.5g}  {note}")
        if n_show < thr.size:
            lines.append(f"  ... {thr.size - n_show} more mode(s) (--top 0 lists all)")
        cap = "" if pred.latent_dim is None else f" of latent_dim {pred.latent_dim}"
        hi = "inf" if pred.interval[1] == float("inf") else f"{pred.interval[1]:.5g}"
        lines += [
            "",
            f"predicted surviving modes  {pred.active_modes}{cap}",
            f"same count for {unit} in [{pred.interval[0]:.5g}, {hi})   "
            f"margin {pred.margin:.3g} (log units)",
        ]
        if pred.near_threshold:
            lines.append(
                f"warning: within {NEAR_THRESHOLD_MARGIN:.0%} of a threshold (margin "
                f"{pred.margin:.3g} < {NEAR_THRESHOLD_MARGIN:g}); trained models have kept "
                "one mode more or one fewer than predicted this close"
            )
    print("\n".join(lines))
    return 0
