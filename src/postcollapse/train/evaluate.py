"""Closed-form reference of a sweep, and the evaluation of trained members into rows."""

from __future__ import annotations

import numpy as np
import torch

from postcollapse._checks import ACTIVE_VAR_THRESHOLD
from postcollapse.models import chunk_rows, evaluate_loss, member_seed

__all__ = ["sweep_theory", "start_eta_dec", "encoder_stats", "member_rows", "EVAL_STREAM"]

EVAL_STREAM = 4  # stream id of the evaluation noise (see ``member_seed``)


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


def member_rows(net, objective, config, state, theory: dict) -> list[dict]:
    """One results row per member (see ``SweepResult.rows``) of the trained ``net``."""
    x, y = objective.x, objective.y
    gen = torch.Generator().manual_seed(member_seed(config.seeds[0], EVAL_STREAM))
    parts = evaluate_loss(net, x, y, n_eps=config.eval_samples, generator=gen)
    sig_mean, mu_cov = encoder_stats(net, x, chunk_rows(net, x.shape[0]))
    mu_var = torch.diagonal(mu_cov, dim1=1, dim2=2)
    # Rotation-invariant count: with Sigma = eta_enc^2 I the optimum is defined only up to an
    # orthogonal P, which can spread one active mode over several coordinates.
    modes = _numpy((torch.linalg.eigvalsh(mu_cov) > ACTIVE_VAR_THRESHOLD).sum(1))
    units = _numpy((mu_var > ACTIVE_VAR_THRESHOLD).sum(1))
    order = torch.argsort(sig_mean, dim=1, descending=True, stable=True)
    sig_sorted = _numpy(torch.gather(sig_mean, 1, order))
    kl_sorted = _numpy(torch.gather(parts.kl_dims, 1, order))
    loss, rec, kl = (_numpy(t) for t in (parts.loss, parts.rec, parts.kl))
    # loss and rec are L_VAE's (no log 2 pi); nll adds (d2/2) log(2 pi v). A learned-variance
    # model's loss already holds that term (it is what was trained), so it comes off here.
    v = _numpy(net.dec_var().detach().double())
    norm = 0.5 * net.d2 * (np.log(2.0 * np.pi) + np.log(v))
    if net.learn_eta_dec:
        nll, loss, rec = loss, loss - norm, rec - norm
    else:
        nll = loss + norm
    conv, div, steps = (_numpy(t) for t in (state.converged, state.diverged, state.steps_done))
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
        row.update({"converged": bool(conv[i]), "diverged": bool(div[i]),
                    "steps": int(steps[i]), "enc_norm": float(enc_n[i]),
                    "sigma_norm": float(sig_n[i]), "dec_norm": float(dec_n[i]),
                    "wall_time": float(state.stop_time[i]), "theory_loss": float(th),
                    "theory_active": int(theory["active_modes"][bi]),
                    "theory_gap": float(loss[i] / th - 1.0) if th != 0 else float("nan"),
                    "eta_dec": float(np.sqrt(v[i])), "nll": float(nll[i])})
        rows.append(row)
    return rows
