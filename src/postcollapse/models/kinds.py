"""The choices of a member's architecture (torch-free, so the CLI can list them)."""

__all__ = ["ARCHITECTURES", "SIGMA_KINDS"]

# Encoder / decoder networks: an affine map, or a two-layer MLP with this activation.
ARCHITECTURES = ("linear", "relu", "tanh")
# Kinds of encoder variance of a member (the ``sigma`` argument); the closed-form theory's
# "prior"/"learnable" modes are ``postcollapse.theory.SIGMA_MODES``.
SIGMA_KINDS = ("prior", "learnable", "linear", "mlp")
