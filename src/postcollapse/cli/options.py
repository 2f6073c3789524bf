"""Model and training options shared by the training commands (``sweep``, ``locate``).

- ``add_model_options(parser, *, shards=False)``: DATA, ``--target``, ``--model``,
  ``--sigma``, ``--latent-dim``, ``--hidden``, ``--seeds``, ``--eta-enc``, ``--eta-dec``.
- ``add_training_options(parser, *, steps_help)``: ``--steps`` / ``--epochs``,
  ``--batch-size``, ``--lr``, ``--optimizer``, ``--device``, ``--dtype``, ``--tol``,
  ``--lr-decay``, ``--patience``.
- ``add_extension_options(parser)``: ``--levels 2`` (``--beta2``, ``--latent-dim2``,
  ``--sigma1``) and ``--free-bits`` (``--free-bits-mode``).
- ``training_kwargs(args)`` / ``extension_kwargs(args)``: the keyword arguments of
  ``postcollapse.train.sweep`` (and of ``postcollapse.locate``) those options give.

Every help text states its default (tests/test_cli_help.py). torch-free: the choice lists
come from torch-free modules.
"""

from __future__ import annotations

import argparse

__all__ = ["eta_dec_arg", "add_model_options", "add_training_options",
           "add_extension_options", "training_kwargs", "extension_kwargs"]


def eta_dec_arg(text: str):
    """argparse type of --eta-dec: 'learn' or a number (validated by the sweep)."""
    if text == "learn":
        return text
    try:
        return float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be a number > 0 or 'learn', got {text!r}") from None


def _decay(text: str):
    return None if text.strip().lower() == "none" else float(text)


def add_model_options(p, *, shards: bool = False, latent_help: str = "latent dimension d1"
                      ) -> None:
    """DATA, --target, the model (--model, --sigma, --latent-dim, --hidden), --seeds and the
    prior / decoder scales (--eta-enc, --eta-dec)."""
    from postcollapse.models import SIGMA_KINDS  # torch-free: the choice lists only

    p.add_argument("data", metavar="DATA",
                   help="'synthetic', 'mnist', or a data file / folder (.npy, .npz, .csv, "
                        ".parquet, IDX[.gz]" + (", a folder of .npy shards)" if shards else ")"))
    p.add_argument("--target", default=None, help="target data (conditional VAE); "
                   "'same' forces a plain VAE (default: y of an .npz DATA, else y = x)")
    p.add_argument("--model", default="linear",
                   help="linear, relu or tanh (or ENCODER-DECODER, e.g. relu-linear; default "
                        "linear)")
    p.add_argument("--sigma", default="learnable", choices=SIGMA_KINDS,
                   help="encoder variance: prior (fixed at eta_enc^2), learnable (one "
                        "diagonal), linear or mlp (a function of x) (default learnable)")
    p.add_argument("--latent-dim", type=int, default=5, metavar="K",
                   help=f"{latent_help} (default 5)")
    p.add_argument("--hidden", type=int, default=8, help="MLP hidden width (default 8)")
    p.add_argument("--seeds", type=int, default=1, help="number of seeds 0..N-1 (default 1)")
    p.add_argument("--eta-enc", type=float, default=1.0, metavar="F",
                   help="prior standard deviation eta_enc (default 1)")
    p.add_argument("--eta-dec", type=eta_dec_arg, default=1.0, metavar="F|learn",
                   help="decoder standard deviation (default 1), or 'learn': each member "
                        "learns it, trained on the beta-NLL (results gain the learned eta_dec)")


def add_training_options(p, *, steps_help: str = "training steps at most") -> None:
    """How each member is trained (the sweep's defaults)."""
    from postcollapse.train import DTYPE_CHOICES, OPTIMIZER_CHOICES
    from postcollapse.train.config import INITS

    length = p.add_mutually_exclusive_group()
    length.add_argument("--steps", type=int, default=None,
                        help=f"{steps_help} (default: 20000 for Adam, 2000 for L-BFGS; "
                             "members stop earlier when converged)")
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
    p.add_argument("--init", default="cold", choices=INITS,
                   help="how members start: cold (random initialisation) or linear (the "
                        "linear theory's global optimum of each beta, embedded in the "
                        "network; MLPs need --hidden >= --latent-dim; default cold)")


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
    p.add_argument("--no-free-bits-smoothing", dest="free_bits_smoothing",
                   action="store_false", default=None,
                   help="train on the exact max(LAMBDA, KL_j) instead of a smoothing of its "
                        "kink whose width shrinks to 1e-9 nats (float64) before a member "
                        "counts as converged (the default with --free-bits-mode dataset; "
                        "without it optimisers stall on the kink where latents are pinned "
                        "at KL_j = LAMBDA)")


def training_kwargs(args) -> dict:
    """The model and training keyword arguments of the sweep call (``args`` from a parser
    with :func:`add_model_options` and :func:`add_training_options`)."""
    from postcollapse._checks import check_int_at_least

    check_int_at_least("--seeds", args.seeds, 1)
    return {"target": args.target, "model": args.model, "sigma": args.sigma,
            "latent_dim": args.latent_dim, "hidden": args.hidden, "seeds": range(args.seeds),
            "steps": args.steps, "epochs": args.epochs, "batch_size": args.batch_size,
            "lr": args.lr, "optimizer": args.optimizer, "device": args.device,
            "dtype": args.dtype, "tol": args.tol, "eta_enc": args.eta_enc,
            "eta_dec": args.eta_dec, "lr_decay": args.lr_decay, "patience": args.patience,
            **({"init": args.init} if args.init != "cold" else {})}


def extension_kwargs(args) -> dict:
    """The two-level / free-bits options of the sweep call (empty when none was given)."""
    out = {}
    if args.levels != 1 or any(getattr(args, n) is not None
                               for n in ("beta2", "latent_dim2", "sigma1")):
        out.update(levels=args.levels, beta2=args.beta2, latent_dim2=args.latent_dim2,
                   sigma1=args.sigma1)
    if args.free_bits is not None:
        out.update(free_bits=args.free_bits, free_bits_mode=args.free_bits_mode)
        if args.free_bits_smoothing is not None:
            out.update(free_bits_smoothing=args.free_bits_smoothing)
    elif args.free_bits_mode != "dataset":
        raise ValueError("--free-bits-mode needs --free-bits LAMBDA")
    elif args.free_bits_smoothing is not None:
        raise ValueError("--no-free-bits-smoothing needs --free-bits LAMBDA")
    return out
