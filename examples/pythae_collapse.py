"""Collapse metrics in a pythae run: ``PythaeCollapseCallback``.

pythae's ``BetaVAE`` with its default MSE loss, 0.5 * squared error + beta * KL, has the
effective beta ``beta`` (``effective_beta(convention="pythae-betavae", beta=...)``): on the
MNIST subset complete collapse is predicted from beta = zeta_1^2 = 5.19 on. The callback
runs the encoder over the eval set after every epoch and adds ``collapse/...`` numbers to
the logs that pythae hands to its logging callbacks (wandb, mlflow, comet, console).

Measured (10 epochs, 4000 training digits, CPU): beta 2 -> 4 active units of 4
predicted; beta 8 -> 0 of 0 (complete collapse, KL 0.002 nats).

    python examples/pythae_collapse.py                        # beta 2: 4 of 4 predicted
    python examples/pythae_collapse.py --beta 8               # complete collapse
    python examples/pythae_collapse.py --epochs 2 --n-samples 1000   # the CI form

Needs ``pip install pythae`` (the ``pythae`` extra).
"""

from __future__ import annotations

import argparse
import logging
import tempfile

import numpy as np
import torch
from pythae.data.datasets import BaseDataset
from pythae.models import BetaVAE, BetaVAEConfig
from pythae.trainers import BaseTrainer, BaseTrainerConfig

from postcollapse.data import mnist
from postcollapse.diagnostics import effective_beta
from postcollapse.integrations import PythaeCollapseCallback


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--beta", type=float, default=2.0, help="BetaVAE beta (default 2)")
    p.add_argument("--latent-dim", type=int, default=4, help="latent dimension (default 4)")
    p.add_argument("--epochs", type=int, default=10, help="training epochs (default 10)")
    p.add_argument("--n-samples", type=int, default=5000, help="MNIST digits (default 5000)")
    p.add_argument("--seed", type=int, default=0, help="seed (default 0)")
    args = p.parse_args(argv)
    torch.manual_seed(args.seed)  # an example script, not library code
    logging.getLogger("pythae").setLevel(logging.WARNING)
    x = mnist()[np.random.default_rng(args.seed).permutation(5000)[: args.n_samples]]
    x = torch.from_numpy(x.astype(np.float32))
    n_eval = max(2, len(x) // 5)
    train = BaseDataset(x[n_eval:], torch.zeros(len(x) - n_eval))
    held = BaseDataset(x[:n_eval], torch.zeros(n_eval))

    eb = effective_beta(convention="pythae-betavae", beta=args.beta)
    cb = PythaeCollapseCallback(data=x.numpy()[n_eval:], effective_beta=eb,
                                latent_dim=args.latent_dim, mi_samples=200)
    model = BetaVAE(BetaVAEConfig(input_dim=(x.shape[1],), latent_dim=args.latent_dim,
                                  beta=args.beta))
    with tempfile.TemporaryDirectory() as out:
        cfg = BaseTrainerConfig(output_dir=out, num_epochs=args.epochs, learning_rate=1e-3,
                                per_device_train_batch_size=128,
                                per_device_eval_batch_size=500, no_cuda=True)
        BaseTrainer(model=model, train_dataset=train, eval_dataset=held, training_config=cfg,
                    callbacks=[cb]).train()
    pred = cb.reporter.prediction
    print(f"pythae BetaVAE beta = {args.beta:g}  ->  beta * eta_dec^2 = {eb.value:g}; "
          "thresholds " + ", ".join(f"{t:.3g}" for t in pred.thresholds[:5]) + ", ...")
    print(cb.reporter.report(unit="epoch"))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
