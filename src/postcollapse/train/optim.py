"""Optimisers over a stacked (K, P) parameter tensor, one independent problem per row.

``MaskedAdam`` is Adam written on the whole (K, P) tensor (a few fused tensor operations per
step, no per-parameter Python loop). Summing the members' losses makes row k of the gradient
the gradient of member k alone, so this is exactly K independent Adams. ``active`` masks the
*update*, not the gradient: a stopped member's parameters do not move at all (a zeroed
gradient would still move it through Adam's momentum).

``BatchedLBFGS`` is K independent L-BFGS runs (own history, own curvature scaling, own
Armijo backtracking step) evaluated together: each trial point is one batched
loss-and-gradient evaluation of all members.
"""

from __future__ import annotations

import math

import torch

__all__ = ["MaskedAdam", "BatchedLBFGS"]


class MaskedAdam:
    """Adam (Kingma & Ba 2015, with bias correction) on a (K, P) tensor, masked per row.

    ``lr`` is one learning rate for all rows; :attr:`member_lr` (a (K,) tensor, None by
    default) overrides it row by row (a per-member decay).
    """

    def __init__(self, param: torch.Tensor, *, lr: float, betas=(0.9, 0.999), eps: float = 1e-8):
        self.param = param
        self.lr = float(lr)
        self.b1, self.b2 = (float(b) for b in betas)
        self.eps = float(eps)
        self.exp_avg = torch.zeros_like(param)
        self.exp_avg_sq = torch.zeros_like(param)
        self.t = 0
        self.member_lr: torch.Tensor | None = None

    @torch.no_grad()
    def step(self, grad: torch.Tensor, active: torch.Tensor) -> None:
        """One Adam step; rows where ``active`` (K,) bool is False do not change."""
        self.t += 1
        b1, b2 = self.b1, self.b2
        self.exp_avg.lerp_(grad, 1.0 - b1)
        self.exp_avg_sq.mul_(b2).addcmul_(grad, grad, value=1.0 - b2)
        bc1 = 1.0 - b1**self.t
        bc2 = 1.0 - b2**self.t
        denom = self.exp_avg_sq.sqrt().div_(math.sqrt(bc2)).add_(self.eps)
        if self.member_lr is None:
            upd = self.exp_avg.div(denom).mul_(self.lr / bc1)
        else:
            upd = self.exp_avg.div(denom).mul_((self.member_lr / bc1).to(denom).unsqueeze(1))
        # where, not multiply: a frozen (diverged) row may hold NaN in its update.
        self.param.sub_(torch.where(active.unsqueeze(1), upd, 0.0))

    def state_dict(self) -> dict:
        return {"exp_avg": self.exp_avg, "exp_avg_sq": self.exp_avg_sq, "t": self.t}

    def load_state_dict(self, state: dict) -> None:
        self.exp_avg.copy_(state["exp_avg"])
        self.exp_avg_sq.copy_(state["exp_avg_sq"])
        self.t = int(state["t"])


class BatchedLBFGS:
    """K independent L-BFGS minimisations with backtracking (Armijo) line searches.

    Parameters
    ----------
    fun : callable
        fun(x) with x (K, P) -> (f (K,), g (K, P)), both detached; members independent.
    x0 : Tensor (K, P)
    state : dict, optional
        A :meth:`state_dict` to continue from (then ``x0`` only gives shape and dtype).
    history : int
        Number of curvature pairs kept per member.
    scale : callable, optional
        ``scale(x, q)`` -> H0^-1 q (K, P): a positive definite initial inverse Hessian at the
        current point x, used in the two-loop recursion instead of the scalar
        gamma = s^T y / y^T y (a variable preconditioner).
    """

    def __init__(self, fun, x0: torch.Tensor, *, history: int = 20, c1: float = 1e-4,
                 max_ls: int = 40, state: dict | None = None, scale=None):
        self.fun = fun
        self.scale = scale
        self.m = int(history)
        self.c1 = float(c1)
        self.max_ls = int(max_ls)
        k, p = x0.shape
        self.x = x0.detach().clone()
        self.S = x0.new_zeros(self.m, k, p)
        self.Y = x0.new_zeros(self.m, k, p)
        self.rho = x0.new_zeros(self.m, k)
        self.gamma = x0.new_ones(k)
        self.it = 0
        if state is None:
            self.f, self.g = fun(self.x)
        else:
            self.f, self.g = self.x.new_zeros(k), torch.zeros_like(self.x)
            self.load_state_dict(state)

    def _direction(self) -> torch.Tensor:
        q = -self.g
        n_hist = min(self.it, self.m)
        order = [(self.it - 1 - j) % self.m for j in range(n_hist)]  # newest first
        alphas = []
        for j in order:
            a = self.rho[j] * (self.S[j] * q).sum(1)
            q = q - a.unsqueeze(1) * self.Y[j]
            alphas.append(a)
        r = q * self.gamma.unsqueeze(1) if self.scale is None else self.scale(self.x, q)
        for j, a in zip(reversed(order), reversed(alphas), strict=True):
            b = self.rho[j] * (self.Y[j] * r).sum(1)
            r = r + (a - b).unsqueeze(1) * self.S[j]
        return r

    @torch.no_grad()
    def step(self, active: torch.Tensor) -> dict[str, torch.Tensor]:
        """One iteration for the members where ``active``; the others do not move.

        Returns per-member tensors: ``decrease`` (f_old - f_new), ``f``, ``failed`` (no
        step satisfied Armijo within max_ls halvings: the member is at its noise floor, or
        lost), ``decrement`` (-g^T d >= 0 at the old point: the decrease the quasi-Newton
        model predicts; small only near a minimum).
        """
        d = self._direction()
        gd = (self.g * d).sum(1)
        not_descent = ~(gd < 0)
        # Reset: steepest descent (scaled when a block scaling is set), forget the history of
        # those members. Masked, without a data-dependent branch, so that no host
        # synchronisation is needed (a member whose direction is kept gets the same d and gd
        # bit for bit).
        sd = -self.g if self.scale is None else -self.scale(self.x, self.g)
        d = torch.where(not_descent.unsqueeze(1), sd, d)
        gd = torch.where(not_descent, (self.g * d).sum(1), gd)
        self.rho = torch.where(not_descent, 0.0, self.rho)
        self.gamma = torch.where(not_descent, torch.ones_like(self.gamma), self.gamma)
        if self.it == 0 and self.scale is None:
            t = torch.clamp(1.0 / self.g.abs().sum(1).clamp_min(1e-300), max=1.0)
        else:
            t = torch.ones_like(self.f)
        pending = active.clone()
        accepted = torch.zeros_like(active)
        x_new, f_new, g_new = self.x.clone(), self.f.clone(), self.g.clone()
        for _ in range(self.max_ls):
            xt = torch.where(pending.unsqueeze(1), self.x + t.unsqueeze(1) * d, x_new)
            ft, gt = self.fun(xt)
            ok = pending & torch.isfinite(ft) & (ft <= self.f + self.c1 * t * gd)
            ok &= torch.isfinite(gt).all(1)
            x_new = torch.where(ok.unsqueeze(1), xt, x_new)
            f_new = torch.where(ok, ft, f_new)
            g_new = torch.where(ok.unsqueeze(1), gt, g_new)
            accepted |= ok
            pending &= ~ok
            if not pending.any():  # the one host synchronisation of a trial
                break
            t = torch.where(pending, 0.5 * t, t)
        failed = pending
        s = x_new - self.x
        y = g_new - self.g
        sy = (s * y).sum(1)
        yy = (y * y).sum(1)
        good = accepted & (sy > 1e-10 * yy.clamp_min(1e-300)) & (sy > 0)
        slot = self.it % self.m
        self.S[slot] = torch.where(good.unsqueeze(1), s, 0.0)
        self.Y[slot] = torch.where(good.unsqueeze(1), y, 0.0)
        self.rho[slot] = torch.where(good, 1.0 / torch.where(good, sy, 1.0), 0.0)
        self.gamma = torch.where(good, sy / torch.where(good, yy, 1.0), self.gamma)
        decrease = self.f - f_new
        self.x, self.f, self.g = x_new, f_new, g_new
        self.it += 1
        return {"decrease": decrease, "f": f_new, "failed": failed, "decrement": -gd}

    @torch.no_grad()
    def restart(self, members: torch.Tensor) -> None:
        """The objective of ``members`` (K,) bool changed: evaluate it again at their point
        and forget their curvature history (the others keep theirs and do not move)."""
        f, g = self.fun(self.x)
        self.f = torch.where(members, f, self.f)
        self.g = torch.where(members.unsqueeze(1), g, self.g)
        self.rho = torch.where(members, 0.0, self.rho)
        self.gamma = torch.where(members, torch.ones_like(self.gamma), self.gamma)

    def state_dict(self) -> dict:
        return {"x": self.x, "f": self.f, "g": self.g, "S": self.S, "Y": self.Y,
                "rho": self.rho, "gamma": self.gamma, "it": self.it}

    def load_state_dict(self, state: dict) -> None:
        for key in ("x", "f", "g", "S", "Y", "rho", "gamma"):
            setattr(self, key, state[key].to(self.x.device, self.x.dtype).clone())
        self.it = int(state["it"])
