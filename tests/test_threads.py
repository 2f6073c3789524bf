"""Thread policy: the choice, its restoration, and its record in a sweep."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from postcollapse import threads as th
from postcollapse.cli import main


def test_requested_count_is_returned_as_is():
    assert th.choose_threads(10, requested=3) == 3
    c = th.thread_choice(None, requested=2)
    assert (c.threads, c.source) == (2, "requested")


def test_requested_count_below_one_is_refused():
    with pytest.raises(ValueError, match="threads must be >= 1, got 0"):
        th.choose_threads(10, requested=0)


def test_small_work_gets_one_thread(monkeypatch):
    monkeypatch.setattr(th, "cpu_cores", lambda: 16)
    monkeypatch.setattr(th, "busy_elsewhere", lambda **_: 0.0)
    assert th.choose_threads(th.WORK_PER_THREAD - 1) == 1


@pytest.mark.parametrize(("cores", "busy", "work", "expected"), [
    (2, 0.0, 100 * th.WORK_PER_THREAD, 2),  # idle, big work: every core
    (2, 1.0, 100 * th.WORK_PER_THREAD, 1),  # one busy process: the free core only
    (2, 5.0, 100 * th.WORK_PER_THREAD, 1),  # overloaded: still one
    (8, 0.0, 3 * th.WORK_PER_THREAD, 3),  # idle, but work for three threads only
    (8, 2.0, None, 6),  # unknown work: the free cores
])
def test_big_work_uses_the_free_cores(monkeypatch, cores, busy, work, expected):
    monkeypatch.setattr(th, "cpu_cores", lambda: cores)
    monkeypatch.setattr(th, "busy_elsewhere", lambda **_: busy)
    c = th.thread_choice(work)
    assert c.threads == expected
    assert (c.cores, c.busy, c.source) == (cores, busy, "auto")


def test_busy_elsewhere_and_cores_are_sane():
    assert th.busy_elsewhere(samples=2, interval=0.0) >= 0.0
    assert th.cpu_cores() >= 1


def test_torch_threads_sets_and_restores_torch_and_blas():
    threadpoolctl = pytest.importorskip("threadpoolctl")
    before = torch.get_num_threads()
    blas_before = [p["num_threads"] for p in threadpoolctl.threadpool_info()]
    target = 1 if before != 1 else 2
    with th.torch_threads(target):
        assert torch.get_num_threads() == target
        inside = [p["num_threads"] for p in threadpoolctl.threadpool_info()]
        assert all(n == target for n in inside), inside
    assert torch.get_num_threads() == before
    assert [p["num_threads"] for p in threadpoolctl.threadpool_info()] == blas_before


def test_torch_threads_restores_after_an_error():
    before = torch.get_num_threads()
    target = 1 if before != 1 else 2
    with pytest.raises(RuntimeError, match="boom"), th.torch_threads(target):
        raise RuntimeError("boom")
    assert torch.get_num_threads() == before


def test_torch_threads_none_changes_nothing():
    before = torch.get_num_threads()
    with th.torch_threads(None):
        assert torch.get_num_threads() == before


def _data():
    rng = np.random.default_rng(0)
    return rng.standard_normal((64, 4)) * np.array([3.0, 2.0, 1.0, 0.5]), None


def test_sweep_records_the_choice_and_leaves_threads_alone():
    from postcollapse.train import sweep

    before = torch.get_num_threads()
    res = sweep(_data(), betas=[0.5, 2.0], latent_dim=2, steps=20, device="cpu", threads=1)
    assert torch.get_num_threads() == before
    assert res.timing["threads"]["threads"] == 1
    assert res.timing["threads"]["source"] == "requested"
    auto = sweep(_data(), betas=[0.5, 2.0], latent_dim=2, steps=20, device="cpu")
    assert auto.timing["threads"]["source"] == "auto"
    assert auto.timing["threads"]["threads"] == 1  # a tiny model: one thread
    assert torch.get_num_threads() == before


def test_sweep_threads_option_is_validated():
    from postcollapse.train import sweep

    with pytest.raises(ValueError, match="threads must be >= 1"):
        sweep(_data(), betas=[1.0], latent_dim=2, steps=5, device="cpu", threads=0)


def test_cli_sweep_threads_is_written_to_sweep_json(tmp_path, capsys):
    x, _ = _data()
    np.save(tmp_path / "x.npy", x)
    out = tmp_path / "out"
    assert main(["sweep", str(tmp_path / "x.npy"), "--betas", "0.5,2", "--latent-dim", "2",
                 "--steps", "20", "--device", "cpu", "--threads", "1", "--quiet",
                 "--out", str(out)]) == 0
    meta = json.loads((out / "sweep.json").read_text())
    assert meta["timing"]["threads"]["threads"] == 1
    assert meta["timing"]["threads"]["source"] == "requested"


def test_cli_sweep_threads_errors(tmp_path, capsys):
    x, _ = _data()
    np.save(tmp_path / "x.npy", x)
    assert main(["sweep", str(tmp_path / "x.npy"), "--betas", "1", "--threads", "0",
                 "--quiet", "--out", str(tmp_path / "o")]) == 2
    assert "--threads must be" in capsys.readouterr().err
    assert main(["sweep", str(tmp_path / "x.npy"), "--betas", "1", "--threads", "1",
                 "--workers", "2", "--quiet", "--out", str(tmp_path / "o")]) == 2
    assert "--worker-threads" in capsys.readouterr().err


def test_cli_reproduce_threads_reach_every_sweep(monkeypatch, tmp_path):
    import postcollapse.reproduce as rep

    seen = {}

    class Stop(Exception):
        pass

    def fake(figure, **kw):
        seen.update(kw)
        raise Stop

    before = torch.get_num_threads()
    monkeypatch.setattr(rep, "reproduce", fake)
    try:
        with pytest.raises(Stop):
            main(["reproduce", "fig4", "--threads", "1", "--out", str(tmp_path), "-q"])
    finally:
        torch.set_num_threads(before)  # the CLI sets threads for its whole process
    assert seen["trainer"].keywords == {"threads": 1}
