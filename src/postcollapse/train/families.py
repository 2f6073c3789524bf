"""Model families of a sweep: how to build the K-member model, its per-step objective, its
closed-form theory and its result rows.

``FAMILIES`` maps ``SweepConfig.family`` to a family:

- "vae": the one-level ``BatchedVAE`` (the paper's model);
- "free_bits": the same model with free bits (``free_bits`` = lambda): theory from
  ``theory.freebits_optimum`` per beta, rows with the signal of each data mode
  (``diagnostics.mode_signal``: ``signal_i``, ``snr_i``) next to the per-latent KL;
- "hierarchical": the two-level ``BatchedHierarchicalVAE``: theory from
  ``theory.hierarchical_optimum`` per beta, rows with ``active_level1`` (eigenvalues of
  Cov_x(mu1) above 0.01) and ``active_level2`` (of the covariance of q(z2|z1)'s mean over
  the data and the level-1 noise, as level 2 sees z1).
"""

from __future__ import annotations

import numpy as np
import torch

from postcollapse.train.data import Objective, member_batch, torch_dtype
from postcollapse.train.evaluate import EVAL_STREAM, member_rows, start_eta_dec, sweep_theory

__all__ = ["FAMILIES", "VAEFamily", "FreeBitsFamily", "HierarchicalFamily",
           "HierarchicalObjective", "SNR_THRESHOLD"]

SNR_THRESHOLD = 1e-2  # a mode "carries signal" when its snr exceeds this


class VAEFamily:
    """The one-level VAE of the paper."""

    def build(self, config, summary: dict, device, mom):
        from postcollapse.models import BatchedVAE

        members = config.members
        return BatchedVAE(summary["d0"], summary["d2"], latent_dim=config.latent_dim,
                          betas=[b for b, _ in members], encoder=config.encoder,
                          decoder=config.decoder, sigma=config.sigma, hidden=config.hidden,
                          seeds=[s for _, s in members], eta_enc=config.eta_enc,
                          eta_dec=start_eta_dec(mom, config),
                          learn_eta_dec=config.learn_eta_dec, dtype=torch_dtype(config.dtype),
                          **self.model_options(config)).to(device)

    def model_options(self, config) -> dict:
        return {}

    def objective(self, net, config, x, y, mom):
        from postcollapse.models import MomentTensors

        moments = (MomentTensors.from_moments(mom, dtype=net.dtype, device=net.device)
                   if config.use_moments else None)
        return Objective(net, config, x, y, moments=moments)

    def theory(self, mom, config) -> dict:
        return sweep_theory(mom, config)

    def rows(self, net, objective, config, state, theory, *, start_loss=None) -> list[dict]:
        return member_rows(net, objective, config, state, theory, start_loss=start_loss)


class FreeBitsFamily(VAEFamily):
    """The one-level VAE with free bits: sum_j max(lambda, KL_j) replaces the KL."""

    def model_options(self, config) -> dict:
        return {"free_bits": config.free_bits}

    def theory(self, mom, config) -> dict:
        from postcollapse.theory import freebits_optimum, spectrum

        out = sweep_theory(mom, config)
        spec = spectrum(mom)
        opts = [freebits_optimum(spec, latent_dim=config.latent_dim, beta=float(b),
                                 lam=config.free_bits, eta_enc=config.eta_enc,
                                 eta_dec=config.eta_dec) for b in config.betas]
        m = min(config.latent_dim, spec.d_star)
        out.update({
            "free_bits": config.free_bits,
            "free_bits_mode": config.free_bits_mode,
            "min_loss_no_free_bits": out["min_loss"],
            "min_loss": [float(o.loss) for o in opts],
            "regime": [o.regime for o in opts],
            "snr": [o.snr[:m].tolist() for o in opts],
            "kl_per_latent": [np.sort(o.kl)[::-1].tolist() for o in opts],
            # modes receiving signal (snr above SNR_THRESHOLD) replace the active modes
            "active_modes": [int(np.sum(o.snr > SNR_THRESHOLD)) for o in opts],
        })
        return out

    def rows(self, net, objective, config, state, theory, *, start_loss=None) -> list[dict]:
        from postcollapse.diagnostics import mode_signal
        from postcollapse.theory import Moments, spectrum

        rows = member_rows(net, objective, config, state, theory, start_loss=start_loss)
        x = objective.x.double().cpu().numpy()
        y = None if objective.y is None else objective.y.double().cpu().numpy()
        spec = spectrum(Moments.from_arrays(x, y))
        m = min(config.latent_dim, spec.d_star)
        with torch.no_grad():
            mu, logvar = net.encode(objective.x)
        mu = mu.detach().double().cpu().numpy()
        sig2 = torch.exp(logvar.detach().double()).mean(1).cpu().numpy()
        for i, row in enumerate(rows):
            ms = mode_signal(mu[i], x, spec, sigma2=sig2[i], eta_enc=config.eta_enc,
                             n_modes=m)
            row.update({f"signal_{j + 1}": float(ms.signal[j]) for j in range(m)})
            row.update({f"snr_{j + 1}": float(ms.snr[j]) for j in range(m)})
            row["signal_modes"] = int(np.sum(ms.snr > SNR_THRESHOLD))
            row["regime"] = theory["regime"][config.betas.index(row["beta"])]
        return rows


class HierarchicalObjective:
    """The per-step loss of a two-level model (exact when ``net.exact``, else one noise
    sample (eps1, eps2) per row from the per-seed streams)."""

    def __init__(self, net, config, x, y):
        from postcollapse.train.streams import Streams

        dev, dtype = net.device, net.dtype
        self.net = net
        self.moments = None
        self.exact = net.exact
        self.x = torch.as_tensor(x).to(dev, dtype)
        self.y = None if y is None else torch.as_tensor(y).to(dev, dtype)
        seeds = list(config.seeds)
        members = config.members
        self.seed_pos = torch.tensor([seeds.index(s) for _, s in members], device=dev)
        self.regroup = len(seeds) not in (1, len(members))
        self.streams = Streams(x.shape[0], config.batch_size, seeds,
                               noise_dim=None if self.exact else net.d1 + net.k2,
                               dtype=dtype, device=dev)

    def per_member(self, t: torch.Tensor) -> torch.Tensor:
        return t.index_select(0, self.seed_pos) if self.regroup else t

    def __call__(self, params, step: int):
        from postcollapse.models import hierarchical_exact_loss, hierarchical_sampled_loss

        xb, yb, eps = member_batch(self, step)
        if self.exact:
            return hierarchical_exact_loss(self.net, xb, yb, params=params)
        return hierarchical_sampled_loss(self.net, xb, yb, eps=eps, params=params)


class HierarchicalFamily:
    """The two-level VAE (``levels=2``)."""

    def build(self, config, summary: dict, device, mom):
        from postcollapse.models import BatchedHierarchicalVAE

        members = config.members
        return BatchedHierarchicalVAE(
            summary["d0"], summary["d2"], latent_dim=config.latent_dim,
            latent_dim2=config.latent_dim2, betas=[b for b, _ in members],
            betas2=config.beta2, encoder=config.encoder, decoder=config.decoder,
            sigma1=config.sigma1, hidden=config.hidden, seeds=[s for _, s in members],
            eta_enc=config.eta_enc, eta_dec=config.eta_dec,
            dtype=torch_dtype(config.dtype)).to(device)

    def objective(self, net, config, x, y, mom):
        return HierarchicalObjective(net, config, x, y)

    def theory(self, mom, config) -> dict:
        from postcollapse.theory import hierarchical_optimum, spectrum, thresholds

        spec = spectrum(mom)
        out = {"sigma_mode": "fixed" if config.sigma1 is not None else "learnable",
               "zeta": spec.zeta.tolist(),
               "thresholds": thresholds(spec, eta_dec=config.eta_dec).tolist(),
               "residual": float(spec.residual), "betas": [float(b) for b in config.betas],
               "beta2": config.beta2, "sigma1": config.sigma1}
        keys = ("min_loss", "regime", "active_level1", "active_level2", "zeta_threshold1",
                "zeta_threshold2", "active_modes")
        for key in keys:
            out[key] = []
        for b in config.betas:
            try:
                o = hierarchical_optimum(spec, latent_dim=config.latent_dim,
                                         latent_dim2=config.latent_dim2, beta=float(b),
                                         beta2=config.beta2, sigma1=config.sigma1,
                                         eta_enc=config.eta_enc, eta_dec=config.eta_dec)
            except ValueError:  # unbounded below (both variances learnable, beta2 < beta)
                vals = (float("-inf"), "unbounded", None, None, None, None, None)
            else:
                vals = (o.loss, o.regime, o.n_active_level1, o.n_active_level2,
                        o.zeta_threshold1, o.zeta_threshold2, o.n_active_level1)
            for key, v in zip(keys, vals, strict=True):
                out[key].append(v)
        return out

    @torch.no_grad()
    def rows(self, net, objective, config, state, theory, *, start_loss=None) -> list[dict]:
        from postcollapse.models import evaluate_hierarchical_loss, member_seed

        x, y = objective.x, objective.y
        gen = torch.Generator().manual_seed(member_seed(config.seeds[0], EVAL_STREAM))
        parts = evaluate_hierarchical_loss(net, x, y, n_eps=config.eval_samples,
                                           generator=gen)
        p = net.params()
        mu1, logvar1 = net.encode(x, params=p)
        n1 = _active(_cov(mu1), config.active_threshold)
        # Level 2 sees z1 = mu1 + S1^(1/2) eps1, not mu1: where sigma1^2 > b' it models pure
        # encoder noise (active without any signal from x). Linear: Cov(mu2) is exact.
        if net.exact:
            cov_z1 = _cov(mu1) + torch.diag_embed(torch.exp(logvar1[:, 0].double()))
            w2 = p["enc2_w"].double()
            cov2 = w2.transpose(1, 2) @ cov_z1 @ w2
        else:
            eps = torch.randn(mu1.shape, generator=gen, dtype=mu1.dtype).to(mu1.device)
            cov2 = _cov(net.encode2(mu1 + torch.exp(0.5 * logvar1) * eps, params=p))
        n2 = _active(cov2, config.active_threshold)
        s1 = torch.exp(0.5 * logvar1.double()).mean(1).cpu().numpy()
        s2 = torch.exp(0.5 * p["logvar2"].double()).cpu().numpy()
        d1 = net.d1
        kl1 = parts.kl_dims[:, :d1].sum(-1).cpu().numpy()
        kl2 = parts.kl_dims[:, d1:].sum(-1).cpu().numpy()
        loss, rec, kl = (t.cpu().numpy() for t in (parts.loss, parts.rec, parts.kl))
        conv, div, steps = (t.cpu().numpy() for t in
                            (state.converged, state.diverged, state.steps_done))
        rows = []
        for i, (b, s) in enumerate(config.members):
            bi = config.betas.index(b)
            th = theory["min_loss"][bi]
            gap = float(loss[i] / th - 1.0) if np.isfinite(th) and th != 0 else float("nan")
            row = {"beta": float(b), "seed": int(s), "loss": float(loss[i]),
                   "rec": float(rec[i]), "kl": float(kl[i]), "kl_level1": float(kl1[i]),
                   "kl_level2": float(kl2[i]), "active_level1": int(n1[i]),
                   "active_level2": int(n2[i]), "active_units": int(n1[i]),
                   "active_modes": int(n1[i])}
            row.update({f"sigma_{j + 1}": float(v) for j, v in enumerate(np.sort(s1[i])[::-1])})
            row.update({f"sigma2_{j + 1}": float(v)
                        for j, v in enumerate(np.sort(s2[i])[::-1])})
            row.update({"converged": bool(conv[i]), "diverged": bool(div[i]),
                        "steps": int(steps[i]), "wall_time": float(state.stop_time[i]),
                        "theory_loss": float(th), "theory_active": theory["active_modes"][bi],
                        "theory_active_level1": theory["active_level1"][bi],
                        "theory_active_level2": theory["active_level2"][bi],
                        "theory_gap": gap})
            rows.append(row)
        return rows


def _cov(mu: torch.Tensor) -> torch.Tensor:
    """Covariance over the rows (K, d, d) of mu (K, n, d), float64."""
    mu = mu.double()
    c = mu - mu.mean(1, keepdim=True)
    return c.transpose(1, 2) @ c / mu.shape[1]


def _active(cov: torch.Tensor, threshold: float) -> np.ndarray:
    """Eigenvalues of cov (K, d, d) above the active-variance ``threshold``, per member."""
    return (torch.linalg.eigvalsh(cov) > threshold).sum(1).cpu().numpy()


FAMILIES = {"vae": VAEFamily(), "free_bits": FreeBitsFamily(),
            "hierarchical": HierarchicalFamily()}
