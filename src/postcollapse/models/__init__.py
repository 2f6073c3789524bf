"""K-member batched (conditional) VAEs in PyTorch and their exact / sampled L_VAE.

``BatchedVAE`` holds K independent members (one per beta x seed) whose parameters carry a
leading member axis; the forward pass is batched matrix products, never a loop over members.

The choice lists (``ARCHITECTURES``, ``SIGMA_KINDS``) import without torch; the other names
load ``models.vae`` / ``models.loss`` (and torch) when first used.
"""

from importlib import import_module

from postcollapse.models.kinds import ARCHITECTURES, SIGMA_KINDS

_HOME = {
    "BatchedVAE": "vae",
    "member_seed": "vae",
    "LossParts": "loss",
    "MomentTensors": "loss",
    "moment_tensors": "loss",
    "kl_dims": "loss",
    "kl_penalty": "loss",
    "smooth_free_bits": "loss",
    "BatchedHierarchicalVAE": "hierarchical",
    "hierarchical_exact_loss": "hierarchical",
    "hierarchical_sampled_loss": "hierarchical",
    "evaluate_hierarchical_loss": "hierarchical",
    "exact_loss": "loss",
    "sampled_loss": "loss",
    "moments_loss": "loss",
    "evaluate_loss": "loss",
    "chunk_rows": "loss",
    "gaussian_normaliser": "loss",
}

__all__ = ["ARCHITECTURES", "SIGMA_KINDS", *_HOME]


def __getattr__(name: str):
    if name not in _HOME:
        raise AttributeError(f"module 'postcollapse.models' has no attribute {name!r}")
    value = getattr(import_module(f"postcollapse.models.{_HOME[name]}"), name)
    globals()[name] = value
    return value


def __dir__():
    return sorted(__all__)
