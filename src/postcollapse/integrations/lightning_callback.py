"""A PyTorch Lightning ``Callback`` that logs collapse metrics every epoch.

The hook
--------
The callback needs the encoder's (mu, logvar) for a batch. Either the LightningModule
defines ::

    def collapse_latents(self, batch):
        x = batch[0] if isinstance(batch, (list, tuple)) else batch
        h = self.encoder(x)
        return self.fc_mu(h), self.fc_var(h)        # each (batch, latent_dim)

or the callback gets ``latents_fn(pl_module, batch) -> (mu, logvar)``. ``logvar`` is the log
of the encoder variance sigma^2 (the usual ``log_var`` head).

Which data
----------
With ``dataloader`` the callback makes one pass over it at the end of every training epoch
(``torch.no_grad()``, module in eval mode, then back): a clean reading of that epoch's
encoder. Without it, it feeds the monitor from the training batches as they come (one extra
no-grad encoder call per batch), which mixes the encoders of a whole epoch.

Needs ``lightning`` (``pip install lightning``) or ``pytorch-lightning``.
"""

from __future__ import annotations

import torch

try:
    import lightning.pytorch as pl
except ImportError:  # pragma: no cover - the older package name
    try:
        import pytorch_lightning as pl
    except ImportError:
        raise ImportError(
            "CollapseCallback needs PyTorch Lightning: pip install 'postcollapse[lightning]' "
            "(or pip install lightning)"
        ) from None

from postcollapse.integrations.reporter import CollapseReporter

__all__ = ["CollapseCallback"]


def _module_latents(pl_module, batch):
    fn = getattr(pl_module, "collapse_latents", None)
    if not callable(fn):
        raise TypeError(
            f"{type(pl_module).__name__} has no collapse_latents(batch) -> (mu, logvar); "
            "define it or pass latents_fn=(module, batch) -> (mu, logvar) to CollapseCallback"
        )
    return fn(batch)


class CollapseCallback(pl.Callback):
    """Log collapse metrics of the user's LightningModule to the Trainer's logger.

    Logged every ``every_n_epochs`` training epochs through ``pl_module.log_dict`` (so
    they reach every logger and ``trainer.callback_metrics``), named ``collapse/...``:
    ``kl_total``, ``kl/i`` (per dimension), ``active_units``, ``collapse_rate``
    ((epsilon, delta)), ``mi_total``, ``mi/i`` and, given data and the effective beta,
    ``predicted_modes`` and ``margin``.

    Parameters
    ----------
    latents_fn : callable, optional
        ``(pl_module, batch) -> (mu, logvar)``; default ``pl_module.collapse_latents(batch)``.
    dataloader : iterable of batches, optional
        Data for one clean pass at each epoch end; default: the training batches.
    data, effective_beta, latent_dim, prefix, per_dim, **monitor_kwargs
        As :class:`postcollapse.integrations.CollapseReporter` (data + effective_beta give
        the predicted surviving modes).
    every_n_epochs : int, default 1

    Attributes
    ----------
    reporter : CollapseReporter
        ``reporter.history`` holds the metrics of every logged epoch and
        ``reporter.summary`` the last full :class:`CollapseSummary`.
    """

    def __init__(self, latents_fn=None, *, dataloader=None, data=None, effective_beta=None,
                 latent_dim=None, every_n_epochs: int = 1, prefix: str = "collapse/",
                 per_dim: bool = True, **monitor_kwargs):
        super().__init__()
        from postcollapse._checks import check_int_at_least

        if latents_fn is not None and not callable(latents_fn):
            raise TypeError("latents_fn must be callable: (pl_module, batch) -> (mu, logvar)")
        self.latents_fn = latents_fn or _module_latents
        self.dataloader = dataloader
        self.every_n_epochs = check_int_at_least("every_n_epochs", every_n_epochs, 1)
        self.reporter = CollapseReporter(data=data, effective_beta=effective_beta,
                                         latent_dim=latent_dim, prefix=prefix,
                                         per_dim=per_dim, **monitor_kwargs)

    def _due(self, trainer) -> bool:
        return (trainer.current_epoch + 1) % self.every_n_epochs == 0

    def on_train_epoch_start(self, trainer, pl_module):
        self.reporter.start()

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        if self.dataloader is not None or not self._due(trainer):
            return
        with torch.no_grad():
            mu, logvar = self.latents_fn(pl_module, batch)
        self.reporter.update(mu, logvar)

    def on_train_epoch_end(self, trainer, pl_module):
        if not self._due(trainer):
            return
        if self.dataloader is not None:
            self.reporter.start()
            was_training = pl_module.training
            pl_module.eval()
            try:
                with torch.no_grad():
                    for batch in self.dataloader:
                        batch = pl_module.transfer_batch_to_device(batch, pl_module.device, 0)
                        mu, logvar = self.latents_fn(pl_module, batch)
                        self.reporter.update(mu, logvar)
            finally:
                pl_module.train(was_training)
        if self.reporter.monitor.n_samples == 0:
            return
        metrics = self.reporter.finish()
        pl_module.log_dict(metrics, on_step=False, on_epoch=True, prog_bar=False,
                           logger=True)
