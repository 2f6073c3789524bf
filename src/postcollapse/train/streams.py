"""Reproducible per-seed randomness for training: mini-batch order and reparameterisation noise.

Everything random in a sweep is a pure function of (seed, step): batch indices of epoch e
come from a generator seeded with (seed, BATCH, e), noise of step block c from one seeded
with (seed, NOISE, c). So a member trains the same whatever the other members are, and a
run interrupted at any step and resumed sees exactly the same numbers.
"""

from __future__ import annotations

import torch

from postcollapse.models import member_seed

__all__ = ["Streams"]

_BATCH, _NOISE = 2, 3


class Streams:
    """Per-step batch indices (S, B) and noise (S, B, d1) for S distinct seeds.

    Parameters
    ----------
    n_rows : int
    batch_size : int or None
        None or >= n_rows: full batch (no indices). Otherwise each epoch is a fresh
        permutation cut into n_rows // batch_size batches (the last partial batch dropped).
    seeds : list of int
        The distinct seeds.
    noise_dim : int or None
        d1 when the loss is sampled; None when it is exact (no noise drawn).
    """

    def __init__(self, n_rows: int, batch_size: int | None, seeds, *, noise_dim: int | None,
                 dtype: torch.dtype, device: torch.device):
        self.n = int(n_rows)
        self.full = batch_size is None or batch_size >= self.n
        self.batch = self.n if self.full else int(batch_size)
        self.per_epoch = 1 if self.full else self.n // self.batch
        self.seeds = list(seeds)
        self.noise_dim = noise_dim
        self.dtype, self.device = dtype, device
        # Steps per block: a deterministic function of the configuration only.
        width = self.batch * (noise_dim or 1)
        self.block = max(1, min(256, (1 << 22) // max(1, width)))
        self._block_id = None
        self._idx = self._eps = None

    def _perm(self, seed: int, epoch: int) -> torch.Tensor:
        g = torch.Generator().manual_seed(member_seed(seed, _BATCH, epoch))
        return torch.randperm(self.n, generator=g)[: self.per_epoch * self.batch]

    def _fill(self, block_id: int) -> None:
        t0 = block_id * self.block
        t1 = t0 + self.block
        if not self.full:
            e0, e1 = t0 // self.per_epoch, (t1 - 1) // self.per_epoch
            rows = []
            for s in self.seeds:
                flat = torch.cat([self._perm(s, e) for e in range(e0, e1 + 1)])
                off = (t0 - e0 * self.per_epoch) * self.batch
                rows.append(flat[off: off + self.block * self.batch].view(self.block, self.batch))
            self._idx = self._to_device(torch.stack(rows, 1))  # (T, S, B)
        if self.noise_dim is not None:
            parts = []
            for s in self.seeds:
                g = torch.Generator().manual_seed(member_seed(s, _NOISE, block_id))
                parts.append(torch.randn(self.block, self.batch, self.noise_dim, generator=g,
                                         dtype=self.dtype))
            self._eps = self._to_device(torch.stack(parts, 1))  # (T, S, B, d1)
        self._block_id = block_id

    def _to_device(self, t: torch.Tensor) -> torch.Tensor:
        # On CUDA: an asynchronous copy from pinned memory, so that filling a block does
        # not wait for the steps already queued on the device.
        if torch.device(self.device).type == "cuda":
            return t.pin_memory().to(self.device, non_blocking=True)
        return t.to(self.device)

    def get(self, step: int) -> tuple[torch.Tensor | None, torch.Tensor | None]:
        """(indices (S, B) or None for full batch, noise (S, B, d1) or None) of ``step``."""
        if self.full and self.noise_dim is None:
            return None, None
        block_id, tl = divmod(step, self.block)
        if block_id != self._block_id:
            self._fill(block_id)
        idx = None if self.full else self._idx[tl]
        eps = None if self.noise_dim is None else self._eps[tl]
        return idx, eps
