"""K-member batched (conditional) VAEs: every parameter carries a leading member axis.

All members' parameters live in one flat leaf tensor ``flat`` of shape (K, P); the named
parameters (``enc_w``, ``dec_w``, ...) are views of it, so an optimiser can update all
members with a handful of tensor operations and mask members row by row.

Conventions follow THEORY.md: the encoder gives mu(x) and log sigma^2(x), z = mu + sigma*eps,
the decoder gives the mean of p(y|z) = N(dec(z), eta_dec^2 I), the prior is N(0, eta_enc^2 I).
For a linear member ``enc_w`` is W (d0, d1), ``enc_b`` is b_e, ``dec_w`` is U^T (d1, d2),
``dec_b`` is b_d. With a learned decoder variance (``eta_dec="learn"``) the flat parameters
end with ``dec_logvar`` (K, 1), log v = log eta_dec^2 of each member.
"""

from __future__ import annotations

import math

import numpy as np
import torch
from torch import nn

from postcollapse._checks import check_betas, check_choice, check_int_at_least
from postcollapse.models.kinds import ARCHITECTURES, SIGMA_KINDS

__all__ = ["BatchedVAE", "FlatMembers", "member_seed", "per_member"]

_ACT = {"relu": torch.relu, "tanh": torch.tanh}


def member_seed(seed: int, *stream: int) -> int:
    """A 63-bit seed for ``torch.Generator.manual_seed`` derived from ``seed`` and a stream id.

    Derived with numpy's SeedSequence, so streams for different purposes (initialisation,
    batch order, noise) and different chunks are independent and reproducible.
    """
    ss = np.random.SeedSequence([int(seed) % (2**63), *[int(s) for s in stream]])
    return int(ss.generate_state(1, dtype=np.uint64)[0] >> np.uint64(1))


_INIT_STREAM = 1


def per_member(name: str, value, k: int) -> torch.Tensor:
    """``value`` (a scalar or one per member) as a float64 tensor (k,), finite and > 0."""
    arr = np.broadcast_to(np.asarray(value, dtype=np.float64), (k,)).copy()
    if not np.all(np.isfinite(arr)) or np.any(arr <= 0):
        raise ValueError(f"{name} must be finite and > 0 for every member, got {arr}")
    return torch.from_numpy(arr)


class FlatMembers(nn.Module):
    """K independent members whose parameters are the rows of one (K, P) tensor ``flat``.

    Subclasses set ``flat``, ``layout`` (name, shape, fan_in, kind per block), ``sizes``,
    ``seeds``, ``eta_enc``, ``eta_dec``, ``encoder``, ``decoder``, ``n_members`` and
    implement ``_init_row(seed, eta_enc, eta_dec)``.
    """

    def set_members(self, betas, seeds, eta_enc, dtype: torch.dtype) -> int:
        """Check and store the members' betas (buffer ``beta``), seeds (one per member,
        default 0) and ``eta_enc`` (buffer); returns K."""
        betas = check_betas(betas)
        k = betas.size
        self.n_members = k
        seeds = np.zeros(k, dtype=np.int64) if seeds is None else np.asarray(seeds)
        if seeds.shape != (k,):
            raise ValueError(f"seeds must have one entry per member ({k}), got shape {seeds.shape}")
        self.seeds = [int(s) for s in seeds]
        self.register_buffer("beta", torch.from_numpy(betas).to(dtype))
        self.register_buffer("eta_enc", per_member("eta_enc", eta_enc, k).to(dtype))
        return k

    @torch.no_grad()
    def reset_parameters(self) -> None:
        """Initialise every member from its own seed (independent of K and beta)."""
        ee = self.eta_enc.double().cpu().numpy()
        ed = self.eta_dec.double().cpu().numpy()
        rows = [self._init_row(s, float(a), float(b))
                for s, a, b in zip(self.seeds, ee, ed, strict=True)]
        self.flat.copy_(torch.stack(rows).to(self.flat))

    def params(self, flat: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
        """Named views (K, *shape) of the flat parameters (or of another (K, P) tensor)."""
        flat = self.flat if flat is None else flat
        k = flat.shape[0]
        chunks = flat.split(self.sizes, dim=1)
        return {name: c.view(k, *shape)
                for (name, shape, _, _), c in zip(self.layout, chunks, strict=True)}

    @property
    def dtype(self) -> torch.dtype:
        return self.flat.dtype

    @property
    def device(self) -> torch.device:
        return self.flat.device

    @property
    def is_linear(self) -> bool:
        """True when every map is linear (the theory's model)."""
        return self.encoder == "linear" and self.decoder == "linear"

    def as3d(self, x: torch.Tensor) -> torch.Tensor:
        """x (n, d) as (1, n, d), or x (1|K, n, d) as it is."""
        if x.dim() == 2:
            return x.unsqueeze(0)
        if x.dim() == 3 and x.shape[0] in (1, self.n_members):
            return x
        raise ValueError(f"x must have shape (n, d) or ({self.n_members}, n, d); "
                         f"got {tuple(x.shape)}")


class BatchedVAE(FlatMembers):
    """K independent VAEs trained as one module.

    Parameters
    ----------
    d0, d2 : int
        Input and target dimensions (d2 = d0 for the plain VAE).
    latent_dim : int
        d1, the latent dimension.
    betas : array-like, shape (K,)
        beta of each member; K = len(betas).
    encoder, decoder : {"linear", "relu", "tanh"}
        ``linear`` is an affine map; ``relu`` / ``tanh`` a two-layer MLP of width ``hidden``.
    sigma : {"prior", "learnable", "linear", "mlp"}
        Encoder variance: fixed at eta_enc^2, a learnable data-independent diagonal,
        log sigma^2(x) = Linear(x), or log sigma^2(x) = MLP(x) (width ``hidden``, the
        encoder's activation, ReLU when the encoder is linear).
    hidden : int
        Hidden width of the MLPs.
    seeds : array-like of int, shape (K,)
        Initialisation seed of each member. Members with the same seed start from the same
        point whatever their beta or K (initialisation is nn.Linear's: U(-1/sqrt(fan_in),
        1/sqrt(fan_in)) for weights and biases).
    eta_enc : float or array-like (K,)
    eta_dec : float, array-like (K,) or "learn"
        Decoder standard deviation; ``"learn"`` (or ``learn_eta_dec=True``) makes
        log v = log eta_dec^2 a parameter of each member (``dec_logvar``, the last entry of
        its flat row), started at the given eta_dec ("learn" alone: 1). The losses then add
        the Gaussian normaliser (d2/2) log(2 pi v), so they are the per-example beta-NLL.
    learn_eta_dec : bool
        Learn the decoder variance, starting from ``eta_dec`` (numbers).
    dtype : torch.dtype
    free_bits : float or None
        Free bits lambda >= 0 (nats per latent): the loss's KL term becomes
        sum_j max(lambda, KL_j), KL_j averaged over the rows the loss sees (see
        ``postcollapse.models.loss``). None: the plain beta-weighted KL.
    """

    def __init__(
        self,
        d0: int,
        d2: int,
        *,
        latent_dim: int,
        betas,
        encoder: str = "linear",
        decoder: str = "linear",
        sigma: str = "learnable",
        hidden: int = 8,
        seeds=None,
        eta_enc=1.0,
        eta_dec=1.0,
        learn_eta_dec: bool = False,
        dtype: torch.dtype = torch.float32,
        free_bits: float | None = None,
    ):
        super().__init__()
        if free_bits is not None:
            from postcollapse.theory.freebits import check_free_bits

            free_bits = check_free_bits(free_bits)
        self.free_bits = free_bits
        self.d0 = check_int_at_least("d0", d0, 1)
        self.d2 = check_int_at_least("d2", d2, 1)
        self.d1 = check_int_at_least("latent_dim", latent_dim, 1)
        self.hidden = check_int_at_least("hidden", hidden, 1)
        self.encoder = check_choice("encoder", encoder, ARCHITECTURES)
        self.decoder = check_choice("decoder", decoder, ARCHITECTURES)
        self.sigma = check_choice("sigma", sigma, SIGMA_KINDS)
        k = self.set_members(betas, seeds, eta_enc, dtype)
        if isinstance(eta_dec, str):
            check_choice("eta_dec", eta_dec, ("learn",))
            learn_eta_dec, eta_dec = True, 1.0
        self.learn_eta_dec = bool(learn_eta_dec)
        # With a learned variance, the starting value of eta_dec (the parameter is dec_logvar).
        self.register_buffer("eta_dec", per_member("eta_dec", eta_dec, k).to(dtype))

        # Layout: (name, shape, fan_in, kind) with kind "w", "b" or "logvar".
        d0, d1, d2, h = self.d0, self.d1, self.d2, self.hidden
        layout = []
        if self.encoder == "linear":
            layout += [("enc_w", (d0, d1), d0, "w"), ("enc_b", (d1,), d0, "b")]
        else:
            layout += [("enc_w1", (d0, h), d0, "w"), ("enc_b1", (h,), d0, "b"),
                       ("enc_w2", (h, d1), h, "w"), ("enc_b2", (d1,), h, "b")]
        if self.sigma == "learnable":
            layout += [("logvar", (d1,), 1, "logvar")]
        elif self.sigma == "linear":
            layout += [("sig_w", (d0, d1), d0, "w"), ("sig_b", (d1,), d0, "logvar_b")]
        elif self.sigma == "mlp":
            layout += [("sig_w1", (d0, h), d0, "w"), ("sig_b1", (h,), d0, "b"),
                       ("sig_w2", (h, d1), h, "w"), ("sig_b2", (d1,), h, "logvar_b")]
        if self.decoder == "linear":
            layout += [("dec_w", (d1, d2), d1, "w"), ("dec_b", (d2,), d1, "b")]
        else:
            layout += [("dec_w1", (d1, h), d1, "w"), ("dec_b1", (h,), d1, "b"),
                       ("dec_w2", (h, d2), h, "w"), ("dec_b2", (d2,), h, "b")]
        if self.learn_eta_dec:  # last, so the other parameters keep their places
            layout += [("dec_logvar", (1,), 1, "dec_logvar")]
        self.layout = layout
        self.sizes = [math.prod(shape) for _, shape, _, _ in layout]
        self.n_params = sum(self.sizes)
        self.flat = nn.Parameter(torch.empty(k, self.n_params, dtype=dtype))
        self.reset_parameters()

    # ------------------------------------------------------------------ parameters
    def _init_row(self, seed: int, eta_enc: float, eta_dec: float) -> torch.Tensor:
        g = torch.Generator().manual_seed(member_seed(seed, _INIT_STREAM))
        parts = []
        for (_, _shape, fan_in, kind), size in zip(self.layout, self.sizes, strict=True):
            if kind == "dec_logvar":
                parts.append(torch.full((size,), 2.0 * math.log(eta_dec), dtype=torch.float64))
                continue
            if kind == "logvar":
                parts.append(torch.full((size,), 2.0 * math.log(eta_enc), dtype=torch.float64))
                continue
            bound = 1.0 / math.sqrt(fan_in)
            u = (torch.rand(size, generator=g, dtype=torch.float64) * 2 - 1) * bound
            if kind == "logvar_b":
                u = u + 2.0 * math.log(eta_enc)
            parts.append(u)
        return torch.cat(parts)

    @property
    def sigma_depends_on_x(self) -> bool:
        return self.sigma in ("linear", "mlp")

    def config(self) -> dict:
        """The constructor arguments (JSON-serialisable) that rebuild this module."""
        return {
            "d0": self.d0, "d2": self.d2, "latent_dim": self.d1, "hidden": self.hidden,
            "encoder": self.encoder, "decoder": self.decoder, "sigma": self.sigma,
            "betas": self.beta.double().cpu().tolist(), "seeds": list(self.seeds),
            "eta_enc": self.eta_enc.double().cpu().tolist(),
            "eta_dec": self.eta_dec.double().cpu().tolist(),
            "dtype": str(self.dtype).removeprefix("torch."),
            **({} if self.free_bits is None else {"free_bits": self.free_bits}),
            **({"learn_eta_dec": True} if self.learn_eta_dec else {}),
        }

    @classmethod
    def from_config(cls, config: dict) -> BatchedVAE:
        cfg = dict(config)
        dtype = getattr(torch, cfg.pop("dtype", "float32"))
        d0, d2 = cfg.pop("d0"), cfg.pop("d2")
        return cls(d0, d2, dtype=dtype, **cfg)

    def select(self, members) -> BatchedVAE:
        """A new BatchedVAE holding copies of the given members (indices)."""
        idx = list(np.atleast_1d(np.asarray(members, dtype=np.int64)))
        cfg = self.config()
        for key in ("betas", "seeds", "eta_enc", "eta_dec"):
            cfg[key] = [cfg[key][i] for i in idx]
        out = BatchedVAE.from_config(cfg).to(self.device)
        with torch.no_grad():
            out.flat.copy_(self.flat[idx])
        return out

    def dec_var(self, p=None) -> torch.Tensor:
        """v = eta_dec^2 of each member (K,): the learned one (from the named parameters
        ``p``, default the model's) or the fixed one."""
        if not self.learn_eta_dec:
            return self.eta_dec**2
        p = self.params() if p is None else p
        return torch.exp(p["dec_logvar"][:, 0])

    def weight_norms(self) -> dict[str, torch.Tensor]:
        """Frobenius norms (K,) of the encoder (mean), sigma and decoder weights (no biases)."""
        p = self.params()
        out = {}
        for part in ("enc", "sig", "dec"):
            ws = [v.detach().flatten(1) for n, v in p.items() if n.startswith(part + "_w")]
            if ws:
                out[part] = torch.cat(ws, dim=1).norm(dim=1)
        return out

    def linear_factors(self) -> dict[str, np.ndarray]:
        """Theory parameters of linear members, float64 numpy, per member.

        Returns U (K, d2, d1), W (K, d0, d1), b_e (K, d1), b_d (K, d2), eta_dec2 (K,) (the
        learned or fixed v) and, when Sigma does not depend on x, sigma2 (K, d1).
        """
        if not self.is_linear:
            raise ValueError("linear_factors needs encoder and decoder 'linear'; "
                             f"this model has {self.encoder}/{self.decoder}")
        p = {k: v.detach().double().cpu().numpy() for k, v in self.params().items()}
        out = {"U": np.swapaxes(p["dec_w"], 1, 2), "W": p["enc_w"], "b_e": p["enc_b"],
               "b_d": p["dec_b"], "eta_dec2": self.dec_var().detach().double().cpu().numpy()}
        if not self.sigma_depends_on_x:
            out["sigma2"] = np.exp(self.const_logvar(self.params()).detach().double()
                                   .cpu().numpy()[:, 0, :])
        return out

    # ------------------------------------------------------------------ forward
    @staticmethod
    def _affine(x: torch.Tensor, w: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        # x (K|1, n, i), w (K, i, o), b (K, o) -> (K, n, o), computed feature-major: the
        # result is a (K, o, n) tensor returned as a transposed view, and a feature-major
        # x (the output of an earlier layer) is read without a copy. For tall-skinny
        # members (n >> i, o) this ran 1.5x faster per training step on the CPU than
        # row-major bmm (benchmarks/README.md). An input shared by all members is one
        # GEMM (K*o, i) @ (i, n) for every member at once.
        k, i, o = w.shape
        if x.shape[0] == 1 and k > 1:
            out = torch.addmm(b.reshape(k * o, 1), w.transpose(1, 2).reshape(k * o, i), x[0].T)
            return out.view(k, o, -1).transpose(1, 2)
        if x.shape[0] != k:
            raise ValueError(f"x has {x.shape[0]} members, expected 1 or {k}")
        return torch.baddbmm(b.unsqueeze(2), w.transpose(1, 2), x.transpose(1, 2)).transpose(1, 2)

    def _mlp(self, x, w1, b1, w2, b2, act):
        return self._affine(act(self._affine(x, w1, b1)), w2, b2)

    def const_logvar(self, p) -> torch.Tensor:
        """log sigma^2 (K, 1, d1) of data-independent Sigma (kinds "prior", "learnable"),
        from the named parameters ``p`` (see :meth:`params`)."""
        if self.sigma == "prior":
            lv = (2.0 * torch.log(self.eta_enc)).unsqueeze(1).expand(self.n_members, self.d1)
            return lv.unsqueeze(1)
        return p["logvar"].unsqueeze(1)

    def encode(self, x: torch.Tensor, *, params=None) -> tuple[torch.Tensor, torch.Tensor]:
        """Mean and log-variance of q(z|x).

        Parameters
        ----------
        x : Tensor, shape (n, d0) or (K, n, d0)

        Returns
        -------
        mu, logvar : Tensor, shape (K, n, d1) each (logvar broadcast when Sigma is
            data-independent).
        """
        mu, logvar = self.encode_raw(x, params=params)
        return mu, logvar.expand_as(mu)

    def encode_raw(self, x: torch.Tensor, *, params=None):
        """As :meth:`encode`, but a data-independent logvar stays (K, 1, d1)."""
        p = self.params() if params is None else params
        x = self.as3d(x)
        if self.encoder == "linear":
            mu = self._affine(x, p["enc_w"], p["enc_b"])
        else:
            mu = self._mlp(x, p["enc_w1"], p["enc_b1"], p["enc_w2"], p["enc_b2"],
                           _ACT[self.encoder])
        return mu, self._logvar(x, p)

    def _logvar(self, x, p) -> torch.Tensor:
        if self.sigma == "linear":
            return self._affine(x, p["sig_w"], p["sig_b"])
        if self.sigma == "mlp":
            act = _ACT.get(self.encoder, torch.relu)
            return self._mlp(x, p["sig_w1"], p["sig_b1"], p["sig_w2"], p["sig_b2"], act)
        return self.const_logvar(p)

    def decode(self, z: torch.Tensor, *, params=None) -> torch.Tensor:
        """Mean of p(y|z): z (K, n, d1) (or (n, d1), shared) -> (K, n, d2)."""
        p = self.params() if params is None else params
        z = self.as3d(z)
        if self.decoder == "linear":
            return self._affine(z, p["dec_w"], p["dec_b"])
        return self._mlp(z, p["dec_w1"], p["dec_b1"], p["dec_w2"], p["dec_b2"],
                         _ACT[self.decoder])

    def forward(self, x: torch.Tensor, eps: torch.Tensor | None = None):
        """Reconstruction mean for z = mu + sigma * eps (eps None: z = mu)."""
        mu, logvar = self.encode(x)
        z = mu if eps is None else mu + torch.exp(0.5 * logvar) * eps
        return self.decode(z)
