"""locate on a Dask cluster: scale.ClusterTrainer gives the in-process thresholds."""

from __future__ import annotations

import numpy as np
import pytest
from distributed import Client, LocalCluster

from postcollapse.locate import locate
from postcollapse.scale import ClusterTrainer, member_cells

RNG = np.random.default_rng(3)
X = RNG.normal(size=(300, 4)) * np.array([2.5, 1.7, 1.0, 0.3]) + 5.0
LBFGS = {"model": "linear", "optimizer": "lbfgs", "dtype": "float64"}


def test_member_cells_group_by_seed_and_cut_betas():
    members = [(3.0, 1), (1.0, 0), (2.0, 1), (2.0, 0), (1.0, 1), (5.0, 0)]
    assert member_cells(members, cell_betas=2) == [(0, [1.0, 2.0]), (0, [5.0]),
                                                  (1, [1.0, 2.0]), (1, [3.0])]
    # default: at least 8 cells in all when there are enough members
    cells = member_cells([(float(b), s) for b in range(1, 9) for s in (0, 1)])
    assert len(cells) == 8 and all(len(b) == 2 for _, b in cells)
    with pytest.raises(ValueError, match="cell_betas"):
        member_cells(members, cell_betas=0)


@pytest.mark.slow
def test_cluster_locate_equals_in_process_locate():
    kw = {"latent_dim": 2, "seeds": [0, 1], "rtol": 0.02, **LBFGS}
    local = locate((X, None), **kw)
    with (
        LocalCluster(n_workers=2, threads_per_worker=1, processes=True,
                     dashboard_address=None) as cluster,
        Client(cluster) as client,
    ):
        trainer = ClusterTrainer(client, cell_betas=3)
        remote = locate((X, None), trainer=trainer, **kw)
    assert remote.done and local.done
    for a, b in zip(remote.modes, local.modes, strict=True):
        assert (a.mode, a.lower, a.upper, a.observed) == (b.mode, b.lower, b.upper, b.observed)
        assert abs(a.rel_error) < 0.02
    # every round trained the same members, with the same counts
    assert [r["members"] for r in remote.rounds] == [
        [{**m, "loss": pytest.approx(m["loss"], rel=1e-9)} for m in r["members"]]
        for r in local.rounds]
