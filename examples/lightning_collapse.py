"""Collapse metrics in a PyTorch Lightning run: ``CollapseCallback``.

A small MLP VAE on the MNIST subset, written as a LightningModule with the one extra method
the callback needs, ``collapse_latents(batch) -> (mu, logvar)``. The loss is pythae's
convention, 0.5 * squared error + beta * KL, so the effective beta is ``beta`` itself
(``effective_beta(convention="pythae-betavae", beta=...)``); with the data it predicts how
many latent dimensions survive. Every epoch the callback logs ``collapse/kl/i``,
``collapse/active_units``, ``collapse/collapse_rate``, ``collapse/mi_total`` and
``collapse/predicted_modes`` to the Trainer's logger (a CSV logger here).

Measured (10 epochs, 5000 digits, CPU): beta 2 -> 4 active units of 4 predicted;
beta 8 -> 0 of 0 (complete collapse, KL 0.001 nats).

    python examples/lightning_collapse.py                     # beta 2: 4 of 4 predicted
    python examples/lightning_collapse.py --beta 8            # above zeta_1^2: collapse
    python examples/lightning_collapse.py --epochs 2 --n-samples 1000   # the CI form

Needs ``pip install lightning`` (the ``lightning`` extra).
"""

from __future__ import annotations

import argparse
import tempfile

import lightning.pytorch as pl
import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from postcollapse.data import mnist
from postcollapse.diagnostics import effective_beta
from postcollapse.integrations import CollapseCallback


class LitVAE(pl.LightningModule):
    def __init__(self, d: int, latent_dim: int, beta: float, hidden: int = 256, lr=1e-3):
        super().__init__()
        self.beta, self.lr = beta, lr
        self.encoder = nn.Sequential(nn.Linear(d, hidden), nn.ReLU())
        self.fc_mu, self.fc_var = nn.Linear(hidden, latent_dim), nn.Linear(hidden, latent_dim)
        self.decoder = nn.Sequential(nn.Linear(latent_dim, hidden), nn.ReLU(),
                                     nn.Linear(hidden, d))

    def collapse_latents(self, batch):
        """The callback's hook: encoder mean and log-variance of a batch."""
        h = self.encoder(batch[0])
        return self.fc_mu(h), self.fc_var(h)

    def training_step(self, batch, batch_idx):
        x = batch[0]
        mu, logvar = self.collapse_latents(batch)
        z = mu + torch.randn_like(mu) * torch.exp(0.5 * logvar)
        se = ((self.decoder(z) - x) ** 2).sum(-1)
        kl = -0.5 * (1 + logvar - mu**2 - logvar.exp()).sum(-1)
        loss = (0.5 * se + self.beta * kl).mean()
        self.log("train_loss", loss, on_epoch=True, on_step=False)
        return loss

    def configure_optimizers(self):
        return torch.optim.Adam(self.parameters(), lr=self.lr)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--beta", type=float, default=2.0, help="KL weight (default 2)")
    p.add_argument("--latent-dim", type=int, default=4, help="latent dimension (default 4)")
    p.add_argument("--epochs", type=int, default=10, help="training epochs (default 10)")
    p.add_argument("--n-samples", type=int, default=5000, help="MNIST digits (default 5000)")
    p.add_argument("--seed", type=int, default=0, help="seed (default 0)")
    args = p.parse_args(argv)
    pl.seed_everything(args.seed, verbose=False)  # an example script, not library code
    x = mnist()[np.random.default_rng(args.seed).permutation(5000)[: args.n_samples]]
    x = x.astype(np.float32)
    eb = effective_beta(convention="pythae-betavae", beta=args.beta)
    ds = TensorDataset(torch.from_numpy(x))
    cb = CollapseCallback(dataloader=DataLoader(ds, batch_size=500), data=x,
                          effective_beta=eb, latent_dim=args.latent_dim, mi_samples=200)
    with tempfile.TemporaryDirectory() as logdir:
        trainer = pl.Trainer(max_epochs=args.epochs, accelerator="cpu", callbacks=[cb],
                             logger=pl.loggers.CSVLogger(logdir), enable_checkpointing=False,
                             enable_progress_bar=False, enable_model_summary=False)
        trainer.fit(LitVAE(x.shape[1], args.latent_dim, args.beta),
                    DataLoader(ds, batch_size=128, shuffle=True))
    pred = cb.reporter.prediction
    print(f"beta * eta_dec^2 = {eb.value:g}; thresholds "
          + ", ".join(f"{t:.3g}" for t in pred.thresholds[:5]) + ", ...")
    print(cb.reporter.report(unit="epoch"))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
