"""The report of a reproduction: ``OUT/report.md`` and a self-contained ``OUT/report.html``.

The report is first a list of blocks, ``("h1" | "h2" | "p", text)``, ``("table", header,
rows)`` and ``("img", relative path, alt)``, built from a :class:`ReproduceSummary`; the
blocks are then rendered to Markdown and to HTML (images inlined as base64). The prose that
does not depend on the numbers (preset notes, the collapse rule) is package data
(``postcollapse/reproduce/text/``).
"""

from __future__ import annotations

import base64
import html
import math
import re
from pathlib import Path
from typing import TYPE_CHECKING

from postcollapse._io import atomic_write_text
from postcollapse.reproduce.prose import prose
from postcollapse.reproduce.reading import LINEAR_LOSS_TOL, LINEAR_SIGMA_TOL

if TYPE_CHECKING:
    from postcollapse.reproduce.records import ReproduceSummary, SamplesFigure, SweepFigure

__all__ = ["write_report", "report_blocks", "to_markdown", "to_html", "num", "pct"]

ACTIVE_TABLE_HEADER = ["β", "predicted active modes", "observed active units", "mismatch"]


def num(v, fmt: str = ".4g") -> str:
    """``v`` formatted, or "n/a" for None and non-finite floats."""
    if v is None or (isinstance(v, float) and not math.isfinite(v)):
        return "n/a"
    return format(v, fmt)


def pct(v) -> str:
    """A relative error as a signed percentage, or "n/a" for None."""
    return "n/a" if v is None else f"{100 * v:+.1f}%"


def _sweeps(summary: ReproduceSummary) -> list[SweepFigure]:
    return [f for f in summary.figures if f.kind == "sweep"]


def _overview(summary: ReproduceSummary) -> list[tuple]:
    """Title, timing, the collapse rule, and the summary table of complete collapse."""
    figs = summary.figures
    devices = sorted({f.device for f in figs})
    train_total = sum(f.train_seconds for f in figs)
    blocks = [
        ("h1", f"postcollapse reproduce: preset `{summary.preset}`"),
        ("p", f"Training time recorded by the sweeps: {train_total:.0f} s in total "
              f"on `{', '.join(devices) or summary.device}` (torch {summary.torch}, "
              f"{summary.torch_threads} threads). Wall time of this invocation "
              f"{summary.wall_seconds:.1f} s (sweeps found finished in the output "
              "folder are reloaded, not retrained)."),
        ("p", "**How observed collapse is read.** " + summary.collapse_rule),
    ]
    rows = []
    for f in _sweeps(summary):
        c = f.collapse
        m = summary.located_mode1(f.name)
        if m is not None and m["observed"] is not None and math.isfinite(m["observed"]):
            # The located critical beta and its bracket (over seeds) replace the grid's.
            ok = abs(m["rel_error"]) <= f.collapse_tolerance
            rows.append([f.name, f.config.model, num(m["predicted"]),
                         num(m["observed"]) + " (located)",
                         f"[{num(m['lower'])}, {num(m['upper'])}]", pct(m["rel_error"]),
                         f"{100 * f.collapse_tolerance:.0f}%",
                         "holds" if ok else "DOES NOT HOLD", f"{f.train_seconds:.0f}"])
            continue
        rows.append([f.name, f.config.model, num(c.predicted), num(c.observed),
                     f"({num(c.lower)}, {num(c.observed)}]", pct(c.rel_error),
                     f"{100 * f.collapse_tolerance:.0f}%",
                     "holds" if f.collapse_within_tolerance else "DOES NOT HOLD",
                     f"{f.train_seconds:.0f}"])
    if rows:
        blocks.append(("h2", "Summary: complete collapse"))
        if summary.located:
            blocks.append(("p", "Rows marked (located) give the critical β of mode 1 located "
                                "by bisection (median over seeds of the bracket midpoints; "
                                "the bracket spans all seeds); the others are read off the "
                                "figure's β grid."))
        blocks.append(("table", ["figure", "model", "predicted β₁*", "observed", "bracket",
                                 "rel. error", "tolerance", "claim", "training (s)"], rows))
    return blocks


LOCATED_HEADER = ["model", "mode", "predicted β_i*", "observed", "bracket", "rel. error",
                  "seeds", "converged", "note"]


def _located(summary: ReproduceSummary) -> list[tuple]:
    """The section of located thresholds (a figure beyond the paper)."""
    if not summary.located:
        return []
    blocks = [("h2", "Located thresholds (beyond the paper)"),
              ("p", prose("locate_rule") + " " + prose(f"locate_{summary.preset}"))]
    if summary.located_figure:
        blocks.append(("img", summary.located_figure, "observed vs predicted critical beta"))
    rows = []
    for r in summary.located:
        for m in r.modes:
            note = m["note"] + ("" if m["monotone"] else " (count not monotone)")
            rows.append([r.label, str(m["mode"]), num(m["predicted"]), num(m["observed"]),
                         f"[{num(m['lower'])}, {num(m['upper'])}]", pct(m["rel_error"]),
                         str(m["seeds"]), num(m["converged_fraction"], ".2f"), note.strip()])
    blocks.append(("table", LOCATED_HEADER, rows))
    cost = "; ".join(f"{r.label}: {r.rounds} rounds, {r.members} members, "
                     f"{r.train_seconds:.0f} s (bracket to {100 * r.rtol:g}%"
                     + ("" if r.done else ", NOT finished") + ")" for r in summary.located)
    blocks.append(("p", f"Cost: {cost}. Files: "
                        + ", ".join(f"`{p}`" for r in summary.located for p in r.files)
                        + "."))
    return blocks


def _agreement(summary: ReproduceSummary) -> list[tuple]:
    """One paragraph per samples figure and per linear sweep: does theory hold?"""
    blocks = []
    for f in summary.figures:
        if f.kind == "samples":
            blocks.append(("p", f"**{f.name}.** Active units of the models behind the sample "
                                f"grid: observed {f.observed_active} where theory keeps "
                                f"{f.theory_modes} modes ({f.n_agree} of {len(f.betas)} "
                                f"agree; trained in {f.train_seconds:.0f} s)."))
    for f in _sweeps(summary):
        if not f.linear:
            continue
        g = f.gaps
        ok = (g.loss <= LINEAR_LOSS_TOL) and (g.sigma <= LINEAR_SIGMA_TOL)
        blocks.append(("p", f"**Linear model ({f.name}).** Largest relative gap between "
                            f"trained and theoretical loss: {g.loss:.2e} (at β = "
                            f"{g.loss_beta:.3g}; tolerance {LINEAR_LOSS_TOL:g}); largest "
                            f"relative gap in σ_i: {g.sigma:.2e} (at β = {g.sigma_beta:.3g}; "
                            f"tolerance {LINEAR_SIGMA_TOL:g}). Agreement with theory: "
                            f"{'yes' if ok else 'NO'}."))
    return blocks


def _settings(f) -> str:
    """The paragraph on a figure's data, model, training and files."""
    cfg, d = f.config, f.data
    train = f"up to {cfg.steps} steps" if cfg.steps else f"up to {cfg.epochs} epochs"
    opt = f"Adam lr {cfg.lr:g}" if cfg.optimizer == "adam" else cfg.optimizer.upper()
    return (f"Data {d.name} ({d.n_samples} samples, d0 = {d.d0}, d2 = {d.d2}); model "
            f"{cfg.model}, hidden {cfg.hidden}, Sigma(x) = {cfg.sigma}, latent "
            f"{cfg.latent_dim}; {opt} ({cfg.dtype}), {train}, batch "
            f"{cfg.batch_size or 'full'}; seeds {list(cfg.seeds)}. Thresholds β_i* = "
            + ", ".join(f"{t:.4g}" for t in f.thresholds)
            + f". Training {f.train_seconds:.1f} s on {f.device} (this invocation: "
            f"{f.wall_seconds:.1f} s). Files: " + ", ".join(f"`{p}`" for p in f.files) + ".")


def _sweep_detail(f: SweepFigure) -> list[tuple]:
    c, g = f.collapse, f.gaps
    verdict = "within" if f.collapse_within_tolerance else "NOT within"
    stopped = f.n_rows - f.n_converged - f.n_diverged
    text = (f"Predicted complete collapse at β₁* = {num(c.predicted)}; observed at β = "
            f"{num(c.observed)} (bracket ({num(c.lower)}, {num(c.observed)}]), relative "
            f"error {pct(c.rel_error)}, {verdict} the {100 * f.collapse_tolerance:.0f}% "
            f"tolerance. Largest relative loss gap to the linear theory "
            f"{g.loss_signed:+.2e} (negative: the trained model is below the linear "
            f"optimum), largest σ gap {g.sigma:.2e}. Runs: {f.n_rows}; converged (loss "
            f"flat) {f.n_converged}, stopped at the step limit {stopped}, diverged "
            f"{f.n_diverged}. Observed active units equal the predicted number of active "
            f"modes at {f.n_active_agree} of {len(c.betas)} grid betas.")
    rows = []
    for b, kp, ko, lo, hi in zip(c.betas, c.predicted_active, c.observed_active,
                                 c.observed_active_min, c.observed_active_max, strict=True):
        obs = num(ko, "g") + ("" if lo == hi else f" ({lo}-{hi})")
        rows.append([f"{b:.4g}", str(kp), obs, "" if kp == ko else "≠"])
    return [("p", text), ("table", ACTIVE_TABLE_HEADER, rows)]


def _samples_detail(f: SamplesFigure) -> list[tuple]:
    rows = [[f"{b:.4g}", str(k), str(a), "" if k == a else "≠"]
            for b, k, a in zip(f.betas, f.theory_modes, f.observed_active, strict=True)]
    text = (f"Betas chosen at the theoretical thresholds so that "
            f"{', '.join(map(str, f.theory_modes))} modes survive. Observed active units "
            f"agree with theory at {f.n_agree} of {len(rows)} betas.")
    return [("p", text), ("table", ACTIVE_TABLE_HEADER, rows)]


def report_blocks(summary: ReproduceSummary) -> list[tuple]:
    """The report as a list of blocks (see the module docstring)."""
    blocks = _overview(summary) + _agreement(summary) + _located(summary)
    blocks.append(("h2", "Settings and deviations from the paper"))
    blocks.append(("p", prose(f"notes_{summary.preset}")))
    for f in summary.figures:
        blocks.append(("h2", f.title))
        blocks.append(("img", f"{f.name}/{f.name}.png", f.title))
        blocks.append(("p", _settings(f)))
        blocks.extend(_sweep_detail(f) if f.kind == "sweep" else _samples_detail(f))
    if getattr(summary, "extensions", None) is not None:
        from postcollapse.reproduce.extensions import extension_blocks

        blocks.extend(extension_blocks(summary.extensions))
    return blocks


def to_markdown(blocks) -> str:
    """Render report blocks as Markdown."""
    out = []
    for b in blocks:
        if b[0] == "h1":
            out.append(f"# {b[1]}\n")
        elif b[0] == "h2":
            out.append(f"## {b[1]}\n")
        elif b[0] == "p":
            out.append(b[1] + "\n")
        elif b[0] == "img":
            out.append(f"![{b[2]}]({b[1]})\n")
        elif b[0] == "table":
            out.append("| " + " | ".join(b[1]) + " |")
            out.append("|" + "---|" * len(b[1]))
            out.extend("| " + " | ".join(r) + " |" for r in b[2])
            out.append("")
    return "\n".join(out)


def _inline_html(text: str) -> str:
    t = html.escape(text)
    t = re.sub(r"\*\*(.+?)\*\*", r"<b>\1</b>", t)
    return re.sub(r"`(.+?)`", r"<code>\1</code>", t)


_HTML_HEAD = (
    "<!DOCTYPE html>\n"
    '<html lang="en"><head><meta charset="utf-8">\n'
    "<title>postcollapse reproduce report</title><style>\n"
    "body{font-family:sans-serif;max-width:1100px;margin:2em auto;padding:0 1em;"
    "line-height:1.45}table{border-collapse:collapse;margin:1em 0}"
    "td,th{border:1px solid #bbb;padding:3px 8px;text-align:right}"
    "img{max-width:100%}code{background:#f3f3f3}</style></head><body>"
)


def to_html(blocks, out) -> str:
    """Render report blocks as one HTML page; images are read from ``out`` and inlined."""
    parts = [_HTML_HEAD]
    for b in blocks:
        if b[0] in ("h1", "h2"):
            parts.append(f"<{b[0]}>{_inline_html(b[1])}</{b[0]}>")
        elif b[0] == "p":
            parts.append(f"<p>{_inline_html(b[1])}</p>")
        elif b[0] == "img":
            path = Path(out) / b[1]
            if path.exists():
                data = base64.b64encode(path.read_bytes()).decode("ascii")
                parts.append(f'<img alt="{html.escape(b[2])}" '
                             f'src="data:image/png;base64,{data}">')
            else:
                parts.append(f"<p>(missing image {html.escape(b[1])})</p>")
        elif b[0] == "table":
            parts.append("<table><tr>" + "".join(f"<th>{html.escape(h)}</th>" for h in b[1])
                         + "</tr>")
            for r in b[2]:
                parts.append("<tr>" + "".join(f"<td>{html.escape(c)}</td>" for c in r)
                             + "</tr>")
            parts.append("</table>")
    parts.append("</body></html>")
    return "\n".join(parts) + "\n"


def write_report(summary: ReproduceSummary, out) -> tuple[Path, Path]:
    """Write ``OUT/report.md`` and the self-contained ``OUT/report.html`` from a summary."""
    out = Path(out)
    blocks = report_blocks(summary)
    atomic_write_text(out / "report.md", to_markdown(blocks))
    atomic_write_text(out / "report.html", to_html(blocks, out))
    return out / "report.md", out / "report.html"
