"""One run per figure: train (or resume) its sweep, draw it, write its CSVs, return a record.

:func:`sweep_figure` draws the loss / sigma figures (fig1, fig2, fig4, fig5);
:func:`samples_figure` the prior samples (fig3). Both train through ``ctx.trainer``, a
callable with the signature of :func:`postcollapse.train.sweep`.
"""

from __future__ import annotations

import csv
import io
import math
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np

from postcollapse._io import atomic_savez, atomic_write_text
from postcollapse.reproduce.grids import beta_grid, sample_betas
from postcollapse.reproduce.presets import FigureConfig
from postcollapse.reproduce.reading import (
    COLLAPSE_TOL,
    read_collapse,
    rows_to_arrays,
    theory_gaps,
)
from postcollapse.reproduce.records import DataInfo, SamplesFigure, SweepFigure
from postcollapse.reproduce.report import num, pct
from postcollapse.train.results import parse_flag

__all__ = ["RunContext", "TRAINER_OPTIONS", "run_sweep", "sweep_figure", "samples_figure",
           "decode_prior", "dataset_of", "write_csv"]


@dataclass
class RunContext:
    """What every figure run shares: the output folder, the trainer and its options, the
    log, and the data sets loaded so far (with their spectra)."""

    out: Path
    trainer: Callable
    device: str = "auto"
    progress: bool = False
    log: Callable[[str], None] = lambda s: None
    mnist: str = "mnist"
    datasets: dict = field(default_factory=dict)


@dataclass(frozen=True)
class _Theory:
    """A figure's data set, its spectrum, and the zeta / thresholds of its latent modes."""

    ds: object
    spec: object
    zeta: np.ndarray
    thresholds: np.ndarray


def _theory(ctx: RunContext, cfg: FigureConfig) -> _Theory:
    from postcollapse.data import Dataset, load
    from postcollapse.theory import spectrum

    key = (cfg.data, cfg.n_data)
    if key not in ctx.datasets:
        ds = load(ctx.mnist if cfg.data == "mnist" else cfg.data)
        if cfg.n_data is not None and cfg.n_data < ds.n_samples:
            y = None if ds.y is None else np.asarray(ds.y[: cfg.n_data])
            ds = Dataset(name=f"{ds.name}[:{cfg.n_data}]", x=np.asarray(ds.x[: cfg.n_data]), y=y)
        ctx.datasets[key] = (ds, spectrum(ds.moments()))
    ds, spec = ctx.datasets[key]
    zeta = np.asarray(spec.zeta_padded(cfg.latent_dim), dtype=float)
    return _Theory(ds=ds, spec=spec, zeta=zeta, thresholds=zeta**2)


def dataset_of(ctx: RunContext, cfg: FigureConfig):
    """The data set of ``cfg`` (loaded once per context)."""
    return _theory(ctx, cfg).ds


#: The FigureConfig fields passed to the trainer under the same name.
TRAINER_OPTIONS = ("model", "sigma", "latent_dim", "hidden", "seeds", "steps", "epochs",
                   "batch_size", "lr", "optimizer", "dtype", "eval_samples", "lr_decay",
                   "block_scaling")


def run_sweep(ctx: RunContext, cfg: FigureConfig, data, betas, sweep_dir: Path):
    """Train (or resume) the sweep of ``cfg`` at ``betas`` in ``sweep_dir`` with
    ``ctx.trainer``; returns its result (``rows``, ``members``, ``model``, ``timing``)."""
    options = {name: getattr(cfg, name) for name in TRAINER_OPTIONS}
    return ctx.trainer(data, betas=[float(b) for b in betas], **options, device=ctx.device,
                       out=sweep_dir, resume=True, progress=ctx.progress)


def write_csv(path: Path, header: Sequence[str], rows: Iterable[Sequence]) -> None:
    """Write a CSV atomically; floats as ``repr`` (they read back exactly)."""
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(header)
    for r in rows:
        w.writerow([repr(float(v)) if isinstance(v, float | np.floating) else v for v in r])
    atomic_write_text(path, buf.getvalue())


def _timing(ctx: RunContext, res, fallback: float) -> tuple[float, str]:
    """Training seconds and device that a sweep recorded (a resumed sweep keeps them)."""
    timing = getattr(res, "timing", None) or {}
    return float(timing.get("total_time", fallback)), str(timing.get("device", ctx.device))


def _head(ctx: RunContext, cfg: FigureConfig, th: _Theory, betas, paths, extra_files):
    """The :class:`FigureRecord` fields that do not depend on the kind of figure."""
    ds = th.ds
    return {
        "name": cfg.name,
        "title": cfg.title,
        "config": cfg,
        "data": DataInfo(name=ds.name, n_samples=ds.n_samples, d0=ds.d0, d2=ds.d2),
        "zeta": th.zeta.tolist(),
        "thresholds": th.thresholds.tolist(),
        "betas": np.asarray(betas).tolist(),
        "files": [str(p.relative_to(ctx.out)) for p in paths]
        + [f"{cfg.name}/{name}" for name in extra_files],
    }


def _write_sweep_csvs(fdir: Path, cfg: FigureConfig, th: _Theory, rows, curves) -> None:
    """The data behind a loss / sigma figure: trained points with theory at the same beta,
    and the dense theory curves."""
    from postcollapse.figures import theory_sigma
    from postcollapse.theory import active_modes, min_loss

    d1 = cfg.latent_dim
    a = rows_to_arrays(rows, latent_dim=d1)
    lstar = np.asarray(min_loss(th.spec, a["beta"], latent_dim=d1, sigma="learnable"))
    sstar = theory_sigma(th.zeta, a["beta"])
    header = (["beta", "seed", "loss", "theory_loss", "active_units", "theory_active"]
              + [f"sigma_sorted_{i + 1}" for i in range(d1)]
              + [f"theory_sigma_{i + 1}" for i in range(d1)])
    write_csv(fdir / f"{cfg.name}.csv", header, (
        [a["beta"][j], int(a["seed"][j]), a["loss"][j], lstar[j], int(a["active_units"][j]),
         active_modes(th.zeta, float(a["beta"][j]), latent_dim=d1)]
        + list(a["sigma"][j]) + list(sstar[j])
        for j in range(a["beta"].size)
    ))
    write_csv(fdir / f"{cfg.name}_theory.csv",
               ["beta", "theory_loss"] + [f"theory_sigma_{i + 1}" for i in range(d1)],
               ([curves.betas[j], curves.loss[j], *curves.sigma[j]]
                for j in range(curves.betas.size)))


def sweep_figure(ctx: RunContext, cfg: FigureConfig) -> SweepFigure:
    """Train the beta grid of ``cfg``, draw the loss / sigma figure against theory, write
    its CSVs, and read the observed collapse."""
    from postcollapse.figures import loss_sigma_figure, save_figure, theory_curves

    t_start = time.perf_counter()
    fdir = ctx.out / cfg.name
    th = _theory(ctx, cfg)
    ds, thr = th.ds, th.thresholds
    betas = beta_grid(thr, n=cfg.n_grid, lo=cfg.grid_lo, hi=cfg.grid_hi, bracket=cfg.bracket,
                      bracket_modes=cfg.bracket_modes)
    ctx.log(f"[{cfg.name}] {ds.name}: {ds.n_samples} x {ds.d0} -> {ds.d2}, model {cfg.model}, "
            f"hidden {cfg.hidden}; {betas.size} betas x {len(cfg.seeds)} seed(s); "
            f"beta_i* = {', '.join(f'{t:.3g}' for t in thr)}")
    t0 = time.perf_counter()
    res = run_sweep(ctx, cfg, ds, betas, fdir / "sweep")
    run_s = time.perf_counter() - t0
    train_s, device = _timing(ctx, res, run_s)
    rows = [dict(r) for r in res.rows]
    reading = read_collapse(rows, thr, latent_dim=cfg.latent_dim)
    gaps = theory_gaps(rows, th.spec, latent_dim=cfg.latent_dim)

    curves = theory_curves(th.spec, latent_dim=cfg.latent_dim,
                           beta_range=(betas.min() / 1.5, betas.max() * 1.5))
    fig = loss_sigma_figure(rows, curves, title=cfg.title, observed_collapse=reading.observed)
    paths = save_figure(fig, fdir / cfg.name)
    _write_sweep_csvs(fdir, cfg, th, rows, curves)
    tol = COLLAPSE_TOL.get(cfg.data, 0.25)
    ctx.log(f"[{cfg.name}] predicted complete collapse beta_1* = {reading.predicted:.4g}, "
            f"observed {num(reading.observed)} ({pct(reading.rel_error)}); "
            f"max loss gap to linear theory {gaps.loss:.2e}; trained in {train_s:.1f} s"
            + (" (resumed)" if run_s < 0.5 * train_s else ""))
    n_div = sum(parse_flag(r.get("diverged", False)) for r in rows)
    return SweepFigure(
        **_head(ctx, cfg, th, betas, paths,
                [f"{cfg.name}.csv", f"{cfg.name}_theory.csv", "sweep/results.csv"]),
        collapse=reading,
        collapse_tolerance=tol,
        collapse_within_tolerance=(reading.rel_error is not None
                                   and abs(reading.rel_error) <= tol),
        gaps=gaps,
        linear=cfg.model == "linear",
        n_rows=len(rows),
        n_converged=int(sum(parse_flag(r.get("converged", True)) for r in rows)),
        n_diverged=int(n_div),
        n_active_agree=reading.n_active_agree,
        train_seconds=train_s,
        device=device,
        wall_seconds=time.perf_counter() - t_start,
    )


def _cached_samples(ctx: RunContext, cfg: FigureConfig, cache: Path, betas):
    """(images, active, train_seconds, device) from ``cache`` if it holds these betas and
    as many images per beta as ``cfg`` asks for; else None."""
    if not cache.exists():
        return None
    with np.load(cache, allow_pickle=False) as z:
        fresh = (set(z.files) >= {"betas", "images", "active", "train_seconds", "device"}
                 and z["betas"].shape == betas.shape and np.allclose(z["betas"], betas)
                 and z["images"].shape[1] == cfg.n_images)
        if not fresh:
            return None
        ctx.log(f"[{cfg.name}] reusing decoded samples in {cache}")
        return z["images"], z["active"], float(z["train_seconds"]), str(z["device"])


def samples_figure(ctx: RunContext, cfg: FigureConfig) -> SamplesFigure:
    """Train one model per beta at which theory keeps k = latent_dim, ..., 0 modes, and
    draw images decoded from prior samples (cached in ``OUT/fig3/samples.npz``)."""
    from postcollapse.figures import samples_figure as draw_samples
    from postcollapse.figures import save_figure

    t_start = time.perf_counter()
    fdir = ctx.out / cfg.name
    th = _theory(ctx, cfg)
    chosen = sample_betas(th.thresholds, latent_dim=cfg.latent_dim)
    ks = [k for k, _ in chosen]
    betas = np.array([b for _, b in chosen])
    seed = cfg.seeds[0]
    cache = fdir / "samples.npz"
    ctx.log(f"[{cfg.name}] {th.ds.name}: betas {', '.join(f'{b:.3g}' for b in betas)} "
            f"(theory keeps {', '.join(map(str, ks))} modes)")
    t0 = time.perf_counter()
    found = _cached_samples(ctx, cfg, cache, betas)
    if found is None:
        res = run_sweep(ctx, replace(cfg, seeds=(seed,)), th.ds, betas, fdir / "sweep")
        images, active = decode_prior(res, betas, seed=seed, n=cfg.n_images,
                                      latent_dim=cfg.latent_dim)
        train_s, device = _timing(ctx, res, time.perf_counter() - t0)
        atomic_savez(cache, betas=betas, images=images, active=active,
                     train_seconds=np.array(train_s), device=np.array(device))
    else:
        images, active, train_s, device = found
    labels = [f"β = {b:.3g}\ntheory: {k} mode{'s' * (k != 1)}\nobserved: {int(a)} active"
              for k, b, a in zip(ks, betas, active, strict=True)]
    paths = save_figure(draw_samples(list(images), labels, title=cfg.title), fdir / cfg.name)
    write_csv(fdir / f"{cfg.name}.csv",
               ["beta", "theory_modes", "active_units", "sample"]
               + [f"pixel_{p}" for p in range(images.shape[2])],
               ([betas[i], ks[i], int(active[i]), j, *images[i, j]]
                for i in range(len(betas)) for j in range(images.shape[1])))
    ctx.log(f"[{cfg.name}] observed active units {list(map(int, active))} vs theory {ks}")
    return SamplesFigure(
        **_head(ctx, cfg, th, betas, paths, [f"{cfg.name}.csv"]),
        theory_modes=ks,
        observed_active=[int(a) for a in active],
        n_agree=int(sum(int(a) == k for k, a in zip(ks, active, strict=True))),
        train_seconds=train_s,
        device=device,
        wall_seconds=time.perf_counter() - t_start,
    )


def decode_prior(res, betas, *, seed: int, n: int, latent_dim: int):
    """Decoder means for n draws z ~ N(0, I), per beta; and each member's active units.

    Returns
    -------
    images : ndarray (len(betas), n, d2), clipped to [0, 1]
    active : ndarray (len(betas),), int; -1 where the result has no row for the member.
    """
    import torch

    members = [(float(b), int(s)) for b, s in res.members]
    idx = []
    for b in betas:
        j = [m for m, (mb, ms) in enumerate(members)
             if ms == seed and math.isclose(mb, b, rel_tol=1e-9)]
        if not j:
            raise ValueError(f"sweep result has no member for beta={b:g}, seed={seed}")
        idx.append(j[0])
    gen = torch.Generator().manual_seed(12345 + seed)
    z = torch.randn(1, n, latent_dim, generator=gen, dtype=torch.float64)
    model = res.model
    param = next(model.parameters())
    z = z.to(device=param.device, dtype=param.dtype).expand(len(members), n, latent_dim)
    with torch.no_grad():
        out = model.decode(z.contiguous()).detach().cpu().double().numpy()
    images = np.clip(out[idx], 0.0, 1.0)
    by_member = {(float(r["beta"]), int(r["seed"])): int(float(r["active_units"]))
                 for r in res.rows}
    active = np.array([by_member.get(members[j], -1) for j in idx])
    return images, active
