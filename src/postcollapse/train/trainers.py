"""Trainers: one optimiser each, its own state and its own convergence rule.

A trainer advances all members of a ``BatchedVAE`` by one step (members that converged or
diverged do not move) and, at each convergence check, stops the members that converged.
``TRAINERS`` maps the ``optimizer`` option to the trainer class.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, fields
from typing import ClassVar, Protocol

import numpy as np
import torch

from postcollapse.models import MomentTensors, moments_loss, smooth_free_bits
from postcollapse.train.optim import BatchedLBFGS, MaskedAdam

__all__ = ["Trainer", "MemberState", "AdamState", "LBFGSState", "AdamTrainer", "LBFGSTrainer",
           "TRAINERS", "Whitener", "BlockScaling", "FreeBitsContinuation"]


@dataclass
class MemberState:
    """Progress of the members (K,) shared by every trainer.

    ``stop_time`` (on the CPU) is the training time at which a member stopped (NaN while
    it trains), ``elapsed`` the training time of earlier (interrupted) runs, ``streak`` the
    number of convergence tests passed in a row, ``last_loss`` the newest training loss,
    ``rel_change`` the relative change of the objective at the newest convergence test
    (NaN before the first) and ``lr`` the learning rate reached (NaN for L-BFGS).
    """

    step: int
    converged: torch.Tensor
    diverged: torch.Tensor
    steps_done: torch.Tensor
    streak: torch.Tensor
    stop_time: torch.Tensor
    elapsed: float
    last_loss: torch.Tensor
    rel_change: torch.Tensor
    lr: torch.Tensor

    @classmethod
    def fresh(cls, k: int, device) -> MemberState:
        """The state before the first step of ``k`` members."""
        flags = {name: torch.zeros(k, dtype=torch.bool, device=device)
                 for name in ("converged", "diverged")}
        counts = {name: torch.zeros(k, dtype=torch.long, device=device)
                  for name in ("steps_done", "streak")}
        nans = {name: torch.full((k,), float("nan"), dtype=torch.float64, device=device)
                for name in ("last_loss", "rel_change", "lr")}
        return cls(step=0, **flags, **counts,
                   stop_time=torch.full((k,), float("nan"), dtype=torch.float64),
                   elapsed=0.0, **nans)

    @property
    def active(self) -> torch.Tensor:
        """(K,) bool: the members still training."""
        return ~(self.converged | self.diverged)

    def to_dict(self) -> dict:
        """The state as a dict of CPU tensors and numbers (for a checkpoint)."""
        return {f.name: (v.cpu() if isinstance(v := getattr(self, f.name), torch.Tensor) else v)
                for f in fields(self)}

    def load(self, saved: dict, device) -> None:
        """Take the values of a :meth:`to_dict` (``stop_time`` stays on the CPU); a field
        the saved state lacks (a checkpoint written before it existed) keeps its value."""
        for f in fields(self):
            if f.name not in saved:
                continue
            v = saved[f.name]
            keep_cpu = not isinstance(v, torch.Tensor) or f.name == "stop_time"
            setattr(self, f.name, v if keep_cpu else v.to(device))


@dataclass
class AdamState(MemberState):
    """Adds the state of Adam's convergence rules (K,) each.

    Fixed learning rate (``lr_decay`` None): the summed training loss since the last check
    and the window mean at the last check (None before the first). Plateau decay: the
    objective at the last check (``prev_mean``), the best objective so far and the number
    of checks since it last improved (``bad``).
    """

    win_sum: torch.Tensor | None = None
    prev_mean: torch.Tensor | None = None
    best: torch.Tensor | None = None
    bad: torch.Tensor | None = None
    tau: torch.Tensor | None = None

    @classmethod
    def fresh(cls, k: int, device) -> AdamState:
        st = super().fresh(k, device)
        st.win_sum = torch.zeros(k, dtype=torch.float64, device=device)
        st.best = torch.full((k,), float("inf"), dtype=torch.float64, device=device)
        st.bad = torch.zeros(k, dtype=torch.long, device=device)
        return st


@dataclass
class LBFGSState(MemberState):
    """Adds the smoothing width ``tau`` (K,) of the free-bits continuation (None without)."""

    tau: torch.Tensor | None = None


class FreeBitsContinuation:
    """The free-bits objective with its kink rounded off, and the schedule that sharpens it.

    The penalty sum_j max(lam, KL_j) has a kink at KL_j = lam, and the optimum sits on it
    whenever a latent is pinned (the "all pinned" and "mixed" regimes): quasi-Newton steps
    stall there slightly above the minimum. The trainers instead minimise
    ``models.smooth_free_bits`` (lam + tau softplus((KL_j - lam)/tau) per latent, smooth,
    within d1 tau log 2 of the exact penalty) with a width tau that starts at
    min(:attr:`START`, :attr:`START_LAMBDA` lam) nats and is multiplied by :attr:`FACTOR`
    each time a member has converged on it, warm-started, down to :attr:`FINAL` (per
    dtype). A wide first width misleads: below lam the smoothed penalty still has slope
    sigmoid((KL_j - lam)/tau), and with tau ~ lam nearly collapsed latents all turn to the
    strongest mode, a stacked stationary point the continuation then follows. A member
    has converged only once it has converged at the final width, where the exact loss at
    its point is within beta d1 FINAL log 2 of the smoothed minimum, hence of the exact
    minimum (1e-9 nats per latent in float64: far below any tolerance on the loss). The
    loss reported in the rows is always the exact one.
    """

    START: ClassVar[float] = 1e-2
    START_LAMBDA: ClassVar[float] = 0.1
    FACTOR: ClassVar[float] = 0.1
    FINAL: ClassVar[dict] = {"float64": 1e-9, "float32": 1e-5}

    def __init__(self, net, config):
        self.net, self.lam = net, float(config.free_bits)
        self.final = self.FINAL[config.dtype]

    def start(self) -> torch.Tensor:
        """The first width of every member, (K,): min(START, START_LAMBDA lam), at least
        the final width."""
        tau = max(min(self.START, self.START_LAMBDA * self.lam), self.final)
        return torch.full((self.net.n_members,), tau, dtype=torch.float64,
                          device=self.net.device)

    def loss(self, parts, tau: torch.Tensor) -> torch.Tensor:
        """The smoothed objective (K,) of ``parts`` (a ``LossParts`` of the exact loss)."""
        return parts.rec + self.net.beta * smooth_free_bits(parts.kl_dims, self.lam, tau)

    def sharpen(self, tau: torch.Tensor, done: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(new widths, members moved to a narrower width) given the members ``done`` (K,)
        that converged at their width: those not yet at the final width move on."""
        move = done & (tau > self.final * (1 + 1e-9))
        return torch.where(move, (tau * self.FACTOR).clamp_min(self.final), tau), move


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

    Convergence (``lr_decay`` set, the default): at each check the full training-set
    objective with common random numbers (``Objective.crn_loss``: the same noise at every
    check, so two checks differ only by the parameters) is compared with its best value so
    far. A member whose objective has not improved by ``tol`` (relative) for ``patience``
    checks multiplies its learning rate by ``lr_decay``; it has converged when, at a
    decayed learning rate, the objective changes by at most ``tol`` (relative) between two
    checks, or when a plateau would take its learning rate below ``min_lr``. With
    ``lr_decay`` None: a fixed learning rate, and the mean training loss over
    ``check_every`` steps changes by at most ``tol`` at ``patience`` (2) checks in a row.
    A non-finite loss marks a member diverged. With ``free_bits_smoothing`` (and
    ``lr_decay``) the steps and the plateau rule see the smoothed free-bits objective
    (:class:`FreeBitsContinuation`); a member that would stop at a smoothing width wider
    than the final one goes on at the next width (same learning rate, plateau bookkeeping
    started over).
    """

    patience: ClassVar[int] = 2

    def __init__(self, net, objective, config, *, moments=None, saved=None):
        self.net, self.objective = net, objective
        self.tol, self.check_every = config.tol, config.check_every
        self.decay, self.plateau = config.lr_decay, config.patience
        self.lr0, self.lr_min, self.crn_samples = config.lr, config.lr_floor, config.crn_samples
        self.opt = MaskedAdam(net.flat.data, lr=config.lr)
        self.state = AdamState.fresh(net.n_members, net.device)
        self.state.lr.fill_(config.lr)
        self.smooth = (FreeBitsContinuation(net, config)
                       if getattr(config, "free_bits_smoothing", False)
                       and self.decay is not None else None)
        if self.smooth is not None:
            self.state.tau = self.smooth.start()
        if saved is not None:
            self.state.load(saved["state"], net.device)
            self.opt.load_state_dict(saved["opt"])
        if self.decay is not None:
            self.opt.member_lr = self.state.lr

    def step(self) -> None:
        st, net = self.state, self.net
        active = st.active
        parts = self.objective(net.params(), st.step)
        loss = parts.loss if self.smooth is None else self.smooth.loss(parts, st.tau)
        (g,) = torch.autograd.grad(loss.sum(), net.flat)
        lo = loss.detach()
        fin = torch.isfinite(lo)
        st.diverged |= active & ~fin
        active = active & fin
        self.opt.step(g, active)
        st.steps_done += active
        if self.decay is None:
            st.win_sum += torch.where(active, lo.double(), 0.0)
        st.last_loss = torch.where(active, lo.double(), st.last_loss)
        st.step += 1

    def check(self) -> None:
        st = self.state
        if st.step % self.check_every != 0:  # the last step of a run that ends off the grid
            return
        if self.decay is not None:
            self._plateau_check()
            return
        mean = st.win_sum / self.check_every
        if st.prev_mean is not None:
            active = st.active
            rel = (mean - st.prev_mean).abs() / mean.abs().clamp_min(1e-300)
            st.rel_change = torch.where(active, rel, st.rel_change)
            if self.tol > 0:
                hit = active & (rel <= self.tol)
                st.streak = torch.where(hit, st.streak + 1, 0)
                st.converged |= (st.streak >= self.patience) & active
        st.prev_mean = mean
        st.win_sum = torch.zeros_like(st.win_sum)

    def _plateau_check(self) -> None:
        """The plateau rule on the CRN objective, all members at once (no host sync)."""
        st = self.state
        if self.smooth is None:
            f = self.objective.crn_loss(n_eps=self.crn_samples)
        else:
            f = self.smooth.loss(self.objective.crn_parts(n_eps=self.crn_samples),
                                 st.tau).double()
        active = st.active
        st.diverged |= active & ~torch.isfinite(f)
        active = active & torch.isfinite(f)
        scale = f.abs().clamp_min(1e-300)
        first = st.prev_mean is None
        prev = f if first else st.prev_mean
        rel = (f - prev).abs() / scale
        if not first:
            st.rel_change = torch.where(active, rel, st.rel_change)
        improved = (st.best - f) > self.tol * f.abs()
        st.best = torch.where(active & improved, f, st.best)
        st.bad = torch.where(active & ~improved, st.bad + 1, torch.where(active, 0, st.bad))
        decayed = st.lr < self.lr0
        settled = active & decayed & (rel <= self.tol) & (not first)
        plateau = active & ~settled & (st.bad >= self.plateau)
        new_lr = st.lr * self.decay
        floor = plateau & (new_lr < self.lr_min * (1 - 1e-9))
        done = settled | floor
        if self.smooth is not None:  # converged on a smoothing width: on to a narrower one
            st.tau, moved = self.smooth.sharpen(st.tau, done & (self.tol > 0))
            done = done & ~moved
            # the objective changed: its plateau bookkeeping starts over
            st.best = torch.where(moved, float("inf"), st.best)
            st.bad = torch.where(moved, 0, st.bad)
            f = torch.where(moved, float("nan"), f)
        if self.tol > 0:  # tol 0: no member stops (the rate still decays down to min_lr)
            st.converged |= done
        cut = plateau & ~floor
        st.lr.copy_(torch.where(cut, new_lr, st.lr))
        st.bad = torch.where(cut, 0, st.bad)
        st.prev_mean = torch.where(active, f, prev)

    def sync_model(self) -> None:
        """Nothing to do: Adam updates the model's parameters in place."""

    def optimizer_state(self) -> dict:
        return self.opt.state_dict()


class LBFGSTrainer:
    """Batched L-BFGS on the full-batch exact loss, optionally in whitened encoder
    coordinates (``precondition``).

    Convergence: the relative decrease of one iteration is at most ``tol`` at ``patience``
    iterations in a row, or the line search found no decrease (the noise floor), and in
    both cases the member has arrived: the decrease its quasi-Newton model predicts,
    -g^T d, is at most sqrt(tol) relative to max(|f|, 1). A member that stalls elsewhere
    (slow progress far from a minimum, as on an ill-conditioned spectrum) keeps training
    and is reported not converged at the step limit. With ``free_bits_smoothing`` it
    minimises the smoothed free-bits objective (:class:`FreeBitsContinuation`): a member
    that converged at a width wider than the final one moves to the next width (its
    objective evaluated again, its curvature history forgotten) instead of stopping.
    """

    patience: ClassVar[int] = 3

    def __init__(self, net, objective, config, *, moments=None, saved=None):
        self.net, self.objective, self.tol = net, objective, config.tol
        self.whiten = Whitener(net, moments) if config.precondition else None
        self.on_moments = objective.moments is not None
        self.state = LBFGSState.fresh(net.n_members, net.device)
        self.smooth = (FreeBitsContinuation(net, config)
                       if getattr(config, "free_bits_smoothing", False) else None)
        if self.smooth is not None:
            self.state.tau = self.smooth.start()
        if saved is not None:
            self.state.load(saved["state"], net.device)
        flat = net.flat.data
        theta0 = flat if self.whiten is None else self.whiten.from_flat(flat)
        scale = BlockScaling(net, self.whiten.moments) if config.block_scaling else None
        self.lbfgs = BatchedLBFGS(self.loss_and_grad, theta0, scale=scale,
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
                loss = self.training_loss(parts)
                (g,) = torch.autograd.grad(loss.sum(), xr)
            return loss.detach(), g
        xr = (theta if whiten is None else whiten.to_flat(theta)).detach()
        xr.requires_grad_(True)
        with torch.enable_grad():
            parts = self.objective(net.params(xr), 0)
            loss = self.training_loss(parts)
            (g,) = torch.autograd.grad(loss.sum(), xr)
        return loss.detach(), (g if whiten is None else whiten.grad_to_theta(g))

    def training_loss(self, parts) -> torch.Tensor:
        """The objective L-BFGS minimises (K,): the loss, or its free-bits smoothing."""
        if self.smooth is None:
            return parts.loss
        return self.smooth.loss(parts, self.state.tau)

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
        scale = torch.maximum(fnew.abs(), torch.ones_like(fnew))
        arrived = res["decrement"].double() <= math.sqrt(self.tol) * scale
        newly = active & ((st.streak >= self.patience) | res["failed"]) & arrived
        st.rel_change = torch.where(active, rel, st.rel_change)
        st.steps_done += active
        if self.smooth is not None:  # converged on a smoothing width: on to a narrower one
            st.tau, moved = self.smooth.sharpen(st.tau, newly)
            if bool(moved.any()):
                self.lbfgs.restart(moved)
                fnew = torch.where(moved, self.lbfgs.f.double(), fnew)
                st.streak = torch.where(moved, 0, st.streak)
            newly &= ~moved
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


def _solve(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Batched a^-1 b without raising on a singular batch element (its result is NaN)."""
    x, info = torch.linalg.solve_ex(a, b)
    return torch.where((info == 0).view(-1, *([1] * (b.dim() - 1))), x, float("nan"))


#: Relative floor of the whitened input variances in BlockScaling (see there).
A_FLOOR = 1e-2


class BlockScaling:
    """H0^-1 of L-BFGS for linear members in whitened encoder coordinates: the inverse of
    the block-diagonal Gauss-Newton curvature at the current point.

    With x' the whitened inputs (diagonal covariance a, mean m), mu = theta^T x' + b_e and
    U^T = ``dec_w``, the blocks are, per member: (U^T U / eta_dec^2 + beta / eta_enc^2 I)
    (d1, d1) for each row of theta and for b_e (rows scaled by a); (E[mu mu^T] + Sigma) /
    eta_dec^2 (d1, d1) for each column of U^T; 1 / eta_dec^2 for b_d; and the exact
    diagonal sigma_i^2 (||U_i||^2 / eta_dec^2 + beta / eta_enc^2) / 2 for a learnable
    log-variance. The scales of the latent modes (U^T U spans zeta_1^2 .. zeta_K^2) are
    what make plain L-BFGS slow on ill-conditioned spectra; this puts them right at every
    iteration.
    """

    def __init__(self, net, moments):
        names = [name for name, _, _, _ in net.layout]
        if names not in (["enc_w", "enc_b", "logvar", "dec_w", "dec_b"],
                         ["enc_w", "enc_b", "dec_w", "dec_b"]):
            raise ValueError("block scaling needs a linear encoder and decoder with sigma "
                             "'prior' or 'learnable'")
        self.net = net
        self.a = moments.cov_x if moments.cov_x.dim() == 1 else torch.diagonal(moments.cov_x)
        # Directions the data barely span (a_j -> 0, e.g. near-constant pixels) have almost
        # no curvature and almost no gradient; dividing by a_j there made steps that the
        # line search had to cut ~40 times per iteration on MNIST. A floor relative to the
        # largest a_j only shortens those steps.
        self.a_floor = self.a.clamp_min(A_FLOOR * float(self.a.max()))
        self.mean = moments.mean_x
        self.inv_e2 = (1.0 / net.eta_dec**2).view(-1, 1, 1)
        self.beta_p = (net.beta / net.eta_enc**2).view(-1, 1, 1)

    def __call__(self, theta: torch.Tensor, q: torch.Tensor) -> torch.Tensor:
        net = self.net
        p, dq = net.params(theta), net.params(q)
        k, d1 = theta.shape[0], net.d1
        eye = torch.eye(d1, dtype=theta.dtype, device=theta.device)
        ut = p["dec_w"]  # (K, d1, d2)
        utu = torch.bmm(ut, ut.transpose(1, 2)) * self.inv_e2
        b_enc = utu + self.beta_p * eye  # (K, d1, d1)
        lv = net.const_logvar(p)[:, 0]  # (K, d1)
        var = torch.exp(lv)
        th, be = p["enc_w"], p["enc_b"]
        mu_mean = torch.matmul(self.mean, th) + be  # (K, d1)
        emm = (torch.bmm(th.transpose(1, 2), self.a.view(1, -1, 1) * th)
               + mu_mean.unsqueeze(2) * mu_mean.unsqueeze(1))
        b_dec = (emm + torch.diag_embed(var)) * self.inv_e2
        out = {}
        # theta row j: curvature a_j * (U^T U / eta^2) + beta a_j / eta_enc^2 = a_j * b_enc
        # solve_ex: a member whose curvature is singular or non-finite gets NaN here and is
        # then stopped as diverged, instead of an exception for the whole sweep.
        g_w = _solve(b_enc, dq["enc_w"].transpose(1, 2)).transpose(1, 2)
        out["enc_w"] = g_w / self.a_floor.view(1, -1, 1)
        out["enc_b"] = _solve(b_enc, dq["enc_b"].unsqueeze(-1)).squeeze(-1)
        if "logvar" in dq:
            h = 0.5 * var * ((ut**2).sum(-1) * self.inv_e2[:, :, 0] + self.beta_p[:, :, 0])
            out["logvar"] = dq["logvar"] / h.clamp_min(1e-300)
        out["dec_w"] = _solve(b_dec, dq["dec_w"])
        out["dec_b"] = dq["dec_b"] / self.inv_e2[:, :, 0]
        return torch.cat([out[name].reshape(k, -1) for name, _, _, _ in net.layout], 1)
