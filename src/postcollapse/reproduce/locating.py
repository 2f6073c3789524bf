"""The located thresholds of a reproduction (a figure beyond the paper).

For each sweep figure that the preset affords, :func:`locate_section` runs
:func:`postcollapse.locate` with the figure's data, model and training settings (the
trainer's convergence rule on: plateau learning-rate decay for Adam), for the modes in
:data:`LOCATE_TABLE`, in ``OUT/locate/<fig>/`` (resumed when found there), and draws the
observed against the predicted critical beta of every located mode (``OUT/locate/
locate.png``). The summary table of complete collapse then uses the located mode 1.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass, replace
from types import MappingProxyType

from postcollapse.reproduce.presets import FigureConfig, figure_config

__all__ = ["LOCATE_TABLE", "LOCATE_OPTIONS", "LocatedFigure", "locate_section"]

ALL_MODES = None
#: preset -> figure -> (modes to locate (None: all), seeds (None: the figure's), rtol).
#: quick: what 2 CPU cores afford next to the figures (the linear model fully, mode 1 of
#: the synthetic ReLU and Tanh models with one seed; not MNIST); paper: every mode of every
#: sweep figure; test: mode 1 of the linear model, coarsely.
LOCATE_TABLE = MappingProxyType({
    "quick": {"fig4": (ALL_MODES, (0,), 0.01), "fig1": ((1,), (0,), 0.01),
              "fig5": ((1,), (0,), 0.01)},
    "paper": {"fig1": (ALL_MODES, None, 0.01), "fig2": (ALL_MODES, None, 0.01),
              "fig4": (ALL_MODES, None, 0.01), "fig5": (ALL_MODES, None, 0.01)},
    "test": {"fig4": ((1,), (0,), 0.05)},
})

#: FigureConfig fields passed to ``locate`` (the trainer's convergence defaults stay on).
LOCATE_OPTIONS = ("model", "sigma", "latent_dim", "hidden", "steps", "epochs", "batch_size",
                  "lr", "optimizer", "dtype", "eval_samples")


@dataclass(frozen=True)
class LocatedFigure:
    """The located thresholds for one figure's model.

    ``modes`` are the :class:`~postcollapse.locate.ModeThreshold` rows as dicts (mode,
    predicted, observed, lower, upper, rel_error, seeds, converged_fraction, monotone,
    note); ``rounds`` and ``members`` count the trainings; ``files`` are relative to the
    output folder.
    """

    name: str
    label: str
    config: FigureConfig
    rtol: float
    modes: list
    rounds: int
    members: int
    done: bool
    train_seconds: float
    files: list

    def mode(self, i: int) -> dict | None:
        """The row of mode ``i`` (None when it was not located)."""
        return next((m for m in self.modes if m["mode"] == i), None)


def _label(cfg: FigureConfig) -> str:
    return f"{cfg.model} {cfg.data} (h{cfg.hidden})" if cfg.model != "linear" else \
        f"linear {cfg.data}"


def locate_section(ctx, names, preset: str, *, seeds: int | None = None):
    """Locate the thresholds the preset affords for the figures ``names``; draw them.

    Returns the list of :class:`LocatedFigure` (empty when the preset locates none of
    ``names``) and the path of the figure (relative to ``ctx.out``) or None.
    """
    from postcollapse.figures import locate_figure, save_figure
    from postcollapse.locate import locate
    from postcollapse.reproduce.runs import dataset_of

    table = LOCATE_TABLE.get(preset, {})
    records, linear_rule = [], None
    for name in [n for n in names if n in table]:
        modes, lseeds, rtol = table[name]
        cfg = figure_config(name, preset, seeds=seeds)
        if lseeds is not None and seeds is None:
            cfg = replace(cfg, seeds=lseeds)
        ds = dataset_of(ctx, cfg)
        folder = ctx.out / "locate" / name
        ctx.log(f"[locate {name}] {_label(cfg)}: modes {modes or 'all'}, seeds "
                f"{list(cfg.seeds)}, rtol {rtol:g}")
        t0 = time.perf_counter()
        res = locate(ds, seeds=cfg.seeds, rtol=rtol, modes=modes, out=folder, resume=True,
                     trainer=ctx.trainer, device=ctx.device, progress=ctx.progress,
                     log=ctx.log, **{k: getattr(cfg, k) for k in LOCATE_OPTIONS})
        wall = sum(r.get("wall_time", 0.0) for r in res.rounds) or time.perf_counter() - t0
        if cfg.model == "linear":
            linear_rule = res.config.get("active_threshold")
        for m in res.modes:
            ctx.log(f"[locate {name}] mode {m.mode}: predicted {m.predicted:.4g}, observed "
                    f"{m.observed:.4g} ({100 * m.rel_error:+.1f}%), bracket "
                    f"[{m.lower:.4g}, {m.upper:.4g}]")
        rows = [{k: v for k, v in asdict(m).items() if k != "per_seed"} for m in res.modes]
        records.append(LocatedFigure(
            name=name, label=_label(cfg), config=cfg, rtol=rtol, modes=rows,
            rounds=len(res.rounds), members=res.members_trained, done=res.done,
            train_seconds=wall,
            files=[f"locate/{name}/thresholds.csv", f"locate/{name}/locate.json"]))
    if not records:
        return [], None
    fig = locate_figure({r.label: r.modes for r in records},
                        title="Located critical betas: observed vs predicted",
                        active_threshold=linear_rule)
    save_figure(fig, ctx.out / "locate" / "locate")
    return records, "locate/locate.png"
