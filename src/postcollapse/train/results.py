"""What a sweep leaves behind: ``SweepResult``, its CSV columns, and reading a finished one.

``parse_cell`` and ``parse_flag`` turn the text cells of a results.csv back into values.
"""

from __future__ import annotations

import csv
import io
import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from postcollapse._io import atomic_path, atomic_write_json, atomic_write_text, load_tensors

__all__ = ["SweepResult", "result_columns", "load_sweep", "parse_cell", "parse_flag"]

_TRUE_TEXT = ("true", "1", "yes")


def result_columns(latent_dim: int) -> list[str]:
    """The CSV columns of a sweep with ``latent_dim`` latent dimensions, in order."""
    return (["beta", "seed", "loss", "rec", "kl", "active_units"]
            + [f"sigma_{i + 1}" for i in range(latent_dim)]
            + [f"kl_{i + 1}" for i in range(latent_dim)]
            + ["converged", "diverged", "steps", "enc_norm", "sigma_norm", "dec_norm",
               "wall_time", "theory_loss", "theory_active", "theory_gap", "active_modes",
               "eta_dec", "nll", "final_rel_change", "lr_final", "optimizer", "dtype",
               "fault"])


#: Columns added after the first release, with the value an older results.csv reads as.
LATER_COLUMNS = {"final_rel_change": float("nan"), "lr_final": float("nan"),
                 "optimizer": "", "dtype": ""}


def parse_cell(text: str):
    """One results.csv cell: "True"/"False" -> bool, then int, then float, else the text."""
    if text in ("True", "False"):
        return text == "True"
    try:
        return int(text)
    except ValueError:
        pass
    try:
        return float(text)
    except ValueError:
        return text


def parse_flag(value) -> bool:
    """A yes/no cell as a bool: text is true when it reads "true", "1" or "yes" (any case,
    surrounding spaces ignored); anything else (a bool, a number) by its truth value."""
    if isinstance(value, str):
        return value.strip().lower() in _TRUE_TEXT
    return bool(value)


@dataclass
class SweepResult:
    """Outcome of :func:`postcollapse.train.sweep`.

    Attributes
    ----------
    rows : list of dict
        One per (beta, seed), beta-major; keys are :func:`result_columns`.
        ``loss = rec + beta * kl``; ``active_units`` counts the coordinates with
        Var_x(mu_j) > 0.01 (Burda et al. 2016), ``active_modes`` the eigenvalues of
        Cov_x(mu) above 0.01 (rotation invariant); ``kl`` is the KL in nats (unweighted)
        and ``kl_j`` its part in latent dimension j; ``sigma_j`` is the mean of sigma over
        the training set.
        Dimensions are ordered by ``sigma_j`` descending, and ``kl_j`` is the same
        dimension as ``sigma_j``. ``diverged`` members failed: training met a non-finite loss
        (they stopped there), their evaluated loss is not finite, or their loss rose far
        above its value before training; ``fault`` says which (e.g. "non-finite loss after
        N steps") and is empty for a healthy member.
        ``converged`` is True only for a member the convergence
        rule stopped (False for one still moving at the step limit); ``final_rel_change``
        is the relative change of its objective at the last convergence test (NaN before
        one), ``lr_final`` Adam's learning rate reached (NaN for L-BFGS); ``optimizer`` and
        ``dtype`` are the ones used (after resolving "auto"). A results.csv written before
        these four columns existed reads them as NaN / the sweep's config.
    config : dict
        The arguments of the run (JSON-serialisable).
    theory : dict
        zeta, thresholds, residual and, per beta, the closed-form min_loss, sigma and
        number of active modes (for this sweep's Sigma mode), plus both min-loss curves.
    members : list of (beta, seed)
    model : BatchedVAE or None
        The trained K-member model, on the CPU.
    data : dict
        Summary of the training data.
    timing : dict
        Training and total wall time, steps, steps per second and device.
    """

    rows: list[dict]
    config: dict
    theory: dict
    members: list[tuple[float, int]]
    model: object = None
    data: dict = field(default_factory=dict)
    timing: dict = field(default_factory=dict)

    def column(self, name: str) -> np.ndarray:
        """One column of the rows as an array."""
        return np.asarray([r[name] for r in self.rows])

    def to_csv(self, path=None) -> str:
        """The rows as CSV text; written atomically to ``path`` when given."""
        cols = result_columns(int(self.config["latent_dim"]))
        cols += [c for c in (self.rows[0] if self.rows else {}) if c not in cols]
        buf = io.StringIO()
        w = csv.DictWriter(buf, fieldnames=cols, lineterminator="\n")
        w.writeheader()
        for r in self.rows:
            w.writerow({c: (repr(float(v)) if isinstance(v, float) else v)
                        for c, v in r.items()})
        text = buf.getvalue()
        if path is not None:
            atomic_write_text(path, text)
        return text

    def summary(self) -> dict:
        """config, data, theory, timing and members: the content of sweep.json."""
        return {"config": self.config, "data": self.data, "theory": self.theory,
                "timing": self.timing, "members": [list(m) for m in self.members]}

    def save(self, out_dir, *, fingerprint: dict) -> None:
        """Write model.pt, results.csv and sweep.json (with ``fingerprint``) to ``out_dir``.

        Each file is written atomically, and sweep.json (the mark of a finished sweep) goes
        last, after removing an older one first: a folder with sweep.json always holds the
        model.pt and results.csv of that sweep, even when this write is killed half way.
        """
        import torch

        out_dir = Path(out_dir)
        out_dir.mkdir(parents=True, exist_ok=True)
        (out_dir / "sweep.json").unlink(missing_ok=True)
        if self.model is not None:
            with atomic_path(out_dir / "model.pt", suffix=".pt") as tmp:
                torch.save({"config": self.model.config(),
                            "flat": self.model.flat.detach().cpu()}, tmp)
        self.to_csv(out_dir / "results.csv")
        atomic_write_json(out_dir / "sweep.json", {**self.summary(), "fingerprint": fingerprint})


def _fill_eta_dec(row: dict, eta_dec, d2) -> None:
    """Give a row of a results.csv written before the eta_dec / nll columns existed (always a
    fixed eta_dec) those columns: eta_dec from the config, nll = loss + (d2/2) log(2 pi v)."""
    if "eta_dec" in row and "nll" in row:
        return
    eta = float(eta_dec) if not isinstance(eta_dec, str) else float("nan")
    row.setdefault("eta_dec", eta)
    nan = d2 is None or not np.isfinite(eta)
    row.setdefault("nll", float("nan") if nan
                   else row["loss"] + 0.5 * int(d2) * float(np.log(2.0 * np.pi * eta * eta)))


def load_sweep(out_dir) -> SweepResult:
    """Reload a finished sweep from its folder (results.csv, sweep.json, model.pt)."""
    import torch

    from postcollapse.models import BatchedVAE

    out_dir = Path(out_dir)
    for fname in ("results.csv", "sweep.json"):
        if not (out_dir / fname).exists():
            raise FileNotFoundError(2, f"no {fname} in this folder (not a finished sweep)",
                                    str(out_dir / fname))
    summary = json.loads((out_dir / "sweep.json").read_text())
    with open(out_dir / "results.csv", newline="") as fh:
        rows = [{k: parse_cell(v) for k, v in r.items()} for r in csv.DictReader(fh)]
    d2 = summary.get("data", {}).get("d2")
    for r in rows:
        for key in ("beta", "loss", "rec", "kl"):
            r[key] = float(r[key])
        _fill_eta_dec(r, summary["config"].get("eta_dec", 1.0), d2)
        for key, missing in LATER_COLUMNS.items():
            if r.get(key) in (None, ""):  # an older file, or a family without the column
                r[key] = summary["config"].get(key, missing)
            if key in ("final_rel_change", "lr_final"):
                r[key] = float(r[key])
            else:
                r[key] = str(r[key])
        for key in ("converged", "diverged"):
            if key in r:
                r[key] = parse_flag(r[key])
    model = None
    if (out_dir / "model.pt").exists():
        ck = load_tensors(out_dir / "model.pt", what="sweep model")
        if ck["config"].get("levels") == 2:
            from postcollapse.models import BatchedHierarchicalVAE

            model = BatchedHierarchicalVAE.from_config(ck["config"])
        else:
            model = BatchedVAE.from_config(ck["config"])
        with torch.no_grad():
            model.flat.copy_(ck["flat"])
    return SweepResult(rows=rows, config=summary["config"], theory=summary["theory"],
                       members=[(float(b), int(s)) for b, s in summary["members"]],
                       model=model, data=summary.get("data", {}),
                       timing=summary.get("timing", {}))
