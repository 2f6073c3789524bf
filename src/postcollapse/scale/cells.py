"""Sweeps cut into cells and trained on a Dask cluster, each finished cell kept on disk.

A cell is a group of sweep members: one seed and a contiguous chunk of betas. Each cell
is one batched training (``postcollapse.train.sweep``) on one worker. Members are
independent (a member's initialisation, batch order and noise depend only on its seed),
so the rows of the cells, put back in beta-major order, are the rows of the whole sweep
trained in one process. As each cell finishes its rows are written to
``OUT/cells/cell-NNNN.json`` (atomically; its trained members in ``cell-NNNN.pt``);
``resume=True`` trains only the cells not
there yet. A cell whose worker dies is run again elsewhere (Dask ``retries``).
"""

from __future__ import annotations

import json
import math
import os
import sys
import time
from pathlib import Path

import numpy as np

from postcollapse._checks import check_betas, check_int_at_least
from postcollapse._io import atomic_write_json

__all__ = ["plan_cells", "train_cell", "distributed_sweep", "CELLS_DIR", "DEFAULT_MIN_CELLS"]

CELLS_DIR = "cells"
DEFAULT_MIN_CELLS = 8
_PLAN = "plan.json"
# Keys of the sweep's theory holding one value per beta (merged across cells in beta order).
_GLOBAL_THEORY = ("sigma_mode", "zeta", "thresholds", "residual")
_LOCAL_OPTIONS = ("out", "resume", "progress", "callback", "betas", "seeds")


def plan_cells(n_betas: int, seeds, *, cell_betas: int | None = None) -> list[dict]:
    """Cut a beta x seed grid into cells: one seed and a contiguous chunk of betas each.

    Parameters
    ----------
    n_betas : int
    seeds : sequence of int
    cell_betas : int, optional
        Betas per cell. Default: all betas (one cell per seed) when there are at least
        ``DEFAULT_MIN_CELLS`` seeds, else chunks small enough for that many cells. The
        plan depends only on these arguments, never on the cluster, so a resumed sweep
        finds its cells again on any number of workers.

    Returns
    -------
    list of dict
        ``{"index": i, "betas": [lo, hi), "seed": s}`` (beta positions), seed-major.
    """
    n_betas = check_int_at_least("n_betas", n_betas, 1)
    seeds = [int(s) for s in seeds]
    if cell_betas is None:
        cell_betas = min(n_betas, max(1, math.ceil(n_betas * len(seeds) / DEFAULT_MIN_CELLS)))
    cell_betas = check_int_at_least("cell_betas", cell_betas, 1)
    cells = []
    for s in seeds:
        for lo in range(0, n_betas, cell_betas):
            cells.append({"index": len(cells), "betas": [lo, min(lo + cell_betas, n_betas)],
                          "seed": s})
    return cells


def train_cell(data, *, betas, seed: int, threads: int | None = 1, **options) -> dict:
    """Train one cell (runs on a worker): ``postcollapse.train.sweep`` of its members.

    Parameters
    ----------
    data : the sweep's data (a spec such as a path is loaded here, on the worker)
    betas : list of float
    seed : int
    threads : int or None
        torch CPU threads of this worker process (None: leave torch's setting).
    **options
        Passed to ``postcollapse.train.sweep``.

    Returns
    -------
    dict
        ``rows`` (the cell's result rows, beta order), ``summary`` (its sweep.json),
        ``pid`` and ``host`` of the worker, ``seconds`` it took.
    """
    import socket
    import tempfile

    import torch

    from postcollapse.train import sweep

    if threads is not None:
        torch.set_num_threads(int(threads))
    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="postcollapse-cell-") as tmp:
        res = sweep(data, betas=list(betas), seeds=[int(seed)], out=tmp, resume=False,
                    progress=False, **options)
        summary = json.loads((Path(tmp) / "sweep.json").read_text())
    model = None
    if res.model is not None:
        model = {"config": res.model.config(),
                 "flat": res.model.flat.detach().cpu().numpy().copy()}
    return {"rows": res.rows, "summary": summary, "model": model, "pid": os.getpid(),
            "host": socket.gethostname(), "seconds": time.perf_counter() - t0}


def _jsonable(v):
    if isinstance(v, dict):
        return {str(k): _jsonable(x) for k, x in v.items()}
    if isinstance(v, list | tuple | range):
        return [_jsonable(x) for x in v]
    if isinstance(v, str | int | float | bool) or v is None:
        return v
    if isinstance(v, np.generic):
        return v.item()
    return repr(v)


def _merge_theory(cells: list[dict], results: dict, n_betas: int) -> dict:
    """The sweep's theory over all betas from the cells' theories (per-beta keys merged)."""
    first = results[cells[0]["index"]]["summary"]["theory"]
    merged = {}
    for key, value in first.items():
        per_beta = key not in _GLOBAL_THEORY and isinstance(value, list) and all(
            isinstance(results[c["index"]]["summary"]["theory"].get(key), list)
            and len(results[c["index"]]["summary"]["theory"][key]) == c["betas"][1] - c["betas"][0]
            for c in cells)
        if not per_beta:
            merged[key] = value
            continue
        out = [None] * n_betas
        for c in cells:
            lo, hi = c["betas"]
            out[lo:hi] = results[c["index"]]["summary"]["theory"][key]
        merged[key] = out
    return merged


def _cell_path(cells_dir: Path, i: int, suffix: str = ".json") -> Path:
    return cells_dir / f"cell-{i:04d}{suffix}"


def _save_model(path: Path, model: dict) -> None:
    """``{"config", "flat"}`` of a BatchedVAE to ``path`` (torch.save, atomic)."""
    import torch

    from postcollapse._io import atomic_path

    with atomic_path(path, suffix=".pt") as tmp:
        torch.save({"config": model["config"], "flat": torch.as_tensor(model["flat"])}, tmp)


def _load_model(path: Path) -> dict | None:
    import torch

    if not path.exists():
        return None
    ck = torch.load(path, map_location="cpu", weights_only=True)  # never unpickle code
    return {"config": ck["config"], "flat": ck["flat"].numpy()}


def _merge_models(order: list[tuple[dict, int]], models: dict) -> dict | None:
    """One model of all members: ``order`` lists (cell, row in that cell) per member."""
    if any(models.get(c["index"]) is None for c, _ in order):
        return None
    first = models[order[0][0]["index"]]["config"]
    config = dict(first)
    for key in ("betas", "seeds", "eta_enc", "eta_dec"):  # one entry per member
        config[key] = [models[c["index"]]["config"][key][i] for c, i in order]
    flat = np.stack([np.asarray(models[c["index"]]["flat"])[i] for c, i in order])
    return {"config": config, "flat": flat}


def distributed_sweep(
    data,
    *,
    betas,
    seeds=(0,),
    client=None,
    cell_betas: int | None = None,
    out=None,
    resume: bool = False,
    progress: bool = False,
    threads: int | None = 1,
    retries: int = 3,
    on_cell=None,
    **sweep_options,
):
    """``postcollapse.train.sweep`` spread over a Dask cluster, one cell per task.

    Parameters
    ----------
    data : str, path, Dataset or (x, y)
        As for ``postcollapse.train.sweep``. A spec (a path, "synthetic", "mnist") is
        loaded by each worker where it runs (the files must be visible there); arrays
        are sent to the cluster once.
    betas : sequence of float
    seeds : sequence of int
    client : distributed.Client, optional
        Default: the active client (``distributed.default_client()``).
    cell_betas : int, optional
        Betas per cell (see ``plan_cells``).
    out : path, optional
        Folder for results.csv, sweep.json and cells/ (one JSON per finished cell).
    resume : bool
        Keep the finished cells in ``out``/cells and train only the others.
    progress : bool
        A progress bar on stderr counting members and cells (only on a terminal).
    threads : int or None, default 1
        torch threads per worker process while it trains a cell.
    retries : int, default 3
        Times a failed cell (e.g. its worker died) is run again before the sweep fails.
    on_cell : callable, optional
        ``on_cell(cell, result)`` in this process as each cell arrives (after its file
        is written).
    **sweep_options
        The other keyword arguments of ``postcollapse.train.sweep`` (model, sigma,
        latent_dim, steps, device, ...). ``device`` is resolved on each worker.

    Returns
    -------
    SweepResult
        Rows beta-major as in ``sweep``; ``model`` holds every member (put together from
        the cells' models; also saved as ``out``/model.pt); ``timing`` sums the cells'
        training time.
    """
    from postcollapse.train import SweepResult

    bad = [k for k in sweep_options if k in _LOCAL_OPTIONS]
    if bad:
        raise TypeError(f"distributed_sweep got {bad[0]!r} among the sweep options; it is "
                        "not available on a cluster")
    betas = [float(b) for b in check_betas(betas)]
    if isinstance(seeds, int | np.integer):
        raise TypeError(f"seeds must be a sequence of ints such as range({seeds}), "
                        f"got the int {seeds}")
    seeds = [check_int_at_least("seed", s, 0) for s in seeds]
    if not seeds or len(set(seeds)) != len(seeds):
        raise ValueError(f"seeds must be non-empty and distinct, got {seeds}")
    retries = check_int_at_least("retries", retries, 0)
    cells = plan_cells(len(betas), seeds, cell_betas=cell_betas)
    if client is None:
        from distributed import default_client

        try:
            client = default_client()
        except ValueError:
            raise ValueError("distributed_sweep needs a dask client: pass client= or create "
                             "a distributed.Client first") from None
    t0 = time.perf_counter()

    spec = os.fspath(data) if isinstance(data, str | os.PathLike) else None
    plan = _jsonable({"data": spec, "betas": betas, "seeds": seeds, "cells": cells,
                      "options": sweep_options})
    out_dir = None if out is None else Path(out)
    cells_dir = None if out_dir is None else out_dir / CELLS_DIR
    results: dict[int, dict] = {}
    models: dict[int, dict | None] = {}
    if resume and out_dir is None:
        raise ValueError("resume=True needs out (the folder of the interrupted sweep)")
    if cells_dir is not None:
        plan_path = cells_dir / _PLAN
        if resume and plan_path.exists():
            if json.loads(plan_path.read_text()) != plan:
                raise ValueError(f"{out_dir} holds a sweep with other settings; use another "
                                 "--out or drop --resume")
            for c in cells:
                p = _cell_path(cells_dir, c["index"])
                if p.exists():
                    results[c["index"]] = json.loads(p.read_text())
                    models[c["index"]] = _load_model(_cell_path(cells_dir, c["index"], ".pt"))
        else:
            if cells_dir.exists():
                for p in [*cells_dir.glob("cell-*.json"), *cells_dir.glob("cell-*.pt")]:
                    p.unlink()
            atomic_write_json(plan_path, plan)

    todo = [c for c in cells if c["index"] not in results]
    from tqdm import tqdm

    done_members = sum(c["betas"][1] - c["betas"][0] for c in cells if c["index"] in results)
    bar = tqdm(total=len(betas) * len(seeds), initial=done_members, unit="member",
               file=sys.stderr, dynamic_ncols=True,
               disable=not progress or not sys.stderr.isatty(),
               desc=f"cells {len(results)}/{len(cells)}")
    if todo:
        from distributed import as_completed

        payload = data if spec is not None else client.scatter(data, broadcast=False)
        futures = {}
        for c in todo:
            lo, hi = c["betas"]
            f = client.submit(train_cell, payload if spec is None else spec,
                              betas=betas[lo:hi], seed=c["seed"], threads=threads,
                              pure=False, retries=retries, **sweep_options)
            futures[f] = c
        try:
            for f in as_completed(list(futures)):
                c = futures[f]
                res = f.result()
                models[c["index"]] = res.pop("model", None)
                res = _jsonable({**res, "cell": c})
                if cells_dir is not None:  # the model first: a cell is done when its .json is
                    if models[c["index"]] is not None:
                        _save_model(_cell_path(cells_dir, c["index"], ".pt"), models[c["index"]])
                    atomic_write_json(_cell_path(cells_dir, c["index"]), res)
                results[c["index"]] = res
                bar.update(c["betas"][1] - c["betas"][0])
                bar.set_description(f"cells {len(results)}/{len(cells)}")
                if on_cell is not None:
                    on_cell(c, res)
        except BaseException as exc:
            for f in futures:
                f.cancel()
            bar.close()
            if isinstance(exc, KeyboardInterrupt) and cells_dir is not None:
                raise KeyboardInterrupt(
                    f"distributed sweep interrupted; {len(results)} of {len(cells)} cells "
                    f"saved in {cells_dir}, continue with resume") from None
            raise
    bar.close()

    # ------------------------------------------------------------ merge, beta-major
    seed_cell = {}
    for c in cells:
        for bi in range(*c["betas"]):
            seed_cell[(bi, c["seed"])] = c
    rows = []
    order = []
    for bi in range(len(betas)):
        for s in seeds:
            c = seed_cell[(bi, s)]
            rows.append(results[c["index"]]["rows"][bi - c["betas"][0]])
            order.append((c, bi - c["betas"][0]))
    merged_model = _merge_models(order, models)
    net = None
    if merged_model is not None:
        import torch

        from postcollapse.models import BatchedVAE

        net = BatchedVAE.from_config(merged_model["config"])
        with torch.no_grad():
            net.flat.copy_(torch.as_tensor(merged_model["flat"]))
    first = results[cells[0]["index"]]["summary"]
    config = {**first["config"], "betas": betas, "seeds": seeds}
    theory = _merge_theory(cells, results, len(betas))
    timing = {
        "train_time": float(sum(r["summary"].get("timing", {}).get("train_time", 0.0)
                                for r in results.values())),
        "total_time": time.perf_counter() - t0,
        "cells": len(cells),
        "cell_seconds": float(sum(r.get("seconds", 0.0) for r in results.values())),
        "device": first.get("timing", {}).get("device"),
        "workers": sorted({f"{r.get('host')}:{r.get('pid')}" for r in results.values()}),
    }
    result = SweepResult(rows=rows, config=config, theory=theory,
                         members=[(b, s) for b in betas for s in seeds], model=net,
                         data=first.get("data", {}), timing=timing)
    if out_dir is not None:
        summary = result.summary()
        if "fingerprint" in first:
            summary["fingerprint"] = {**first["fingerprint"], "config": config}
        if merged_model is not None:
            _save_model(out_dir / "model.pt", merged_model)
        result.to_csv(out_dir / "results.csv")
        atomic_write_json(out_dir / "sweep.json", summary)
    return result
