"""The training data of a sweep: resolve the input, and the per-step loss of all members.

``resolve_data`` turns a Dataset, a spec or an (x, y) tuple into float64 arrays;
``Objective`` gives the batched loss of a step (moments, full batch or mini-batch, exact or
sampled), drawing batches and noise from the reproducible per-seed ``Streams``.
"""

from __future__ import annotations

import hashlib

import numpy as np
import torch

from postcollapse._checks import check_finite_array, check_same_rows
from postcollapse.models import exact_loss, moments_loss, sampled_loss
from postcollapse.train.streams import Streams

__all__ = ["member_batch", "resolve_data", "resolve_device", "torch_dtype", "data_hash",
           "data_summary", "Objective"]


def resolve_data(data, target):
    """(name, x float64, y float64 or None) from a Dataset, a spec or an (x, y) tuple."""
    from postcollapse.data import Dataset

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
        if isinstance(data, Dataset):
            if target is not None:
                raise ValueError("target must be None when data is a Dataset")
            ds = data
        else:
            from postcollapse.data import load

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
        if y.ndim != 2:
            raise ValueError(f"target y must be 2-D with {x.shape[0]} rows, got shape {y.shape}")
        check_same_rows(x, y)
        check_finite_array("target y", y)
    return name, x, y


def resolve_device(device) -> torch.device:
    """"auto"/None: CUDA when available, else the CPU; otherwise the named device."""
    if device in (None, "auto"):
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    dev = torch.device(device)
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ValueError("device 'cuda' was requested but CUDA is not available; use 'cpu' or "
                         "'auto'")
    return dev


def torch_dtype(name: str) -> torch.dtype:
    """"float32" / "float64" -> the torch dtype."""
    return {"float32": torch.float32, "float64": torch.float64}[name]


def data_hash(x, y) -> str:
    """SHA-1 of the bytes of x (and y): identifies the data of a checkpoint."""
    h = hashlib.sha1(np.ascontiguousarray(x).view(np.uint8))
    if y is not None:
        h.update(np.ascontiguousarray(y).view(np.uint8))
    return h.hexdigest()


def data_summary(name: str, x, y) -> dict:
    """name, n_samples, d0, d2, plain and sha1 of the training data (for sweep.json)."""
    n, d0 = x.shape
    return {"name": name, "n_samples": n, "d0": d0, "d2": d0 if y is None else y.shape[1],
            "plain": y is None, "sha1": data_hash(x, y)}


class Objective:
    """The batched loss of every member at a training step.

    Parameters
    ----------
    net : BatchedVAE
    config : SweepConfig
        After ``for_rows``: its batch size, loss path and seeds decide what a step sees.
    x, y : ndarray (n, d0), (n, d2) or None
    moments : MomentTensors or None
        The data moments (needed when ``config.use_moments``).
    """

    def __init__(self, net, config, x, y, *, moments=None):
        dev, dtype = net.device, net.dtype
        self.net = net
        self.moments = moments if config.use_moments else None
        self.exact = config.exact
        # torch.tensor copies: the rows may be a read-only memory map.
        self.x = torch.tensor(np.asarray(x), dtype=dtype, device=dev)
        self.y = None if y is None else torch.tensor(np.asarray(y), dtype=dtype, device=dev)
        for what, t, a in (("data x", self.x, x), ("target y", self.y, y)):
            if t is not None and not bool(torch.isfinite(t).all()):
                raise ValueError(
                    f"{what} has values beyond the range of {str(dtype).removeprefix('torch.')} "
                    f"(largest |value| {float(np.max(np.abs(a))):.3g}); use dtype float64 "
                    "(--dtype float64) or rescale the data")
        seeds = list(config.seeds)
        members = config.members
        self.seed_pos = torch.tensor([seeds.index(s) for _, s in members], device=dev)
        self.regroup = len(seeds) not in (1, len(members))
        self.streams = Streams(x.shape[0], config.batch_size, seeds,
                               noise_dim=None if self.exact else config.latent_dim,
                               dtype=dtype, device=dev)

    def per_member(self, t: torch.Tensor) -> torch.Tensor:
        """(S, ...) per-seed tensor -> broadcastable per-member tensor."""
        # One seed broadcasts; one beta has the members in seed order.
        return t.index_select(0, self.seed_pos) if self.regroup else t

    @torch.no_grad()
    def crn_loss(self, *, n_eps: int = 1) -> torch.Tensor:
        """The full training-set loss (K,) float64 of the model's current parameters, with
        common random numbers: a sampled loss uses the same ``n_eps`` noise draws per row
        (from each member's seed) at every call, so two calls differ only by the
        parameters. Exact (no noise) for a linear decoder."""
        return self.crn_parts(n_eps=n_eps).loss.double()

    @torch.no_grad()
    def crn_parts(self, *, n_eps: int = 1):
        """The ``LossParts`` of :meth:`crn_loss` (its loss, rec, kl and kl_dims)."""
        from postcollapse.train.evaluate import CRN_STREAM, seed_loss

        if self.moments is not None:
            return moments_loss(self.net, self.moments)
        return seed_loss(self.net, self.x, self.y, seeds=self.streams.seeds,
                         seed_pos=self.seed_pos, n_eps=n_eps, stream=CRN_STREAM)

    def __call__(self, params, step: int):
        """LossParts of the members with parameters ``params`` at training step ``step``."""
        if self.moments is not None:
            return moments_loss(self.net, self.moments, params=params)
        xb, yb, eps = member_batch(self, step)
        if self.exact:
            return exact_loss(self.net, xb, yb, params=params)
        return sampled_loss(self.net, xb, yb, eps=eps, params=params)


def member_batch(objective, step: int):
    """(x, y, eps) of training step ``step`` for an objective with ``streams``, ``x``, ``y``
    and ``per_member``: the full data or each member's minibatch, and each member's noise
    (None for an exact loss)."""
    idx, eps = objective.streams.get(step)
    if idx is None:
        xb, yb = objective.x, objective.y
    else:
        xb = objective.per_member(objective.x[idx])
        yb = None if objective.y is None else objective.per_member(objective.y[idx])
    return xb, yb, (None if eps is None else objective.per_member(eps))
