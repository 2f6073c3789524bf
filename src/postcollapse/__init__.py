"""postcollapse: predict, measure and explain posterior collapse in latent variable models.

The theory (``postcollapse.theory``) is pure numpy/scipy and is imported eagerly; the
torch-based parts (``models``, ``train``, ``diagnostics``) and ``figures`` are imported on
first use so that ``import postcollapse`` and the theory commands stay fast; so is the
scikit-learn estimator ``postcollapse.LinearVAE`` (``postcollapse.estimator``).
"""

from __future__ import annotations

import importlib

__version__ = "0.1.0"

_LAZY_SUBMODULES = (
    "theory", "data", "models", "train", "diagnostics", "figures", "scale", "integrations",
    "locate",
)

# Public classes imported on first use: name -> module.
_LAZY_NAMES = {"LinearVAE": "estimator"}

__all__ = ["__version__", "LinearVAE", *_LAZY_SUBMODULES]


def __getattr__(name: str):
    if name in _LAZY_SUBMODULES:
        return importlib.import_module(f"postcollapse.{name}")
    if name in _LAZY_NAMES:
        return getattr(importlib.import_module(f"postcollapse.{_LAZY_NAMES[name]}"), name)
    raise AttributeError(f"module 'postcollapse' has no attribute {name!r}")
