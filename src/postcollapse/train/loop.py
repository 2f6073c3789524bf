"""The training loop: step the trainer, check convergence, report progress, checkpoint.

At every convergence check (each ``check_every`` steps and at the last step) the loop
stamps the members that stopped, calls the progress hooks with a :class:`CheckInfo`,
saves a periodic checkpoint and ends early when no member is training.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch

__all__ = ["CheckInfo", "ProgressBar", "train"]


@dataclass(frozen=True)
class CheckInfo:
    """What a progress hook sees at a convergence check.

    Attributes
    ----------
    step, steps : int
        Steps done and the step budget.
    active : int
        Members still training.
    loss : ndarray (K,)
        Newest training loss of each member (NaN before its first step).
    model : BatchedVAE
        The model with the current parameters. Changing ``model.flat`` in place changes
        the training of Adam sweeps (the parameters are updated in place).
    """

    step: int
    steps: int
    active: int
    loss: np.ndarray
    model: object


class ProgressBar:
    """A tqdm bar on stderr as a progress hook (off unless ``enabled`` and a terminal)."""

    def __init__(self, *, steps: int, initial: int, members: int, enabled: bool):
        from tqdm import tqdm

        self.bar = tqdm(total=steps, initial=initial, file=sys.stderr, unit="step",
                        disable=not enabled or not sys.stderr.isatty(), dynamic_ncols=True,
                        desc=f"sweep {members} members")

    def __call__(self, info: CheckInfo) -> None:
        self.bar.update(info.step - self.bar.n)
        finite = info.loss[np.isfinite(info.loss)]
        if finite.size:
            self.bar.set_postfix(active=info.active, best=f"{float(finite.min()):.5g}",
                                 worst=f"{float(finite.max()):.5g}", refresh=False)

    def close(self) -> None:
        self.bar.close()


def _check_point(trainer, net, steps: int, elapsed: float, bar, hooks) -> int:
    """Convergence check, stop-time stamps, bar and hooks; returns the number of active
    members."""
    st = trainer.state
    trainer.check()
    # One device-to-host transfer per check (the only synchronisation of the loop).
    host = torch.cat([st.active.to(st.last_loss.dtype), st.last_loss]).cpu()
    active, loss = host[: st.last_loss.numel()] > 0, host[st.last_loss.numel():]
    stopped = ~active & torch.isnan(st.stop_time)
    st.stop_time[stopped] = elapsed
    n_active = int(active.sum())
    if hooks:  # only hooks see the model: bring it up to date for them
        trainer.sync_model()
    info = CheckInfo(step=st.step, steps=steps, active=n_active,
                     loss=loss.numpy(), model=net)
    for hook in (bar, *hooks):
        hook(info)
    return n_active


def train(trainer, net, *, steps: int, check_every: int, checkpoint, progress: bool,
          hooks: list[Callable[[CheckInfo], None]]) -> float:
    """Run ``trainer`` to ``steps`` (or until every member stopped); return the training time.

    SIGINT / SIGTERM (caught by ``checkpoint``) or Ctrl-C save a checkpoint and raise
    KeyboardInterrupt naming the folder to resume from.
    """
    st = trainer.state
    bar = ProgressBar(steps=steps, initial=st.step, members=net.n_members, enabled=progress)
    t_run = time.perf_counter()
    with checkpoint:
        try:
            while st.step < steps:
                if checkpoint.stop_requested:
                    raise KeyboardInterrupt
                trainer.step()
                if st.step % check_every == 0 or st.step == steps:
                    now = time.perf_counter()
                    elapsed = st.elapsed + (now - t_run)
                    n_active = _check_point(trainer, net, steps, elapsed, bar, hooks)
                    checkpoint.save_if_due(net, trainer, elapsed=elapsed, now=now)
                    if n_active == 0:
                        break
        except KeyboardInterrupt:
            bar.close()
            if checkpoint.enabled:
                checkpoint.save(net, trainer, elapsed=st.elapsed + time.perf_counter() - t_run)
                raise KeyboardInterrupt(f"sweep interrupted at step {st.step}; checkpoint "
                                        f"saved in {checkpoint.out_dir}, continue with "
                                        "resume") from None
            raise
    bar.close()
    trainer.sync_model()
    train_time = st.elapsed + (time.perf_counter() - t_run)
    st.stop_time[torch.isnan(st.stop_time)] = train_time
    return train_time
