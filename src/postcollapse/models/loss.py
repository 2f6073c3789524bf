"""L_VAE of a K-member model, exactly as THEORY.md defines it (no log 2 pi constant).

    L_VAE = 1/(2 eta_dec^2) E_x E_eps || dec(mu(x) + sigma(x) eps) - y ||^2
          + beta * KL,   KL = E_x sum_i KL( N(mu_i, sigma_i^2) || N(0, eta_enc^2) )

``rec`` is the first term and ``kl`` the (unweighted) KL, so ``loss = rec + beta * kl``;
``kl_dims`` splits ``kl`` over the latent dimensions. When the model learns its decoder
variance v = eta_dec^2 (``model.learn_eta_dec``), ``rec`` also holds the Gaussian normaliser
(d2/2) log(2 pi v), so ``loss`` is the per-example beta-NLL (without it v would run off to
infinity). Under free bits (a model with ``free_bits`` = lambda)
``loss = rec + beta * sum_j max(lambda, kl_dims_j)``, the KL of each latent averaged over
the rows the loss sees (a full batch: the data set, as the theory assumes; a minibatch:
the variant trained in practice). Three estimators:

- :func:`exact_loss`: the decoder is linear, so E_eps ||U(mu+eps)+b_d-y||^2 =
  ||U mu + b_d - y||^2 + sum_i sigma_i^2 ||U[:, i]||^2 exactly (any encoder).
- :func:`moments_loss`: encoder and decoder linear and Sigma data-independent: the loss
  depends on the data only through its first two moments (no pass over the rows).
- :func:`sampled_loss`: reparameterised samples eps (any decoder).

:func:`evaluate_loss` evaluates a model on a whole data set in chunks (exact when the
decoder is linear, otherwise averaged over ``n_eps`` noise samples per point).
"""

from __future__ import annotations

import math
from typing import NamedTuple

import numpy as np
import torch

__all__ = [
    "LossParts",
    "MomentTensors",
    "moment_tensors",
    "kl_dims",
    "kl_penalty",
    "smooth_free_bits",
    "exact_loss",
    "sampled_loss",
    "moments_loss",
    "evaluate_loss",
    "chunk_rows",
    "gaussian_normaliser",
]


class LossParts(NamedTuple):
    """Per-member loss and its parts: loss, rec, kl (K,), kl_dims (K, d1)."""

    loss: torch.Tensor
    rec: torch.Tensor
    kl: torch.Tensor
    kl_dims: torch.Tensor


class MomentTensors(NamedTuple):
    """The moments of ``postcollapse.theory.Moments`` as tensors: mean_x (d0,), mean_y (d2,),
    cov_x (d0, d0) or its diagonal (d0,) when diagonal, cov_yx (d2, d0), s_yy () --
    population normalisation (1/N), as THEORY.md."""

    mean_x: torch.Tensor
    mean_y: torch.Tensor
    cov_x: torch.Tensor
    cov_yx: torch.Tensor
    s_yy: torch.Tensor

    @classmethod
    def from_moments(cls, moments, *, dtype=torch.float64, device="cpu") -> MomentTensors:
        """The tensors of a ``postcollapse.theory.Moments`` (its own float64 values)."""
        return cls(*(torch.as_tensor(np.asarray(getattr(moments, name), dtype=np.float64))
                     .to(device, dtype) for name in cls._fields))


def moment_tensors(source, y=None, *, dtype=torch.float64, device="cpu") -> MomentTensors:
    """:class:`MomentTensors` of a ``postcollapse.theory.Moments`` or of arrays ``x`` (n, d0)
    and ``y`` (n, d2) (None: y = x), whose ``Moments`` are accumulated first."""
    from postcollapse.theory import Moments

    moments = source if isinstance(source, Moments) else Moments.from_arrays(source, y)
    return MomentTensors.from_moments(moments, dtype=dtype, device=device)


def kl_dims(mu: torch.Tensor, logvar: torch.Tensor, eta_enc: torch.Tensor) -> torch.Tensor:
    """KL(N(mu, sigma^2) || N(0, eta_enc^2)) per latent dimension, averaged over rows.

    mu (K, n, d1), logvar (K, n|1, d1), eta_enc (K,) -> (K, d1).
    """
    log_e2 = (2.0 * torch.log(eta_enc)).view(-1, 1, 1)
    inv_e2 = torch.exp(-log_e2)
    var_term = torch.exp(logvar) * inv_e2 - 1.0 - (logvar - log_e2)  # (K, n|1, d1)
    return 0.5 * ((mu * mu).mean(1) * inv_e2.view(-1, 1) + var_term.mean(1))


def kl_penalty(model, kld: torch.Tensor) -> torch.Tensor:
    """The KL term the loss weights by beta: sum_j KL_j, or sum_j max(lambda, KL_j) under
    free bits (``model.free_bits`` = lambda). kld (K, d1) -> (K,)."""
    lam = getattr(model, "free_bits", None)
    if lam is None:
        return kld.sum(-1)
    return kld.clamp_min(lam).sum(-1)


def smooth_free_bits(kld: torch.Tensor, lam: float, tau: torch.Tensor) -> torch.Tensor:
    """A smooth upper bound on the free-bits penalty: sum_j lam + tau softplus((KL_j - lam)/tau).

    It lies between sum_j max(lam, KL_j) and that plus d1 tau log 2, and tends to it as
    tau -> 0 (the kink of the max at KL_j = lam is rounded off over a width ~tau); the
    trainers minimise it with a decreasing tau (a continuation). kld (K, d1), tau (K,)
    > 0 -> (K,).
    """
    t = tau.to(kld.dtype).unsqueeze(-1)
    return (lam + t * torch.nn.functional.softplus((kld - lam) / t)).sum(-1)


def gaussian_normaliser(model, v: torch.Tensor) -> torch.Tensor:
    """(d2/2) log(2 pi v) (K,): the constant of the Gaussian NLL with variance v (K,)."""
    return 0.5 * model.d2 * (math.log(2.0 * math.pi) + torch.log(v))


def _finish(model, rec_sq: torch.Tensor, kld: torch.Tensor, p) -> LossParts:
    if getattr(model, "learn_eta_dec", False):
        v = model.dec_var(p)
        rec = rec_sq / (2.0 * v) + gaussian_normaliser(model, v)
    else:
        rec = rec_sq / (2.0 * model.eta_dec**2)
    kl = kld.sum(-1)
    return LossParts(rec + model.beta * kl_penalty(model, kld), rec, kl, kld)


def _y_or_x(x, y):
    return x if y is None else y


def exact_loss(model, x: torch.Tensor, y: torch.Tensor | None = None, *, params=None) -> LossParts:
    """Exact L_VAE (expectation over eps in closed form); needs a linear decoder.

    x (n, d0) or (K|1, n, d0); y likewise with d2 (None: plain VAE, y = x).
    """
    if model.decoder != "linear":
        raise ValueError(f"exact_loss needs decoder 'linear', got {model.decoder!r}; "
                         "use sampled_loss")
    p = model.params() if params is None else params
    y = _y_or_x(x, y)
    mu, logvar = model.encode_raw(x, params=p)
    res = model.decode(mu, params=p) - (y if y.dim() == 3 else y.unsqueeze(0))
    col2 = (p["dec_w"] ** 2).sum(-1)  # ||U[:, i]||^2, (K, d1)
    noise = (torch.exp(logvar) * col2.unsqueeze(1)).sum(-1).mean(1)
    rec_sq = (res * res).sum(-1).mean(1) + noise
    return _finish(model, rec_sq, kl_dims(mu, logvar, model.eta_enc), p)


def sampled_loss(model, x, y=None, *, eps: torch.Tensor, params=None) -> LossParts:
    """L_VAE with one reparameterised sample per row: eps (K|1, n, d1) ~ N(0, I).

    The KL part is exact; only the reconstruction is sampled.
    """
    p = model.params() if params is None else params
    y = _y_or_x(x, y)
    mu, logvar = model.encode_raw(x, params=p)
    z = mu + torch.exp(0.5 * logvar) * eps
    res = model.decode(z, params=p) - (y if y.dim() == 3 else y.unsqueeze(0))
    rec_sq = (res * res).sum(-1).mean(1)
    return _finish(model, rec_sq, kl_dims(mu, logvar, model.eta_enc), p)


def moments_loss(model, moments: MomentTensors, *, params=None) -> LossParts:
    """Exact L_VAE of linear members with data-independent Sigma, from the data moments.

    With M = U W^T and m = U (W^T E x + b_e) + b_d - E y:
    E||U mu + b_d - y||^2 = ||m||^2 + Tr(M A M^T) - 2 Tr(M C^T) + s_yy and
    E mu_i^2 = (W^T E x + b_e)_i^2 + (W^T A W)_ii. Cost O(K d0 (d0 + d2) d1): no d0 x d2
    product is formed.
    """
    if not model.is_linear or model.sigma_depends_on_x:
        raise ValueError("moments_loss needs linear encoder and decoder and sigma 'prior' or "
                         f"'learnable'; got {model.encoder}/{model.decoder}, sigma {model.sigma!r}")
    p = model.params() if params is None else params
    mx, my, a, c, s_yy = moments
    w, b_e, ut, b_d = p["enc_w"], p["enc_b"], p["dec_w"], p["dec_b"]
    mu_mean = torch.matmul(mx, w) + b_e  # (K, d1)
    # cov_x may be given by its diagonal (whitened / eigen-basis inputs): then A W is a scaling.
    aw = a.unsqueeze(-1) * w if a.dim() == 1 else torch.matmul(a, w)  # A W, (K, d0, d1)
    wtaw = torch.bmm(w.transpose(1, 2), aw)  # W^T A W, (K, d1, d1)
    utu = torch.bmm(ut, ut.transpose(1, 2))  # U^T U, (K, d1, d1)
    cw = torch.matmul(c, w)  # C W, (K, d2, d1)
    m = torch.bmm(mu_mean.unsqueeze(1), ut).squeeze(1) + b_d - my
    tr_mam = (wtaw * utu).sum((1, 2))  # Tr(U W^T A W U^T)
    tr_mc = (cw * ut.transpose(1, 2)).sum((1, 2))  # Tr(U W^T C^T)
    logvar = model.const_logvar(p)  # (K, 1, d1)
    col2 = (ut**2).sum(-1)
    noise = (torch.exp(logvar[:, 0]) * col2).sum(-1)
    rec_sq = (m * m).sum(-1) + tr_mam - 2.0 * tr_mc + s_yy + noise
    mu2 = mu_mean**2 + (w * aw).sum(1)  # E mu_i^2, (K, d1)
    log_e2 = (2.0 * torch.log(model.eta_enc)).view(-1, 1)
    inv_e2 = torch.exp(-log_e2)
    kld = 0.5 * (mu2 * inv_e2 + torch.exp(logvar[:, 0]) * inv_e2 - 1.0 - (logvar[:, 0] - log_e2))
    return _finish(model, rec_sq, kld, p)


def chunk_rows(model, n_rows: int, budget: int = 1 << 23) -> int:
    """Rows per chunk when evaluating ``model`` on ``n_rows`` rows: about ``budget``
    elements in the widest (K, rows, width) activation."""
    width = max(model.d0, model.d2, model.hidden if not model.is_linear else 1, model.d1)
    return max(1, min(n_rows, budget // max(1, model.n_members * width)))


@torch.no_grad()
def evaluate_loss(
    model,
    x: torch.Tensor,
    y: torch.Tensor | None = None,
    *,
    n_eps: int = 64,
    generator: torch.Generator | None = None,
    chunk_size: int | None = None,
) -> LossParts:
    """L_VAE over a whole data set in row chunks, in float64 accumulators.

    Exact when the decoder is linear; otherwise the reconstruction is averaged over
    ``n_eps`` independent noise samples per row (drawn from ``generator`` on the CPU;
    None: a generator seeded with 0, so evaluations are reproducible).
    x (n, d0), y (n, d2) or None.
    """
    if generator is None:
        generator = torch.Generator().manual_seed(0)
    n = x.shape[0]
    step = chunk_size or chunk_rows(model, n)
    k, d1 = model.n_members, model.d1
    tot = torch.zeros(k, dtype=torch.float64, device=x.device)
    tot_kl = torch.zeros(k, d1, dtype=torch.float64, device=x.device)
    for lo in range(0, n, step):
        xb = x[lo: lo + step]
        yb = None if y is None else y[lo: lo + step]
        w = xb.shape[0] / n
        if model.decoder == "linear":
            parts = exact_loss(model, xb, yb)
            tot += w * parts.rec.double()
        else:
            acc = torch.zeros(k, dtype=torch.float64, device=x.device)
            for _ in range(n_eps):
                eps = torch.randn(k, xb.shape[0], d1, generator=generator, dtype=x.dtype)
                parts = sampled_loss(model, xb, yb, eps=eps.to(x.device))
                acc += parts.rec.double()
            tot += w * acc / n_eps
        tot_kl += w * parts.kl_dims.double()
    kl = tot_kl.sum(-1)
    return LossParts(tot + model.beta.double() * kl_penalty(model, tot_kl), tot, kl, tot_kl)
