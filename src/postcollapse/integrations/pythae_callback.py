"""A pythae ``TrainingCallback`` that logs collapse metrics every epoch.

pythae's trainers call ``on_epoch_begin`` with the data loaders and ``on_log`` with the
epoch's metrics dict, which every logging callback after this one (``WandbCallback``,
``MLFlowCallback``, ``CometCallback``, the console printer) receives: this callback adds
its ``collapse/...`` numbers to that dict, and writes a one-line summary to pythae's
logger. Pass it first in ``callbacks=[...]`` so the loggers after it see the numbers.

(mu, logvar) come from ``model.encoder(batch["data"])`` (pythae's ``embedding`` and
``log_covariance``, the log of the encoder variance), or from ``latents_fn(model, batch)``.

Needs ``pythae`` (``pip install 'postcollapse[pythae]'``).
"""

from __future__ import annotations

import torch

try:
    from pythae.trainers.training_callbacks import TrainingCallback
except ImportError:
    raise ImportError(
        "PythaeCollapseCallback needs pythae: pip install 'postcollapse[pythae]' "
        "(or pip install pythae)"
    ) from None

from postcollapse.integrations.reporter import CollapseReporter

__all__ = ["PythaeCollapseCallback"]


def _pythae_latents(model, batch):
    out = model.encoder(batch["data"])
    return out.embedding, out.log_covariance


class PythaeCollapseCallback(TrainingCallback):
    """Collapse metrics of a pythae model after every epoch, added to the trainer's logs.

    Parameters
    ----------
    latents_fn : callable, optional
        ``(model, batch) -> (mu, logvar)``; default: pythae's encoder output
        ``(embedding, log_covariance)`` of ``batch["data"]``.
    loader : {"eval", "train"} or iterable of batches, default "eval"
        The data for the end-of-epoch pass: the trainer's eval loader (the train loader
        when there is no eval set), its train loader, or your own batches (dicts with a
        ``"data"`` tensor unless ``latents_fn`` reads them otherwise).
    max_batches : int, optional
        Stop the pass after this many batches (default: the whole loader).
    data, effective_beta, latent_dim, prefix, per_dim, **monitor_kwargs
        As :class:`postcollapse.integrations.CollapseReporter`. For pythae's ``BetaVAE``
        (MSE loss) ``effective_beta(convention="pythae-betavae", beta=...)`` gives the
        effective beta.

    Attributes
    ----------
    reporter : CollapseReporter
        ``reporter.history``: the metrics of every epoch.
    """

    def __init__(self, latents_fn=None, *, loader="eval", max_batches=None, data=None,
                 effective_beta=None, latent_dim=None, prefix: str = "collapse/",
                 per_dim: bool = True, **monitor_kwargs):
        from postcollapse._checks import check_int_at_least

        if latents_fn is not None and not callable(latents_fn):
            raise TypeError("latents_fn must be callable: (model, batch) -> (mu, logvar)")
        if isinstance(loader, str) and loader not in ("eval", "train"):
            raise ValueError(f"loader must be 'eval', 'train' or batches, got {loader!r}")
        self.latents_fn = latents_fn or _pythae_latents
        self.loader = loader
        self.max_batches = (None if max_batches is None
                            else check_int_at_least("max_batches", max_batches, 1))
        self.reporter = CollapseReporter(data=data, effective_beta=effective_beta,
                                         latent_dim=latent_dim, prefix=prefix,
                                         per_dim=per_dim, **monitor_kwargs)
        self._loaders = {}
        self._pending = None

    def on_epoch_begin(self, training_config, **kwargs):
        self._loaders = {"train": kwargs.get("train_loader"), "eval": kwargs.get("eval_loader")}

    def _batches(self):
        if not isinstance(self.loader, str):
            return self.loader
        return self._loaders.get(self.loader) or self._loaders.get("train")

    def on_epoch_end(self, training_config, **kwargs):
        model = kwargs.get("model")
        batches = self._batches()
        if model is None or batches is None:
            return
        device = next(model.parameters()).device
        self.reporter.start()
        was_training = model.training
        model.eval()
        try:
            with torch.no_grad():
                for i, batch in enumerate(batches):
                    if self.max_batches is not None and i >= self.max_batches:
                        break
                    if isinstance(batch, dict) or hasattr(batch, "keys"):
                        batch = {k: (v.to(device) if torch.is_tensor(v) else v)
                                 for k, v in batch.items()}
                    mu, logvar = self.latents_fn(model, batch)
                    self.reporter.update(mu, logvar)
        finally:
            model.train(was_training)
        self._pending = self.reporter.finish() if self.reporter.monitor.n_samples else None

    def on_log(self, training_config, logs, **kwargs):
        if self._pending is None:
            return
        logs.update(self._pending)
        p = self.reporter.prefix
        m = self._pending
        line = (f"collapse: active units {m[p + 'active_units']:.0f}, KL {m[p + 'kl_total']:.4g} "
                f"nats, collapse rate {m[p + 'collapse_rate']:.3g}")
        if p + "predicted_modes" in m:
            line += f", predicted surviving modes {m[p + 'predicted_modes']:.0f}"
        logger = kwargs.get("logger")
        if logger is not None and kwargs.get("rank", -1) in (-1, 0):
            logger.info(line)
        self._pending = None
