"""Start a ``BatchedVAE`` at the linear theory's global optimum (``init="linear"``).

Each member gets the closed-form optimum of its own beta (``theory.optimum``: U*, W*,
Sigma*, biases and, with a learned decoder variance, v*) embedded so that the network
computes, on the training data, the linear encoder mean mu(x) = W*^T x + b_e* and the
linear decoder U* z + b_d*:

- linear encoder / decoder: the optimum itself (exact);
- ReLU MLP (width ``hidden >= latent_dim``): hidden unit j carries latent coordinate j
  shifted into the linear regime, relu(u_j + c_j) = u_j + c_j, and the next layer's bias
  takes c_j off again. Exact (up to rounding) wherever u_j > -c_j: for the encoder c_j puts
  every training row at least one data range above zero; for the decoder, whose input
  z = mu + sigma eps is unbounded, c_j = -min mu_j + ``relu_sigmas`` sigma_j, so a
  negative pre-activation has probability below 1e-15 per draw (8 sigma);
- Tanh MLP (width ``hidden >= latent_dim``): small-slope units, tanh(e_j u_j) / e_j = u_j
  (1 - (e_j u_j)^2 / 3 + ...), with e_j chosen so that the relative error is at most
  ``tanh_rtol`` over the training rows (decoder: over |z_j| <= max|mu_j| + 5 sigma_j). At a
  stationary point the loss moves by the square of that error, about ``tanh_rtol^2``
  relative. (Small slopes mean small first-layer weights: an optimiser whose steps do not
  scale with the weights, such as Adam, moves such a start relatively more than a ReLU one.)

Hidden units past ``latent_dim`` keep their cold initialisation in the first layer and get
zero weights in the second, so they change nothing but still receive gradients. Sigma:
"learnable" sets log sigma*^2; "linear" / "mlp" zero the (last) weights and set the bias to
log sigma*^2 (Sigma* does not depend on x); "prior" has no parameters.
"""

from __future__ import annotations

import math

import numpy as np
import torch

from postcollapse.models.kinds import check_embeddable

__all__ = ["embed_linear_optimum", "TANH_RTOL", "RELU_SIGMAS"]

TANH_RTOL = 1e-3  # default largest relative error of a small-slope tanh unit on the data
RELU_SIGMAS = 8.0  # default decoder margin of a ReLU unit, in encoder standard deviations


def _tanh_slope(bound: np.ndarray, rtol: float) -> np.ndarray:
    """Slopes e (d,) with tanh(e u) / e within relative ``rtol`` of u for |u| <= bound.

    The relative error 1 - tanh(t)/t grows with |t| and is t^2/3 (1 + O(t^2)) below it,
    so e = sqrt(3 rtol) / bound, shrunk by a few percent, keeps it below rtol; a zero
    bound (a constant unit) gets slope 1."""
    t = math.sqrt(3.0 * rtol) * 0.98
    return np.where(bound > 0, t / np.where(bound > 0, bound, 1.0), 1.0)


def _mlp_layers(kind: str, u_lo: np.ndarray, u_hi: np.ndarray, *, relu_margin: np.ndarray,
                tanh_bound: np.ndarray, tanh_rtol: float):
    """First-layer scale a (d,) and shift c (d,) and second-layer scale s (d,) so that
    s * act(a u + c) - s * act_shift = u for u in [u_lo, u_hi] (per coordinate); returns
    (a, c, s, out_shift) with out_shift the constant the next bias subtracts."""
    if kind == "relu":
        c = np.maximum(0.0, -u_lo) + relu_margin
        one = np.ones_like(c)
        return one, c, one, c
    e = _tanh_slope(tanh_bound, tanh_rtol)
    return e, np.zeros_like(e), 1.0 / e, np.zeros_like(e)


@torch.no_grad()
def embed_linear_optimum(net, optima, x, *, tanh_rtol: float = TANH_RTOL,
                         relu_sigmas: float = RELU_SIGMAS) -> None:
    """Overwrite each member's parameters with the embedded linear optimum (in place).

    Parameters
    ----------
    net : BatchedVAE
        K members; its cold initialisation is kept for the spare hidden units.
    optima : sequence of Optimum, length K
        ``theory.optimum`` of each member (its beta, the net's latent_dim, eta_enc, eta_dec
        and Sigma mode).
    x : array-like, shape (n, d0)
        The training inputs: the ReLU shifts and Tanh slopes are chosen from them.
    tanh_rtol : float
        Largest relative error of a small-slope tanh unit over the data.
    relu_sigmas : float
        The ReLU decoder units' margin below the smallest mean, in encoder sigmas.
    """
    if len(optima) != net.n_members:
        raise ValueError(f"optima must have one entry per member ({net.n_members}), "
                         f"got {len(optima)}")
    check_embeddable(encoder=net.encoder, decoder=net.decoder, hidden=net.hidden,
                     latent_dim=net.d1)
    x = np.asarray(x.detach().cpu().numpy() if torch.is_tensor(x) else x, dtype=np.float64)
    rows = net.flat.detach().double().cpu().numpy().copy()
    for i, opt in enumerate(optima):
        p = _split(net, rows[i])
        _embed_member(net, p, opt, x, tanh_rtol=tanh_rtol, relu_sigmas=relu_sigmas)
        rows[i] = np.concatenate([p[name].ravel() for name, *_ in net.layout])
    net.flat.copy_(torch.from_numpy(rows).to(net.flat))


def _split(net, row: np.ndarray) -> dict[str, np.ndarray]:
    out, lo = {}, 0
    for (name, shape, _, _), size in zip(net.layout, net.sizes, strict=True):
        out[name] = row[lo: lo + size].reshape(shape).copy()
        lo += size
    return out


def _embed_member(net, p: dict, opt, x: np.ndarray, *, tanh_rtol: float,
                  relu_sigmas: float) -> None:
    d1 = net.d1
    W, U = np.asarray(opt.W), np.asarray(opt.U)  # (d0, d1), (d2, d1)
    b_e, b_d = np.asarray(opt.b_e), np.asarray(opt.b_d)
    log_s2 = np.log(np.asarray(opt.sigma2, dtype=np.float64))
    if W.shape != (net.d0, d1) or U.shape != (net.d2, d1):
        raise ValueError(f"the optimum has W {W.shape} and U {U.shape}; the model needs "
                         f"({net.d0}, {d1}) and ({net.d2}, {d1})")
    mu = x @ W + b_e  # (n, d1), the linear encoder mean on the data
    mu_lo, mu_hi = mu.min(0), mu.max(0)
    span = mu_hi - mu_lo
    sigma = np.sqrt(np.asarray(opt.sigma2, dtype=np.float64))

    if net.encoder == "linear":
        p["enc_w"][:], p["enc_b"][:] = W, b_e
    else:
        a, c, s, shift = _mlp_layers(
            net.encoder, mu_lo, mu_hi, relu_margin=np.where(span > 0, span, 1.0),
            tanh_bound=np.maximum(np.abs(mu_lo), np.abs(mu_hi)), tanh_rtol=tanh_rtol)
        # hidden unit j: act(a_j (W_j . x + b_e_j) + c_j); output j = s_j * unit_j - s_j shift_j
        p["enc_w1"][:, :d1] = W * a
        p["enc_b1"][:d1] = a * b_e + c
        p["enc_w2"][:] = 0.0
        p["enc_w2"][np.arange(d1), np.arange(d1)] = s
        p["enc_b2"][:] = -s * shift

    if net.sigma == "learnable":
        p["logvar"][:] = log_s2
    elif net.sigma == "linear":
        p["sig_w"][:], p["sig_b"][:] = 0.0, log_s2
    elif net.sigma == "mlp":
        p["sig_w2"][:], p["sig_b2"][:] = 0.0, log_s2

    if net.decoder == "linear":
        p["dec_w"][:], p["dec_b"][:] = U.T, b_d
    else:
        z_lo, z_hi = mu_lo - relu_sigmas * sigma, mu_hi + relu_sigmas * sigma
        a, c, s, shift = _mlp_layers(
            net.decoder, z_lo, z_hi, relu_margin=np.zeros(d1),
            tanh_bound=np.maximum(np.abs(mu_lo), np.abs(mu_hi)) + 5.0 * sigma,
            tanh_rtol=tanh_rtol)
        # hidden unit j carries z_j: act(a_j z_j + c_j); output U (s * unit - s * shift) + b_d
        p["dec_w1"][:, :d1] = 0.0
        p["dec_w1"][np.arange(d1), np.arange(d1)] = a
        p["dec_b1"][:d1] = c
        p["dec_w2"][:] = 0.0
        p["dec_w2"][:d1] = (U * s).T
        p["dec_b2"][:] = b_d - U @ (s * shift)
    if net.learn_eta_dec:
        p["dec_logvar"][:] = math.log(float(opt.eta_dec2))
