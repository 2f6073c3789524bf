"""K-member batched two-level (hierarchical) VAEs and their exact / sampled loss.

The model is the Markovian two-level VAE of docs/THEORY.md ("Two-level linear VAE"), with
``postcollapse.theory.hierarchical_loss``'s conventions (no log 2 pi constants):

    q(z1|x) = N(enc1(x), S1),   q(z2|z1) = N(enc2(z1), S2),   p(z2) = N(0, eta_enc^2 I)
    p(z1|z2) = N(dec2(z2), eta_dec^2 I),   p(y|z1) = N(dec1(z1), eta_dec^2 I)

    L = 1/(2 eta^2) E||dec1(z1) - y||^2
      + beta1/2 [ E||z1 - dec2(z2)||^2/eta^2 - log det S1 + d1 log eta^2 - d1 ]
      + beta2/2 [ (E||enc2(z1)||^2 + tr S2)/eta_enc^2 - log det S2 + d2 log eta_enc^2 - d2 ]

S1 is either fixed at sigma1^2 I (Dang et al.'s setting) or a learnable diagonal; S2 is a
learnable diagonal. Each map is affine ("linear") or a two-layer MLP ("relu"/"tanh"); the
two encoders use the ``encoder`` architecture and the two decoders the ``decoder`` one.

:func:`hierarchical_exact_loss` takes every expectation over the encoder noise in closed
form (needs a linear level-1 decoder and a linear level 2); :func:`hierarchical_sampled_loss`
draws one (eps1, eps2) per row. ``LossParts.kl`` is the unweighted sum of both levels'
bracketed KL terms, ``kl_dims`` their (K, d1 + d2) split (level 1 first), so that
``loss = rec + beta1 * kl_1.. + beta2 * kl_2..``.
"""

from __future__ import annotations

import math

import numpy as np
import torch
from torch import nn

from postcollapse._checks import check_choice, check_int_at_least, check_positive
from postcollapse.models.kinds import ARCHITECTURES
from postcollapse.models.loss import LossParts, chunk_rows
from postcollapse.models.vae import FlatMembers, member_seed, per_member

__all__ = [
    "BatchedHierarchicalVAE",
    "hierarchical_exact_loss",
    "hierarchical_sampled_loss",
    "evaluate_hierarchical_loss",
]

_ACT = {"relu": torch.relu, "tanh": torch.tanh}
_INIT_STREAM = 11  # distinct from the one-level model's initialisation stream


def _affine(x: torch.Tensor, w: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    # x (K|1, n, i), w (K, i, o), b (K, o) -> (K, n, o)
    if x.shape[0] == w.shape[0]:
        return torch.baddbmm(b.unsqueeze(1), x, w)
    return torch.matmul(x, w) + b.unsqueeze(1)


class BatchedHierarchicalVAE(FlatMembers):
    """K independent two-level VAEs trained as one module (flat (K, P) parameters).

    Parameters
    ----------
    d0, d2 : int
        Input and target dimensions (d2 = d0 for the plain VAE).
    latent_dim, latent_dim2 : int
        d1 and d2' (the latent dimensions of level 1 and level 2).
    betas : array-like, shape (K,)
        beta1 (level-1 KL weight) of each member.
    betas2 : float or array-like (K,)
        beta2 (level-2 KL weight) of each member.
    encoder, decoder : {"linear", "relu", "tanh"}
        Architecture of both encoders / both decoders.
    sigma1 : float or None
        Fixed level-1 encoder standard deviation (S1 = sigma1^2 I); None: S1 learnable.
    hidden : int
    seeds : array-like of int, shape (K,)
    eta_enc, eta_dec : float or array-like (K,)
    dtype : torch.dtype

    Notes
    -----
    For linear members ``enc_w`` is W1 (d0, d1), ``enc_b`` b1, ``dec_w`` U1^T (d1, d2),
    ``dec_b`` c1, ``enc2_w`` W2 (d1, d2'), ``enc2_b`` b2, ``dec2_w`` U2^T (d2', d1),
    ``dec2_b`` c2, ``logvar`` log S1 (when learnable), ``logvar2`` log S2.
    """

    levels = 2
    sigma_depends_on_x = False

    def __init__(self, d0: int, d2: int, *, latent_dim: int, latent_dim2: int, betas,
                 betas2, encoder: str = "linear", decoder: str = "linear", sigma1=None,
                 hidden: int = 8, seeds=None, eta_enc=1.0, eta_dec=1.0,
                 dtype: torch.dtype = torch.float32):
        super().__init__()
        self.d0 = check_int_at_least("d0", d0, 1)
        self.d2 = check_int_at_least("d2", d2, 1)
        self.d1 = check_int_at_least("latent_dim", latent_dim, 1)
        self.k2 = check_int_at_least("latent_dim2", latent_dim2, 1)
        self.hidden = check_int_at_least("hidden", hidden, 1)
        self.encoder = check_choice("encoder", encoder, ARCHITECTURES)
        self.decoder = check_choice("decoder", decoder, ARCHITECTURES)
        self.sigma1 = None if sigma1 is None else check_positive("sigma1", sigma1)
        k = self.set_members(betas, seeds, eta_enc, dtype)
        self.register_buffer("beta2", per_member("betas2", betas2, k).to(dtype))
        self.register_buffer("eta_dec", per_member("eta_dec", eta_dec, k).to(dtype))
        layout = []
        layout += self._net("enc", self.d0, self.d1, self.encoder)
        if self.sigma1 is None:
            layout.append(("logvar", (self.d1,), 1, "logvar_dec"))
        layout += self._net("dec", self.d1, self.d2, self.decoder)
        layout += self._net("enc2", self.d1, self.k2, self.encoder)
        layout.append(("logvar2", (self.k2,), 1, "logvar"))
        layout += self._net("dec2", self.k2, self.d1, self.decoder)
        self.layout = layout
        self.sizes = [math.prod(shape) for _, shape, _, _ in layout]
        self.n_params = sum(self.sizes)
        self.flat = nn.Parameter(torch.empty(k, self.n_params, dtype=dtype))
        self.reset_parameters()

    def _net(self, name, n_in, n_out, arch):
        h = self.hidden
        if arch == "linear":
            return [(f"{name}_w", (n_in, n_out), n_in, "w"), (f"{name}_b", (n_out,), n_in, "b")]
        return [(f"{name}_w1", (n_in, h), n_in, "w"), (f"{name}_b1", (h,), n_in, "b"),
                (f"{name}_w2", (h, n_out), h, "w"), (f"{name}_b2", (n_out,), h, "b")]

    # ------------------------------------------------------------------ parameters
    def _init_row(self, seed: int, eta_enc: float, eta_dec: float) -> torch.Tensor:
        g = torch.Generator().manual_seed(member_seed(seed, _INIT_STREAM))
        parts = []
        for (_, _shape, fan_in, kind), size in zip(self.layout, self.sizes, strict=True):
            if kind in ("logvar", "logvar_dec"):
                scale = eta_enc if kind == "logvar" else eta_dec
                parts.append(torch.full((size,), 2.0 * math.log(scale), dtype=torch.float64))
                continue
            bound = 1.0 / math.sqrt(fan_in)
            parts.append((torch.rand(size, generator=g, dtype=torch.float64) * 2 - 1) * bound)
        return torch.cat(parts)

    @property
    def exact(self) -> bool:
        """True when :func:`hierarchical_exact_loss` applies (linear level-1 decoder, linear
        level 2)."""
        return self.is_linear

    def config(self) -> dict:
        """The constructor arguments (JSON-serialisable) that rebuild this module."""
        return {
            "levels": 2, "d0": self.d0, "d2": self.d2, "latent_dim": self.d1,
            "latent_dim2": self.k2, "hidden": self.hidden, "encoder": self.encoder,
            "decoder": self.decoder, "sigma1": self.sigma1,
            "betas": self.beta.double().cpu().tolist(),
            "betas2": self.beta2.double().cpu().tolist(), "seeds": list(self.seeds),
            "eta_enc": self.eta_enc.double().cpu().tolist(),
            "eta_dec": self.eta_dec.double().cpu().tolist(),
            "dtype": str(self.dtype).removeprefix("torch."),
        }

    @classmethod
    def from_config(cls, config: dict) -> BatchedHierarchicalVAE:
        cfg = dict(config)
        cfg.pop("levels", None)
        dtype = getattr(torch, cfg.pop("dtype", "float32"))
        d0, d2 = cfg.pop("d0"), cfg.pop("d2")
        return cls(d0, d2, dtype=dtype, **cfg)

    def weight_norms(self) -> dict[str, torch.Tensor]:
        """Frobenius norms (K,) of the level-1 encoder, level-1 decoder and level-2 weights."""
        p = self.params()
        out = {}
        for part in ("enc", "dec", "enc2", "dec2"):
            ws = [v.detach().flatten(1) for n, v in p.items()
                  if n.startswith(part + "_w")]
            out[part] = torch.cat(ws, dim=1).norm(dim=1)
        return out

    def linear_factors(self) -> dict[str, np.ndarray]:
        """``theory.HierarchicalParams`` fields of linear members, float64 numpy, (K, ...)."""
        if not self.is_linear:
            raise ValueError("linear_factors needs encoder and decoder 'linear'; "
                             f"this model has {self.encoder}/{self.decoder}")
        p = {k: v.detach().double().cpu().numpy() for k, v in self.params().items()}
        s1 = np.exp(self.logvar1(self.params()).detach().double().cpu().numpy()[:, 0])
        return {"W1": p["enc_w"], "b1": p["enc_b"], "s1": s1,
                "U1": np.swapaxes(p["dec_w"], 1, 2), "c1": p["dec_b"], "W2": p["enc2_w"],
                "b2": p["enc2_b"], "s2": np.exp(p["logvar2"]),
                "U2": np.swapaxes(p["dec2_w"], 1, 2), "c2": p["dec2_b"]}

    # ------------------------------------------------------------------ forward
    def apply(self, name: str, x: torch.Tensor, p, arch: str) -> torch.Tensor:
        """The map ``name`` ("enc", "dec", "enc2", "dec2") of architecture ``arch`` on x."""
        if arch == "linear":
            return _affine(x, p[f"{name}_w"], p[f"{name}_b"])
        h = _ACT[arch](_affine(x, p[f"{name}_w1"], p[f"{name}_b1"]))
        return _affine(h, p[f"{name}_w2"], p[f"{name}_b2"])

    def logvar1(self, p) -> torch.Tensor:
        """log S1 (K, 1, d1)."""
        if self.sigma1 is None:
            return p["logvar"].unsqueeze(1)
        lv = torch.full((self.n_members, 1, self.d1), 2.0 * math.log(self.sigma1),
                        dtype=self.dtype, device=self.device)
        return lv

    def encode(self, x: torch.Tensor, *, params=None) -> tuple[torch.Tensor, torch.Tensor]:
        """Mean and log-variance of q(z1|x): x (n, d0) -> (K, n, d1) each."""
        p = self.params() if params is None else params
        mu = self.apply("enc", self.as3d(x), p, self.encoder)
        return mu, self.logvar1(p).expand_as(mu)

    def encode2(self, z1: torch.Tensor, *, params=None) -> torch.Tensor:
        """Mean of q(z2|z1): z1 (K, n, d1) -> (K, n, d2')."""
        p = self.params() if params is None else params
        return self.apply("enc2", z1, p, self.encoder)

    def decode(self, z1: torch.Tensor, *, params=None) -> torch.Tensor:
        """Mean of p(y|z1): (K, n, d1) -> (K, n, d2)."""
        p = self.params() if params is None else params
        return self.apply("dec", self.as3d(z1), p, self.decoder)


def _finish(model, rec_sq, t1, ent1, t2, ent2) -> LossParts:
    """rec_sq (K,), t1 (K, d1) E(z1 - dec2)^2 per dim, ent1 (K, d1), t2 / ent2 (K, d2')."""
    e2 = (model.eta_dec**2).unsqueeze(1)
    q2 = (model.eta_enc**2).unsqueeze(1)
    kl1 = 0.5 * (t1 / e2 - ent1 + torch.log(e2) - 1.0)
    kl2 = 0.5 * (t2 / q2 - ent2 + torch.log(q2) - 1.0)
    rec = rec_sq / (2.0 * model.eta_dec**2)
    loss = rec + model.beta * kl1.sum(-1) + model.beta2 * kl2.sum(-1)
    return LossParts(loss, rec, kl1.sum(-1) + kl2.sum(-1), torch.cat([kl1, kl2], -1))


def _y3(x, y):
    y = x if y is None else y
    return y if y.dim() == 3 else y.unsqueeze(0)


def hierarchical_exact_loss(model, x, y=None, *, params=None) -> LossParts:
    """Exact two-level loss (all expectations over eps1, eps2 in closed form).

    Needs a linear level-1 decoder and a linear level 2 (``model.exact``); any level-1
    encoder. x (n, d0) or (K|1, n, d0); y likewise with d2 (None: plain VAE).
    """
    if not model.exact:
        raise ValueError(f"hierarchical_exact_loss needs linear maps, got "
                         f"{model.encoder}/{model.decoder}; use hierarchical_sampled_loss")
    p = model.params() if params is None else params
    mu1, _ = model.encode(x, params=p)
    s1 = torch.exp(model.logvar1(p))  # (K, 1, d1)
    ut1, w2, ut2 = p["dec_w"], p["enc2_w"], p["dec2_w"]  # (K,d1,d2) (K,d1,k2) (K,k2,d1)
    res = _affine(mu1, ut1, p["dec_b"]) - _y3(x, y)
    rec_sq = (res * res).sum(-1).mean(1) + (s1[:, 0] * (ut1**2).sum(-1)).sum(-1)
    # z1 - U2 (W2^T z1 + b2) - c2 = B z1 - U2 b2 - c2, B^T = I - W2 U2^T.
    eye = torch.eye(model.d1, dtype=mu1.dtype, device=mu1.device)
    bt = eye - torch.bmm(w2, ut2)  # B^T (K, d1, d1)
    off = torch.bmm(p["enc2_b"].unsqueeze(1), ut2).squeeze(1) + p["dec2_b"]  # U2 b2 + c2
    r1 = torch.matmul(mu1, bt) - off.unsqueeze(1)  # (K, n, d1)
    s2 = torch.exp(p["logvar2"])  # (K, k2)
    t1 = ((r1 * r1).mean(1) + (s1[:, 0].unsqueeze(-1) * bt**2).sum(1)
          + (s2.unsqueeze(-1) * ut2**2).sum(1))
    m2 = _affine(mu1, w2, p["enc2_b"])  # (K, n, k2)
    t2 = (m2 * m2).mean(1) + (s1[:, 0].unsqueeze(-1) * w2**2).sum(1) + s2
    return _finish(model, rec_sq, t1, torch.log(s1[:, 0]), t2, p["logvar2"])


def hierarchical_sampled_loss(model, x, y=None, *, eps: torch.Tensor, params=None) -> LossParts:
    """Two-level loss with one sample (eps1, eps2) per row: eps (K|1, n, d1 + d2') ~ N(0, I).

    The level-2 KL given z1 is exact; reconstruction and the level-1 term are sampled.
    """
    p = model.params() if params is None else params
    mu1, logvar1 = model.encode(x, params=p)
    eps1, eps2 = eps[..., : model.d1], eps[..., model.d1:]
    z1 = mu1 + torch.exp(0.5 * logvar1) * eps1
    res = model.decode(z1, params=p) - _y3(x, y)
    rec_sq = (res * res).sum(-1).mean(1)
    m2 = model.encode2(z1, params=p)
    z2 = m2 + torch.exp(0.5 * p["logvar2"]).unsqueeze(1) * eps2
    r1 = z1 - model.apply("dec2", z2, p, model.decoder)
    t1 = (r1 * r1).mean(1)
    t2 = (m2 * m2).mean(1) + torch.exp(p["logvar2"])
    return _finish(model, rec_sq, t1, logvar1[:, 0], t2, p["logvar2"])


@torch.no_grad()
def evaluate_hierarchical_loss(model, x, y=None, *, n_eps: int = 64,
                               generator: torch.Generator | None = None) -> LossParts:
    """The two-level loss over a whole data set in row chunks (float64 accumulators): exact
    when ``model.exact``, otherwise averaged over ``n_eps`` noise samples per row."""
    if generator is None:
        generator = torch.Generator().manual_seed(0)
    n = x.shape[0]
    step = chunk_rows(model, n)
    k = model.n_members
    width = model.d1 + model.k2
    acc = {f: torch.zeros((k, width) if f == "kl_dims" else (k,), dtype=torch.float64,
                          device=x.device) for f in LossParts._fields}
    reps = 1 if model.exact else n_eps
    for lo in range(0, n, step):
        xb = x[lo: lo + step]
        yb = None if y is None else y[lo: lo + step]
        w = xb.shape[0] / n / reps
        for _ in range(reps):
            if model.exact:
                parts = hierarchical_exact_loss(model, xb, yb)
            else:
                eps = torch.randn(k, xb.shape[0], width, generator=generator, dtype=x.dtype)
                parts = hierarchical_sampled_loss(model, xb, yb, eps=eps.to(x.device))
            for f in LossParts._fields:
                acc[f] += w * getattr(parts, f).double()
    return LossParts(*(acc[f] for f in LossParts._fields))
