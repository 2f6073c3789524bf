"""A trained model against the theory: gap to the closed-form optimum, active modes."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from postcollapse._checks import check_int_at_least
from postcollapse.diagnostics._effective_beta import as_spectrum, predict_modes

__all__ = ["OptimumGap", "gap_to_optimum", "ActiveComparison", "compare_active_modes"]


@dataclass(frozen=True)
class OptimumGap:
    """Loss of a model minus the closed-form global minimum, in the units of L_VAE.

    Attributes
    ----------
    loss, min_loss, gap, relative_gap : float or ndarray (one value per beta)
        ``gap = loss - min_loss`` (>= 0 up to the error of ``loss``);
        ``relative_gap = gap / |min_loss|``.
    beta : float or ndarray
    """

    loss: float | np.ndarray
    min_loss: float | np.ndarray
    gap: float | np.ndarray
    relative_gap: float | np.ndarray
    beta: float | np.ndarray


def gap_to_optimum(
    data,
    *,
    beta,
    latent_dim: int,
    loss=None,
    params: dict | None = None,
    sigma: str = "learnable",
    eta_enc: float = 1.0,
    eta_dec: float = 1.0,
) -> OptimumGap:
    """How far a linear VAE's loss is above the closed-form minimum ``theory.min_loss``.

    Give either the measured ``loss`` (L_VAE as THEORY.md defines it: beta-weighted negative
    ELBO averaged over the data, without the log 2 pi constant, e.g. a sweep's ``loss``
    column) or the trained ``params`` (a dict with U (d2, d1), W (d0, d1), sigma2 (d1,),
    b_e (d1,), b_d (d2,)), whose exact loss is computed with ``theory.vae_loss``.

    Parameters
    ----------
    data : array (n, d0), tuple (x, y), Moments, Dataset, or (with ``loss``) Spectrum
    beta : float or array
        The model's beta (paper units: with ``eta_dec`` as given).
    latent_dim : int
    loss : float or array like ``beta``, optional
    params : dict, optional
    sigma : "learnable" or "prior"
        Which minimum to compare with (the model's Sigma family).
    eta_enc, eta_dec : float

    Returns
    -------
    OptimumGap
    """
    from postcollapse import theory
    from postcollapse.theory.moments import as_moments

    latent_dim = check_int_at_least("latent_dim", latent_dim, 1)
    if (loss is None) == (params is None):
        raise ValueError("pass exactly one of loss= (measured L_VAE) or params= (U, W, ...)")
    betas = np.asarray(beta, dtype=np.float64)
    scalar = betas.ndim == 0
    if params is not None:
        if not scalar:
            raise ValueError("params= describes one model: pass a single beta")
        missing = [k for k in ("U", "W", "sigma2", "b_e", "b_d") if k not in params]
        if missing:
            raise ValueError(f"params lacks {', '.join(missing)}; it needs U, W, sigma2, b_e, b_d")
        moments = as_moments(data)
        spec = theory.spectrum(moments)
        loss_arr = np.asarray(
            theory.vae_loss(
                moments, **{k: np.asarray(params[k], dtype=np.float64)
                            for k in ("U", "W", "sigma2", "b_e", "b_d")},
                beta=float(betas), eta_enc=eta_enc, eta_dec=eta_dec,
            ),
            dtype=np.float64,
        )
    else:
        spec = as_spectrum(data)
        loss_arr = np.asarray(loss, dtype=np.float64)
        if loss_arr.shape != betas.shape:
            raise ValueError(
                f"loss has shape {loss_arr.shape} but beta has shape {betas.shape}; one "
                "loss per beta"
            )
    lo = np.asarray(
        theory.min_loss(spec, np.atleast_1d(betas), latent_dim=latent_dim, sigma=sigma,
                        eta_enc=eta_enc, eta_dec=eta_dec),
        dtype=np.float64,
    ).reshape(betas.shape)
    gap = loss_arr - lo
    rel = gap / np.maximum(np.abs(lo), np.finfo(np.float64).tiny)
    if scalar:
        return OptimumGap(float(loss_arr), float(lo), float(gap), float(rel), float(betas))
    return OptimumGap(loss_arr, lo, gap, rel, betas)


@dataclass(frozen=True)
class ActiveComparison:
    """Predicted vs measured number of active latent dimensions.

    Attributes
    ----------
    predicted, measured : int
    agree : bool
    margin : float
        Log distance of ``effective_beta`` to the nearest threshold (see ModePrediction):
        disagreement with a small margin is expected (finite training, finite data).
    effective_beta : float
    thresholds : ndarray
    """

    predicted: int
    measured: int
    agree: bool
    margin: float
    effective_beta: float
    thresholds: np.ndarray


def compare_active_modes(
    measured, data, effective_beta: float, *, latent_dim: int | None = None
) -> ActiveComparison:
    """Compare a model's measured active units with the theory's prediction.

    Parameters
    ----------
    measured : int, bool array (latent_dim,), or CollapseSummary
        Active units of the trained model (``summary.active_units``).
    data : array (n, D), Moments, Spectrum or Dataset
    effective_beta : float
        ``beta * eta_dec^2`` of the model's loss (:func:`effective_beta`).
    latent_dim : int, optional

    Returns
    -------
    ActiveComparison
    """
    if hasattr(measured, "active_units"):
        if latent_dim is None:
            latent_dim = int(np.asarray(measured.kl).shape[-1])
        measured = measured.active_units
    m = np.asarray(measured)
    if m.dtype == bool:
        if latent_dim is None:
            latent_dim = int(m.shape[-1])
        measured_n = int(m.sum())
    elif m.ndim == 0 and np.issubdtype(m.dtype, np.integer):
        measured_n = int(m)
    else:
        raise TypeError(
            "measured must be an int, a boolean mask of active dimensions or a "
            f"CollapseSummary, got {type(measured).__name__}"
        )
    pred = predict_modes(data, effective_beta, latent_dim=latent_dim)
    return ActiveComparison(
        predicted=pred.active_modes,
        measured=measured_n,
        agree=pred.active_modes == measured_n,
        margin=pred.margin,
        effective_beta=pred.effective_beta,
        thresholds=pred.thresholds,
    )
