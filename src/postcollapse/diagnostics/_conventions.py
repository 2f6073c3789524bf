"""The loss conventions of popular VAE libraries, as coefficients of ``effective_beta``.

Each :class:`LossConvention` spells (a_R, a_K) of one library's loss, read from the
library's own source (file and version in ``source``). Pure Python: no torch, no numpy.
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["BERNOULLI_EXPLANATION", "BernoulliDecoderError", "LOSS_CONVENTIONS",
           "LossConvention", "convention"]

BERNOULLI_EXPLANATION = (
    "the closed-form thresholds hold for Gaussian decoders (squared-error or Gaussian-NLL "
    "reconstruction), so a Bernoulli / BCE loss has no beta * eta_dec^2 to convert to; "
    "measure this model's thresholds by training it over a range of betas "
    "(`postcollapse locate`), or use a squared-error reconstruction to get a prediction"
)


class BernoulliDecoderError(ValueError):
    """The loss has a Bernoulli (binary cross-entropy) reconstruction term.

    The linear theory's thresholds are those of a Gaussian decoder; there is no
    ``beta * eta_dec^2`` for a BCE loss. Measure the thresholds by training instead.
    """


@dataclass(frozen=True)
class LossConvention:
    """The loss of one library's VAE, as the coefficients of :func:`effective_beta`.

    The library's loss per batch is ``recon_weight * RECON + w * KL`` with RECON of type
    ``recon`` (None: Bernoulli / BCE, not convertible), KL summed over latent dimensions and
    both terms averaged over the batch unless ``batch`` says otherwise; ``w`` is the product
    of the library hyperparameters named in ``weights`` (defaults from the library's config
    in ``defaults``; a name without default must be passed).

    Attributes
    ----------
    name : str
    library : str
        Library and model class (and loss option).
    source : str
        The source file the loss was read from, with the version or commit.
    loss : str
        The loss as the library computes it.
    recon : str or None
        One of RECON_CONVENTIONS, or None for a Bernoulli (BCE) reconstruction.
    recon_weight : float
    weights : tuple of str
        Hyperparameters whose product is the KL weight w.
    defaults : dict
        Library defaults of those hyperparameters.
    batch : str
        How both terms are reduced over the batch ("mean" or "sum").
    note : str
        Caveats (printed with the result).
    """

    name: str
    library: str
    source: str
    loss: str
    recon: str | None
    recon_weight: float = 1.0
    weights: tuple[str, ...] = ()
    defaults: dict | None = None
    batch: str = "mean"
    note: str = ""

    @property
    def bernoulli(self) -> bool:
        return self.recon is None


_PYTHAE = "pythae 0.1.2, src/pythae/models/{0}/{0}_model.py (clementchadebec/benchmark_VAE)"
_ANTIXK = "AntixK/PyTorch-VAE, models/{} (commit {})"
_KL_TORCH = "-0.5 * sum(1 + log_var - mu^2 - exp(log_var), latent)"

#: Named loss conventions of popular VAE libraries (name -> LossConvention).
LOSS_CONVENTIONS: dict[str, LossConvention] = {
    c.name: c
    for c in (
        LossConvention(
            "pythae-vae", "pythae VAE, reconstruction_loss='mse' (the default)",
            _PYTHAE.format("vae"),
            "mean_batch(0.5 * sum_features (recon_x - x)^2 + KLD), KLD = " + _KL_TORCH,
            "mse-sum", recon_weight=0.5,
        ),
        LossConvention(
            "pythae-betavae", "pythae BetaVAE, reconstruction_loss='mse' (the default)",
            _PYTHAE.format("beta_vae"),
            "mean_batch(0.5 * sum_features (recon_x - x)^2 + beta * KLD)",
            "mse-sum", recon_weight=0.5, weights=("beta",), defaults={"beta": 1.0},
        ),
        LossConvention(
            "pythae-vae-bce", "pythae VAE, reconstruction_loss='bce'", _PYTHAE.format("vae"),
            "mean_batch(sum_features BCE(recon_x, x) + KLD)", None,
        ),
        LossConvention(
            "pythae-betavae-bce", "pythae BetaVAE, reconstruction_loss='bce'",
            _PYTHAE.format("beta_vae"),
            "mean_batch(sum_features BCE(recon_x, x) + beta * KLD)", None,
            weights=("beta",), defaults={"beta": 1.0},
        ),
        LossConvention(
            "pytorch-vae-vanilla", "PyTorch-VAE (AntixK) VanillaVAE",
            _ANTIXK.format("vanilla_vae.py", "2946d7a"),
            "F.mse_loss(recons, input) + kld_weight * mean_batch(KLD); kld_weight = "
            "kwargs['M_N'] (the config's kld_weight)",
            "mse-mean", weights=("kld_weight",),
        ),
        LossConvention(
            "pytorch-vae-beta-h", "PyTorch-VAE (AntixK) BetaVAE, loss_type='H' (Higgins)",
            _ANTIXK.format("beta_vae.py", "db41da7"),
            "F.mse_loss(recons, input) + beta * kld_weight * mean_batch(KLD)",
            "mse-mean", weights=("beta", "kld_weight"), defaults={"beta": 4.0},
        ),
        LossConvention(
            "pytorch-vae-beta-b", "PyTorch-VAE (AntixK) BetaVAE, loss_type='B' (Burgess)",
            _ANTIXK.format("beta_vae.py", "db41da7"),
            "F.mse_loss(recons, input) + gamma * kld_weight * |mean_batch(KLD) - C|, C ramped "
            "from 0 to max_capacity over Capacity_max_iter steps",
            "mse-mean", weights=("gamma", "kld_weight"), defaults={"gamma": 1000.0},
            note=(
                "valid only while the batch KL exceeds the capacity C (then the loss is a "
                "beta-VAE's minus a constant); below C the term pushes the KL up and the "
                "collapse theory does not apply"
            ),
        ),
        LossConvention(
            "pytorch-examples-vae", "PyTorch examples VAE (vae/main.py)",
            "pytorch/examples, vae/main.py (commit 0a8329c)",
            "sum_batch(BCE(recon_x, x) summed over pixels) + continuous-Bernoulli log "
            "normaliser + sum_batch(KLD)", None, batch="sum",
        ),
        LossConvention(
            "keras-vae", "Keras VAE example (keras.io/examples/generative/vae)",
            "keras-team/keras-io, examples/generative/vae.py (commit 09e02e1)",
            "mean_batch(sum_pixels binary_crossentropy(data, reconstruction)) + "
            "mean_batch(sum_latent -0.5 (1 + z_log_var - z_mean^2 - exp(z_log_var)))", None,
        ),
    )
}


def convention(name) -> LossConvention:
    """The :class:`LossConvention` named ``name`` (or ``name`` itself when it is one)."""
    if isinstance(name, LossConvention):
        return name
    if name not in LOSS_CONVENTIONS:
        raise ValueError(
            f"unknown convention {name!r}; choose one of {', '.join(LOSS_CONVENTIONS)}"
        )
    return LOSS_CONVENTIONS[name]
