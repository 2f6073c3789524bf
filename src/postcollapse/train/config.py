"""``SweepConfig``: every option of a sweep, validated once, with its derived defaults.

A config is built from the user's options (``SweepConfig(betas=..., ...)``); defaults that
depend on the data (full batch, number of steps from epochs, the loss path) are fixed by
:meth:`SweepConfig.for_rows` once the number of rows is known.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, replace

import numpy as np

from postcollapse._checks import (
    ACTIVE_VAR_THRESHOLD,
    check_betas,
    check_choice,
    check_int_at_least,
    check_positive,
    check_seeds,
)
from postcollapse.models.kinds import ARCHITECTURES, SIGMA_KINDS, check_embeddable
from postcollapse.theory.spectrum import LEARN, check_eta_dec

__all__ = ["SweepConfig", "INITS", "OPTIMIZERS", "OPTIMIZER_CHOICES", "LOSS_PATHS", "DTYPES",
           "DTYPE_CHOICES", "DEFAULT_STEPS", "parse_model", "FREE_BITS_MODES"]

OPTIMIZERS = ("adam", "lbfgs")
# How members start: a random initialisation ("cold"), or the linear theory's global optimum
# of each member's beta embedded in its network ("linear", ``models.embed``).
INITS = ("cold", "linear")
OPTIMIZER_CHOICES = ("auto", *OPTIMIZERS)
LOSS_PATHS = ("auto", "moments", "data")
DTYPES = ("float32", "float64")
# Free bits: the max(lambda, KL_j) of KL_j averaged over the whole data set (the theory's
# objective; needs full batch) or over each minibatch (what minibatch training optimises).
FREE_BITS_MODES = ("dataset", "batch")
DTYPE_CHOICES = ("auto", *DTYPES)
DEFAULT_STEPS = {"adam": 20000, "lbfgs": 2000}
DEFAULT_CHECK_EVERY = {"adam": 100, "lbfgs": 1}
_DTYPE_ALIASES = {"float32": "float32", "float64": "float64", "single": "float32",
                  "double": "float64"}


def parse_model(model: str) -> tuple[str, str]:
    """'relu' -> (relu, relu); 'relu-linear' -> encoder relu, decoder linear."""
    if not isinstance(model, str):
        raise TypeError(f"model must be a string such as 'linear' or 'relu', got {model!r}")
    parts = model.split("-")
    if len(parts) == 1:
        parts = parts * 2
    if len(parts) != 2 or any(p not in ARCHITECTURES for p in parts):
        raise ValueError(f"model must be one of {', '.join(ARCHITECTURES)} (or ENCODER-DECODER "
                         f"such as relu-linear); got {model!r}")
    return parts[0], parts[1]


def _dtype_name(dtype) -> str:
    if isinstance(dtype, str) and dtype == "auto":
        return dtype
    text = str(dtype).removeprefix("torch.")
    if not isinstance(dtype, str) and text in DTYPES:  # a torch.dtype
        return text
    if dtype not in _DTYPE_ALIASES:
        raise ValueError(f"dtype must be 'auto', 'float32' or 'float64', got {dtype!r}")
    return _DTYPE_ALIASES[dtype]


def _members(members) -> tuple[tuple[float, int], ...]:
    if isinstance(members, str) or not hasattr(members, "__iter__"):
        raise TypeError(f"members must be a sequence of (beta, seed) pairs, got {members!r}")
    out = []
    for i, pair in enumerate(members):
        try:
            beta, seed = pair
        except (TypeError, ValueError):
            raise TypeError(f"members[{i}] must be a (beta, seed) pair, got {pair!r}") from None
        b = float(check_betas([beta], f"members[{i}] beta")[0])
        out.append((b, check_int_at_least(f"members[{i}] seed", seed, 0)))
    if not out:
        raise ValueError("members is empty; pass at least one (beta, seed) pair")
    if len(set(out)) != len(out):
        dup = next(m for m in out if out.count(m) > 1)
        raise ValueError(f"members must be distinct (beta, seed) pairs; {dup} repeats")
    return tuple(out)


def _unique(values) -> tuple:
    return tuple(dict.fromkeys(values))


@dataclass(frozen=True)
class SweepConfig:
    """The options of :func:`postcollapse.train.sweep` (see there for their meaning).

    Validated on construction. ``None`` options that do not depend on the data get their
    defaults here (``tol``, ``check_every``, ``precondition``, ``block_scaling``), and "auto"
    ``optimizer`` and ``dtype`` their choice (here, or in :meth:`for_rows` when it depends
    on whether ``batch_size`` covers the data); ``encoder`` and ``decoder`` are parsed from
    ``model``. :meth:`for_rows` fixes the data-dependent ones and sets ``n_rows`` (None
    until then): ``batch_size`` None means full batch, ``steps`` is the step budget (also
    with ``epochs``) and ``loss_path`` is "moments" or "data". ``members`` is the (beta,
    seed) of every member (beta-major from ``betas`` x ``seeds``, or as given, and then
    ``betas`` and ``seeds`` are the distinct values in order of appearance).
    """

    betas: tuple[float, ...] | None = None
    target: object = None
    model: str = "linear"
    sigma: str = "learnable"
    latent_dim: int = 5
    hidden: int = 8
    seeds: tuple[int, ...] | None = None
    steps: int | None = None
    epochs: int | None = None
    batch_size: int | None = None
    lr: float = 1e-3
    optimizer: str = "auto"
    device: object = "auto"
    dtype: str = "auto"
    tol: float | None = None
    eta_enc: float = 1.0
    eta_dec: float | str = 1.0
    out: object = None
    resume: bool = False
    progress: bool = False
    check_every: int | None = None
    loss_path: str = "auto"
    eval_samples: int = 64
    checkpoint_seconds: float = 60.0
    precondition: bool | None = None
    threads: int | None = None
    levels: int = 1
    beta2: float | None = None
    latent_dim2: int | None = None
    sigma1: float | None = None
    free_bits: float | None = None
    free_bits_mode: str = "dataset"
    free_bits_smoothing: bool | None = None
    block_scaling: bool | None = None
    members: tuple[tuple[float, int], ...] | None = None
    lr_decay: float | None = 0.5
    patience: int = 3
    min_lr: float | None = None
    crn_samples: int = 1
    active_threshold: float = ACTIVE_VAR_THRESHOLD
    init: str = "cold"
    n_rows: int | None = None
    encoder: str = field(init=False)
    decoder: str = field(init=False)
    explicit_members: bool = field(init=False)

    def __post_init__(self):
        def put(name, value):
            object.__setattr__(self, name, value)

        encoder, decoder = parse_model(self.model)
        put("encoder", encoder)
        put("decoder", decoder)
        check_choice("sigma", self.sigma, SIGMA_KINDS)
        check_choice("optimizer", self.optimizer, OPTIMIZER_CHOICES)
        check_choice("loss_path", self.loss_path, LOSS_PATHS)
        put("latent_dim", check_int_at_least("latent_dim", self.latent_dim, 1))
        put("hidden", check_int_at_least("hidden", self.hidden, 1))
        put("lr", check_positive("lr", self.lr))
        put("eta_enc", check_positive("eta_enc", self.eta_enc))
        put("eta_dec", check_eta_dec(self.eta_dec))
        put("eval_samples", check_int_at_least("eval_samples", self.eval_samples, 1))
        put("active_threshold", check_positive("active_threshold", self.active_threshold))
        if self.members is None:
            if self.betas is None:
                raise ValueError("give betas (with seeds) or members, a list of (beta, seed) "
                                 "pairs")
            put("betas", tuple(check_betas(self.betas).tolist()))
            put("seeds", check_seeds((0,) if self.seeds is None else self.seeds))
            put("members", tuple((b, s) for b in self.betas for s in self.seeds))
        else:
            members = _members(self.members)
            betas, seeds = _unique(b for b, _ in members), _unique(s for _, s in members)
            given = (self.betas, self.seeds)
            # (betas, seeds) alongside members: only the ones the members imply (a copy made
            # with dataclasses.replace carries all three).
            if given != (None, None) and (
                    self.betas is None or self.seeds is None
                    or tuple(check_betas(self.betas).tolist()) != betas
                    or check_seeds(self.seeds) != seeds):
                raise ValueError("give members or betas/seeds, not both")
            put("members", members)
            put("betas", betas)
            put("seeds", seeds)
        put("explicit_members",
            self.members != tuple((b, s) for b in self.betas for s in self.seeds))
        if self.steps is not None and self.epochs is not None and self.n_rows is None:
            raise ValueError("give steps or epochs, not both")
        put("dtype", _dtype_name(self.dtype))
        if self.threads is not None:
            put("threads", check_int_at_least("threads", self.threads, 1))
        self._check_extensions(put)
        check_choice("init", self.init, INITS)
        if self.init == "linear":
            check_embeddable(encoder=self.encoder, decoder=self.decoder, hidden=self.hidden,
                             latent_dim=self.latent_dim, levels=self.levels,
                             free_bits=self.free_bits)
        if self.batch_size is not None:
            put("batch_size", check_int_at_least("batch_size", self.batch_size, 1))
        self._check_adam_options(put)
        if self.optimizer == "auto":
            put("optimizer", self._auto_optimizer(self.n_rows))
        if self.optimizer != "auto":  # else: decided by for_rows (the batch may be full)
            if self.dtype == "auto":
                put("dtype", "float64" if self.optimizer == "lbfgs" else "float32")
            self._check_training_options(put)
        elif self.precondition:
            raise ValueError("precondition needs optimizer 'lbfgs' and a linear encoder")
        if self.resume and self.out is None:
            raise ValueError("resume=True needs out (the folder of the interrupted sweep)")

    def _auto_optimizer(self, n_rows: int | None) -> str:
        """optimizer 'auto': L-BFGS when the loss is exact (a linear decoder) and the batch
        full, else Adam; still 'auto' while that depends on the unknown number of rows."""
        if not self.exact:
            return "adam"
        if self.batch_size is None or (n_rows is not None and self.batch_size >= n_rows):
            return "lbfgs"
        return "adam" if n_rows is not None else "auto"

    def _check_adam_options(self, put) -> None:
        if self.lr_decay is not None:
            decay = float(self.lr_decay)
            if not 0.0 < decay < 1.0:
                raise ValueError(f"lr_decay must be in (0, 1) (or None: a fixed learning "
                                 f"rate), got {self.lr_decay}")
            put("lr_decay", decay)
        put("patience", check_int_at_least("patience", self.patience, 1))
        if self.min_lr is not None:
            put("min_lr", check_positive("min_lr", self.min_lr))
        put("crn_samples", check_int_at_least("crn_samples", self.crn_samples, 1))

    def _check_extensions(self, put) -> None:
        """Two levels (beta2, latent_dim2, sigma1) and free bits (free_bits, its mode)."""
        put("levels", check_int_at_least("levels", self.levels, 1))
        check_choice("free_bits_mode", self.free_bits_mode, FREE_BITS_MODES)
        if self.levels not in (1, 2):
            raise ValueError(f"levels must be 1 or 2, got {self.levels}")
        if self.levels == 1:
            for name in ("beta2", "latent_dim2", "sigma1"):
                if getattr(self, name) is not None:
                    raise ValueError(f"{name} needs levels=2 (a two-level VAE)")
        else:
            if self.beta2 is None:
                raise ValueError("levels=2 needs beta2 (the level-2 KL weight)")
            put("beta2", check_positive("beta2", self.beta2))
            put("latent_dim2", check_int_at_least(
                "latent_dim2", self.latent_dim if self.latent_dim2 is None else self.latent_dim2,
                1))
            if self.sigma1 is not None:
                put("sigma1", check_positive("sigma1", self.sigma1))
            if self.free_bits is not None:
                raise ValueError("free_bits is for the one-level VAE; drop it or use levels=1")
            if self.sigma not in ("learnable",):
                raise ValueError("levels=2 takes its level-1 variance from sigma1 (fixed) or "
                                 "learns it; leave sigma at 'learnable'")
        if (self.levels == 2 or self.free_bits is not None) and self.eta_dec == "learn":
            raise ValueError("eta_dec 'learn' is for the one-level VAE without free bits; "
                             "give a number with levels=2 or free_bits")
        if self.free_bits is not None:
            from postcollapse.theory.freebits import check_free_bits

            put("free_bits", check_free_bits(self.free_bits))
        self._check_free_bits_smoothing(put)

    def _check_free_bits_smoothing(self, put) -> None:
        """free_bits_smoothing: default on for free bits over the whole data set."""
        smooth = self.free_bits_smoothing
        if smooth is not None and not isinstance(smooth, bool | np.bool_):
            raise TypeError(f"free_bits_smoothing must be True, False or None, got {smooth!r}")
        if smooth and self.free_bits is None:
            raise ValueError("free_bits_smoothing needs free_bits LAMBDA; drop it or set "
                             "free_bits")
        if smooth and self.free_bits_mode != "dataset":
            raise ValueError("free_bits_smoothing needs free_bits_mode 'dataset' (one "
                             "objective over the whole data set); drop it for 'batch'")
        if smooth is None:
            smooth = self.free_bits is not None and self.free_bits_mode == "dataset"
        put("free_bits_smoothing", bool(smooth))

    @property
    def family(self) -> str:
        """The model family: "vae", "free_bits" or "hierarchical" (``train.families``)."""
        if self.levels == 2:
            return "hierarchical"
        return "vae" if self.free_bits is None else "free_bits"

    def _check_training_options(self, put) -> None:
        lbfgs, linear_enc = self.optimizer == "lbfgs", self.encoder == "linear"
        if self.precondition is None:
            put("precondition", lbfgs and linear_enc)
        if self.precondition and not (lbfgs and linear_enc):
            raise ValueError("precondition needs optimizer 'lbfgs' and a linear encoder")
        put("precondition", bool(self.precondition))
        scalable = (self.precondition and self.decoder == "linear"
                    and self.sigma in ("prior", "learnable")
                    and self.levels == 1 and not self.learn_eta_dec)
        if self.block_scaling is None:
            put("block_scaling", bool(scalable))
        if self.block_scaling and not scalable:
            raise ValueError("block_scaling needs precondition (L-BFGS, linear encoder), a "
                             "linear decoder, sigma 'prior' or 'learnable', one level and a "
                             "fixed eta_dec")
        put("block_scaling", bool(self.block_scaling))
        tol = self.tol
        if tol is None:
            tol = 1e-6 if not lbfgs else (1e-12 if self.dtype == "float64" else 1e-7)
        tol = float(tol)
        if not math.isfinite(tol) or tol < 0:
            raise ValueError(f"tol must be a finite number >= 0, got {tol}")
        put("tol", tol)
        check_every = self.check_every
        if check_every is None:
            check_every = DEFAULT_CHECK_EVERY[self.optimizer]
        put("check_every", check_int_at_least("check_every", check_every, 1))

    # ------------------------------------------------------------------ derived
    @property
    def learn_eta_dec(self) -> bool:
        """True when the decoder variance is learned (``eta_dec="learn"``)."""
        return self.eta_dec == LEARN

    @property
    def exact(self) -> bool:
        """True when the reconstruction expectation is exact (a linear decoder; with two
        levels, also a linear level-2 encoder)."""
        return self.decoder == "linear" and (self.levels == 1 or self.encoder == "linear")

    @property
    def full_batch(self) -> bool:
        """True once :meth:`for_rows` has found the batch to be the whole data set."""
        return self.batch_size is None

    @property
    def lr_floor(self) -> float:
        """The smallest learning rate of the plateau decay (``min_lr``, default lr / 1000)."""
        return self.lr * 1e-3 if self.min_lr is None else self.min_lr

    @property
    def use_moments(self) -> bool:
        """Train on the data moments instead of the rows (set by :meth:`for_rows`)."""
        return self.loss_path == "moments"

    def for_rows(self, n_rows: int) -> SweepConfig:
        """This config for data with ``n_rows`` rows: batch size (None when full batch),
        steps (from epochs or the optimiser's default) and loss path ("moments"/"data")."""
        if self.optimizer == "auto":
            return replace(self, optimizer=self._auto_optimizer(n_rows)).for_rows(n_rows)
        full = self.batch_size is None or self.batch_size >= n_rows
        per_epoch = 1 if full else n_rows // self.batch_size
        if self.epochs is not None:
            steps = check_int_at_least("epochs", self.epochs, 1) * per_epoch
        else:
            steps = DEFAULT_STEPS[self.optimizer] if self.steps is None else self.steps
        steps = check_int_at_least("steps", steps, 1)
        moments_ok = (self.encoder == "linear" and self.exact and full
                      and self.sigma in ("prior", "learnable"))
        if self.loss_path == "moments" and not moments_ok:
            raise ValueError("loss_path 'moments' needs model 'linear', sigma 'prior' or "
                             "'learnable' and full batch (no batch_size)")
        if self.optimizer == "lbfgs" and not (self.exact and full):
            raise ValueError("optimizer 'lbfgs' needs an exact loss (a linear decoder) and full "
                             "batch; use optimizer 'adam' for this model or drop batch_size")
        if self.levels == 2:
            moments_ok = False
            if self.loss_path == "moments":
                raise ValueError("loss_path 'moments' is for the one-level VAE; use 'auto' or "
                                 "'data' with levels=2")
        if (self.free_bits is not None and self.free_bits_mode == "dataset" and not full):
            raise ValueError("free_bits_mode 'dataset' (KL averaged over the whole data set) "
                             "needs full batch; drop batch_size or use free_bits_mode 'batch'")
        use_moments = moments_ok and self.loss_path in ("auto", "moments")
        return replace(self, batch_size=None if full else self.batch_size, steps=steps,
                       loss_path="moments" if use_moments else "data", n_rows=int(n_rows))

    def record(self, data_name: str) -> dict:
        """The JSON record of the run written to sweep.json (after :meth:`for_rows`)."""
        return {
            "data": data_name, "target": None if self.target is None else str(self.target),
            "betas": list(self.betas), "model": self.model, "encoder": self.encoder,
            "decoder": self.decoder, "sigma": self.sigma, "latent_dim": self.latent_dim,
            "hidden": self.hidden, "seeds": list(self.seeds), "steps": self.steps,
            "epochs": self.epochs, "batch_size": self.batch_size, "lr": self.lr,
            "optimizer": self.optimizer, "dtype": self.dtype, "tol": self.tol,
            "eta_enc": self.eta_enc, "eta_dec": self.eta_dec, "check_every": self.check_every,
            "loss_path": self.loss_path, "eval_samples": self.eval_samples,
            "precondition": self.precondition, "block_scaling": self.block_scaling,
            "lr_decay": self.lr_decay,
            "patience": self.patience, "min_lr": self.lr_floor,
            "crn_samples": self.crn_samples,
            **self.extension_record(),
            # written only when not the default, so sweeps from before the option resume
            **({"active_threshold": self.active_threshold}
               if self.active_threshold != ACTIVE_VAR_THRESHOLD else {}),
            **({"members": [list(m) for m in self.members]} if self.explicit_members else {}),
            **({"init": self.init} if self.init != "cold" else {}),
        }

    def extension_record(self) -> dict:
        """The two-level / free-bits options (empty for a plain one-level sweep)."""
        out = {}
        if self.levels == 2:
            out.update(levels=2, beta2=self.beta2, latent_dim2=self.latent_dim2,
                       sigma1=self.sigma1)
        if self.free_bits is not None:
            out.update(free_bits=self.free_bits, free_bits_mode=self.free_bits_mode)
            if self.free_bits_mode == "dataset" and not self.free_bits_smoothing:
                # only when turned off: records (and checkpoints) of earlier free-bits sweeps,
                # which lack the key, still match the default and resume
                out.update(free_bits_smoothing=False)
        return out
