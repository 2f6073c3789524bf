"""Closed-form reference of a sweep, and the evaluation of trained members into rows.

The loss of a member with a sampled (nonlinear-decoder) loss is evaluated on noise that
depends only on the member's seed: row block b of noise sample j comes from a generator
seeded with (seed, stream, j, b), so a member's numbers are the same whatever the other
members are and however the rows are chunked.
"""

from __future__ import annotations

import numpy as np
import torch

from postcollapse.models import (
    LossParts,
    chunk_rows,
    evaluate_loss,
    kl_penalty,
    member_seed,
    sampled_loss,
)

__all__ = ["sweep_theory", "start_eta_dec", "encoder_stats", "member_rows", "start_loss",
           "fault_text", "member_noise", "seed_loss", "EVAL_STREAM", "CRN_STREAM", "NOISE_BLOCK"]

EVAL_STREAM = 4  # stream id of the evaluation noise (see ``member_seed``)
CRN_STREAM = 5  # stream id of the fixed noise of the convergence objective
NOISE_BLOCK = 1024  # rows per independently seeded noise block


def member_noise(seeds, *, stream: int, sample: int, lo: int, hi: int, d1: int,
                 dtype: torch.dtype) -> torch.Tensor:
    """Noise (S, hi - lo, d1) of rows lo..hi for each of the S ``seeds`` (lo a multiple
    of ``NOISE_BLOCK``): block b of sample ``sample`` from the seed (seed, stream, sample,
    b), on the CPU."""
    if lo % NOISE_BLOCK:
        raise ValueError(f"lo must be a multiple of {NOISE_BLOCK}, got {lo}")
    out = []
    for s in seeds:
        parts = []
        for b0 in range(lo, hi, NOISE_BLOCK):
            g = torch.Generator().manual_seed(member_seed(s, stream, sample, b0 // NOISE_BLOCK))
            parts.append(torch.randn(min(NOISE_BLOCK, hi - b0), d1, generator=g, dtype=dtype))
        out.append(torch.cat(parts))
    return torch.stack(out)


def noise_chunk(net, n_rows: int) -> int:
    """Rows per evaluation chunk: a multiple of ``NOISE_BLOCK`` near ``chunk_rows``."""
    return max(NOISE_BLOCK, chunk_rows(net, n_rows) // NOISE_BLOCK * NOISE_BLOCK)


@torch.no_grad()
def seed_loss(net, x: torch.Tensor, y, *, seeds, seed_pos: torch.Tensor, n_eps: int,
              stream: int = EVAL_STREAM) -> LossParts:
    """L_VAE of every member over all rows of x (float64 sums), exact for a linear decoder,
    else averaged over ``n_eps`` noise samples per row drawn from each member's own seed.

    ``seeds`` (S,) are the distinct seeds, ``seed_pos`` (K,) the index of each member's seed
    in ``seeds``.
    """
    if net.decoder == "linear":
        return evaluate_loss(net, x, y)
    n, k, d1 = x.shape[0], net.n_members, net.d1
    step = noise_chunk(net, n)
    tot = torch.zeros(k, dtype=torch.float64, device=x.device)
    tot_kl = torch.zeros(k, d1, dtype=torch.float64, device=x.device)
    for lo in range(0, n, step):
        xb = x[lo: lo + step]
        yb = None if y is None else y[lo: lo + step]
        hi = lo + xb.shape[0]
        w = xb.shape[0] / n
        acc = torch.zeros(k, dtype=torch.float64, device=x.device)
        for j in range(n_eps):
            eps = member_noise(seeds, stream=stream, sample=j, lo=lo, hi=hi, d1=d1,
                               dtype=x.dtype).to(x.device).index_select(0, seed_pos.to(x.device))
            parts = sampled_loss(net, xb, yb, eps=eps)
            acc += parts.rec.double()
        tot += w * acc / n_eps
        tot_kl += w * parts.kl_dims.double()
    kl = tot_kl.sum(-1)
    # the model's own KL term (free bits: sum_j max(lambda, KL_j) of the data-averaged KL)
    return LossParts(tot + net.beta.double() * kl_penalty(net, tot_kl), tot, kl, tot_kl)


def sweep_theory(mom, config) -> dict:
    """zeta, thresholds, residual and, per beta, the closed-form min_loss, sigma and active
    modes for the sweep's Sigma mode, plus both min-loss curves (the theory of sweep.json).

    Also per beta: ``eta_dec2`` (v = eta_dec^2: fixed, or the learned v* when
    ``config.eta_dec == "learn"``) and ``min_nll``, the minimum per-example beta-NLL
    (L_VAE + (d2/2) log(2 pi v)). With a learned variance the thresholds, active modes,
    sigma and ``min_loss`` (L_VAE at v*) are those of the learned-variance optimum.
    """
    from postcollapse.theory import (
        active_modes,
        learned_eta_dec2,
        min_loss,
        optimal_sigma2,
        spectrum,
        thresholds,
    )

    spec = spectrum(mom)
    mode = "prior" if config.sigma == "prior" else "learnable"
    kw = {"latent_dim": config.latent_dim, "eta_enc": config.eta_enc,
          "eta_dec": config.eta_dec}
    betas = config.betas
    sig = (-np.sort(-np.sqrt(optimal_sigma2(spec, betas, sigma=mode, **kw)), axis=1)).tolist()
    if config.learn_eta_dec:
        v = learned_eta_dec2(spec, betas, latent_dim=config.latent_dim, sigma=mode,
                             eta_enc=config.eta_enc)
    else:
        v = np.full(len(betas), float(config.eta_dec) ** 2)
    return {
        "sigma_mode": mode,
        "eta_dec": config.eta_dec,
        "zeta": spec.zeta.tolist(),
        "thresholds": thresholds(spec, eta_dec=config.eta_dec, sigma=mode).tolist(),
        "residual": float(spec.residual),
        "betas": [float(b) for b in betas],
        "min_loss": min_loss(spec, betas, sigma=mode, **kw).tolist(),
        "min_loss_learnable": min_loss(spec, betas, sigma="learnable", **kw).tolist(),
        "min_loss_prior": min_loss(spec, betas, sigma="prior", **kw).tolist(),
        "active_modes": [int(active_modes(spec, float(b), eta_dec=config.eta_dec,
                                          latent_dim=config.latent_dim, sigma=mode))
                         for b in betas],
        "sigma": sig,
        "eta_dec2": [float(x) for x in v],
        "min_nll": min_loss(spec, betas, sigma=mode, nll=True, **kw).tolist(),
    }


def start_eta_dec(mom, config) -> float:
    """The starting eta_dec of the members: the fixed one, or with a learned variance
    sqrt(tr Cov(y) / d2), the learned eta_dec of the fully collapsed model (k = 0)."""
    if not config.learn_eta_dec:
        return float(config.eta_dec)
    v0 = float(mom.s_yy) / mom.d2
    return float(np.sqrt(v0)) if v0 > 0 else 1.0


@torch.no_grad()
def encoder_stats(model, x: torch.Tensor, chunk: int):
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


def _numpy(t: torch.Tensor) -> np.ndarray:
    return t.cpu().numpy()


def _active_modes(mu_cov: torch.Tensor, threshold: float) -> np.ndarray:
    """Eigenvalues of each member's Cov_x(mu) (K, d1, d1) above ``threshold``; 0 for a member
    whose covariance is not finite (a diverged member) or has no eigen-decomposition."""
    finite = torch.isfinite(mu_cov).all(2).all(1)
    safe = torch.where(finite[:, None, None], mu_cov, torch.zeros_like(mu_cov))
    try:
        lam = torch.linalg.eigvalsh(safe)
    except torch.linalg.LinAlgError:  # e.g. entries near the float limits: member by member
        lam = torch.zeros(safe.shape[:2], dtype=safe.dtype)
        for i, c in enumerate(_numpy(safe)):
            try:
                lam[i] = torch.as_tensor(np.linalg.eigvalsh(c))
            except np.linalg.LinAlgError:
                finite[i] = False
    return _numpy(((lam.to(finite.device) > threshold).sum(1)) * finite)


@torch.no_grad()
def start_loss(objective, net) -> torch.Tensor:
    """The training loss (K,) of each member before its first step (float64, CPU)."""
    return objective(net.params(), 0).loss.detach().double().cpu()


def fault_text(*, diverged: bool, steps: int, loss: float, start: float | None) -> str:
    """Why a member's row is not a trained result ("" when it is).

    A member fails when training met a non-finite loss (``diverged``), when its evaluated
    loss is not finite, or when the loss rose well above its value before training
    (``loss > start + max(1, |start|) / 2``: the learning rate is far too large).
    """
    if diverged:
        return f"non-finite loss after {steps} steps"
    if not np.isfinite(loss):
        return "non-finite loss at evaluation"
    if start is not None and np.isfinite(start) and loss > start + 0.5 * max(1.0, abs(start)):
        return (f"loss rose from {start:.4g} before training to {loss:.4g} (learning rate "
                "too large?)")
    return ""


def member_rows(net, objective, config, state, theory: dict, *,
                start_loss=None) -> list[dict]:
    """One results row per member (see ``SweepResult.rows``) of the trained ``net``;
    ``start_loss`` (K,), the loss before training, flags members whose loss rose."""
    x, y = objective.x, objective.y
    parts = seed_loss(net, x, y, seeds=list(config.seeds), seed_pos=objective.seed_pos,
                      n_eps=config.eval_samples)
    sig_mean, mu_cov = encoder_stats(net, x, chunk_rows(net, x.shape[0]))
    mu_var = torch.diagonal(mu_cov, dim1=1, dim2=2)
    # Rotation-invariant count: with Sigma = eta_enc^2 I the optimum is defined only up to an
    # orthogonal P, which can spread one active mode over several coordinates.
    modes = _active_modes(mu_cov, config.active_threshold)
    units = _numpy((mu_var > config.active_threshold).sum(1))
    order = torch.argsort(sig_mean, dim=1, descending=True, stable=True)
    sig_sorted = _numpy(torch.gather(sig_mean, 1, order))
    kl_sorted = _numpy(torch.gather(parts.kl_dims, 1, order))
    loss, rec, kl = (_numpy(t) for t in (parts.loss, parts.rec, parts.kl))
    trained = loss  # the quantity training minimised (compared with start_loss)
    # loss and rec are L_VAE's (no log 2 pi); nll adds (d2/2) log(2 pi v). A learned-variance
    # model's loss already holds that term (it is what was trained), so it comes off here.
    v = _numpy(net.dec_var().detach().double())
    norm = 0.5 * net.d2 * (np.log(2.0 * np.pi) + np.log(v))
    if net.learn_eta_dec:
        nll, loss, rec = loss, loss - norm, rec - norm
    else:
        nll = loss + norm
    conv, div, steps = (_numpy(t) for t in (state.converged, state.diverged, state.steps_done))
    rel, lr = _numpy(state.rel_change), _numpy(state.lr)
    norms = net.weight_norms()
    zero = np.zeros(net.n_members)
    enc_n, sig_n, dec_n = (_numpy(norms[p].double()) if p in norms else zero
                           for p in ("enc", "sig", "dec"))
    d1 = config.latent_dim
    rows = []
    for i, (b, s) in enumerate(config.members):
        bi = config.betas.index(b)
        th = theory["min_loss"][bi]
        row = {"beta": float(b), "seed": int(s), "loss": float(loss[i]), "rec": float(rec[i]),
               "kl": float(kl[i]), "active_units": int(units[i]), "active_modes": int(modes[i])}
        row.update({f"sigma_{j + 1}": float(sig_sorted[i, j]) for j in range(d1)})
        row.update({f"kl_{j + 1}": float(kl_sorted[i, j]) for j in range(d1)})
        fault = fault_text(diverged=bool(div[i]), steps=int(steps[i]), loss=float(trained[i]),
                           start=None if start_loss is None else float(start_loss[i]))
        row.update({"converged": bool(conv[i]) and not fault, "diverged": bool(fault),
                    "steps": int(steps[i]), "enc_norm": float(enc_n[i]),
                    "sigma_norm": float(sig_n[i]), "dec_norm": float(dec_n[i]),
                    "wall_time": float(state.stop_time[i]), "theory_loss": float(th),
                    "theory_active": int(theory["active_modes"][bi]),
                    "theory_gap": float(loss[i] / th - 1.0) if th != 0 else float("nan"),
                    "eta_dec": float(np.sqrt(v[i])), "nll": float(nll[i]), "fault": fault,
                    "final_rel_change": float(rel[i]), "lr_final": float(lr[i]),
                    "optimizer": config.optimizer, "dtype": config.dtype})
        rows.append(row)
    return rows
