"""Collapse diagnostics inside the training loops users already have.

- :class:`CollapseCallback` (``postcollapse.integrations.lightning_callback``): a PyTorch
  Lightning ``Callback``; needs ``lightning`` (or ``pytorch-lightning``), the optional
  extra ``postcollapse[lightning]``.
- :class:`PythaeCollapseCallback` (``postcollapse.integrations.pythae_callback``): a pythae
  ``TrainingCallback``; needs ``pythae``, the extra ``postcollapse[pythae]``.
- :class:`CollapseReporter` (``postcollapse.integrations.reporter``): the shared part, for
  a plain PyTorch loop: feed (mu, logvar) batches, get a flat dict of metrics per epoch.

Every epoch they log per-dimension KL, active units, the (epsilon, delta) collapse rate,
the mutual-information estimate and, given data (or a spectrum) and the loss's effective
beta (``postcollapse.diagnostics.effective_beta``), the predicted number of surviving
modes. Each name is imported on first use, so the optional packages are needed only by the
callback that uses them.
"""

from __future__ import annotations

import importlib

_LAZY = {
    "CollapseCallback": "lightning_callback",
    "PythaeCollapseCallback": "pythae_callback",
    "CollapseReporter": "reporter",
}

__all__ = ["CollapseCallback", "CollapseReporter", "PythaeCollapseCallback"]


def __getattr__(name: str):
    if name in _LAZY:
        module = importlib.import_module(f"postcollapse.integrations.{_LAZY[name]}")
        return getattr(module, name)
    raise AttributeError(f"module 'postcollapse.integrations' has no attribute {name!r}")
