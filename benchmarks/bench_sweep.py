"""Batched beta sweep vs the paper's per-beta PyTorch loop, side by side in one run.

ReLU VAE (hidden 8, Sigma(x) = Linear(x), latent 5) on 2,000 synthetic rows, 20 betas,
mini-batches of 128 (and full batch), the same number of Adam steps for both. The baseline
trains one torch.nn.Linear model with one torch.optim.Adam per beta, one after the other.
Prints steps/s of each and the ratio; the ideal is len(betas) (one batched step costing no
more than one single-model step).

    python benchmarks/bench_sweep.py            # 20 betas, 1000 steps
    python benchmarks/bench_sweep.py --smoke    # seconds
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch
from torch import nn

from postcollapse.data import synthetic
from postcollapse.train import sweep


class PaperVAE(nn.Module):
    """One model as the paper's scripts build it: nn.Linear layers, ReLU, Sigma(x) linear."""

    def __init__(self, d0=5, d1=5, d2=5, hidden=8):
        super().__init__()
        self.enc = nn.Sequential(nn.Linear(d0, hidden), nn.ReLU(), nn.Linear(hidden, d1))
        self.logvar = nn.Linear(d0, d1)
        self.dec = nn.Sequential(nn.Linear(d1, hidden), nn.ReLU(), nn.Linear(hidden, d2))

    def loss(self, x, y, beta):
        mu, logvar = self.enc(x), self.logvar(x)
        z = mu + torch.exp(0.5 * logvar) * torch.randn_like(mu)
        rec = ((self.dec(z) - y) ** 2).sum(1).mean() / 2
        kl = 0.5 * (mu**2 + logvar.exp() - 1 - logvar).sum(1).mean()
        return rec + beta * kl


def baseline(x, y, betas, steps, batch, lr):
    g = torch.Generator().manual_seed(0)
    n = x.shape[0]
    per_epoch = max(1, n // batch)
    idx = torch.cat([torch.randperm(n, generator=g)[: per_epoch * batch]
                     for _ in range(steps // per_epoch + 1)]).view(-1, batch)
    t0 = time.perf_counter()
    for beta in betas:
        torch.manual_seed(0)
        model = PaperVAE()
        opt = torch.optim.Adam(model.parameters(), lr=lr)
        for t in range(steps):
            b = idx[t]
            loss = model.loss(x[b], y[b], beta)
            opt.zero_grad()
            loss.backward()
            opt.step()
    return time.perf_counter() - t0


def batched(data, betas, steps, batch, lr):
    res = sweep(data, betas=betas, model="relu", sigma="linear", latent_dim=5, hidden=8,
                steps=steps, batch_size=batch, lr=lr, tol=0.0, device="cpu", eval_samples=1)
    return res.timing["train_time"]


def run(n_betas, steps, lr=1e-3):
    x_np, y_np = synthetic(n_samples=2000, d0=5, d2=5, seed=0)
    x = torch.tensor(x_np, dtype=torch.float32)
    y = torch.tensor(y_np, dtype=torch.float32)
    betas = list(np.geomspace(0.1, 30.0, n_betas))
    for label, batch in (("batch 128", 128), ("full batch", None)):
        bsz = 2000 if batch is None else batch
        batched((x_np, y_np), betas[:2], 5, batch, lr)  # warm-up both paths
        baseline(x, y, betas[:1], 5, bsz, lr)
        t_base = baseline(x, y, betas, steps, bsz, lr)
        t_batch = batched((x_np, y_np), betas, steps, batch, lr)
        single_rate = n_betas * steps / t_base  # one-model steps per second in the loop
        batch_rate = steps / t_batch  # K-member steps per second
        print(f"  {label:10s}: per-beta loop {t_base:7.2f} s ({single_rate:6.0f} single-model "
              f"steps/s); batched {t_batch:6.2f} s ({batch_rate:6.0f} {n_betas}-member steps/s)"
              f" -> ratio {t_base / t_batch:5.1f}x (limit {n_betas}x)")


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--smoke", action="store_true", help="tiny and fast")
    ap.add_argument("--betas", type=int, default=20)
    ap.add_argument("--steps", type=int, default=1000)
    args = ap.parse_args()
    n_betas, steps = (4, 40) if args.smoke else (args.betas, args.steps)
    default_threads = torch.get_num_threads()
    for threads in (1, default_threads) if default_threads > 1 else (1,):
        torch.set_num_threads(threads)
        print(f"threads={threads}, {n_betas} betas, {steps} steps")
        run(n_betas, steps)


if __name__ == "__main__":
    main()
