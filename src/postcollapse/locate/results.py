"""What ``locate`` leaves behind: one :class:`ModeThreshold` per mode, and the files.

``OUT/thresholds.csv`` has the columns :data:`THRESHOLD_COLUMNS` (then ``monotone`` and
``note``); ``OUT/locate.json`` the config, the data summary, every training round and the
modes. Both are written atomically.
"""

from __future__ import annotations

import csv
import io
import json
import math
from dataclasses import asdict, dataclass, field
from pathlib import Path

from postcollapse._io import atomic_write_json, atomic_write_text

__all__ = ["ModeThreshold", "LocateResult", "THRESHOLD_COLUMNS", "load_locate"]

THRESHOLD_COLUMNS = ("mode", "predicted", "observed", "lower", "upper", "rel_error", "seeds",
                     "converged_fraction")


@dataclass(frozen=True)
class ModeThreshold:
    """The located critical beta of one mode (the count goes from ``mode`` to ``mode - 1``).

    Attributes
    ----------
    mode : int
        1-based mode index i.
    predicted : float
        beta_i* of the linear theory for the same data.
    observed : float
        Median over seeds of the bracket midpoints (NaN when no seed bracketed it).
    lower, upper : float
        The lowest lower end and the highest upper end over the seeds.
    rel_error : float
        observed / predicted - 1.
    seeds : int
        Seeds with a bracket.
    converged_fraction : float
        Fraction of the members at the bracket ends (two per seed) that converged.
    monotone : bool
        False when, for some seed, a beta below the bracket had fewer than ``mode`` units.
    note : str
        Why a seed has no bracket, or where the count was not monotone ("" otherwise).
    per_seed : list of dict
        seed, lower, upper, status, monotone of each seed.
    """

    mode: int
    predicted: float
    observed: float
    lower: float
    upper: float
    rel_error: float
    seeds: int
    converged_fraction: float
    monotone: bool = True
    note: str = ""
    per_seed: list = field(default_factory=list)

    def row(self) -> dict:
        """The thresholds.csv row (and the --json entry, with monotone and note)."""
        return {k: getattr(self, k) for k in (*THRESHOLD_COLUMNS, "monotone", "note")}

    @property
    def width(self) -> float:
        """upper / lower - 1 over all seeds."""
        return self.upper / self.lower - 1.0 if self.lower > 0 else math.inf


def _cell(v):
    return repr(float(v)) if isinstance(v, float) else v


@dataclass
class LocateResult:
    """Outcome of :func:`postcollapse.locate`.

    Attributes
    ----------
    modes : list of ModeThreshold
    rounds : list of dict
        One per training round: its members (beta, seed, active_units, converged, ...) and
        its wall time.
    config : dict
        The options of the run.
    data : dict
        Summary of the training data (name, rows, dimensions, sha1).
    done : bool
        True when every bracket is within ``rtol`` (or its search ended).
    """

    modes: list[ModeThreshold]
    rounds: list[dict]
    config: dict
    data: dict
    done: bool = False

    @property
    def members_trained(self) -> int:
        """Members trained over all rounds."""
        return sum(len(r["members"]) for r in self.rounds)

    def to_csv(self, path=None) -> str:
        """thresholds.csv as text; written atomically to ``path`` when given."""
        buf = io.StringIO()
        cols = [*THRESHOLD_COLUMNS, "monotone", "note"]
        w = csv.DictWriter(buf, fieldnames=cols, lineterminator="\n")
        w.writeheader()
        for m in self.modes:
            w.writerow({k: _cell(v) for k, v in m.row().items()})
        text = buf.getvalue()
        if path is not None:
            atomic_write_text(path, text)
        return text

    def to_json(self) -> dict:
        """The content of locate.json."""
        return {"config": self.config, "data": self.data, "done": self.done,
                "rounds": self.rounds, "modes": [asdict(m) for m in self.modes]}

    def modes_json(self) -> dict:
        """``{"modes": [{"mode": 1, "predicted": ..., ...}, ...]}`` (the --json output)."""
        return {"modes": [m.row() for m in self.modes]}

    def save(self, out_dir) -> None:
        """Write thresholds.csv and locate.json to ``out_dir`` (atomically)."""
        out_dir = Path(out_dir)
        out_dir.mkdir(parents=True, exist_ok=True)
        self.to_csv(out_dir / "thresholds.csv")
        atomic_write_json(out_dir / "locate.json", _json_safe(self.to_json()))


def _json_safe(obj):
    """NaN / inf floats -> None (strict JSON)."""
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, dict):
        return {k: _json_safe(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [_json_safe(v) for v in obj]
    return obj


def _nan(v):
    return math.nan if v is None else v


def load_locate(out_dir) -> LocateResult:
    """Read ``OUT/locate.json`` back (finished or not)."""
    path = Path(out_dir) / "locate.json"
    if not path.exists():
        raise FileNotFoundError(2, "no locate.json in this folder (not a locate run)", str(path))
    obj = json.loads(path.read_text())
    modes = []
    for m in obj.get("modes", []):
        m = dict(m)
        for k in ("observed", "lower", "upper", "rel_error", "converged_fraction"):
            m[k] = _nan(m.get(k))
        modes.append(ModeThreshold(**m))
    return LocateResult(modes=modes, rounds=obj["rounds"], config=obj["config"],
                        data=obj["data"], done=bool(obj.get("done", False)))
