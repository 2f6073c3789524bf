"""Atomic writes: the result appears whole, with the permissions a plain write would give,
and a failure leaves the previous file and no temporary behind."""

from __future__ import annotations

import os

import numpy as np
import pytest

from postcollapse._io import atomic_path, atomic_savez, atomic_write_json, atomic_write_text


def test_atomic_write_replaces_and_uses_umask_permissions(tmp_path):
    path = tmp_path / "sub" / "out.txt"
    atomic_write_text(path, "one")
    atomic_write_text(path, "two")
    assert path.read_text() == "two"
    mask = os.umask(0)
    os.umask(mask)
    assert (path.stat().st_mode & 0o777) == (0o666 & ~mask)
    atomic_write_json(tmp_path / "x.json", {"a": 1})
    assert (tmp_path / "x.json").read_text().strip().startswith("{")
    atomic_savez(tmp_path / "a.npz", u=np.arange(3))
    assert np.load(tmp_path / "a.npz")["u"].tolist() == [0, 1, 2]


def test_failed_write_keeps_the_old_file_and_leaves_no_temporary(tmp_path):
    path = tmp_path / "out.json"
    atomic_write_text(path, "old")
    with pytest.raises(TypeError, match="not JSON serializable"):
        atomic_write_json(path, {"bad": object()})
    with pytest.raises(RuntimeError, match="crash mid-write"):
        with atomic_path(path) as tmp:
            tmp.write_text("half")
            raise RuntimeError("crash mid-write")
    assert path.read_text() == "old"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.json"]
