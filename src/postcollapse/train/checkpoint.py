"""``Checkpoint``: save, load and resume an interrupted sweep, and the stop flag.

While a sweep with an output folder trains, ``OUT/checkpoint.pt`` holds the model, the
members' progress and the optimiser state, written atomically every ``every_seconds`` and
when SIGINT / SIGTERM arrive (the loop stops at the next step boundary). A checkpoint (and a
finished sweep) carries a fingerprint of the settings and data; resuming with other
settings is refused.

Every file is written atomically (``postcollapse._io``): a process killed at any point
(even SIGKILL, which cannot be caught) leaves each output either absent, as it was, or
complete; the temporaries such a kill leaves are removed when the sweep starts again.
Checkpoints are read with ``torch.load(..., weights_only=True)`` (tensors, numbers,
strings and containers only; nothing is unpickled).
"""

from __future__ import annotations

import json
import signal
import threading
import time
from pathlib import Path

import torch

from postcollapse._io import atomic_path, load_tensors, remove_temporaries

__all__ = ["Checkpoint", "CHECKPOINT_VERSION", "OUTPUT_FILES"]

#: Everything a sweep writes in its output folder.
OUTPUT_FILES = ("checkpoint.pt", "model.pt", "results.csv", "sweep.json")

CHECKPOINT_VERSION = 1


class Checkpoint:
    """The checkpoint of a sweep in ``out_dir`` (None: no output folder, nothing saved).

    Parameters
    ----------
    out_dir : path or None
    fingerprint : dict
        Settings and data summary; a checkpoint or finished sweep with another one is
        refused on resume.
    every_seconds : float
        Wall time between periodic saves.
    """

    def __init__(self, out_dir, fingerprint: dict, *, every_seconds: float = 60.0):
        self.out_dir = None if out_dir is None else Path(out_dir)
        self.path = None if self.out_dir is None else self.out_dir / "checkpoint.pt"
        self.fingerprint = fingerprint
        self.every_seconds = float(every_seconds)
        self.stop_requested = False
        self.signum = None
        self._old_handlers = {}
        self._last_save = time.perf_counter()
        #: Extra tensors saved with every checkpoint (e.g. the members' starting loss).
        self.extra: dict = {}
        #: The training step of the newest checkpoint on disk (None: none written or read).
        self.saved_step: int | None = None

    @property
    def enabled(self) -> bool:
        return self.path is not None

    def remove_temporaries(self) -> list:
        """Delete the temporaries of a writer killed mid-write (see ``postcollapse._io``)."""
        return [] if not self.enabled else remove_temporaries(self.out_dir, OUTPUT_FILES)

    def finished(self) -> bool:
        """True when ``out_dir`` holds a finished sweep of these settings (nothing to
        resume); raise if it holds one of other settings."""
        done = self.out_dir / "sweep.json"
        if not done.exists() or self.path.exists():
            return False
        if json.loads(done.read_text()).get("fingerprint") == self.fingerprint:
            return True
        raise ValueError(f"{self.out_dir} holds a finished sweep with other settings; use "
                         "another --out or drop --resume")

    def restore(self, net) -> dict | None:
        """Load the saved parameters into ``net`` and return the checkpoint ({"flat",
        "state", "opt"}, tensors on the model's device), or None when there is none."""
        if not self.enabled or not self.path.exists():
            return None
        ck = load_tensors(self.path, what="checkpoint", map_location=net.device)
        if not isinstance(ck, dict):
            raise ValueError(f"{self.path} is not a sweep checkpoint; delete it to start over")
        if ck.get("fingerprint") != self.fingerprint:
            raise ValueError(f"{self.path} is a checkpoint of a sweep with other settings; use "
                             "another --out or drop --resume")
        with torch.no_grad():
            net.flat.copy_(ck["flat"])
        self.saved_step = int(ck["state"]["step"])
        return ck

    def save(self, net, trainer, *, elapsed: float) -> None:
        """Write the model, the trainer's state (with ``elapsed`` training time) and its
        optimiser state atomically."""
        if not self.enabled:
            return
        trainer.sync_model()
        state = {**trainer.state.to_dict(), "elapsed": elapsed}
        opt_state = {key: (v.cpu() if isinstance(v, torch.Tensor) else v)
                     for key, v in trainer.optimizer_state().items()}
        try:
            with atomic_path(self.path, suffix=".pt") as tmp:
                torch.save({"fingerprint": self.fingerprint, "flat": net.flat.detach().cpu(),
                            "state": state, "opt": opt_state, **self.extra}, tmp)
        except OSError as exc:
            kept = ("the previous checkpoint is kept" if self.path.exists()
                    else "no checkpoint was kept")
            err = OSError(f"cannot write the checkpoint {self.path} ("
                          f"{exc.strerror or exc}); {kept}; free space and resume (--resume)")
            err.errno = exc.errno
            raise err from None
        self.saved_step = int(state["step"])
        self._last_save = time.perf_counter()

    def save_if_due(self, net, trainer, *, elapsed: float, now: float) -> None:
        """:meth:`save` when ``every_seconds`` have passed since the last save."""
        if self.enabled and now - self._last_save >= self.every_seconds:
            self.save(net, trainer, elapsed=elapsed)
            self._last_save = now

    def remove(self) -> None:
        """Delete the checkpoint (the sweep finished and its results are written)."""
        if self.enabled and self.path.exists():
            self.path.unlink()

    # ------------------------------------------------------------------ stop flag
    def _handler(self, signum, frame):
        self.stop_requested = True
        self.signum = signum

    def __enter__(self) -> Checkpoint:
        """Catch SIGINT / SIGTERM (with an output folder, in the main thread): they set
        ``stop_requested`` instead of interrupting a step."""
        self._last_save = time.perf_counter()
        if self.enabled and threading.current_thread() is threading.main_thread():
            for s in (signal.SIGINT, signal.SIGTERM):
                self._old_handlers[s] = signal.signal(s, self._handler)
        return self

    def __exit__(self, *exc) -> bool:
        for s, h in self._old_handlers.items():
            signal.signal(s, h)
        self._old_handlers = {}
        return False
