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
- Gaussian NLL with a *learned* decoder variance (sigma trained with the model,
  ``eta_dec="learn"``): the loss R * NLL + w * KL, NLL = SE/(2 v) + (D/2) log(2 pi v) with v
  a parameter, is R times the beta-NLL at beta = w / R (w D / R when averaged over
  features). There is no beta * eta_dec^2 here: v settles where the reconstruction leaves
  it, so the value returned is that beta and the modes are predicted with the
  learned-variance thresholds beta_i* = D zeta_i^2 / (r + sum_{j>=i} zeta_j^2 +
  (i-1) zeta_i^2) (THEORY.md, "Learned decoder variance"; learnable encoder variance).
- Summing or averaging *both* terms over the batch changes nothing; summing the
  reconstruction but averaging the KL divides beta eta_dec^2 by B, averaging the
  reconstruction but summing the KL multiplies it by B. (A smaller last batch then has a
  different effective beta: use ``drop_last=True`` or average both.)

Named conventions
-----------------
``effective_beta(convention=NAME, ...)`` spells (a_R, a_K) for the loss code of popular VAE
libraries, each read from the library's own source (``LOSS_CONVENTIONS`` lists them with the
file and version; :class:`LossConvention` documents the fields). The library's own
hyperparameters are passed by their names (``beta``, ``kld_weight``, ``gamma``).

What is not covered: losses that are not Gaussian in the reconstruction (Bernoulli /
BCE: the closed form and its thresholds hold for Gaussian decoders, so such a model's
thresholds are measured by training it, see :data:`BERNOULLI_EXPLANATION`), KL annealing schedules
(the value applies to the weight at the end of training), and free bits / KL thresholds.

How close to a threshold is too close
-------------------------------------
``ModePrediction.margin`` is the log distance of beta * eta_dec^2 to the nearest edge of
its interval; below :data:`NEAR_THRESHOLD_MARGIN` (0.1, about 10 %) the predicted count is
flagged as uncertain. Trained nonlinear VAEs have been measured one surviving mode away
from the prediction at margins of 7-8 %, in both directions (one kept a mode fewer than
predicted, another one more), so no direction is implied.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from postcollapse._checks import check_choice, check_int_at_least, check_positive
from postcollapse.diagnostics._conventions import (
    BERNOULLI_EXPLANATION,
    LOSS_CONVENTIONS,
    BernoulliDecoderError,
    LossConvention,
)
from postcollapse.diagnostics._conventions import (
    convention as lookup_convention,
)

__all__ = [
    "BERNOULLI_EXPLANATION",
    "BernoulliDecoderError",
    "LOSS_CONVENTIONS",
    "LossConvention",
    "NEAR_THRESHOLD_MARGIN",
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

#: Log margin below which a predicted mode count is flagged as near a threshold (~10 %).
NEAR_THRESHOLD_MARGIN = 0.1

@dataclass(frozen=True)
class ModePrediction:
    """Which latent modes the theory says survive at a given ``beta * eta_dec^2``.

    Attributes
    ----------
    effective_beta : float
        ``beta * eta_dec^2``; with ``learned_variance`` the beta of the beta-NLL.
    thresholds : ndarray, shape (d*,)
        Critical values zeta_i^2 (descending) in the same units: mode i survives iff
        zeta_i^2 > beta * eta_dec^2; with ``learned_variance`` the learned-variance
        critical betas D zeta_i^2 / (r + sum_{j>=i} zeta_j^2 + (i-1) zeta_i^2).
    active_modes : int
        Predicted number of surviving modes (at most ``latent_dim`` when given).
    interval : (float, float)
        The range ``lo <= beta*eta_dec^2 < hi`` with the same number of active modes.
    margin : float
        Distance to the nearest edge of ``interval`` in log units,
        ``min(log(b/lo), log(hi/b))`` (inf where an edge is 0 or inf): predictions are
        robust only when this is not small; ``near_threshold`` flags margins below
        NEAR_THRESHOLD_MARGIN = 0.1 (about 10 %), where a trained model has been seen to
        keep one mode more or one fewer than predicted.
    latent_dim : int or None
    learned_variance : bool
        True when the decoder variance is learned (thresholds in units of beta).
    """

    effective_beta: float
    thresholds: np.ndarray
    active_modes: int
    interval: tuple[float, float]
    margin: float
    latent_dim: int | None
    learned_variance: bool = False

    @property
    def near_threshold(self) -> bool:
        """True when the margin is below NEAR_THRESHOLD_MARGIN (the count may be off by one)."""
        return bool(self.margin < NEAR_THRESHOLD_MARGIN)

    def to_dict(self, *, top: int | None = None) -> dict:
        """JSON-ready fields; ``top`` keeps only the ``top`` largest thresholds (None: all)."""
        thr = self.thresholds if top is None else self.thresholds[:top]
        return {
            "effective_beta": self.effective_beta,
            "thresholds": [float(t) for t in thr],
            "n_modes": int(self.thresholds.size),
            "near_threshold": self.near_threshold,
            "active_modes": self.active_modes,
            "interval": [float(self.interval[0]), float(self.interval[1])],
            "margin": float(self.margin),
            "latent_dim": self.latent_dim,
            "learned_variance": self.learned_variance,
        }


@dataclass(frozen=True)
class EffectiveBeta:
    """Result of :func:`effective_beta`; ``float(result)`` is ``beta * eta_dec^2``.

    Attributes
    ----------
    value : float
        ``beta * eta_dec^2`` in the paper's units; with a learned decoder variance
        (``learned_variance``) the beta of the equivalent beta-NLL.
    recon_coef, kl_coef : float
        a_R and a_K of the module docstring (coefficients of the batch-mean summed SE and
        the batch-mean summed KL in the user's loss).
    prediction : ModePrediction or None
        Thresholds and predicted surviving modes on ``data`` (None without data).
    convention : LossConvention or None
        The named convention used, if any.
    learned_variance : bool
        True for a Gaussian NLL with a learned decoder variance; then ``recon_coef`` is the
        coefficient of the batch-mean NLL summed over features.
    """

    value: float
    recon_coef: float
    kl_coef: float
    prediction: ModePrediction | None = None
    convention: LossConvention | None = None
    learned_variance: bool = False

    def __float__(self) -> float:
        return self.value

    def to_dict(self, *, top: int | None = None) -> dict:
        """JSON-ready fields; ``top`` caps the thresholds listed (None: all)."""
        out = {
            "effective_beta": self.value,
            "recon_coef": self.recon_coef,
            "kl_coef": self.kl_coef,
            "learned_variance": self.learned_variance,
        }
        if self.convention is not None:
            c = self.convention
            out.update(convention=c.name, library=c.library, source=c.source, loss=c.loss,
                       note=c.note)
        if self.prediction is not None:
            pred = self.prediction.to_dict(top=top)
            pred.pop("effective_beta")
            out.update(pred)
        return out


def effective_beta(
    *,
    convention: str | None = None,
    recon: str | None = None,
    kl: str | None = None,
    kld_weight: float | None = None,
    recon_weight: float | None = None,
    beta: float | None = None,
    gamma: float | None = None,
    eta_dec: float | str | None = None,
    dim: int | None = None,
    latent_dim: int | None = None,
    recon_batch: str | None = None,
    kl_batch: str | None = None,
    batch_size: int | None = None,
    data=None,
) -> EffectiveBeta:
    """``beta * eta_dec^2`` of a loss ``recon_weight * RECON + kld_weight * KL``.

    See the module docstring for the derivation: beta * eta_dec^2 = a_K / (2 a_R).

    Parameters
    ----------
    convention : str, optional
        A named library loss (a key of ``LOSS_CONVENTIONS``, e.g. ``"pythae-betavae"``,
        ``"pytorch-vae-vanilla"``); it fixes ``recon``, ``kl``, ``recon_weight`` and the
        batch reductions, which must then not be passed. Its hyperparameters are passed by
        the library's names (``beta``, ``kld_weight``, ``gamma``). Bernoulli (BCE)
        conventions raise :class:`BernoulliDecoderError` with the explanation.
    recon : {"mse-sum", "mse-mean", "gaussian-nll", "gaussian-nll-mean"}, default "mse-mean"
        Reconstruction term: squared error summed / averaged over the D features, or the
        Gaussian negative log-likelihood with fixed std ``eta_dec``, summed / averaged
        over features. ``"bce"`` raises :class:`BernoulliDecoderError`.
    kl : {"sum", "mean"}, default "sum"
        KL to the prior summed / averaged over the K latent dimensions.
    kld_weight, recon_weight : float > 0, default 1
        The weights w and R in ``R * RECON + w * KL``. With a convention, ``kld_weight``
        is the library's own ``kld_weight`` (PyTorch-VAE's ``M_N``) where it has one.
    beta, gamma : float > 0, optional
        A convention's ``beta`` / ``gamma`` hyperparameter (default: the library's).
    eta_dec : float > 0 or "learn", optional
        Decoder std of the Gaussian NLL; required for the ``gaussian-nll`` conventions,
        rejected for the MSE ones (they have no eta_dec: the answer is beta * eta_dec^2).
        ``"learn"``: the NLL's variance is a trained parameter; the result is then the beta
        of the beta-NLL (``learned_variance``) and, with ``data``, the modes are predicted
        with the learned-variance thresholds (see the module docstring).
    dim : int, optional
        D, the number of reconstructed features; required when averaging over features.
        With ``data`` it defaults to the data's dimension.
    latent_dim : int, optional
        K, the number of latent dimensions; required when ``kl="mean"``; also caps the
        predicted active modes.
    recon_batch, kl_batch : {"mean", "sum"}, default "mean"
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
    conv = None
    if convention is not None:
        conv = lookup_convention(convention)
        recon, kl, w, r, recon_batch, kl_batch = _convention_terms(
            conv, recon=recon, kl=kl, recon_weight=recon_weight, recon_batch=recon_batch,
            kl_batch=kl_batch, beta=beta, gamma=gamma, kld_weight=kld_weight)
    else:
        recon, kl, w, r, recon_batch, kl_batch = _given_terms(
            recon=recon, kl=kl, recon_weight=recon_weight, recon_batch=recon_batch,
            kl_batch=kl_batch, beta=beta, gamma=gamma, kld_weight=kld_weight)
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

    a_r, learned = _recon_coefficient(recon, r, eta_dec=eta_dec, dim=dim)
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

    value = a_k / a_r if learned else a_k / (2.0 * a_r)
    prediction = None if spec is None else predict_modes(
        spec, value, latent_dim=latent_dim, learned_variance=learned)
    return EffectiveBeta(value=float(value), recon_coef=float(a_r), kl_coef=float(a_k),
                         prediction=prediction, convention=conv, learned_variance=learned)


def _convention_terms(conv: LossConvention, *, recon, kl, recon_weight, recon_batch,
                      kl_batch, beta, gamma, kld_weight):
    """(recon, kl, w, R, recon_batch, kl_batch) of a named library convention."""
    fixed = {"recon": recon, "kl": kl, "recon_weight": recon_weight,
             "recon_batch": recon_batch, "kl_batch": kl_batch}
    given = [k for k, v in fixed.items() if v is not None]
    if given:
        raise ValueError(
            f"convention={conv.name!r} fixes {', '.join(given)}; drop "
            f"{'it' if len(given) == 1 else 'them'} or drop the convention"
        )
    hyper = {"beta": beta, "gamma": gamma, "kld_weight": kld_weight}
    extra = [k for k, v in hyper.items() if v is not None and k not in conv.weights]
    if extra:
        takes = ", ".join(conv.weights) if conv.weights else "no KL weight"
        raise ValueError(f"convention={conv.name!r} has no {extra[0]} (it takes {takes})")
    if conv.bernoulli:
        raise BernoulliDecoderError(f"{conv.name} ({conv.library}): {BERNOULLI_EXPLANATION}")
    w = 1.0
    defaults = conv.defaults or {}
    for k in conv.weights:
        v = hyper[k] if hyper[k] is not None else defaults.get(k)
        if v is None:
            raise ValueError(f"convention={conv.name!r} needs {k} (the value in your config)")
        w *= check_positive(k, v)
    return conv.recon, "sum", w, conv.recon_weight, conv.batch, conv.batch


def _given_terms(*, recon, kl, recon_weight, recon_batch, kl_batch, beta, gamma, kld_weight):
    """(recon, kl, w, R, recon_batch, kl_batch) of a loss spelled out term by term."""
    if beta is not None or gamma is not None:
        raise ValueError(
            "beta and gamma are a named convention's hyperparameters: pass convention= "
            "or use kld_weight"
        )
    if recon == "bce":
        raise BernoulliDecoderError(f"recon='bce': {BERNOULLI_EXPLANATION}")
    recon = check_choice("recon", "mse-mean" if recon is None else recon, RECON_CONVENTIONS)
    kl = check_choice("kl", "sum" if kl is None else kl, KL_CONVENTIONS)
    recon_batch = check_choice("recon_batch", recon_batch or "mean", BATCH_REDUCTIONS)
    kl_batch = check_choice("kl_batch", kl_batch or "mean", BATCH_REDUCTIONS)
    w = check_positive("kld_weight", 1.0 if kld_weight is None else kld_weight)
    r = check_positive("recon_weight", 1.0 if recon_weight is None else recon_weight)
    return recon, kl, w, r, recon_batch, kl_batch


def _recon_coefficient(recon: str, r: float, *, eta_dec, dim) -> tuple[float, bool]:
    """a_R of the reconstruction term (per feature summed), and whether the decoder
    variance is learned (then a_R is the NLL's own coefficient)."""
    learned = False
    if recon.startswith("gaussian-nll"):
        if eta_dec is None:
            raise ValueError(f"recon={recon!r} needs eta_dec (the decoder std of the NLL, or "
                             "'learn' when it is trained)")
        if isinstance(eta_dec, str):
            check_choice("eta_dec", eta_dec, ("learn",))
            learned = True
            a_r = r  # coefficient of the NLL itself: beta-NLL at beta = a_K / a_R
        else:
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
    return a_r, learned


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


def predict_modes(data, effective_beta: float, *, latent_dim: int | None = None,
                  learned_variance: bool = False) -> ModePrediction:
    """Predicted surviving modes at ``beta * eta_dec^2 = effective_beta`` on ``data``.

    Parameters
    ----------
    data : array (n_samples, D), Moments, Spectrum or Dataset
        The (plain) data set; its covariance spectrum zeta_i^2 gives the thresholds.
    effective_beta : float > 0
        ``beta * eta_dec^2`` (for example ``effective_beta(...).value``).
    latent_dim : int, optional
        Caps the number of modes (only the first ``latent_dim`` can be active).
    learned_variance : bool, default False
        The decoder variance is learned: ``effective_beta`` is the beta of the beta-NLL and
        the learned-variance thresholds apply (``theory.thresholds(spec, eta_dec="learn")``,
        learnable encoder variance).

    Returns
    -------
    ModePrediction
    """
    from postcollapse import theory

    b = check_positive("effective_beta", effective_beta)
    if latent_dim is not None:
        latent_dim = check_int_at_least("latent_dim", latent_dim, 1)
    spec = as_spectrum(data)
    eta = theory.LEARN if learned_variance else 1.0
    thr = np.asarray(theory.thresholds(spec, eta_dec=eta), dtype=np.float64)
    k = int(theory.active_modes(spec, b, latent_dim=latent_dim, eta_dec=eta))
    if latent_dim is not None and k == latent_dim:
        # capped by the latent dimension: the interval reaches down to 0 for this count
        lo = 0.0
        hi = float(thr[k - 1]) if k - 1 < len(thr) else 0.0
    else:
        lo, hi = (float(v) for v in theory.beta_interval(spec, k, eta_dec=eta))
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
        learned_variance=bool(learned_variance),
    )
