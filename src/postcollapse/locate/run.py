"""``locate``: rounds of batched training that bracket every mode's critical beta.

Each round collects the betas that the brackets of all modes and seeds ask for
(:func:`~postcollapse.locate.bracket.next_points`), trains them as ONE batched run of
cold-started members (``trainer(data, members=[(beta, seed), ...], ...)``), records the
active-unit count of each member, and writes ``OUT/locate.json`` and
``OUT/thresholds.csv``. It stops when every bracket is within ``rtol``.
"""

from __future__ import annotations

import inspect
import json
import math
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

from postcollapse._checks import (
    ACTIVE_VAR_THRESHOLD,
    check_int_at_least,
    check_positive,
    check_seeds,
)
from postcollapse.locate.bracket import (
    Observations,
    SeedBracket,
    next_points,
    scout_points,
    seed_bracket,
)
from postcollapse.locate.results import LocateResult, ModeThreshold, load_locate

__all__ = ["locate", "LOCATE_DEFAULTS", "LOCATE_ACTIVE_THRESHOLD", "auto_active_threshold"]

#: Search settings (not training options): first bracket p / (1 + w) .. p (1 + w), at most
#: ``max_points`` new betas per bracket and round, give up beyond ``max_factor`` x p; the
#: first round also trains ``scout`` log-spaced betas from min(p) / 10 to 2 max(p), so that
#: modes far from their prediction start bracketed. Chosen with ``benchmarks/bench_locate.py``
#: (see benchmarks/README.md): a round costs about one grid sweep, and a first bracket of
#: +-5% holds the modes of models that follow the theory within a few percent (3 rounds for
#: a width-32 ReLU model, against 4 with +-1%); the scout grid saves widening rounds where
#: the model does not follow it.
LOCATE_DEFAULTS = {"start_width": 0.05, "max_points": 4, "max_factor": 1000.0,
                   "max_rounds": 40, "scout": 8}

#: The active-unit rule of locate where training reaches the optimum to machine precision
#: (an exact loss trained by L-BFGS): Var_x(mu_i) > 1e-3, ten times finer than the sweep's
#: default 0.01. At the linear optimum Var_x(mu_i) = eta_enc^2 (1 - beta / beta_i*), so a
#: rule at t places the observed threshold at beta_i* (1 - t): -1% with the sweep's rule,
#: as wide as the brackets themselves; -0.1% with this one. Adam on a sampled loss leaves
#: collapsing units at Var ~ 1e-3 when its convergence rule stops, so there the sweep's
#: rule is kept.
LOCATE_ACTIVE_THRESHOLD = 1e-3


def auto_active_threshold(config) -> float:
    """locate's default rule for a training config (after ``for_rows``): 1e-3 for L-BFGS on
    an exact loss, else the sweep's ``ACTIVE_VAR_THRESHOLD``."""
    return (LOCATE_ACTIVE_THRESHOLD if config.optimizer == "lbfgs" and config.exact
            else ACTIVE_VAR_THRESHOLD)


# Options of the trainer that locate owns (or that make no sense per round).
_RESERVED = ("betas", "members", "seeds", "out", "resume", "progress", "callback")


def _resolve(data, target):
    """(what the trainer gets, name, x, y)."""
    from postcollapse.train.data import resolve_data

    if isinstance(data, str | Path):
        from postcollapse.data import load

        ds = load(data, target=target)
        name, x, y = resolve_data(ds, None)
        return ds, name, x, y
    name, x, y = resolve_data(data, target)
    return data, name, x, y


def _train_members(trainer, data, members, options):
    """Rows of the trained members, in the order of ``members``.

    A trainer without a ``members`` argument (a plain beta x seed grid) trains the grid of
    the distinct betas and seeds, and the rows of ``members`` are picked from it.
    """
    try:
        params = inspect.signature(trainer).parameters
        takes_members = "members" in params or any(
            p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values())
    except (TypeError, ValueError):
        takes_members = True
    if takes_members:
        res = trainer(data, members=list(members), **options)
        rows = list(res.rows)
    else:
        betas = sorted({b for b, _ in members})
        seeds = sorted({s for _, s in members})
        res = trainer(data, betas=betas, seeds=seeds, **options)
        rows = list(res.rows)
    by_key = {(float(f"{r['beta']:.12g}"), int(r["seed"])): r for r in rows}
    out = []
    for b, s in members:
        key = (float(f"{b:.12g}"), int(s))
        if key not in by_key:
            raise ValueError(f"the trainer returned no row for beta={b}, seed={s}")
        out.append(by_key[key])
    return out


def _nothing_to_locate(pred) -> str:
    if not np.any(pred.values > 0):
        return "the data have no signal (all zeta are 0): no mode to locate"
    return (f"no mode collapses at a finite beta in the {pred.family} model (every predicted "
            "critical beta is infinite): nothing to locate; see docs/THEORY.md")


def _not_locatable(m: int, pred, locatable: list[int]) -> str:
    k = len(pred.values)
    if m > k or pred.values[m - 1] <= 0:
        return (f"modes must be between 1 and {max(locatable)} (latent_dim and the data's "
                f"nonzero zeta), got {m}")
    return (f"mode {m} never collapses in the {pred.family} model (its predicted critical "
            f"beta is infinite); locate modes among {locatable}")


def _mode_threshold(mode: int, predicted: float, brackets: list[SeedBracket],
                    obs: Observations, notes: list[str]) -> ModeThreshold:
    got = [b for b in brackets if b.status == "bracketed"]
    per_seed = [{"seed": b.seed, "status": b.status, "lower": b.lower, "upper": b.upper,
                 "monotone": b.monotone} for b in brackets]
    ends = [obs.converged[b.seed][x] for b in got for x in (b.lower, b.upper)]
    conv = sum(ends) / len(ends) if ends else math.nan
    mono = all(b.monotone for b in brackets)
    bad = [f"seed {b.seed}: fewer than {mode} units at beta "
           + ", ".join(f"{d:.4g}" for d in b.dips[:3]) for b in brackets if not b.monotone]
    note = "; ".join([*notes, *(["not monotone: " + "; ".join(bad)] if bad else [])])
    if not got:
        return ModeThreshold(mode, predicted, math.nan, math.nan, math.nan, math.nan, 0,
                             conv, mono, note, per_seed)
    observed = float(statistics.median(b.midpoint for b in got))
    lower = min(b.lower for b in got)
    upper = max(b.upper for b in got)
    return ModeThreshold(mode, predicted, observed, lower, upper,
                         observed / predicted - 1.0, len(got), conv, mono, note, per_seed)


def locate(
    data,
    *,
    latent_dim: int = 5,
    model: str = "linear",
    sigma: str = "learnable",
    hidden: int = 8,
    seeds=(0,),
    rtol: float = 0.01,
    out=None,
    resume: bool = False,
    trainer: Callable | None = None,
    progress: bool = False,
    target=None,
    eta_dec: float | str = 1.0,
    levels: int = 1,
    beta2: float | None = None,
    latent_dim2: int | None = None,
    sigma1: float | None = None,
    free_bits: float | None = None,
    free_bits_mode: str = "dataset",
    modes=None,
    active_threshold: float | None = None,
    start_width: float = LOCATE_DEFAULTS["start_width"],
    max_points: int = LOCATE_DEFAULTS["max_points"],
    max_factor: float = LOCATE_DEFAULTS["max_factor"],
    max_rounds: int = LOCATE_DEFAULTS["max_rounds"],
    scout: int = LOCATE_DEFAULTS["scout"],
    log: Callable[[str], None] | None = None,
    **sweep_options,
) -> LocateResult:
    """Locate each mode's observed critical beta by bracketing, all modes and seeds at once.

    For mode i = 1..K the observed critical beta is where the trained model goes from i to
    i - 1 active units (the sweep's ``active_units``: Var_x(mu_j) > ``active_threshold``).
    Brackets start
    around the predicted beta_i* (``postcollapse.theory.thresholds``), widen geometrically
    when the observation lies outside, and are cut into up to ``max_points + 1`` parts per
    round until ``upper / lower - 1 <= rtol`` for every mode and seed. Each round is one
    batched training of cold-started members.

    Parameters
    ----------
    data : Dataset, str or (x, y) tuple
        As for :func:`postcollapse.train.sweep`.
    latent_dim, model, sigma, hidden : as for the sweep
    seeds : sequence of int
        One bracket per mode and seed; a seed fixes a member's initialisation, batch order
        and noise whatever its beta.
    rtol : float
        Relative bracket width to reach (default 0.01).
    out : path, optional
        Folder for thresholds.csv and locate.json (rewritten after every round).
    resume : bool
        Continue from ``out``'s locate.json (its finished rounds are not trained again).
    trainer : callable, optional
        ``trainer(data, members=[(beta, seed), ...], **options)`` returning an object with
        ``rows`` (dicts with beta, seed, active_units, converged); default
        :func:`postcollapse.train.sweep`.
    progress : bool
        One line per round on stderr (and the trainer's progress bar).
    target, eta_dec : as for the sweep (``eta_dec`` also sets the predictions: with
        ``"learn"`` they are the learned-variance thresholds, ``theory.learned_thresholds``)
    levels, beta2, latent_dim2, sigma1 : as for the sweep
        ``levels=2``: the two-level VAE at a fixed ``beta2``; the level-1 modes are located
        against beta (the row's ``active_level1``: eigenvalues of Cov_x(mu1) above
        ``active_threshold``), predicted by ``theory.hierarchical_thresholds``.
    free_bits, free_bits_mode : as for the sweep
        Free bits lambda: the beta at which mode i stops receiving signal is located (the
        row's ``active_modes``: eigenvalues of Cov_x(mu) above ``active_threshold``; every
        latent keeps KL >= lambda, so ``active_units`` counts them all), predicted by
        ``theory.freebits_thresholds``.
    modes : sequence of int, optional
        The modes to locate (1-based; default every mode up to latent_dim whose predicted
        critical beta is finite and > 0: under two levels or free bits the strongest modes
        may never collapse).
    active_threshold : float, optional
        The active-unit rule, Var_x(mu_j) > active_threshold. Default: 1e-3 for L-BFGS on an
        exact loss (ten times finer than the sweep's 0.01: at the linear optimum
        Var_x(mu_i) = eta_enc^2 (1 - beta / beta_i*), so the rule itself moves the observed
        threshold to beta_i* (1 - active_threshold / eta_enc^2)), else the sweep's 0.01
        (Adam stops with collapsing units still near Var 1e-3).
    start_width, max_points, max_factor, max_rounds, scout :
        The search: first bracket p / (1 + w) .. p (1 + w); at most ``max_points`` new
        betas per bracket and round; a mode not found within ``max_factor`` x p either way
        is reported with a note; at most ``max_rounds`` rounds; ``scout`` log-spaced betas
        from min(p) / 10 to 2 max(p) in the first round (0: none).
    log : callable(str), optional
        Receives the per-round lines (default: stderr when ``progress``).
    **sweep_options
        Other options of the trainer (lr, steps, batch_size, optimizer, dtype, ...).

    Returns
    -------
    LocateResult
    """
    from postcollapse.locate.predict import predict
    from postcollapse.theory import Moments
    from postcollapse.train.data import data_summary

    rtol = check_positive("rtol", rtol)
    if rtol >= 1:
        raise ValueError(f"rtol must be below 1 (a relative bracket width), got {rtol}")
    start_width = check_positive("start_width", start_width)
    max_points = check_int_at_least("max_points", max_points, 1)
    max_factor = check_positive("max_factor", max_factor)
    max_rounds = check_int_at_least("max_rounds", max_rounds, 1)
    scout = check_int_at_least("scout", scout, 0)
    latent_dim = check_int_at_least("latent_dim", latent_dim, 1)
    seeds = check_seeds(seeds)
    bad = [k for k in sweep_options if k in _RESERVED]
    if bad:
        raise TypeError(f"locate() chooses {bad[0]!r} itself; leave it out")
    if resume and out is None:
        raise ValueError("resume=True needs out (the folder of the interrupted locate)")
    if active_threshold is not None:
        active_threshold = check_positive("active_threshold", active_threshold)
    options = {"model": model, "sigma": sigma, "hidden": hidden, "latent_dim": latent_dim,
               "eta_dec": eta_dec, **sweep_options}
    if levels != 1 or any(v is not None for v in (beta2, latent_dim2, sigma1)):
        options.update(levels=levels, beta2=beta2, latent_dim2=latent_dim2, sigma1=sigma1)
    if free_bits is not None or free_bits_mode != "dataset":
        if free_bits is None:
            raise ValueError("free_bits_mode needs free_bits (lambda)")
        options.update(free_bits=free_bits, free_bits_mode=free_bits_mode)
    from postcollapse.train import SweepConfig

    try:  # the training options, checked once before any training (whatever the trainer)
        cfg = SweepConfig(betas=(1.0,), seeds=seeds, **options)
    except TypeError as exc:
        raise TypeError(f"locate() got an unknown training option ({exc})") from None
    if trainer is None:
        from postcollapse.train import sweep as trainer
    if log is None:
        log = (lambda s: print(s, file=sys.stderr)) if progress else (lambda s: None)

    feed, name, x, y = _resolve(data, target)
    if active_threshold is None:
        active_threshold = auto_active_threshold(cfg.for_rows(x.shape[0]))
    options["active_threshold"] = active_threshold
    summary = data_summary(name, x, y)
    pred = predict(Moments.from_arrays(x, y), cfg)
    locatable = [i + 1 for i, v in enumerate(pred.values) if 0 < v < math.inf]
    if not locatable:
        raise ValueError(_nothing_to_locate(pred))
    if modes is None:
        modes = locatable
    modes = sorted({check_int_at_least("mode", m, 1) for m in modes})
    for m in modes:
        if m not in locatable:
            raise ValueError(_not_locatable(m, pred, locatable))
    predicted = {m: float(pred.values[m - 1]) for m in modes}
    config = {**{k: (v if isinstance(v, int | float | str | bool | type(None)) else str(v))
                 for k, v in options.items()},
              "seeds": list(seeds), "rtol": rtol, "modes": modes, "start_width": start_width,
              "max_points": max_points, "max_factor": max_factor, "scout": scout, "target": (
                  None if target is None else str(target)),
              "family": pred.family, "observe": pred.observe}
    key = pred.observe

    obs = Observations()
    rounds: list[dict] = []
    if resume and (Path(out) / "locate.json").exists():
        old = load_locate(out)
        if old.config != json.loads(json.dumps(config)) or old.data.get("sha1") != summary["sha1"]:
            raise ValueError(f"{out} holds a locate run with other options or data; use another "
                             "--out or drop --resume")
        rounds = old.rounds
        for r in rounds:
            for m in r["members"]:
                obs.add(m["beta"], m["seed"], m[key], m["converged"])

    scouts = scout_points(predicted.values(), scout)

    def state():
        result_modes, asks, ended = [], [], True
        for m in modes:
            brs = [seed_bracket(obs, m, s) for s in seeds]
            notes = []
            for br in brs:
                pts, why = next_points(br, predicted[m], start_width=start_width, rtol=rtol,
                                       max_points=max_points, max_factor=max_factor)
                if why:
                    notes.append(f"seed {br.seed}: {why}")
                asks.extend((p, br.seed) for p in pts)
                ended &= not pts
            result_modes.append(_mode_threshold(m, predicted[m], brs, obs, notes))
        if not rounds:
            asks.extend((b, s) for b in scouts for s in seeds)
        return result_modes, asks, ended

    def save(result_modes, ended):
        res = LocateResult(modes=result_modes, rounds=rounds, config=config, data=summary,
                           done=ended)
        if out is not None:
            res.save(out)
        return res

    result_modes, asks, ended = state()
    while not ended and len(rounds) < max_rounds:
        members = []
        for b, s in asks:
            if not obs.has(b, s) and (float(f"{b:.12g}"), s) not in members:
                members.append((float(f"{b:.12g}"), s))
        members.sort(key=lambda m: (m[0], m[1]))
        t0 = time.perf_counter()
        rows = _train_members(trainer, feed, members, {**options, "progress": progress})
        wall = time.perf_counter() - t0
        record = []
        for (b, s), r in zip(members, rows, strict=True):
            conv = bool(r.get("converged", True)) and not bool(r.get("diverged", False))
            if key not in r:
                raise ValueError(f"the trainer's rows have no {key!r} (the count locate "
                                 f"observes for the {pred.family} model)")
            obs.add(b, s, int(r[key]), conv)
            record.append({"beta": b, "seed": s, key: int(r[key]),
                           "converged": conv, "loss": float(r.get("loss", math.nan))})
        rounds.append({"round": len(rounds) + 1, "members": record, "wall_time": wall})
        result_modes, asks, ended = state()
        widths = [m.width for m in result_modes if m.seeds]
        log(f"locate round {len(rounds)}: {len(members)} members in {wall:.1f} s; widest "
            f"bracket {max(widths, default=math.inf):.3g}")
        save(result_modes, ended)
    return save(result_modes, ended)
