"""Convert a user's loss convention into the paper's units ``beta * eta_dec^2``.

Pure Python / numpy: importing this module does not import torch.

The algebra
-----------
The paper's objective per sample (THEORY.md, "Model and objective"), averaged over the
batch, is

    L = 1/(2 eta_dec^2) * SE + beta * KL

with SE = ||x_hat - x||^2 summed over the D features and KL summed over the K latent
dimensions. Multiplying a loss by a positive constant does not move its minimisers, so
only the *ratio* of the two coefficients matters:

    coefficient of KL / coefficient of SE = beta / (1/(2 eta_dec^2)) = 2 beta eta_dec^2.

Hence, for any loss of the form  a_R * <SE>  +  a_K * <KL>  (<.> = batch mean, SE summed
over features, KL summed over latent dimensions) the equivalent paper setting is

    beta * eta_dec^2 = a_K / (2 a_R).                                          (EB)

Every supported convention only changes a_R and a_K:

==========================  ===============================================  =========
user's term                 what it is, per batch                             factor
==========================  ===============================================  =========
``mse-sum``                 R * sum_features (x_hat - x)^2                    a_R = R
``mse-mean``                R * mean_features (x_hat - x)^2                   a_R = R/D
``gaussian-nll``            R * [SE/(2 eta^2) + (D/2) log(2 pi eta^2)]        a_R = R/(2 eta^2)
``gaussian-nll-mean``       the same, averaged over the D features            a_R = R/(2 eta^2 D)
KL ``sum``                  w * sum_latent KL_i                               a_K = w
KL ``mean``                 w * mean_latent KL_i                              a_K = w/K
batch ``sum`` (either term) summed instead of averaged over a batch of B      factor B
==========================  ===============================================  =========

(the log-constant of the Gaussian NLL does not depend on the parameters). Examples:

- ``F.mse_loss(x_hat, x) + kld_weight * KL`` (torch's default ``reduction="mean"``
  averages over batch *and* features; KL summed over latent dims, averaged over the
  batch):  beta eta_dec^2 = kld_weight * D / 2. On MNIST (D = 784) kld_weight = 0.01
  means beta eta_dec^2 = 3.92.
- ``F.mse_loss(x_hat, x, reduction="sum") + KL`` with KL also summed over the batch:
  beta eta_dec^2 = 1/2 (the "eta_dec^2 = 1/2" reading of a sum-reduced MSE).
- Gaussian NLL with fixed eta_dec plus ``kld_weight * KL``: beta eta_dec^2 =
  kld_weight * eta_dec^2 / R  (beta = kld_weight / R, the textbook beta-VAE).
- Summing or averaging *both* terms over the batch changes nothing; summing the
  reconstruction but averaging the KL divides beta eta_dec^2 by B, averaging the
  reconstruction but summing the KL multiplies it by B. (A smaller last batch then has a
  different effective beta: use ``drop_last=True`` or average both.)

What is not covered: losses that are not Gaussian in the reconstruction (Bernoulli /
BCE), a *learned* decoder variance (then eta_dec is a parameter, not a convention), KL
annealing schedules (the value applies to the weight at the end of training), and free
bits / KL thresholds.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from postcollapse._checks import check_choice, check_int_at_least, check_positive

__all__ = [
    "RECON_CONVENTIONS",
    "KL_CONVENTIONS",
    "BATCH_REDUCTIONS",
    "EffectiveBeta",
    "effective_beta",
    "predict_modes",
    "ModePrediction",
    "as_spectrum",
]

RECON_CONVENTIONS = ("mse-sum", "mse-mean", "gaussian-nll", "gaussian-nll-mean")
KL_CONVENTIONS = ("sum", "mean")
BATCH_REDUCTIONS = ("mean", "sum")


@dataclass(frozen=True)
class ModePrediction:
    """Which latent modes the theory says survive at a given ``beta * eta_dec^2``.

    Attributes
    ----------
    effective_beta : float
        ``beta * eta_dec^2``.
    thresholds : ndarray, shape (d*,)
        Critical values zeta_i^2 (descending) in the same units: mode i survives iff
        zeta_i^2 > beta * eta_dec^2.
    active_modes : int
        Predicted number of surviving modes (at most ``latent_dim`` when given).
    interval : (float, float)
        The range ``lo <= beta*eta_dec^2 < hi`` with the same number of active modes.
    margin : float
        Distance to the nearest edge of ``interval`` in log units,
        ``min(log(b/lo), log(hi/b))`` (inf where an edge is 0 or inf): predictions are
        robust only when this is not small (0.1 = 10 % away from a threshold).
    latent_dim : int or None
    """

    effective_beta: float
    thresholds: np.ndarray
    active_modes: int
    interval: tuple[float, float]
    margin: float
    latent_dim: int | None

    def to_dict(self) -> dict:
        return {
            "effective_beta": self.effective_beta,
            "thresholds": [float(t) for t in self.thresholds],
            "active_modes": self.active_modes,
            "interval": [float(self.interval[0]), float(self.interval[1])],
            "margin": float(self.margin),
            "latent_dim": self.latent_dim,
        }


@dataclass(frozen=True)
class EffectiveBeta:
    """Result of :func:`effective_beta`; ``float(result)`` is ``beta * eta_dec^2``.

    Attributes
    ----------
    value : float
        ``beta * eta_dec^2`` in the paper's units.
    recon_coef, kl_coef : float
        a_R and a_K of the module docstring (coefficients of the batch-mean summed SE and
        the batch-mean summed KL in the user's loss).
    prediction : ModePrediction or None
        Thresholds and predicted surviving modes on ``data`` (None without data).
    """

    value: float
    recon_coef: float
    kl_coef: float
    prediction: ModePrediction | None = None

    def __float__(self) -> float:
        return self.value

    def to_dict(self) -> dict:
        out = {
            "effective_beta": self.value,
            "recon_coef": self.recon_coef,
            "kl_coef": self.kl_coef,
        }
        if self.prediction is not None:
            pred = self.prediction.to_dict()
            pred.pop("effective_beta")
            out.update(pred)
        return out


def effective_beta(
    *,
    recon: str = "mse-mean",
    kl: str = "sum",
    kld_weight: float = 1.0,
    recon_weight: float = 1.0,
    eta_dec: float | None = None,
    dim: int | None = None,
    latent_dim: int | None = None,
    recon_batch: str = "mean",
    kl_batch: str = "mean",
    batch_size: int | None = None,
    data=None,
) -> EffectiveBeta:
    """``beta * eta_dec^2`` of a loss ``recon_weight * RECON + kld_weight * KL``.

    See the module docstring for the derivation: beta * eta_dec^2 = a_K / (2 a_R).

    Parameters
    ----------
    recon : {"mse-sum", "mse-mean", "gaussian-nll", "gaussian-nll-mean"}
        Reconstruction term: squared error summed / averaged over the D features, or the
        Gaussian negative log-likelihood with fixed std ``eta_dec``, summed / averaged
        over features.
    kl : {"sum", "mean"}
        KL to the prior summed / averaged over the K latent dimensions.
    kld_weight, recon_weight : float > 0
        The weights w and R in ``R * RECON + w * KL``.
    eta_dec : float > 0, optional
        Decoder std of the Gaussian NLL; required for the ``gaussian-nll`` conventions,
        rejected for the MSE ones (they have no eta_dec: the answer is beta * eta_dec^2).
    dim : int, optional
        D, the number of reconstructed features; required when averaging over features.
        With ``data`` it defaults to the data's dimension.
    latent_dim : int, optional
        K, the number of latent dimensions; required when ``kl="mean"``; also caps the
        predicted active modes.
    recon_batch, kl_batch : {"mean", "sum"}
        How each term is reduced over the batch.
    batch_size : int, optional
        B; required only when the two batch reductions differ.
    data : optional
        A data set to predict surviving modes on: an array (n_samples, D), a
        ``postcollapse.theory.Moments`` or ``Spectrum``, or an object with a
        ``moments()`` method (``postcollapse.data.Dataset``).

    Returns
    -------
    EffectiveBeta
        ``.value`` (also ``float(result)``) and, with ``data``, ``.prediction``.
    """
    recon = check_choice("recon", recon, RECON_CONVENTIONS)
    kl = check_choice("kl", kl, KL_CONVENTIONS)
    recon_batch = check_choice("recon_batch", recon_batch, BATCH_REDUCTIONS)
    kl_batch = check_choice("kl_batch", kl_batch, BATCH_REDUCTIONS)
    w = check_positive("kld_weight", kld_weight)
    r = check_positive("recon_weight", recon_weight)
    if latent_dim is not None:
        latent_dim = check_int_at_least("latent_dim", latent_dim, 1)

    spec = None
    if data is not None:
        spec = as_spectrum(data)
        data_dim = int(spec.d2)
        if dim is not None and int(dim) != data_dim:
            raise ValueError(
                f"dim={dim} disagrees with the data, which has {data_dim} features; "
                "drop dim or pass matching data"
            )
        dim = data_dim
    if dim is not None:
        dim = check_int_at_least("dim", dim, 1)

    if recon.startswith("gaussian-nll"):
        if eta_dec is None:
            raise ValueError(f"recon={recon!r} needs eta_dec (the decoder std of the NLL)")
        eta = check_positive("eta_dec", eta_dec)
        a_r = r / (2.0 * eta * eta)
    else:
        if eta_dec is not None:
            raise ValueError(
                f"eta_dec applies only to the gaussian-nll conventions, not recon={recon!r}; "
                "the result is already beta * eta_dec^2"
            )
        a_r = r
    if recon.endswith("-mean"):
        if dim is None:
            raise ValueError(f"recon={recon!r} averages over features: pass dim (D) or data")
        a_r /= dim

    a_k = w
    if kl == "mean":
        if latent_dim is None:
            raise ValueError("kl='mean' averages over latent dimensions: pass latent_dim (K)")
        a_k /= latent_dim

    if recon_batch != kl_batch:
        if batch_size is None:
            raise ValueError(
                f"recon_batch={recon_batch!r} and kl_batch={kl_batch!r} differ, so the "
                "result depends on the batch size: pass batch_size"
            )
        b = check_int_at_least("batch_size", batch_size, 1)
        if recon_batch == "sum":
            a_r *= b
        else:
            a_k *= b

    value = a_k / (2.0 * a_r)
    prediction = None if spec is None else predict_modes(spec, value, latent_dim=latent_dim)
    return EffectiveBeta(value=float(value), recon_coef=float(a_r), kl_coef=float(a_k),
                         prediction=prediction)


def as_spectrum(data):
    """A ``theory.Spectrum`` of the diagnostics' ``data`` argument.

    ``data`` is a ``Spectrum`` (returned as it is), or anything
    :func:`postcollapse.theory.moments.as_moments` takes (``Moments``, ``Dataset``,
    ``(x, y)`` tuple), or an array-like of shape (n_samples, n_features).
    """
    from postcollapse import theory
    from postcollapse.theory.moments import as_moments

    if isinstance(data, theory.Spectrum):
        return data
    if not (isinstance(data, tuple | theory.Moments) or callable(getattr(data, "moments", None))):
        data = np.asarray(data, dtype=np.float64)
        if data.ndim != 2:
            raise ValueError(
                "data must be an array (n_samples, n_features), Moments, Spectrum or "
                f"Dataset; got an array of shape {data.shape}"
            )
    return theory.spectrum(as_moments(data))


def predict_modes(data, effective_beta: float, *, latent_dim: int | None = None) -> ModePrediction:
    """Predicted surviving modes at ``beta * eta_dec^2 = effective_beta`` on ``data``.

    Parameters
    ----------
    data : array (n_samples, D), Moments, Spectrum or Dataset
        The (plain) data set; its covariance spectrum zeta_i^2 gives the thresholds.
    effective_beta : float > 0
        ``beta * eta_dec^2`` (for example ``effective_beta(...).value``).
    latent_dim : int, optional
        Caps the number of modes (only the first ``latent_dim`` can be active).

    Returns
    -------
    ModePrediction
    """
    from postcollapse import theory

    b = check_positive("effective_beta", effective_beta)
    if latent_dim is not None:
        latent_dim = check_int_at_least("latent_dim", latent_dim, 1)
    spec = as_spectrum(data)
    thr = np.asarray(theory.thresholds(spec), dtype=np.float64)
    k = int(theory.active_modes(spec, b, latent_dim=latent_dim))
    if latent_dim is not None and k == latent_dim:
        # capped by the latent dimension: the interval reaches down to 0 for this count
        lo = 0.0
        hi = float(thr[k - 1]) if k - 1 < len(thr) else 0.0
    else:
        lo, hi = (float(v) for v in theory.beta_interval(spec, k))
    with np.errstate(divide="ignore"):
        m_lo = np.inf if lo <= 0 else np.log(b / lo)
        m_hi = np.inf if not np.isfinite(hi) else np.log(hi / b)
    thr.setflags(write=False)
    return ModePrediction(
        effective_beta=b,
        thresholds=thr,
        active_modes=k,
        interval=(lo, hi),
        margin=float(min(m_lo, m_hi)),
        latent_dim=latent_dim,
    )
