"""Trainers: one optimiser each, its own state and its own convergence rule.

A trainer advances all members of a ``BatchedVAE`` by one step (members that converged or
diverged do not move) and, at each convergence check, stops the members that converged.
``TRAINERS`` maps the ``optimizer`` option to the trainer class.
"""

from __future__ import annotations

from dataclasses import dataclass, fields
from typing import ClassVar, Protocol

import numpy as np
import torch

from postcollapse.models import MomentTensors, moments_loss
from postcollapse.train.optim import BatchedLBFGS, MaskedAdam

__all__ = ["Trainer", "MemberState", "AdamState", "AdamTrainer", "LBFGSTrainer", "TRAINERS",
           "Whitener"]


@dataclass
class MemberState:
    """Progress of the members (K,) shared by every trainer.

    ``stop_time`` (on the CPU) is the training time at which a member stopped (NaN while
    it trains), ``elapsed`` the training time of earlier (interrupted) runs, ``streak`` the
    number of convergence tests passed in a row, ``last_loss`` the newest training loss.
    """

    step: int
    converged: torch.Tensor
    diverged: torch.Tensor
    steps_done: torch.Tensor
    streak: torch.Tensor
    stop_time: torch.Tensor
    elapsed: float
    last_loss: torch.Tensor

    @classmethod
    def fresh(cls, k: int, device) -> MemberState:
        """The state before the first step of ``k`` members."""
        flags = {name: torch.zeros(k, dtype=torch.bool, device=device)
                 for name in ("converged", "diverged")}
        counts = {name: torch.zeros(k, dtype=torch.long, device=device)
                  for name in ("steps_done", "streak")}
        return cls(step=0, **flags, **counts,
                   stop_time=torch.full((k,), float("nan"), dtype=torch.float64),
                   elapsed=0.0,
                   last_loss=torch.full((k,), float("nan"), dtype=torch.float64, device=device))

    @property
    def active(self) -> torch.Tensor:
        """(K,) bool: the members still training."""
        return ~(self.converged | self.diverged)

    def to_dict(self) -> dict:
        """The state as a dict of CPU tensors and numbers (for a checkpoint)."""
        return {f.name: (v.cpu() if isinstance(v := getattr(self, f.name), torch.Tensor) else v)
                for f in fields(self)}

    def load(self, saved: dict, device) -> None:
        """Take the values of a :meth:`to_dict` (``stop_time`` stays on the CPU)."""
        for f in fields(self):
            v = saved[f.name]
            keep_cpu = not isinstance(v, torch.Tensor) or f.name == "stop_time"
            setattr(self, f.name, v if keep_cpu else v.to(device))


@dataclass
class AdamState(MemberState):
    """Adds the running window of Adam's convergence rule: the summed loss since the last
    check (K,) and the window mean at the last check (None before the first)."""

    win_sum: torch.Tensor | None = None
    prev_mean: torch.Tensor | None = None

    @classmethod
    def fresh(cls, k: int, device) -> AdamState:
        st = super().fresh(k, device)
        st.win_sum = torch.zeros(k, dtype=torch.float64, device=device)
        return st


class Trainer(Protocol):
    """What the training loop needs from an optimiser.

    ``state`` is the members' progress; :meth:`step` runs one step of the active members
    and advances ``state.step``; :meth:`check` applies the convergence rule at a check
    point; :meth:`sync_model` writes the current parameters into the model;
    :meth:`optimizer_state` / ``restore`` carry the optimiser over a checkpoint.
    """

    state: MemberState
    patience: ClassVar[int]

    def step(self) -> None: ...

    def check(self) -> None: ...

    def sync_model(self) -> None: ...

    def optimizer_state(self) -> dict: ...


class AdamTrainer:
    """Masked Adam on the model's flat parameters, one (mini-)batch per step.

    Convergence: the mean loss over ``check_every`` steps changes by at most ``tol``
    (relative) at ``patience`` checks in a row. A non-finite loss marks a member diverged.
    """

    patience: ClassVar[int] = 2

    def __init__(self, net, objective, config, *, moments=None, saved=None):
        self.net, self.objective = net, objective
        self.tol, self.check_every = config.tol, config.check_every
        self.opt = MaskedAdam(net.flat.data, lr=config.lr)
        self.state = AdamState.fresh(net.n_members, net.device)
        if saved is not None:
            self.state.load(saved["state"], net.device)
            self.opt.load_state_dict(saved["opt"])

    def step(self) -> None:
        st, net = self.state, self.net
        active = st.active
        parts = self.objective(net.params(), st.step)
        (g,) = torch.autograd.grad(parts.loss.sum(), net.flat)
        lo = parts.loss.detach()
        fin = torch.isfinite(lo)
        st.diverged |= active & ~fin
        active = active & fin
        self.opt.step(g, active)
        st.steps_done += active
        st.win_sum += torch.where(active, lo.double(), 0.0)
        st.last_loss = torch.where(active, lo.double(), st.last_loss)
        st.step += 1

    def check(self) -> None:
        st = self.state
        if st.step % self.check_every != 0:  # the last step of a run that ends off the grid
            return
        mean = st.win_sum / self.check_every
        if st.prev_mean is not None and self.tol > 0:
            active = st.active
            rel = (mean - st.prev_mean).abs() / mean.abs().clamp_min(1e-300)
            hit = active & (rel <= self.tol)
            st.streak = torch.where(hit, st.streak + 1, 0)
            st.converged |= (st.streak >= self.patience) & active
        st.prev_mean = mean
        st.win_sum = torch.zeros_like(st.win_sum)

    def sync_model(self) -> None:
        """Nothing to do: Adam updates the model's parameters in place."""

    def optimizer_state(self) -> dict:
        return self.opt.state_dict()


class LBFGSTrainer:
    """Batched L-BFGS on the full-batch exact loss, optionally in whitened encoder
    coordinates (``precondition``).

    Convergence: the relative decrease of one iteration is at most ``tol`` at ``patience``
    iterations in a row, or the line search found no decrease (the noise floor).
    """

    patience: ClassVar[int] = 3

    def __init__(self, net, objective, config, *, moments=None, saved=None):
        self.net, self.objective, self.tol = net, objective, config.tol
        self.whiten = Whitener(net, moments) if config.precondition else None
        self.on_moments = objective.moments is not None
        self.state = MemberState.fresh(net.n_members, net.device)
        if saved is not None:
            self.state.load({f.name: saved["state"][f.name] for f in fields(MemberState)},
                            net.device)
        flat = net.flat.data
        theta0 = flat if self.whiten is None else self.whiten.from_flat(flat)
        self.lbfgs = BatchedLBFGS(self.loss_and_grad, theta0,
                                  state=None if saved is None else saved["opt"])
        if saved is None:
            self.state.diverged |= ~torch.isfinite(self.lbfgs.f)
        self.state.last_loss = self.lbfgs.f.double()

    def loss_and_grad(self, theta: torch.Tensor):
        """(loss (K,), gradient (K, P)) at optimiser coordinates ``theta``, detached."""
        net, whiten = self.net, self.whiten
        if whiten is not None and self.on_moments:  # loss of theta on the whitened moments
            xr = theta.detach().requires_grad_(True)
            with torch.enable_grad():
                parts = moments_loss(net, whiten.moments, params=net.params(xr))
                (g,) = torch.autograd.grad(parts.loss.sum(), xr)
            return parts.loss.detach(), g
        xr = (theta if whiten is None else whiten.to_flat(theta)).detach()
        xr.requires_grad_(True)
        with torch.enable_grad():
            parts = self.objective(net.params(xr), 0)
            (g,) = torch.autograd.grad(parts.loss.sum(), xr)
        return parts.loss.detach(), (g if whiten is None else whiten.grad_to_theta(g))

    def step(self) -> None:
        st = self.state
        active = st.active
        res = self.lbfgs.step(active)
        f_old = st.last_loss
        fnew = res["f"].double()
        rel = res["decrease"].double() / torch.maximum(
            torch.maximum(f_old.abs(), fnew.abs()), torch.ones_like(fnew))
        hit = active & ((rel <= self.tol) | res["failed"])
        st.streak = torch.where(hit, st.streak + 1, 0)
        newly = active & ((st.streak >= self.patience) | res["failed"])
        st.steps_done += active
        st.converged |= newly
        st.last_loss = torch.where(active, fnew, f_old)
        st.step += 1

    def check(self) -> None:
        """Nothing to do: the rule is applied at every iteration."""

    @torch.no_grad()
    def sync_model(self) -> None:
        x = self.lbfgs.x
        self.net.flat.copy_(x if self.whiten is None else self.whiten.to_flat(x))

    def optimizer_state(self) -> dict:
        return self.lbfgs.state_dict()


TRAINERS = {"adam": AdamTrainer, "lbfgs": LBFGSTrainer}


class Whitener:
    """theta <-> flat for L-BFGS in whitened encoder coordinates (see ``precondition``).

    Only the (d0, d1) block ``enc_w`` changes: W = V diag(s) theta_W with
    s = (Lambda + delta)^(-1/2), delta = 1e-10 * Lambda_max (directions of A without variance
    do not change the loss, so their scale does not matter).
    """

    def __init__(self, net, mom):
        device, dtype = net.device, net.dtype
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
