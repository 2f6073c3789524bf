"""``postcollapse optimum --levels 2`` and ``postcollapse optimum --free-bits LAMBDA``.

The two-level linear VAE and the free-bits linear VAE (docs/THEORY.md). The ``optimum``
command in :mod:`postcollapse.cli.theory_cmds` adds these flags with :func:`add_arguments`
and hands over to :func:`cmd_optimum_extension` when one of them is given. numpy/scipy
only (never torch).
"""

from __future__ import annotations

import json
import sys

__all__ = ["add_arguments", "wants_extension", "cmd_optimum_extension"]


def add_arguments(p) -> None:
    """Add --levels, --beta2, --latent-dim2, --sigma1 and --free-bits to the optimum parser."""
    p.add_argument("--levels", type=int, default=1, metavar="L",
                   help="latent levels: 1 (default) or 2 (two-level linear VAE)")
    p.add_argument("--beta2", type=float, default=None, metavar="B2",
                   help="KL weight of level 2 (needs --levels 2; no default)")
    p.add_argument("--latent-dim2", type=int, default=None, metavar="D2",
                   help="latent dimension of level 2 (needs --levels 2; no default)")
    p.add_argument("--sigma1", type=float, default=None, metavar="S1",
                   help="fixed level-1 encoder standard deviation (needs --levels 2; "
                        "default: none, both levels' variances learnable)")
    p.add_argument("--free-bits", type=float, default=None, metavar="LAMBDA",
                   help="free bits per latent dimension in nats: KL replaced by "
                        "sum_j max(LAMBDA, KL_j), KL averaged over the data (default: none, "
                        "the plain KL)")


def wants_extension(args) -> bool:
    """True when the optimum command was asked for the two-level or free-bits model."""
    return (getattr(args, "levels", 1) != 1 or getattr(args, "free_bits", None) is not None
            or any(getattr(args, n, None) is not None for n in ("beta2", "latent_dim2", "sigma1")))


def _validate(args):
    from postcollapse._checks import check_int_at_least, check_positive

    if args.levels not in (1, 2):
        raise ValueError(f"--levels must be 1 or 2, got {args.levels}")
    if args.levels == 1:
        for flag, name in (("--beta2", "beta2"), ("--latent-dim2", "latent_dim2"),
                           ("--sigma1", "sigma1")):
            if getattr(args, name) is not None:
                raise ValueError(f"{flag} needs --levels 2")
    if args.levels == 2 and args.free_bits is not None:
        raise ValueError("--free-bits with --levels 2 is not supported; use one or the other")
    if args.sigma != "learnable":
        raise ValueError(
            f"--sigma {args.sigma} applies to the one-level VAE only; the two-level model "
            "takes --sigma1 and free bits need a learnable Sigma"
        )
    if args.eta_dec == "learn":
        raise ValueError(
            "--eta-dec learn applies to the one-level VAE only; give --eta-dec a number "
            "> 0 with --levels 2 or --free-bits"
        )
    out = {
        "latent_dim": check_int_at_least("--latent-dim", args.latent_dim, 1),
        "beta": check_positive("--beta", args.beta),
        "eta_dec": check_positive("--eta-dec", args.eta_dec),
        "eta_enc": check_positive("--eta-enc", args.eta_enc),
    }
    if args.levels == 2:
        if args.beta2 is None:
            raise ValueError("--levels 2 needs --beta2 B2 (the level-2 KL weight)")
        if args.latent_dim2 is None:
            raise ValueError("--levels 2 needs --latent-dim2 D2 (the level-2 latent dimension)")
        out["beta2"] = check_positive("--beta2", args.beta2)
        out["latent_dim2"] = check_int_at_least("--latent-dim2", args.latent_dim2, 1)
        out["sigma1"] = None if args.sigma1 is None else check_positive("--sigma1",
                                                                         args.sigma1)
    else:
        from postcollapse.theory.freebits import check_free_bits

        try:
            out["lam"] = check_free_bits(args.free_bits)
        except ValueError as exc:
            raise ValueError(str(exc).replace("free bits lambda", "--free-bits", 1)) from None
    if args.save is not None and not str(args.save).endswith(".npz"):
        raise ValueError(f"--save must name a .npz file, got {args.save!r}")
    return out


def _floats(a) -> list:
    return [float(v) for v in a]


def cmd_optimum_extension(args, *, spectrum_of, header_json, header_lines) -> int:
    """Run ``optimum`` for --levels 2 or --free-bits (helpers passed in by theory_cmds)."""
    opts = _validate(args)
    ds, spec = spectrum_of(args)
    if args.levels == 2:
        return _hierarchical(args, opts, ds, spec, header_json, header_lines)
    return _freebits(args, opts, ds, spec, header_json, header_lines)


def _emit(args, out: dict, lines: list[str]) -> int:
    if args.json:
        json.dump(out, sys.stdout)
        sys.stdout.write("\n")
    else:
        print("\n".join(lines))
    return 0


def _hierarchical(args, o, ds, spec, header_json, header_lines) -> int:
    from postcollapse.theory.hierarchical import hierarchical_optimum

    h = hierarchical_optimum(
        spec, latent_dim=o["latent_dim"], latent_dim2=o["latent_dim2"], beta=o["beta"],
        beta2=o["beta2"], sigma1=o["sigma1"], eta_enc=o["eta_enc"], eta_dec=o["eta_dec"],
    )
    if args.save is not None:
        from postcollapse._io import atomic_savez

        atomic_savez(args.save, **h.params._asdict(), loss=h.loss, zeta=spec.zeta)
    out = {
        **header_json(ds, spec),
        "levels": 2,
        "latent_dim": o["latent_dim"], "latent_dim2": o["latent_dim2"],
        "beta": o["beta"], "beta2": o["beta2"], "sigma1": o["sigma1"],
        "eta_enc": o["eta_enc"], "eta_dec": o["eta_dec"],
        "regime": h.regime,
        "loss": float(h.loss),
        "active_level1": [bool(a) for a in h.active_level1],
        "active_level2": [bool(a) for a in h.active_level2],
        "n_active_level1": h.n_active_level1,
        "n_active_level2": h.n_active_level2,
        "zeta_threshold1": float(h.zeta_threshold1),
        "zeta_threshold2": (None if h.zeta_threshold2 == float("inf")
                            else float(h.zeta_threshold2)),
        "lambda1": _floats(h.lambda1),
        "decoder1": _floats(h.decoder1),
        "omega": _floats(h.omega),
        "level2_mode": [int(v) for v in h.level2_mode],
        "zeta": _floats(h.zeta),
        "residual": float(spec.residual),
        "saved": args.save,
    }
    t2 = ("none" if h.zeta_threshold2 == float("inf") else f"{h.zeta_threshold2:.6g}")
    lines = header_lines(ds, spec) + [
        f"levels     2   beta {o['beta']:g}   beta2 {o['beta2']:g}   latent_dim "
        f"{o['latent_dim']}   latent_dim2 {o['latent_dim2']}   sigma1 "
        f"{'learnable' if o['sigma1'] is None else format(o['sigma1'], 'g')}",
        f"regime     {h.regime}",
        f"loss       {h.loss:.10g}   (min L, without the log 2 pi constants)",
        f"level 1    {h.n_active_level1} of {o['latent_dim']} active   "
        f"(mode i served iff zeta_i > {h.zeta_threshold1:.6g})",
        f"level 2    {h.n_active_level2} of {o['latent_dim2']} active   "
        f"(on level-1 latent i iff zeta_i > {t2}, at most latent_dim2 of them)",
        "",
        f"{'dim':>4}  {'zeta':>11}  {'lambda1':>11}  {'level 1':>9}  {'level 2':>9}",
    ]
    served = {int(i): j for j, i in enumerate(h.level2_mode) if i >= 0}
    for i in range(o["latent_dim"]):
        l2 = f"z2[{served[i] + 1}]" if i in served and h.active_level2[served[i]] else "-"
        lines.append(f"{i + 1:>4}  {h.zeta[i]:>11.5g}  {h.lambda1[i]:>11.5g}  "
                     f"{'active' if h.active_level1[i] else 'collapsed':>9}  {l2:>9}")
    return _emit(args, out, lines)


def _freebits(args, o, ds, spec, header_json, header_lines) -> int:
    from postcollapse.theory.freebits import freebits_optimum

    fb = freebits_optimum(spec, latent_dim=o["latent_dim"], beta=o["beta"], lam=o["lam"],
                          eta_enc=o["eta_enc"], eta_dec=o["eta_dec"])
    if args.save is not None:
        from postcollapse._io import atomic_savez

        atomic_savez(args.save, U=fb.U, W=fb.W, sigma2=fb.sigma2, b_e=fb.b_e, b_d=fb.b_d,
                     snr=fb.snr, kl=fb.kl, loss=fb.loss, zeta=spec.zeta)
    out = {
        **header_json(ds, spec),
        "latent_dim": o["latent_dim"], "beta": o["beta"], "free_bits": o["lam"],
        "eta_enc": o["eta_enc"], "eta_dec": o["eta_dec"],
        "loss": float(fb.loss),
        "regime": fb.regime,
        "snr": _floats(fb.snr),
        "signal_modes": int(fb.signal_modes.sum()),
        "kl": _floats(fb.kl),
        "aligned_loss": float(fb.aligned_loss),
        "waterfilling_loss": float(fb.waterfilling_loss),
        "zeta": _floats(spec.zeta),
        "residual": float(spec.residual),
        "saved": args.save,
    }
    k = min(spec.zeta.size, 20)
    lines = header_lines(ds, spec) + [
        f"free bits  {o['lam']:g} nats per latent   beta {o['beta']:g}   latent_dim "
        f"{o['latent_dim']}",
        f"regime     {fb.regime}",
        f"loss       {fb.loss:.10g}   (min L with free bits, without the log 2 pi constant)",
        f"signal     {int(fb.signal_modes.sum())} mode(s) receive signal; per-latent KL "
        f"{', '.join(f'{v:.4g}' for v in fb.kl)}",
        "",
        f"{'mode':>5}  {'zeta':>11}  {'snr p_i':>11}",
    ]
    for i in range(k):
        lines.append(f"{i + 1:>5}  {spec.zeta[i]:>11.5g}  {fb.snr[i]:>11.5g}")
    return _emit(args, out, lines)
