"""Train len(betas) x len(seeds) VAEs (or a list of (beta, seed) members) as one K-member
model and report one row per member.

With betas and seeds, members are ordered beta-major: member i * len(seeds) + j has
betas[i] and seeds[j]; with ``members``, in the order given.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TYPE_CHECKING

from postcollapse._checks import ACTIVE_VAR_THRESHOLD
from postcollapse._io import check_writable_dir
from postcollapse.train.config import SweepConfig
from postcollapse.train.results import SweepResult, load_sweep

if TYPE_CHECKING:
    from postcollapse.train.loop import CheckInfo

__all__ = ["sweep", "run_sweep", "start_at_optimum"]


def sweep(
    data,
    *,
    target=None,
    betas=None,
    model: str = "linear",
    sigma: str = "learnable",
    latent_dim: int = 5,
    hidden: int = 8,
    seeds=None,
    steps: int | None = None,
    epochs: int | None = None,
    batch_size: int | None = None,
    lr: float = 1e-3,
    optimizer: str = "auto",
    device="auto",
    dtype="auto",
    tol: float | None = None,
    eta_enc: float = 1.0,
    eta_dec: float | str = 1.0,
    out=None,
    resume: bool = False,
    progress: bool = False,
    check_every: int | None = None,
    loss_path: str = "auto",
    eval_samples: int = 64,
    checkpoint_seconds: float = 60.0,
    callback: Callable[[CheckInfo], None] | None = None,
    precondition: bool | None = None,
    threads: int | None = None,
    levels: int = 1,
    beta2: float | None = None,
    latent_dim2: int | None = None,
    sigma1: float | None = None,
    free_bits: float | None = None,
    free_bits_mode: str = "dataset",
    free_bits_smoothing: bool | None = None,
    members=None,
    block_scaling: bool | None = None,
    lr_decay: float | None = 0.5,
    patience: int = 3,
    min_lr: float | None = None,
    crn_samples: int = 1,
    active_threshold: float = ACTIVE_VAR_THRESHOLD,
    init: str = "cold",
) -> SweepResult:
    """Train one VAE per (beta, seed), all members together, and report each.

    Parameters
    ----------
    data : Dataset, str or (x, y) tuple
        A ``postcollapse.data.Dataset``, a spec for ``postcollapse.data.load`` ("synthetic",
        "mnist", a path), or arrays x (n, d0) and y (n, d2) (y None: plain VAE).
    betas : sequence of float
        Finite and > 0; one member per beta and seed (give ``betas`` or ``members``).
    members : sequence of (beta, seed), optional
        Instead of ``betas`` x ``seeds``: exactly these distinct members, in this order (any
        set of pairs, e.g. several betas per seed and other betas for other seeds). A
        member's row is the same whether it is trained alone, in a grid or in a list.
    callback : callable, optional
        Progress hook: ``callback(info)`` at each convergence check, ``info`` a
        :class:`~postcollapse.train.loop.CheckInfo` (step, steps, active, loss, model); the
        progress bar is one such hook.

    Other Parameters
    ----------------
    target : optional
        Passed to ``postcollapse.data.load`` with a spec.
    model : {"linear", "relu", "tanh"} or "ENCODER-DECODER" (e.g. "relu-linear")
    sigma : {"prior", "learnable", "linear", "mlp"}
    latent_dim, hidden : int
    seeds : sequence of int
        Default (0,). A seed fixes the initialisation, the batch order, the training noise
        and the evaluation noise of its members (the same for every beta).
    steps, epochs : int, optional
        Training length, the step limit (default 20000 Adam steps or 2000 L-BFGS
        iterations). Members stop earlier when they converge.
    batch_size : int, optional
        Default: full batch.
    lr : float
        Adam's (initial) learning rate.
    optimizer : {"auto", "adam", "lbfgs"}
        L-BFGS needs a linear decoder and full batch. "auto": L-BFGS where it applies (the
        loss is exact and the batch full), else Adam.
    device : {"auto", "cpu", "cuda"} or torch.device
    dtype : {"auto", "float32", "float64"}
        "auto": float64 for L-BFGS, float32 for Adam.
    tol : float, optional
        Convergence tolerance on the relative change of the objective. Adam: of the full
        training-set objective with common random numbers between checks (with
        ``lr_decay``; default 1e-6), or of the mean training loss over ``check_every``
        steps, twice in a row (``lr_decay`` None). L-BFGS: of one iteration, three times in
        a row, with a small gradient (default 1e-12 in float64, 1e-7 in float32). 0
        disables.
    eta_enc : float
    eta_dec : float or "learn"
        Decoder standard deviation, or ``"learn"``: each member learns log eta_dec^2 (started
        at the variance of the fully collapsed model, tr Cov(y) / d2) and the trained
        objective is the per-example beta-NLL, L_VAE + (d2/2) log(2 pi eta_dec^2). The rows'
        ``eta_dec`` is then the learned value; ``loss`` stays L_VAE at that eta_dec and
        ``nll`` adds the normaliser (docs/THEORY.md, learned decoder variance).
    out : path, optional
        Folder for results.csv, sweep.json, model.pt and, while training, checkpoint.pt.
    resume : bool
        Continue from ``out``'s checkpoint (or return its finished results).
    progress : bool
        A progress bar on stderr (only when stderr is a terminal).
    check_every : int, optional
        Steps between convergence checks (default 100 for Adam, 1 for L-BFGS).
    loss_path : {"auto", "moments", "data"}
        "moments": exact loss from the data's mean and covariance (linear model, Sigma
        prior/learnable, full batch); "data": from the rows; "auto": moments when allowed.
    eval_samples : int
        Noise samples per row for the final loss when the decoder is not linear.
    checkpoint_seconds : float
        Wall time between periodic checkpoints (with ``out``).
    precondition : bool, optional
        L-BFGS in whitened coordinates of the encoder weights, W = V (Lambda + delta)^-1/2
        theta with A = Cov(x) = V Lambda V^T (default: on for L-BFGS with a linear encoder).
        It changes only the path, not the minimum.
    threads : int, optional
        torch / BLAS CPU threads while training (restored afterwards). Default: chosen
        from the work per step and the cores free now (``postcollapse.threads``): one
        thread for small models or a busy machine. The choice is in ``timing["threads"]``.
    levels : {1, 2}
        2: the two-level VAE ``postcollapse.models.BatchedHierarchicalVAE`` (both encoders
        of architecture ENCODER, both decoders DECODER); theory from
        ``theory.hierarchical_optimum``; rows gain ``active_level1``, ``active_level2``,
        ``kl_level1``, ``kl_level2``, ``sigma2_j`` and the theory's counts.
    beta2 : float, optional
        The level-2 KL weight (required with ``levels=2``).
    latent_dim2 : int, optional
        Level-2 latent dimension (default ``latent_dim``).
    sigma1 : float, optional
        Fixed level-1 encoder standard deviation (None: learnable).
    free_bits : float, optional
        Free bits lambda >= 0 (one level): the KL term becomes sum_j max(lambda, KL_j);
        theory from ``theory.freebits_optimum``; rows gain ``signal_i`` / ``snr_i`` (the
        posterior mean's signal along data mode i, ``diagnostics.mode_signal``),
        ``signal_modes`` and ``regime``.
    free_bits_mode : {"dataset", "batch"}
        "dataset": KL_j averaged over the whole data set before the max (the theory's
        objective; needs full batch); "batch": the max applied to each minibatch's average
        (what minibatch training optimises).
    free_bits_smoothing : bool, optional
        Default: on with free_bits_mode "dataset". The trainers minimise a smoothing of the
        kink of max(lambda, KL_j), lambda + tau softplus((KL_j - lambda)/tau), and each
        member that converged on a width tau goes on with tau / 10, from min(0.01,
        lambda / 10) nats down to 1e-9 (float64; 1e-5 in float32) where it has converged
        (a continuation, see ``train.trainers.FreeBitsContinuation``; Adam only with
        ``lr_decay``). Without it L-BFGS and Adam stall on the kink, slightly above the
        minimum, where latents are pinned at KL_j = lambda. The rows' loss is always the
        exact free-bits loss. Recorded in sweep.json only when off.
    block_scaling : bool, optional
        With ``precondition``, a linear decoder and sigma prior / learnable (the default
        there): L-BFGS's initial inverse Hessian is the block-diagonal Gauss-Newton curvature
        at the current point (latent d1 x d1 blocks), which undoes the spread of the latent
        modes' scales (zeta_1^2 / zeta_K^2) that otherwise stalls L-BFGS.
    lr_decay : float or None
        Adam: multiply a member's learning rate by this factor when its objective has not
        improved by ``tol`` for ``patience`` checks (see ``AdamTrainer``); None: a fixed
        learning rate and the windowed rule.
    patience : int
        Checks without improvement before the learning rate decays.
    min_lr : float, optional
        The floor of the decayed learning rate (default lr / 1000): a member on a plateau
        at the floor has converged.
    crn_samples : int
        Noise samples per row of the fixed-noise objective of the convergence rule (a
        nonlinear decoder; the linear decoder's objective is exact).
    active_threshold : float
        A latent unit (and a mode of Cov_x(mu)) is active when the variance over the data of
        its posterior mean exceeds this (default 0.01, in units of the prior's variance): the
        ``active_units`` and ``active_modes`` columns. At the linear optimum
        Var_x(mu_i) = eta_enc^2 (1 - beta / beta_i*), so the count drops at
        beta_i* (1 - active_threshold / eta_enc^2).
    init : {"cold", "linear"}
        How members start. "cold": a random initialisation from the member's seed.
        "linear": each member starts at the linear theory's global optimum for its own beta
        (``theory.optimum`` for the sweep's Sigma mode and eta_dec), embedded in its
        network (``postcollapse.models.embed``): exact for the linear model, in the linear
        regime of the units for ReLU, small-slope units for Tanh (relative error <= 1e-3 on
        the data); MLPs need ``hidden >= latent_dim``; one level, no free bits. It answers
        whether a model that ends elsewhere can hold the optimum (width) or does not find
        it (optimiser).

    Returns
    -------
    SweepResult
    """
    options = {k: v for k, v in locals().items() if k not in ("data", "callback")}
    return run_sweep(data, SweepConfig(**options), callback=callback)


def run_sweep(data, config: SweepConfig, *,
              callback: Callable[[CheckInfo], None] | None = None) -> SweepResult:
    """:func:`sweep` with its options as a :class:`SweepConfig`."""
    from postcollapse.theory import Moments
    from postcollapse.threads import thread_choice, torch_threads
    from postcollapse.train.checkpoint import CHECKPOINT_VERSION, Checkpoint
    from postcollapse.train.data import data_summary, resolve_data, resolve_device
    from postcollapse.train.evaluate import start_loss
    from postcollapse.train.families import FAMILIES
    from postcollapse.train.loop import train
    from postcollapse.train.trainers import TRAINERS

    t_start = time.perf_counter()
    if config.out is not None:  # a read-only or full folder fails now, not after training
        check_writable_dir(config.out, "out")
    dev = resolve_device(config.device)
    name, x, y = resolve_data(data, config.target)
    config = config.for_rows(x.shape[0])
    summary = data_summary(name, x, y)
    record = config.record(name)
    fingerprint = {"config": record, "data": summary, "version": CHECKPOINT_VERSION}
    checkpoint = Checkpoint(config.out, fingerprint, every_seconds=config.checkpoint_seconds)
    checkpoint.remove_temporaries()  # left by a run killed mid-write
    if config.resume and checkpoint.finished():
        return load_sweep(config.out)

    family = FAMILIES[config.family]
    mom = Moments.from_arrays(x, y)
    theory = family.theory(mom, config)
    members = list(config.members)
    net = family.build(config, summary, dev, mom)
    if config.init == "linear":
        start_at_optimum(net, x, mom, config)
    objective = family.objective(net, config, x, y, mom)
    saved = checkpoint.restore(net) if config.resume else None
    # Multiply-adds per step, roughly: members x rows seen x parameters per member.
    step_rows = summary["d0"] if config.use_moments else (config.batch_size or x.shape[0])
    threads = thread_choice(net.n_members * step_rows * net.n_params, requested=config.threads)
    with torch_threads(threads.threads if dev.type == "cpu" else config.threads):
        trainer = TRAINERS[config.optimizer](net, objective, config, moments=mom, saved=saved)
        checkpoint.extra["start_loss"] = (start_loss(objective, net) if saved is None
                                          else saved.get("start_loss"))
        train_time = train(trainer, net, steps=config.steps, check_every=config.check_every,
                           checkpoint=checkpoint, progress=config.progress,
                           hooks=[] if callback is None else [callback])
        rows = family.rows(net, objective, config, trainer.state, theory,
                           start_loss=checkpoint.extra["start_loss"])
    timing = {"train_time": train_time, "total_time": time.perf_counter() - t_start,
              "steps": int(trainer.state.step),
              "steps_per_s": trainer.state.step / max(train_time, 1e-12), "device": str(dev),
              "threads": threads.to_dict()}
    result = SweepResult(rows=rows, config=record, theory=theory, members=members,
                         model=net.cpu(), data=summary, timing=timing)
    if config.out is not None:
        try:
            result.save(config.out, fingerprint=fingerprint)
        except OSError as exc:  # e.g. a full disk: say what is kept and how to go on
            kept = (f"the checkpoint of step {checkpoint.saved_step} is kept"
                    if checkpoint.path.exists() else "no checkpoint was kept")
            err = OSError(f"cannot write the results in {config.out} ({exc.strerror or exc}); "
                          f"{kept}; free space and resume (--resume)")
            err.errno = exc.errno
            raise err from None
        checkpoint.remove()
    return result


def start_at_optimum(net, x, mom, config: SweepConfig) -> None:
    """Set every member of ``net`` to the linear theory's global optimum at its beta
    (``init="linear"``), embedded in its network (``models.embed``) using the training
    inputs ``x`` (n, d0)."""
    from postcollapse.models.embed import embed_linear_optimum
    from postcollapse.theory import optimum, spectrum

    spec = spectrum(mom)
    mode = "prior" if config.sigma == "prior" else "learnable"
    optima = {b: optimum(spec, latent_dim=config.latent_dim, beta=float(b), sigma=mode,
                         eta_enc=config.eta_enc, eta_dec=config.eta_dec)
              for b in config.betas}
    embed_linear_optimum(net, [optima[b] for b, _ in config.members], x)
