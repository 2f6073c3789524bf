"""Training-loop integrations: Lightning and pythae callbacks with the real packages (CPU)."""

from __future__ import annotations

import csv
import logging

import numpy as np
import pytest
import torch
from torch import nn

from postcollapse.diagnostics import collapse_metrics, effective_beta, predict_modes
from postcollapse.integrations import CollapseReporter


def _x(n=96, d=6, seed=0):
    rng = np.random.default_rng(seed)
    return (rng.normal(size=(n, d)) * np.linspace(2.0, 0.2, d)).astype(np.float32)


def _expected(mu, logvar):
    return collapse_metrics(mu, logvar)


def test_reporter_metrics_match_collapse_metrics():
    g = torch.Generator().manual_seed(0)
    mu = torch.randn(200, 3, generator=g) * torch.tensor([1.0, 0.3, 0.0])
    lv = torch.randn(200, 3, generator=g) * 0.1
    x = _x(200)
    rep = CollapseReporter(data=x, effective_beta=1.5, latent_dim=3)
    rep.start()
    rep.update(mu[:120], lv[:120])
    rep.update(mu[120:], lv[120:])
    m = rep.finish()
    s = _expected(mu, lv)
    assert m["collapse/active_units"] == s.active_units
    np.testing.assert_allclose(m["collapse/kl_total"], s.kl_total, rtol=1e-12)
    np.testing.assert_allclose([m[f"collapse/kl/{i}"] for i in range(3)], s.kl, rtol=1e-12)
    np.testing.assert_allclose(m["collapse/mi_total"], s.mi_total, rtol=1e-12)
    assert m["collapse/collapse_rate"] == s.collapse_rate
    assert m["collapse/predicted_modes"] == predict_modes(x, 1.5, latent_dim=3).active_modes
    with pytest.raises(ValueError, match="need both data .* and effective_beta"):
        CollapseReporter(data=x)
    rep.start()
    rep.update(mu * torch.tensor([1.0, 0.0, 0.0]), lv)
    rep.finish()
    lines = rep.report(unit="epoch").splitlines()
    assert len(lines) == 3
    assert lines[0].startswith(f"epoch   1  active units {s.active_units}  KL {s.kl_total:.3f}")
    assert lines[1].startswith("epoch   2  active units 1  ")
    pred = predict_modes(x, 1.5, latent_dim=3)
    assert lines[2] == (f"predicted surviving modes {pred.active_modes}, measured active units "
                        f"1 (margin {pred.margin:.2f})")
    assert CollapseReporter().report() == ""


# ---------------------------------------------------------------------------- Lightning
def _lightning_module(pl, d=6, k=3):
    class TinyVAE(pl.LightningModule):
        def __init__(self):
            super().__init__()
            self.enc = nn.Linear(d, 2 * k)
            self.dec = nn.Linear(k, d)

        def collapse_latents(self, batch):  # the documented hook
            mu, logvar = self.enc(batch[0]).chunk(2, dim=-1)
            return mu, logvar

        def training_step(self, batch, batch_idx):
            x = batch[0]
            mu, logvar = self.enc(x).chunk(2, dim=-1)
            z = mu + torch.randn_like(mu) * (0.5 * logvar).exp()
            se = ((self.dec(z) - x) ** 2).sum(-1).mean()
            kl = (0.5 * (logvar.exp() + mu**2 - 1 - logvar)).sum(-1).mean()
            return 0.5 * se + kl

        def configure_optimizers(self):
            return torch.optim.Adam(self.parameters(), lr=1e-2)

    return TinyVAE()


@pytest.mark.parametrize("clean_pass", [True, False])
def test_lightning_callback_logs_every_epoch(tmp_path, clean_pass):
    pl = pytest.importorskip("lightning.pytorch")
    from torch.utils.data import DataLoader, TensorDataset

    from postcollapse.integrations import CollapseCallback

    torch.manual_seed(0)
    x = _x()
    ds = TensorDataset(torch.from_numpy(x))
    eb = effective_beta(convention="pythae-vae")  # 0.5 SE + KL: beta * eta_dec^2 = 1
    cb = CollapseCallback(dataloader=DataLoader(ds, batch_size=48) if clean_pass else None,
                          data=x, effective_beta=eb, latent_dim=3, mi_samples=50)
    module = _lightning_module(pl)
    trainer = pl.Trainer(
        max_epochs=2, accelerator="cpu", logger=pl.loggers.CSVLogger(tmp_path),
        callbacks=[cb], enable_checkpointing=False, enable_progress_bar=False,
        enable_model_summary=False, log_every_n_steps=1,
    )
    trainer.fit(module, DataLoader(ds, batch_size=32))
    assert len(cb.reporter.history) == 2
    got = trainer.callback_metrics
    for key in ("collapse/kl_total", "collapse/active_units", "collapse/collapse_rate",
                "collapse/mi_total", "collapse/kl/0", "collapse/kl/2",
                "collapse/predicted_modes"):
        assert key in got, key
    assert float(got["collapse/predicted_modes"]) == predict_modes(x, 1.0, latent_dim=3) \
        .active_modes
    if clean_pass:  # the last epoch's pass = the final model's metrics on the whole data
        with torch.no_grad():
            mu, lv = module.collapse_latents((torch.from_numpy(x),))
        s = _expected(mu, lv)
        np.testing.assert_allclose(float(got["collapse/kl_total"]), s.kl_total, rtol=1e-5)
        assert float(got["collapse/active_units"]) == s.active_units
    # the logger wrote them: one row per epoch with the collapse columns
    rows = list(csv.DictReader(open(next(tmp_path.rglob("metrics.csv")))))
    logged = [r for r in rows if r.get("collapse/kl_total")]
    assert len(logged) == 2 and "collapse/mi/1" in rows[0]


def test_lightning_callback_needs_the_hook():
    pl = pytest.importorskip("lightning.pytorch")
    from torch.utils.data import DataLoader, TensorDataset

    from postcollapse.integrations import CollapseCallback

    module = _lightning_module(pl)
    module.collapse_latents = None  # as if the module did not define the hook
    trainer = pl.Trainer(max_epochs=1, accelerator="cpu", logger=False, callbacks=[
        CollapseCallback()], enable_checkpointing=False, enable_progress_bar=False,
        enable_model_summary=False)
    with pytest.raises(TypeError, match="collapse_latents"):
        trainer.fit(module, DataLoader(TensorDataset(torch.from_numpy(_x())), batch_size=32))


# ---------------------------------------------------------------------------- pythae
def test_pythae_callback_adds_metrics_to_the_logs(tmp_path, caplog):
    pytest.importorskip("pythae")
    from pythae.data.datasets import BaseDataset
    from pythae.models import BetaVAE, BetaVAEConfig
    from pythae.trainers import BaseTrainer, BaseTrainerConfig
    from pythae.trainers.training_callbacks import TrainingCallback

    from postcollapse.integrations import PythaeCollapseCallback

    class Recorder(TrainingCallback):
        def __init__(self):
            self.logs = []

        def on_log(self, training_config, logs, **kwargs):
            self.logs.append(dict(logs))

    torch.manual_seed(0)
    x = _x(80, 6)
    eb = effective_beta(convention="pythae-betavae", beta=2.0)
    model = BetaVAE(BetaVAEConfig(input_dim=(6,), latent_dim=3, beta=2.0))
    cfg = BaseTrainerConfig(output_dir=str(tmp_path), num_epochs=2, learning_rate=1e-2,
                            per_device_train_batch_size=40, per_device_eval_batch_size=40,
                            no_cuda=True)
    cb = PythaeCollapseCallback(data=x, effective_beta=eb, latent_dim=3, mi_samples=40)
    rec = Recorder()
    train = BaseDataset(torch.from_numpy(x), torch.zeros(len(x)))
    held = BaseDataset(torch.from_numpy(x[:40]), torch.zeros(40))
    trainer = BaseTrainer(model=model, train_dataset=train, eval_dataset=held,
                          training_config=cfg, callbacks=[cb, rec])
    with caplog.at_level(logging.INFO):
        trainer.train()
    assert len(rec.logs) == 2 and len(cb.reporter.history) == 2
    last = rec.logs[-1]
    for key in ("collapse/kl_total", "collapse/active_units", "collapse/collapse_rate",
                "collapse/mi_total", "collapse/kl/0", "collapse/predicted_modes",
                "train_epoch_loss"):
        assert key in last, key
    assert last["collapse/predicted_modes"] == predict_modes(x, 2.0, latent_dim=3).active_modes
    # the eval pass (40 rows) used the final encoder: same numbers recomputed here
    with torch.no_grad():
        out = model.encoder(torch.from_numpy(x[:40]))
    s = _expected(out.embedding, out.log_covariance)
    np.testing.assert_allclose(last["collapse/kl_total"], s.kl_total, rtol=1e-5)
    assert any("collapse: active units" in r.getMessage() for r in caplog.records)
