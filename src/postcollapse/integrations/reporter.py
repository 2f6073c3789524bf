"""``CollapseReporter``: a CollapseMonitor plus the theory's prediction, as flat metrics.

The Lightning and pythae callbacks are thin adapters around it; in a plain PyTorch loop use
it directly::

    reporter = CollapseReporter(data=X_train, effective_beta=eb, latent_dim=8)
    for epoch in range(n_epochs):
        ...  # train
        reporter.start()
        with torch.no_grad():
            for x in loader:
                reporter.update(*model.encode(x))   # (mu, logvar)
        metrics = reporter.finish()                  # {"collapse/kl_total": ..., ...}
"""

from __future__ import annotations

from postcollapse.diagnostics import CollapseMonitor, CollapseSummary, predict_modes

__all__ = ["CollapseReporter"]


class CollapseReporter:
    """Accumulate (mu, logvar) over one pass and turn the summary into loggable numbers.

    Parameters
    ----------
    data : array (n_samples, D), Moments, Spectrum or Dataset, optional
        The training data (or its moments / spectrum) for the predicted surviving modes.
    effective_beta : float or EffectiveBeta, optional
        ``beta * eta_dec^2`` of the loss being trained (from
        ``postcollapse.diagnostics.effective_beta``); with ``data`` it gives the
        prediction, logged as ``predicted_modes`` and ``margin``.
    latent_dim : int, optional
        Latent dimension (checked on every update; caps the predicted modes).
    prefix : str, default "collapse/"
        Prefix of every metric name.
    per_dim : bool, default True
        Also log ``kl/i`` and ``mi/i`` for each latent dimension i (0-based).
    **monitor_kwargs
        ``threshold``, ``epsilon``, ``delta``, ``eta_enc``, ``mi_samples``, ``seed`` of
        :class:`postcollapse.diagnostics.CollapseMonitor` (defaults 0.01, 0.01, 0.01, 1,
        500, 0).

    Attributes
    ----------
    monitor : CollapseMonitor
    prediction : ModePrediction or None
    history : list of dict
        The metrics of every finished pass.
    summary : CollapseSummary or None
        The last pass's summary.
    """

    def __init__(self, *, data=None, effective_beta=None, latent_dim: int | None = None,
                 prefix: str = "collapse/", per_dim: bool = True, **monitor_kwargs):
        if not isinstance(prefix, str):
            raise TypeError(f"prefix must be a str, got {type(prefix).__name__}")
        self.monitor = CollapseMonitor(latent_dim, **monitor_kwargs)
        self.prefix = prefix
        self.per_dim = bool(per_dim)
        self.prediction = None
        if (data is None) != (effective_beta is None):
            raise ValueError(
                "the predicted surviving modes need both data (array, Moments, Spectrum or "
                "Dataset) and effective_beta; pass both or neither"
            )
        if data is not None:
            self.prediction = predict_modes(data, float(effective_beta), latent_dim=latent_dim)
        self.history: list[dict] = []
        self.summary: CollapseSummary | None = None

    def start(self) -> None:
        """Begin a pass (forget the previous one)."""
        self.monitor.reset()

    def update(self, mu, logvar) -> None:
        """Add a batch of encoder outputs, each (batch, latent_dim) (detached inside)."""
        self.monitor.update(mu, logvar)

    def finish(self) -> dict[str, float]:
        """End the pass; return the metrics as ``{name: float}`` (also appended to history)."""
        s = self.monitor.summary()
        self.summary = s
        p = self.prefix
        out = {
            f"{p}kl_total": float(s.kl_total),
            f"{p}active_units": float(s.active_units),
            f"{p}collapse_rate": float(s.collapse_rate),
        }
        if s.mi is not None:
            out[f"{p}mi_total"] = float(s.mi_total)
        if self.per_dim:
            for i, v in enumerate(s.kl):
                out[f"{p}kl/{i}"] = float(v)
            if s.mi is not None:
                for i, v in enumerate(s.mi):
                    out[f"{p}mi/{i}"] = float(v)
        if self.prediction is not None:
            out[f"{p}predicted_modes"] = float(self.prediction.active_modes)
            out[f"{p}margin"] = float(self.prediction.margin)
        self.history.append(out)
        return out

    def report(self, *, unit: str = "pass") -> str:
        """A plain-text account of the run: one line per finished pass (active units, total
        KL, collapse rate, and total MI when measured), then the predicted surviving modes
        against the last pass's active units (when there is a prediction). ``unit`` names
        a pass in the lines ("epoch" when there is one pass per epoch).
        """
        p, lines = self.prefix, []
        for i, m in enumerate(self.history, 1):
            line = (f"{unit} {i:3d}  active units {m[f'{p}active_units']:.0f}  "
                    f"KL {m[f'{p}kl_total']:.3f}  collapse rate {m[f'{p}collapse_rate']:.2f}")
            if f"{p}mi_total" in m:
                line += f"  MI {m[f'{p}mi_total']:.3f}"
            lines.append(line)
        if self.prediction is not None and self.history:
            pred = self.prediction
            lines.append(f"predicted surviving modes {pred.active_modes}, measured active "
                         f"units {self.history[-1][f'{p}active_units']:.0f} (margin "
                         f"{pred.margin:.2f})")
        return "\n".join(lines)

