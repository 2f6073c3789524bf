"""Atomic file writes: a reader never sees a half-written result, a crash loses nothing
already on disk (write to a temporary file in the same folder, fsync, then rename).

A process killed mid-write (SIGKILL, power loss) can leave its temporary behind: a hidden
``.NAME.XXXX.tmp`` beside NAME, never NAME itself half-written; :func:`remove_temporaries`
clears them when the work resumes. :func:`check_writable_dir` probes an output folder
before long work starts.
"""

from __future__ import annotations

import json
import os
import tempfile
from contextlib import contextmanager
from pathlib import Path

__all__ = ["atomic_path", "atomic_write_text", "atomic_write_json", "atomic_savez",
           "check_writable_dir", "remove_temporaries", "load_tensors", "TMP_MARK"]

#: Part of every temporary's name (``.NAME.XXXX.tmp[SUFFIX]``).
TMP_MARK = ".tmp"


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def _fsync_dir(folder: Path) -> None:
    """Make a rename in ``folder`` durable (where the platform allows it)."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


@contextmanager
def atomic_path(path: str | os.PathLike, suffix: str = ""):
    """Yield a temporary path beside ``path``; on success it replaces ``path`` atomically."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=TMP_MARK + suffix,
                               dir=path.parent)
    os.close(fd)
    try:
        yield Path(tmp)
        with open(tmp, "rb+") as fh:
            os.fsync(fh.fileno())
        # mkstemp creates 0600; give the result the mode a plain open() would (umask).
        os.chmod(tmp, 0o666 & ~_umask())
        os.replace(tmp, path)
        _fsync_dir(path.parent)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def atomic_write_text(path, text: str) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(text)


def atomic_write_json(path, obj, **kwargs) -> None:
    atomic_write_text(path, json.dumps(obj, indent=2, **kwargs) + "\n")


def atomic_savez(path, **arrays) -> None:
    import numpy as np

    with atomic_path(path, suffix=".npz") as tmp:
        np.savez(tmp, **arrays)


def check_writable_dir(path, name: str = "--out") -> Path:
    """Create the folder ``path`` if needed and prove it writable (create, write, fsync and
    remove a small file), so that a read-only, full or misnamed output folder is an error
    before long work starts, not after it.

    Parameters
    ----------
    path : path-like
    name : str
        How the message names the folder (the option or argument that gave it).

    Returns
    -------
    Path

    Raises
    ------
    OSError
        One line naming ``name``, the folder and the system's reason.
    """
    path = Path(path)
    if path.exists() and not path.is_dir():
        raise NotADirectoryError(f"{name} {path} is a file, not a folder; give a folder")
    try:
        path.mkdir(parents=True, exist_ok=True)
        fd, probe = tempfile.mkstemp(prefix=".write-probe.", suffix=TMP_MARK, dir=path)
        try:
            os.write(fd, b"postcollapse write probe\n")
            os.fsync(fd)
        finally:
            os.close(fd)
            os.unlink(probe)
    except OSError as exc:
        reason = exc.strerror or str(exc)
        err = OSError(f"{name} {path} is not writable ({reason}); choose another folder or "
                      "free space there")
        err.errno = exc.errno
        raise err from None
    return path


def remove_temporaries(folder, names) -> list[Path]:
    """Delete the temporaries that :func:`atomic_path` left in ``folder`` for the files
    ``names`` when a process was killed mid-write; returns the paths removed."""
    folder = Path(folder)
    removed = []
    if not folder.is_dir():
        return removed
    for fname in names:
        for p in folder.glob(f".{fname}.*{TMP_MARK}*"):
            try:
                p.unlink()
            except FileNotFoundError:
                continue
            removed.append(p)
    return removed


def load_tensors(path, *, what: str, map_location="cpu"):
    """``torch.load(path, weights_only=True)``: tensors, numbers, strings and containers
    only, never arbitrary pickled objects.

    Raises
    ------
    ValueError
        One line when ``path`` is damaged (truncated, not a torch file) or holds anything
        else, naming ``what`` it should be; a missing file stays FileNotFoundError.
    """
    import zipfile

    import torch

    try:
        return torch.load(path, map_location=map_location, weights_only=True)
    except Exception as exc:  # noqa: BLE001 -- sorted below, anything else re-raised
        if type(exc).__name__ == "UnpicklingError":  # weights_only refused an object
            reason = "it holds objects other than tensors and numbers, refused to unpickle"
        elif isinstance(exc, RuntimeError | EOFError | KeyError | zipfile.BadZipFile):
            first = (str(exc).splitlines() or [type(exc).__name__])[0]
            reason = f"damaged or not a torch file: {first[:80]}"
        else:
            raise
    raise ValueError(f"{path} is not a readable {what} ({reason}); delete it to start over "
                     "or use another folder")
