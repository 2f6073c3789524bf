"""Measured collapse thresholds: bracket each mode's critical beta to a relative width.

``postcollapse.locate(data, latent_dim=5, model="relu", seeds=range(3), rtol=0.01)`` returns a
:class:`LocateResult` (the package is callable: it calls :func:`locate`).

Layout: ``bracket`` (the pure bracketing / k-section state machine, no torch), ``run``
(rounds of batched training), ``results`` (ModeThreshold, LocateResult, the files).
"""

import sys
import types

from postcollapse.locate.bracket import Observations, SeedBracket, next_points, seed_bracket
from postcollapse.locate.results import (
    THRESHOLD_COLUMNS,
    LocateResult,
    ModeThreshold,
    load_locate,
)
from postcollapse.locate.run import LOCATE_ACTIVE_THRESHOLD, LOCATE_DEFAULTS, locate

__all__ = ["locate", "LocateResult", "ModeThreshold", "load_locate", "THRESHOLD_COLUMNS",
           "LOCATE_DEFAULTS", "LOCATE_ACTIVE_THRESHOLD", "Observations", "SeedBracket",
           "seed_bracket", "next_points"]


class _CallableModule(types.ModuleType):
    """``postcollapse.locate(...)`` calls :func:`locate`; ``postcollapse.locate.X`` is the
    package's name X."""

    def __call__(self, *args, **kwargs):
        return locate(*args, **kwargs)


sys.modules[__name__].__class__ = _CallableModule
