"""The choices of a member's architecture (torch-free, so the CLI can list them)."""

__all__ = ["ARCHITECTURES", "SIGMA_KINDS", "check_embeddable"]

# Encoder / decoder networks: an affine map, or a two-layer MLP with this activation.
ARCHITECTURES = ("linear", "relu", "tanh")
# Kinds of encoder variance of a member (the ``sigma`` argument); the closed-form theory's
# "prior"/"learnable" modes are ``postcollapse.theory.SIGMA_MODES``.
SIGMA_KINDS = ("prior", "learnable", "linear", "mlp")


def check_embeddable(*, encoder: str, decoder: str, hidden: int, latent_dim: int,
                     levels: int = 1, free_bits=None) -> None:
    """Raise ValueError when the linear optimum cannot be embedded in this architecture
    (``init="linear"``, ``postcollapse.models.embed``): one level, no free bits, and an MLP
    needs a hidden unit per latent dimension (``hidden >= latent_dim``)."""
    if levels != 1 or free_bits is not None:
        raise ValueError("init 'linear' is for the one-level VAE without free bits; use "
                         "init 'cold' with levels=2 or free_bits")
    if (encoder != "linear" or decoder != "linear") and hidden < latent_dim:
        raise ValueError(f"init 'linear' needs hidden >= latent_dim ({latent_dim}) to embed "
                         f"the linear optimum in a {encoder}/{decoder} MLP; got hidden {hidden}")
