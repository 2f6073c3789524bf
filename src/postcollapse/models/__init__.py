"""K-member batched (conditional) VAEs in PyTorch and their exact / sampled L_VAE.

``BatchedVAE`` holds K independent members (one per beta x seed) whose parameters carry a
leading member axis; the forward pass is batched matrix products, never a loop over members.
"""

from postcollapse.models.loss import (
    LossParts,
    MomentTensors,
    chunk_rows,
    evaluate_loss,
    exact_loss,
    kl_dims,
    moment_tensors,
    moments_loss,
    sampled_loss,
)
from postcollapse.models.vae import ARCHITECTURES, SIGMA_KINDS, BatchedVAE, member_seed

__all__ = [
    "ARCHITECTURES",
    "SIGMA_KINDS",
    "BatchedVAE",
    "member_seed",
    "LossParts",
    "MomentTensors",
    "moment_tensors",
    "kl_dims",
    "exact_loss",
    "sampled_loss",
    "moments_loss",
    "evaluate_loss",
    "chunk_rows",
]
