"""Train len(betas) x len(seeds) VAEs as one K-member model and report one row per member.

Members are ordered beta-major: member i * len(seeds) + j has betas[i] and seeds[j].
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import math
import signal
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from postcollapse._checks import check_finite_array, check_int_at_least, check_positive
from postcollapse._io import atomic_path, atomic_write_json, atomic_write_text
from postcollapse.models import (
    ARCHITECTURES,
    SIGMA_MODES,
    BatchedVAE,
    MomentTensors,
    evaluate_loss,
    exact_loss,
    member_seed,
    moment_tensors,
    moments_loss,
    sampled_loss,
)
from postcollapse.train._optim import BatchedLBFGS, MaskedAdam
from postcollapse.train._streams import Streams

__all__ = ["sweep", "SweepResult", "load_sweep", "result_columns", "OPTIMIZERS", "LOSS_PATHS"]

OPTIMIZERS = ("adam", "lbfgs")
LOSS_PATHS = ("auto", "moments", "data")
DEFAULT_STEPS = {"adam": 5000, "lbfgs": 500}
_EVAL_STREAM = 4
_CKPT_VERSION = 1
_AU_THRESHOLD = 0.01  # Burda et al. (2016): a unit is active when Cov_x(E[z|x]) > 0.01


def result_columns(latent_dim: int) -> list[str]:
    """The CSV columns of a sweep with ``latent_dim`` latent dimensions, in order."""
    return (["beta", "seed", "loss", "rec", "kl", "active_units"]
            + [f"sigma_{i + 1}" for i in range(latent_dim)]
            + [f"kl_{i + 1}" for i in range(latent_dim)]
            + ["converged", "diverged", "steps", "enc_norm", "sigma_norm", "dec_norm",
               "wall_time", "theory_loss", "theory_active", "theory_gap", "active_modes"])


@dataclass
class SweepResult:
    """Outcome of :func:`sweep`.

    Attributes
    ----------
    rows : list of dict
        One per (beta, seed), beta-major; keys are :func:`result_columns`.
        ``loss = rec + beta * kl``; ``active_units`` counts the coordinates with
        Var_x(mu_j) > 0.01 (Burda et al. 2016), ``active_modes`` the eigenvalues of
        Cov_x(mu) above 0.01 (rotation invariant); ``kl`` is the KL in nats (unweighted)
        and ``kl_j`` its part in latent dimension j; ``sigma_j`` is the mean of sigma over
        the training set.
        Dimensions are ordered by ``sigma_j`` descending, and ``kl_j`` is the same
        dimension as ``sigma_j``.
    config : dict
        The arguments of the run (JSON-serialisable).
    theory : dict
        zeta, thresholds, residual and, per beta, the closed-form min_loss, sigma and
        number of active modes (for this sweep's Sigma mode), plus both min-loss curves.
    members : list of (beta, seed)
    model : BatchedVAE or None
        The trained K-member model, on the CPU.
    data : dict
        Summary of the training data.
    """

    rows: list[dict]
    config: dict
    theory: dict
    members: list[tuple[float, int]]
    model: BatchedVAE | None = None
    data: dict = field(default_factory=dict)
    timing: dict = field(default_factory=dict)

    def column(self, name: str) -> np.ndarray:
        """One column of the rows as an array."""
        return np.asarray([r[name] for r in self.rows])

    def to_csv(self, path=None) -> str:
        """The rows as CSV text; written atomically to ``path`` when given."""
        cols = result_columns(int(self.config["latent_dim"]))
        cols += [c for c in (self.rows[0] if self.rows else {}) if c not in cols]
        buf = io.StringIO()
        w = csv.DictWriter(buf, fieldnames=cols, lineterminator="\n")
        w.writeheader()
        for r in self.rows:
            w.writerow({c: (repr(float(v)) if isinstance(v, float) else v)
                        for c, v in r.items()})
        text = buf.getvalue()
        if path is not None:
            atomic_write_text(path, text)
        return text

    def summary(self) -> dict:
        return {"config": self.config, "data": self.data, "theory": self.theory,
                "timing": self.timing, "members": [list(m) for m in self.members]}


# ---------------------------------------------------------------------------- inputs
def _resolve_data(data, target):
    """(name, x float64, y float64 or None) from a Dataset, a spec or an (x, y) tuple."""
    if isinstance(data, tuple):
        if target is not None:
            raise ValueError("target must be None when data is an (x, y) tuple; put it in y")
        if len(data) != 2:
            raise ValueError(f"data tuple must be (x, y) with y None for a plain VAE; "
                             f"got {len(data)} items")
        x = np.asarray(data[0], dtype=np.float64)
        y = None if data[1] is None else np.asarray(data[1], dtype=np.float64)
        name = "arrays"
    else:
        from postcollapse.data import Dataset, load

        if isinstance(data, Dataset):
            if target is not None:
                raise ValueError("target must be None when data is a Dataset")
            ds = data
        else:
            ds = load(data, target=target)
        name = str(getattr(ds, "name", "dataset"))
        x = np.asarray(ds.x, dtype=np.float64)
        y = None if ds.y is None else np.asarray(ds.y, dtype=np.float64)
    if x.ndim != 2 or x.shape[0] < 2:
        raise ValueError(f"data x must be 2-D with at least 2 rows, got shape {x.shape}")
    check_finite_array("data x", x)
    if y is not None:
        if y.ndim == 1:
            y = y[:, None]
        if y.ndim != 2 or y.shape[0] != x.shape[0]:
            raise ValueError(f"target y must be 2-D with {x.shape[0]} rows, got shape {y.shape}")
        check_finite_array("target y", y)
    return name, x, y


def _check_choice(name, value, choices):
    if value not in choices:
        raise ValueError(f"{name} must be one of {', '.join(choices)}; got {value!r}")
    return value


def _parse_model(model: str) -> tuple[str, str]:
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


def _resolve_device(device) -> torch.device:
    if device in (None, "auto"):
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    dev = torch.device(device)
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ValueError("device 'cuda' was requested but CUDA is not available; use 'cpu' or "
                         "'auto'")
    return dev


def _resolve_dtype(dtype) -> torch.dtype:
    if isinstance(dtype, torch.dtype):
        return dtype
    table = {"float32": torch.float32, "float64": torch.float64, "single": torch.float32,
             "double": torch.float64}
    if dtype not in table:
        raise ValueError(f"dtype must be 'float32' or 'float64', got {dtype!r}")
    return table[dtype]


def _data_hash(x, y) -> str:
    h = hashlib.sha1(np.ascontiguousarray(x).view(np.uint8))
    if y is not None:
        h.update(np.ascontiguousarray(y).view(np.uint8))
    return h.hexdigest()


# ---------------------------------------------------------------------------- theory
def _theory(x, y, betas, *, latent_dim, sigma, eta_enc, eta_dec) -> dict:
    from postcollapse.theory import Moments, active_modes, min_loss, optimum, spectrum, thresholds

    mom = Moments.from_arrays(x, y)
    spec = spectrum(mom)
    mode = "prior" if sigma == "prior" else "learnable"
    sig = []
    for b in betas:
        opt = optimum(spec, latent_dim=latent_dim, beta=float(b), sigma=mode,
                      eta_enc=eta_enc, eta_dec=eta_dec)
        sig.append(sorted(np.sqrt(opt.sigma2).tolist(), reverse=True))
    kw = {"latent_dim": latent_dim, "eta_enc": eta_enc, "eta_dec": eta_dec}
    return {
        "sigma_mode": mode,
        "zeta": spec.zeta.tolist(),
        "thresholds": thresholds(spec, eta_dec=eta_dec).tolist(),
        "residual": float(spec.residual),
        "betas": [float(b) for b in betas],
        "min_loss": min_loss(spec, betas, sigma=mode, **kw).tolist(),
        "min_loss_learnable": min_loss(spec, betas, sigma="learnable", **kw).tolist(),
        "min_loss_prior": min_loss(spec, betas, sigma="prior", **kw).tolist(),
        "active_modes": [int(active_modes(spec, float(b), eta_dec=eta_dec,
                                          latent_dim=latent_dim)) for b in betas],
        "sigma": sig,
    }, mom


# ---------------------------------------------------------------------------- evaluation
@torch.no_grad()
def _encoder_stats(model: BatchedVAE, x: torch.Tensor, chunk: int):
    """Mean sigma (K, d1) and Cov_x(mu) (K, d1, d1) over the rows of x (float64 sums)."""
    n = x.shape[0]
    k, d1 = model.n_members, model.d1
    s_sig = torch.zeros(k, d1, dtype=torch.float64, device=x.device)
    s_mu = torch.zeros_like(s_sig)
    s_mu2 = torch.zeros(k, d1, d1, dtype=torch.float64, device=x.device)
    shift = None
    for lo in range(0, n, chunk):
        mu, logvar = model.encode(x[lo: lo + chunk])
        mu = mu.double()
        if shift is None:
            shift = mu.mean(1, keepdim=True)
        c = mu - shift
        s_mu += c.sum(1)
        s_mu2 += c.transpose(1, 2) @ c
        s_sig += torch.exp(0.5 * logvar.double()).sum(1)
    mean_c = s_mu / n
    return s_sig / n, s_mu2 / n - mean_c.unsqueeze(2) * mean_c.unsqueeze(1)


class _Whitener:
    """theta <-> flat for L-BFGS in whitened encoder coordinates (see ``precondition``).

    Only the (d0, d1) block ``enc_w`` changes: W = V diag(s) theta_W with
    s = (Lambda + delta)^(-1/2), delta = 1e-10 * Lambda_max (directions of A without variance
    do not change the loss, so their scale does not matter).
    """

    def __init__(self, net: BatchedVAE, mom, device, dtype):
        lam, vec = np.linalg.eigh(np.asarray(mom.cov_x, dtype=np.float64))
        lam = np.clip(lam, 0.0, None)
        scale = 1.0 / np.sqrt(lam + 1e-10 * max(float(lam.max()), 1e-300))
        self.V = torch.as_tensor(vec).to(device, dtype)
        self.s = torch.as_tensor(scale).to(device, dtype).unsqueeze(1)
        start = 0
        for (name, _shape, _, _), size in zip(net.layout, net.sizes, strict=True):
            if name == "enc_w":
                break
            start += size
        self.lo, self.hi = start, start + net.d0 * net.d1
        self.shape = (net.n_members, net.d0, net.d1)
        # Moments of the whitened inputs x' = diag(s) V^T x: the encoder on x' with weights
        # theta is the encoder on x with W = V diag(s) theta (cov_x' is diagonal).
        if mom is not None and hasattr(mom, "cov_yx"):
            vs = vec * scale
            self.moments = MomentTensors(
                *(torch.as_tensor(np.asarray(v, dtype=np.float64)).to(device, dtype) for v in (
                    vs.T @ mom.mean_x, mom.mean_y, lam * scale**2,
                    np.asarray(mom.cov_yx) @ vs, mom.s_yy)))

    def to_flat(self, theta: torch.Tensor) -> torch.Tensor:
        tw = theta[:, self.lo: self.hi].reshape(self.shape)
        w = torch.matmul(self.V, self.s * tw)
        return torch.cat([theta[:, : self.lo], w.flatten(1), theta[:, self.hi:]], 1)

    def from_flat(self, flat: torch.Tensor) -> torch.Tensor:
        w = flat[:, self.lo: self.hi].reshape(self.shape)
        tw = torch.matmul(self.V.T, w) / self.s
        return torch.cat([flat[:, : self.lo], tw.flatten(1), flat[:, self.hi:]], 1)

    def grad_to_theta(self, g: torch.Tensor) -> torch.Tensor:
        gw = g[:, self.lo: self.hi].reshape(self.shape)
        gt = self.s * torch.matmul(self.V.T, gw)
        return torch.cat([g[:, : self.lo], gt.flatten(1), g[:, self.hi:]], 1)


# ---------------------------------------------------------------------------- signals
class _StopFlag:
    """SIGINT / SIGTERM set a flag; the loop checkpoints at the next step boundary."""

    def __init__(self, enabled: bool):
        self.set = False
        self.signum = None
        self._old = {}
        self.enabled = enabled and threading.current_thread() is threading.main_thread()

    def _handler(self, signum, frame):
        self.set = True
        self.signum = signum

    def __enter__(self):
        if self.enabled:
            for s in (signal.SIGINT, signal.SIGTERM):
                self._old[s] = signal.signal(s, self._handler)
        return self

    def __exit__(self, *exc):
        for s, h in self._old.items():
            signal.signal(s, h)
        return False


# ---------------------------------------------------------------------------- main entry
def sweep(
    data,
    *,
    target=None,
    betas,
    model: str = "linear",
    sigma: str = "learnable",
    latent_dim: int = 5,
    hidden: int = 8,
    seeds=(0,),
    steps: int | None = None,
    epochs: int | None = None,
    batch_size: int | None = None,
    lr: float = 1e-3,
    optimizer: str = "adam",
    device="auto",
    dtype="float32",
    tol: float | None = None,
    eta_enc: float = 1.0,
    eta_dec: float = 1.0,
    out=None,
    resume: bool = False,
    progress: bool = False,
    check_every: int | None = None,
    loss_path: str = "auto",
    eval_samples: int = 64,
    checkpoint_seconds: float = 60.0,
    callback=None,
    precondition: bool | None = None,
) -> SweepResult:
    """Train one VAE per (beta, seed), all members together, and report each.

    Parameters
    ----------
    data : Dataset, str or (x, y) tuple
        A ``postcollapse.data.Dataset``, a spec for ``postcollapse.data.load`` ("synthetic",
        "mnist", a path), or arrays x (n, d0) and y (n, d2) (y None: plain VAE).
    target : optional
        Passed to ``postcollapse.data.load`` with a spec.
    betas : sequence of float
    model : {"linear", "relu", "tanh"} or "ENCODER-DECODER" (e.g. "relu-linear")
    sigma : {"prior", "learnable", "linear", "mlp"}
    latent_dim, hidden : int
    seeds : sequence of int
        One member per beta and seed; a seed fixes the initialisation, the batch order and
        the noise of its members (the same for every beta).
    steps, epochs : int, optional
        Training length (at most one). An epoch is n // batch_size steps (1 if full batch).
        Default: 5000 Adam steps or 500 L-BFGS iterations.
    batch_size : int, optional
        Rows per step; None: full batch.
    lr : float
        Adam learning rate.
    optimizer : {"adam", "lbfgs"}
        "lbfgs" (per-member L-BFGS with backtracking) needs an exact loss (linear decoder)
        and full batch.
    device : {"auto", "cpu", "cuda"} or torch.device
    dtype : {"float32", "float64"}
    tol : float, optional
        Convergence tolerance on the relative change of the loss: for Adam, of its mean over
        ``check_every`` steps, twice in a row (default 1e-6); for L-BFGS, of one iteration,
        three times in a row (default 1e-12 in float64, 1e-7 in float32). 0 disables.
    eta_enc, eta_dec : float
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
    callback : callable, optional
        callback(info) at each convergence check, info a dict (step, active, loss, model).
        Changing ``info["model"].flat`` changes the training (Adam); tests use it.
    precondition : bool, optional
        L-BFGS in whitened coordinates of the encoder weights, W = V (Lambda + delta)^-1/2
        theta with A = Cov(x) = V Lambda V^T (default: on for L-BFGS with a linear encoder).
        It changes only the path, not the minimum; on ill-conditioned data such as MNIST
        it cuts the iterations by orders of magnitude.

    Returns
    -------
    SweepResult
    """
    t_start = time.perf_counter()
    encoder, decoder = _parse_model(model)
    _check_choice("sigma", sigma, SIGMA_MODES)
    _check_choice("optimizer", optimizer, OPTIMIZERS)
    _check_choice("loss_path", loss_path, LOSS_PATHS)
    latent_dim = check_int_at_least("latent_dim", latent_dim, 1)
    hidden = check_int_at_least("hidden", hidden, 1)
    lr = check_positive("lr", lr)
    eta_enc = check_positive("eta_enc", eta_enc)
    eta_dec = check_positive("eta_dec", eta_dec)
    eval_samples = check_int_at_least("eval_samples", eval_samples, 1)
    betas = [check_positive("beta", b) for b in np.atleast_1d(np.asarray(betas, dtype=float))]
    if not betas:
        raise ValueError("betas must hold at least one value")
    if isinstance(seeds, int | np.integer):
        raise TypeError(f"seeds must be a sequence of ints such as range({seeds}), "
                        f"got the int {seeds}")
    seeds = [check_int_at_least("seed", s, 0) for s in seeds]
    if not seeds or len(set(seeds)) != len(seeds):
        raise ValueError(f"seeds must be non-empty and distinct, got {seeds}")
    if steps is not None and epochs is not None:
        raise ValueError("give steps or epochs, not both")
    torch_dtype = _resolve_dtype(dtype)
    dev = _resolve_device(device)

    name, x_np, y_np = _resolve_data(data, target)
    n, d0 = x_np.shape
    d2 = d0 if y_np is None else y_np.shape[1]
    if batch_size is not None:
        batch_size = check_int_at_least("batch_size", batch_size, 1)
    full = batch_size is None or batch_size >= n
    per_epoch = 1 if full else n // batch_size
    if epochs is not None:
        steps = check_int_at_least("epochs", epochs, 1) * per_epoch
    elif steps is None:
        steps = DEFAULT_STEPS[optimizer]
    steps = check_int_at_least("steps", steps, 1)

    exact = decoder == "linear"
    moments_ok = encoder == "linear" and exact and sigma in ("prior", "learnable") and full
    if loss_path == "moments" and not moments_ok:
        raise ValueError("loss_path 'moments' needs model 'linear', sigma 'prior' or "
                         "'learnable' and full batch (no batch_size)")
    use_moments = moments_ok and loss_path in ("auto", "moments")
    if precondition is None:
        precondition = optimizer == "lbfgs" and encoder == "linear"
    if precondition and not (optimizer == "lbfgs" and encoder == "linear"):
        raise ValueError("precondition needs optimizer 'lbfgs' and a linear encoder")
    if optimizer == "lbfgs" and not (exact and full):
        raise ValueError("optimizer 'lbfgs' needs an exact loss (a linear decoder) and full "
                         "batch; use optimizer 'adam' for this model or drop batch_size")
    if tol is None:
        tol = 1e-6 if optimizer == "adam" else (1e-12 if torch_dtype == torch.float64 else 1e-7)
    tol = float(tol)
    if not math.isfinite(tol) or tol < 0:
        raise ValueError(f"tol must be a finite number >= 0, got {tol}")
    if check_every is None:
        check_every = 100 if optimizer == "adam" else 1
    check_every = check_int_at_least("check_every", check_every, 1)

    members = [(b, s) for b in betas for s in seeds]
    config = {
        "data": name, "target": None if target is None else str(target),
        "betas": betas, "model": model, "encoder": encoder, "decoder": decoder,
        "sigma": sigma, "latent_dim": latent_dim, "hidden": hidden, "seeds": seeds,
        "steps": steps, "epochs": epochs, "batch_size": None if full else batch_size,
        "lr": lr, "optimizer": optimizer, "dtype": str(torch_dtype).removeprefix("torch."),
        "tol": tol, "eta_enc": eta_enc, "eta_dec": eta_dec, "check_every": check_every,
        "loss_path": "moments" if use_moments else "data", "eval_samples": eval_samples,
        "precondition": bool(precondition),
    }
    data_summary = {"name": name, "n_samples": n, "d0": d0, "d2": d2, "plain": y_np is None,
                    "sha1": _data_hash(x_np, y_np)}
    fingerprint = {"config": config, "data": data_summary, "version": _CKPT_VERSION}
    out_dir = None if out is None else Path(out)
    ckpt_path = None if out_dir is None else out_dir / "checkpoint.pt"

    if resume:
        if out_dir is None:
            raise ValueError("resume=True needs out (the folder of the interrupted sweep)")
        done = out_dir / "sweep.json"
        if done.exists() and not ckpt_path.exists():
            prev = json.loads(done.read_text())
            if prev.get("fingerprint") == fingerprint:
                return load_sweep(out_dir)
            raise ValueError(f"{out_dir} holds a finished sweep with other settings; use "
                             "another --out or drop --resume")

    theory, mom = _theory(x_np, y_np, betas, latent_dim=latent_dim, sigma=sigma,
                          eta_enc=eta_enc, eta_dec=eta_dec)

    net = BatchedVAE(d0, d2, latent_dim=latent_dim, betas=[m[0] for m in members],
                     encoder=encoder, decoder=decoder, sigma=sigma, hidden=hidden,
                     seeds=[m[1] for m in members], eta_enc=eta_enc, eta_dec=eta_dec,
                     dtype=torch_dtype).to(dev)
    k = net.n_members
    X = torch.as_tensor(x_np).to(dev, torch_dtype)
    Y = None if y_np is None else torch.as_tensor(y_np).to(dev, torch_dtype)
    mt = moment_tensors(mom, dtype=torch_dtype, device=dev) if use_moments else None

    uniq = list(seeds)
    seed_pos = torch.tensor([uniq.index(m[1]) for m in members], device=dev)
    n_seeds = len(uniq)
    streams = Streams(n, None if full else batch_size, uniq,
                      noise_dim=None if exact else latent_dim, dtype=torch_dtype, device=dev)

    def per_member(t):
        """(S, ...) per-seed tensor -> broadcastable per-member tensor."""
        if n_seeds == 1:
            return t
        if n_seeds == k:  # one beta: members are the seeds in order
            return t
        return t.index_select(0, seed_pos)

    def loss_at(params, step):
        if use_moments:
            return moments_loss(net, mt, params=params)
        idx, eps = streams.get(step)
        if idx is None:
            xb, yb = X, Y
        else:
            xb = per_member(X[idx])
            yb = None if Y is None else per_member(Y[idx])
        if exact:
            return exact_loss(net, xb, yb, params=params)
        return sampled_loss(net, xb, yb, eps=per_member(eps), params=params)

    # ---------------------------------------------------------------- state
    st = {
        "step": 0,
        "converged": torch.zeros(k, dtype=torch.bool, device=dev),
        "diverged": torch.zeros(k, dtype=torch.bool, device=dev),
        "steps_done": torch.zeros(k, dtype=torch.long, device=dev),
        "win_sum": torch.zeros(k, dtype=torch.float64, device=dev),
        "prev_mean": None,
        "streak": torch.zeros(k, dtype=torch.long, device=dev),
        "stop_time": torch.full((k,), float("nan"), dtype=torch.float64),
        "elapsed": 0.0,
        "last_loss": torch.full((k,), float("nan"), dtype=torch.float64, device=dev),
    }
    if optimizer == "adam":
        opt = MaskedAdam(net.flat.data, lr=lr)
        whiten = None
        lbfgs = None
    else:
        opt = None

        whiten = _Whitener(net, mom, dev, torch_dtype) if precondition else None

        def fun(theta):
            if whiten is not None and use_moments:  # loss of theta on the whitened moments
                xr = theta.detach().requires_grad_(True)
                with torch.enable_grad():
                    parts = moments_loss(net, whiten.moments, params=net.params(xr))
                    (g,) = torch.autograd.grad(parts.loss.sum(), xr)
                return parts.loss.detach(), g
            xr = (theta if whiten is None else whiten.to_flat(theta)).detach()
            xr.requires_grad_(True)
            with torch.enable_grad():
                parts = loss_at(net.params(xr), 0)
                (g,) = torch.autograd.grad(parts.loss.sum(), xr)
            return parts.loss.detach(), (g if whiten is None else whiten.grad_to_theta(g))

    resumed = False
    if resume and ckpt_path.exists():
        ck = torch.load(ckpt_path, map_location=dev, weights_only=False)
        if ck.get("fingerprint") != fingerprint:
            raise ValueError(f"{ckpt_path} is a checkpoint of a sweep with other settings; use "
                             "another --out or drop --resume")
        with torch.no_grad():
            net.flat.copy_(ck["flat"])
        for key in st:
            v = ck["state"][key]
            st[key] = v.to(dev) if isinstance(v, torch.Tensor) and key != "stop_time" else v
        resumed = True
    if optimizer == "adam":
        if resumed:
            opt.load_state_dict(ck["opt"])
    else:
        theta0 = net.flat.data if whiten is None else whiten.from_flat(net.flat.data)
        lbfgs = BatchedLBFGS(fun, theta0, state=ck["opt"] if resumed else None)
        if not resumed:
            st["diverged"] |= ~torch.isfinite(lbfgs.f)
        st["last_loss"] = lbfgs.f.double()

    @torch.no_grad()
    def _lbfgs_to_net():
        net.flat.copy_(lbfgs.x if whiten is None else whiten.to_flat(lbfgs.x))

    def save_checkpoint():
        if ckpt_path is None:
            return
        if lbfgs is not None:
            _lbfgs_to_net()
        state = {key: (v.cpu() if isinstance(v, torch.Tensor) else v) for key, v in st.items()}
        state["elapsed"] = st["elapsed"] + (time.perf_counter() - t_run)
        opt_state = (opt or lbfgs).state_dict()
        opt_state = {key: (v.cpu() if isinstance(v, torch.Tensor) else v)
                     for key, v in opt_state.items()}
        with atomic_path(ckpt_path, suffix=".pt") as tmp:
            torch.save({"fingerprint": fingerprint, "flat": net.flat.detach().cpu(),
                        "state": state, "opt": opt_state}, tmp)

    # ---------------------------------------------------------------- loop
    from tqdm import tqdm

    bar = tqdm(total=steps, initial=st["step"], file=sys.stderr, unit="step",
               disable=not progress or not sys.stderr.isatty(), dynamic_ncols=True,
               desc=f"sweep {k} members")
    t_run = time.perf_counter()
    last_ckpt = t_run
    patience = 2 if optimizer == "adam" else 3
    with _StopFlag(ckpt_path is not None) as stop:
        try:
            active = ~(st["converged"] | st["diverged"])
            while st["step"] < steps:
                if stop.set:
                    raise KeyboardInterrupt
                step = st["step"]
                if opt is not None:
                    parts = loss_at(net.params(), step)
                    (g,) = torch.autograd.grad(parts.loss.sum(), net.flat)
                    lo = parts.loss.detach()
                    fin = torch.isfinite(lo)
                    st["diverged"] |= active & ~fin
                    active = active & fin
                    opt.step(g, active)
                    st["steps_done"] += active
                    st["win_sum"] += torch.where(active, lo.double(), 0.0)
                    st["last_loss"] = torch.where(active, lo.double(), st["last_loss"])
                else:
                    res = lbfgs.step(active)
                    f_old = st["last_loss"]
                    fnew = res["f"].double()
                    rel = res["decrease"].double() / torch.maximum(
                        torch.maximum(f_old.abs(), fnew.abs()), torch.ones_like(fnew))
                    hit = active & ((rel <= tol) | res["failed"])
                    st["streak"] = torch.where(hit, st["streak"] + 1, 0)
                    newly = active & ((st["streak"] >= patience) | res["failed"])
                    st["steps_done"] += active
                    st["converged"] |= newly
                    st["last_loss"] = torch.where(active, fnew, f_old)
                    active = active & ~newly
                st["step"] = step + 1
                if st["step"] % check_every == 0 or st["step"] == steps:
                    prev_active = active.clone()
                    if opt is not None and st["step"] % check_every == 0:
                        mean = st["win_sum"] / check_every
                        if st["prev_mean"] is not None and tol > 0:
                            rel = (mean - st["prev_mean"]).abs() / mean.abs().clamp_min(1e-300)
                            hit = active & (rel <= tol)
                            st["streak"] = torch.where(hit, st["streak"] + 1, 0)
                            newly = st["streak"] >= patience
                            st["converged"] |= newly & active
                            active = active & ~newly
                        st["prev_mean"] = mean
                        st["win_sum"] = torch.zeros_like(st["win_sum"])
                    now = time.perf_counter()
                    stopped = (prev_active & ~active).cpu() | (
                        (~active).cpu() & torch.isnan(st["stop_time"]))
                    st["stop_time"][stopped] = st["elapsed"] + (now - t_run)
                    n_active = int(active.sum())
                    ll = st["last_loss"][torch.isfinite(st["last_loss"])]
                    bar.update(st["step"] - bar.n)
                    if ll.numel():
                        bar.set_postfix(active=n_active, best=f"{float(ll.min()):.5g}",
                                        worst=f"{float(ll.max()):.5g}", refresh=False)
                    if callback is not None:
                        if lbfgs is not None:
                            _lbfgs_to_net()
                        callback({"step": st["step"], "active": n_active,
                                  "loss": st["last_loss"].cpu().numpy(), "model": net})
                    if ckpt_path is not None and now - last_ckpt >= checkpoint_seconds:
                        save_checkpoint()
                        last_ckpt = now
                    if n_active == 0:
                        break
        except KeyboardInterrupt:
            bar.close()
            if ckpt_path is not None:
                save_checkpoint()
                raise KeyboardInterrupt(f"sweep interrupted at step {st['step']}; checkpoint "
                                        f"saved in {out_dir}, continue with resume") from None
            raise
    bar.close()
    if lbfgs is not None:
        _lbfgs_to_net()
    train_time = st["elapsed"] + (time.perf_counter() - t_run)
    st["stop_time"][torch.isnan(st["stop_time"])] = train_time

    # ---------------------------------------------------------------- results
    gen = torch.Generator().manual_seed(member_seed(seeds[0], _EVAL_STREAM))
    parts = evaluate_loss(net, X, Y, n_eps=eval_samples, generator=gen)
    from postcollapse.models.loss import _chunk_rows

    sig_mean, mu_cov = _encoder_stats(net, X, _chunk_rows(net, n))
    mu_var = torch.diagonal(mu_cov, dim1=1, dim2=2)
    # Rotation-invariant count: with Sigma = eta_enc^2 I the optimum is defined only up to an
    # orthogonal P, which can spread one active mode over several coordinates.
    active_modes = (torch.linalg.eigvalsh(mu_cov) > _AU_THRESHOLD).sum(1).cpu().numpy()
    norms = net.weight_norms()
    order = torch.argsort(sig_mean, dim=1, descending=True, stable=True)
    sig_sorted = torch.gather(sig_mean, 1, order).cpu().numpy()
    kl_sorted = torch.gather(parts.kl_dims, 1, order).cpu().numpy()
    active_units = (mu_var > _AU_THRESHOLD).sum(1).cpu().numpy()
    loss_np, rec_np, kl_np = (t.cpu().numpy() for t in (parts.loss, parts.rec, parts.kl))
    conv, div = st["converged"].cpu().numpy(), st["diverged"].cpu().numpy()
    steps_done = st["steps_done"].cpu().numpy()
    zero = np.zeros(k)
    enc_n, sig_n, dec_n = (norms[p].double().cpu().numpy() if p in norms else zero
                           for p in ("enc", "sig", "dec"))
    rows = []
    for i, (b, s) in enumerate(members):
        bi = betas.index(b)
        th = theory["min_loss"][bi]
        row = {"beta": float(b), "seed": int(s), "loss": float(loss_np[i]),
               "rec": float(rec_np[i]), "kl": float(kl_np[i]),
               "active_units": int(active_units[i]), "active_modes": int(active_modes[i])}
        row.update({f"sigma_{j + 1}": float(sig_sorted[i, j]) for j in range(latent_dim)})
        row.update({f"kl_{j + 1}": float(kl_sorted[i, j]) for j in range(latent_dim)})
        row.update({"converged": bool(conv[i]), "diverged": bool(div[i]),
                    "steps": int(steps_done[i]), "enc_norm": float(enc_n[i]),
                    "sigma_norm": float(sig_n[i]), "dec_norm": float(dec_n[i]),
                    "wall_time": float(st["stop_time"][i]), "theory_loss": float(th),
                    "theory_active": int(theory["active_modes"][bi]),
                    "theory_gap": float(loss_np[i] / th - 1.0) if th != 0 else float("nan")})
        rows.append(row)
    total = time.perf_counter() - t_start
    timing = {"train_time": train_time, "total_time": total,
              "steps": int(st["step"]), "steps_per_s": st["step"] / max(train_time, 1e-12),
              "device": str(dev)}
    net = net.cpu()
    result = SweepResult(rows=rows, config=config, theory=theory, members=members, model=net,
                         data=data_summary, timing=timing)
    if out_dir is not None:
        out_dir.mkdir(parents=True, exist_ok=True)
        with atomic_path(out_dir / "model.pt", suffix=".pt") as tmp:
            torch.save({"config": net.config(), "flat": net.flat.detach().cpu()}, tmp)
        result.to_csv(out_dir / "results.csv")
        atomic_write_json(out_dir / "sweep.json", {**result.summary(), "fingerprint": fingerprint})
        if ckpt_path.exists():
            ckpt_path.unlink()
    return result


def _parse_cell(text: str):
    if text in ("True", "False"):
        return text == "True"
    try:
        return int(text)
    except ValueError:
        pass
    try:
        return float(text)
    except ValueError:
        return text


def load_sweep(out_dir) -> SweepResult:
    """Reload a finished sweep from its folder (results.csv, sweep.json, model.pt)."""
    out_dir = Path(out_dir)
    for fname in ("results.csv", "sweep.json"):
        if not (out_dir / fname).exists():
            raise FileNotFoundError(2, f"no {fname} in this folder (not a finished sweep)",
                                    str(out_dir / fname))
    summary = json.loads((out_dir / "sweep.json").read_text())
    with open(out_dir / "results.csv", newline="") as fh:
        rows = [{k: _parse_cell(v) for k, v in r.items()} for r in csv.DictReader(fh)]
    for r in rows:
        for key in ("beta", "loss", "rec", "kl"):
            r[key] = float(r[key])
    model = None
    if (out_dir / "model.pt").exists():
        ck = torch.load(out_dir / "model.pt", map_location="cpu", weights_only=False)
        model = BatchedVAE.from_config(ck["config"])
        with torch.no_grad():
            model.flat.copy_(ck["flat"])
    return SweepResult(rows=rows, config=summary["config"], theory=summary["theory"],
                       members=[(float(b), int(s)) for b, s in summary["members"]],
                       model=model, data=summary.get("data", {}),
                       timing=summary.get("timing", {}))
