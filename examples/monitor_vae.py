"""Posterior collapse in a tutorial-style VAE, predicted before training and measured after.

The model and loss below are written the way most PyTorch VAE tutorials write them -- not
with postcollapse's models: an MLP encoder with ``fc_mu`` / ``fc_var`` heads, a sigmoid
decoder, ``F.mse_loss`` (mean over batch *and* pixels) plus ``kld_weight`` times the KL
(summed over latent dims, averaged over the batch). Two lines of postcollapse are added:

1. ``effective_beta(...)`` converts that loss into the paper's units, beta * eta_dec^2 =
   kld_weight * D / 2, and predicts from the data alone how many latent dimensions survive;
2. ``CollapseMonitor`` is fed (mu, logvar) inside the training loop and in a final pass,
   and reports the active units that the model actually kept.

The MNIST subset's thresholds are zeta_i^2 = 5.19, 3.82, 3.28, 2.87, 2.53, 2.31, 1.75, ...
(kld_weight = 2 zeta_i^2 / 784). Two settings far from every threshold:

- the default ``--kld-weight 0.0051 --latent-dim 4``: beta * eta_dec^2 = 2.0, below
  zeta_4^2 = 2.87 (margin 36 %): all 4 dimensions survive;
- ``--kld-weight 0.0204``: beta * eta_dec^2 = 8.0, above zeta_1^2 = 5.19 (margin 54 %):
  complete collapse, every dimension is at the prior -- the classic "my VAE ignores its
  latent code", explained before training.

Inside a gap between two thresholds the agreement is harder to reach with this nonlinear
model in a short run: the last surviving mode gains only ~(zeta_k^2 - b)^2 / zeta_k^2 in the
loss, and we measured one dimension fewer than predicted with the sigmoid decoder (5 vs 6 at
kld_weight 0.0051 with --latent-dim 8, lr 3e-3; 0 vs 1 at 0.0114) after 30-60 epochs.

Learned decoder variance (``--learned-variance --beta B``): many VAEs train the decoder's
sigma instead of fixing it ("calibrated decoders"). The loss is then the Gaussian NLL with a
trained log-variance plus beta * KL, and the thresholds are the learned-variance ones,
beta_i* = D zeta_i^2 / (r + sum_{j>=i} zeta_j^2 + (i-1) zeta_i^2) = 77.1, 58.2, 51.1, 45.8,
41.5, ... on the MNIST subset -- an order of magnitude above the fixed-variance 5.19, 3.82,
... because the learned variance absorbs the variance the collapsed modes discard. Next to
the fixed-variance runs above:

- ``--learned-variance --beta 20``: all 4 dimensions survive (beta_4* = 45.8);
- ``--learned-variance --beta 120``: complete collapse (beta_1* = 77.1); with eta_dec fixed
  at 1 the same beta would be 23 times past the first threshold.

    python examples/monitor_vae.py                          # full run (~20-30 s on a CPU core)
    python examples/monitor_vae.py --kld-weight 0.0204      # complete collapse
    python examples/monitor_vae.py --epochs 15 --n-samples 2000   # the reduced CI form
    python examples/monitor_vae.py --learned-variance --beta 20   # learned decoder variance
"""

from __future__ import annotations

import argparse
import math
import sys
import time

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from postcollapse.data import mnist
from postcollapse.diagnostics import CollapseMonitor, effective_beta


class VAE(nn.Module):
    """The usual MLP VAE: x -> hidden -> (mu, log_var); z -> hidden -> sigmoid(x_hat)."""

    def __init__(self, in_dim: int = 784, hidden: int = 256, latent_dim: int = 5,
                 sigmoid: bool = True, log_var_dec: float | None = None):
        super().__init__()
        # A trained decoder log-variance (one scalar), or None for a fixed variance.
        self.log_var_dec = (None if log_var_dec is None
                            else nn.Parameter(torch.tensor(float(log_var_dec))))
        self.encoder = nn.Sequential(nn.Linear(in_dim, hidden), nn.ReLU())
        self.fc_mu = nn.Linear(hidden, latent_dim)
        self.fc_var = nn.Linear(hidden, latent_dim)
        self.decoder = nn.Sequential(
            nn.Linear(latent_dim, hidden), nn.ReLU(), nn.Linear(hidden, in_dim),
            nn.Sigmoid() if sigmoid else nn.Identity(),
        )

    def encode(self, x):
        h = self.encoder(x)
        return self.fc_mu(h), self.fc_var(h)

    def reparameterize(self, mu, log_var):
        std = torch.exp(0.5 * log_var)
        return mu + torch.randn_like(std) * std

    def forward(self, x):
        mu, log_var = self.encode(x)
        return self.decoder(self.reparameterize(mu, log_var)), mu, log_var


def loss_function(recons, x, mu, log_var, kld_weight):
    recons_loss = F.mse_loss(recons, x)
    kld_loss = torch.mean(-0.5 * torch.sum(1 + log_var - mu**2 - log_var.exp(), dim=1), dim=0)
    return recons_loss + kld_weight * kld_loss


def nll_loss_function(recons, x, mu, log_var, log_var_dec, beta):
    """Gaussian NLL with a trained variance v = exp(log_var_dec), summed over pixels,
    plus beta * KL, both averaged over the batch: the per-example beta-NLL."""
    d = x.shape[1]
    se = ((recons - x) ** 2).sum(1)
    nll = 0.5 * se * torch.exp(-log_var_dec) + 0.5 * d * (math.log(2 * math.pi) + log_var_dec)
    kld = -0.5 * torch.sum(1 + log_var - mu**2 - log_var.exp(), dim=1)
    return torch.mean(nll + beta * kld)


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--epochs", type=int, default=30)
    p.add_argument("--kld-weight", type=float, default=0.0051)
    p.add_argument("--learned-variance", action="store_true",
                   help="train the decoder variance: Gaussian NLL + beta * KL (use --beta)")
    p.add_argument("--beta", type=float, default=20.0,
                   help="beta of the beta-NLL with --learned-variance (default 20)")
    p.add_argument("--n-samples", type=int, default=5000, help="MNIST digits (<= 5000)")
    p.add_argument("--latent-dim", type=int, default=4)
    p.add_argument("--hidden", type=int, default=256)
    p.add_argument("--batch-size", type=int, default=128)
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--no-sigmoid", action="store_true", help="linear decoder output")
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    return p.parse_args(argv)


def main(argv=None) -> int:
    args = parse_args(argv)
    torch.manual_seed(args.seed)  # an example script, not library code
    x_all = mnist()  # (5000, 784) float64 in [0, 1], ordered by digit class
    if not 2 <= args.n_samples <= len(x_all):
        raise SystemExit(f"--n-samples must be in [2, {len(x_all)}], got {args.n_samples}")
    rows = np.random.default_rng(args.seed).permutation(len(x_all))[: args.n_samples]
    x_np = x_all[np.sort(rows)]  # a random subset keeps all ten digits
    n, d = x_np.shape

    # 1. theory, before training: the loss convention in the paper's units, and thresholds
    print(f"data: {n} MNIST digits, D = {d}; latent_dim = {args.latent_dim}")
    if args.learned_variance:
        eb = effective_beta(recon="gaussian-nll", eta_dec="learn", kl="sum",
                            kld_weight=args.beta, latent_dim=args.latent_dim, data=x_np)
        unit = "beta"
        print(f"loss = Gaussian NLL (trained variance) + {args.beta:g} * KL  ->  beta = "
              f"{eb.value:.4g} (learned decoder variance)")
        print("learned-variance thresholds beta_i*: "
              + ", ".join(f"{t:.3g}" for t in eb.prediction.thresholds[:6]) + ", ...")
    else:
        eb = effective_beta(recon="mse-mean", kl="sum", kld_weight=args.kld_weight,
                            latent_dim=args.latent_dim, data=x_np)
        unit = "beta * eta_dec^2"
        print(f"loss = F.mse_loss + {args.kld_weight:g} * KL  ->  beta * eta_dec^2 = "
              f"{eb.value:.4g}  (= kld_weight * D / 2)")
        print("thresholds zeta_i^2: "
              + ", ".join(f"{t:.3g}" for t in eb.prediction.thresholds[:6]) + ", ...")
    pred = eb.prediction
    hi = "inf" if pred.interval[1] == float("inf") else f"{pred.interval[1]:.3g}"
    print(f"predicted surviving dimensions: {pred.active_modes}   (same for {unit} in "
          f"[{pred.interval[0]:.3g}, {hi}), margin {pred.margin:.2f})")

    # 2. train the user's model, with the monitor plugged into the loop
    device = torch.device(args.device)
    x = torch.as_tensor(x_np, dtype=torch.float32, device=device)
    # A learned variance starts at the data's mean variance per pixel (that of a fully
    # collapsed model), so a short run need not first walk log v down from 0.
    start = float(np.log(x_np.var(0).mean())) if args.learned_variance else None
    model = VAE(d, args.hidden, args.latent_dim, sigmoid=not args.no_sigmoid,
                log_var_dec=start).to(device)
    opt = torch.optim.Adam(model.parameters(), lr=args.lr)
    monitor = CollapseMonitor(latent_dim=args.latent_dim, mi_samples=0)
    gen = torch.Generator(device="cpu").manual_seed(args.seed)
    t0 = time.perf_counter()
    for epoch in range(args.epochs):
        monitor.reset()
        perm = torch.randperm(n, generator=gen).to(device)
        total = 0.0
        for i in range(0, n, args.batch_size):
            xb = x[perm[i:i + args.batch_size]]
            recons, mu, log_var = model(xb)
            if args.learned_variance:
                loss = nll_loss_function(recons, xb, mu, log_var, model.log_var_dec, args.beta)
            else:
                loss = loss_function(recons, xb, mu, log_var, args.kld_weight)
            opt.zero_grad()
            loss.backward()
            opt.step()
            monitor.update(mu, log_var)  # detached inside; costs a few vector ops
            total += loss.item() * xb.shape[0]
        if epoch == 0 or (epoch + 1) % max(1, args.epochs // 5) == 0 or epoch + 1 == args.epochs:
            s = monitor.summary()
            print(f"epoch {epoch + 1:3d}  loss {total / n:.5f}  active units {s.active_units}"
                  f"  KL/dim " + " ".join(f"{k:.3f}" for k in s.kl), file=sys.stderr)

    # 3. a clean pass over the data with the trained encoder
    monitor = CollapseMonitor(latent_dim=args.latent_dim, mi_samples=500, seed=args.seed)
    model.eval()
    with torch.no_grad():
        for i in range(0, n, 1000):
            monitor.update(*model.encode(x[i:i + 1000]))
    s = monitor.summary()
    print(f"trained {args.epochs} epochs in {time.perf_counter() - t0:.1f} s")
    if args.learned_variance:
        print(f"learned decoder std eta_dec = {float(model.log_var_dec.exp().sqrt()):.4g}")
    print(f"{'dim':>4}  {'KL':>8}  {'Var(mu)':>9}  {'sigma':>7}  {'MI':>7}  active")
    for i in range(args.latent_dim):
        print(f"{i + 1:>4}  {s.kl[i]:>8.4f}  {s.mu_var[i]:>9.4g}  {s.sigma_mean[i]:>7.3f}  "
              f"{s.mi[i]:>7.3f}  {'yes' if s.active[i] else 'no'}")
    agree = s.active_units == pred.active_modes
    print(f"predicted active dimensions: {pred.active_modes}   measured: {s.active_units}   "
          f"{'agree' if agree else 'DISAGREE'}")
    print(f"RESULT effective_beta={eb.value:.6g} predicted={pred.active_modes} "
          f"measured={s.active_units} agree={agree}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
