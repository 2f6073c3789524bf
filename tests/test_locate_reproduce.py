"""The reproduction's located thresholds (test preset, the linear model with L-BFGS)."""

from __future__ import annotations

import json
import math

import pytest

import postcollapse.reproduce as rp


@pytest.mark.slow
def test_reproduce_reports_located_thresholds(tmp_path):
    summary = rp.reproduce("fig4", out=tmp_path, preset="test", device="cpu", located=True)
    (rec,) = summary.located
    assert rec.name == "fig4" and [m["mode"] for m in rec.modes] == [1] and rec.done
    m = rec.mode(1)
    assert m["upper"] / m["lower"] - 1 <= 0.05 * (1 + 1e-9)
    assert m["predicted"] == pytest.approx(summary.figures[0].thresholds[0], rel=1e-9)
    assert (tmp_path / "locate" / "locate.png").read_bytes()[:4] == b"\x89PNG"
    for rel in rec.files:
        assert (tmp_path / rel).is_file()
    report = (tmp_path / "report.md").read_text()
    assert "## Located thresholds (beyond the paper)" in report
    # The summary row of fig4 is the located mode 1 with its bracket, not the grid's.
    row = next(line for line in report.splitlines() if line.startswith("| fig4 |"))
    assert f"{m['observed']:.4g} (located)" in row
    assert f"[{m['lower']:.4g}, {m['upper']:.4g}]" in row
    saved = json.loads((tmp_path / "summary.json").read_text())
    assert saved["located"][0]["modes"][0]["observed"] == m["observed"]
    html = (tmp_path / "report.html").read_text()
    assert html.count('src="data:image/png;base64,') == 2
    # Resumed: a second call trains nothing new for the located thresholds.
    again = rp.reproduce("fig4", out=tmp_path, preset="test", device="cpu", located=True)
    assert again.located[0].modes == rec.modes


def test_locate_table_names_real_figures_and_modes():
    for preset, table in rp.LOCATE_TABLE.items():
        assert preset in rp.PRESETS
        for fig, (modes, seeds, rtol) in table.items():
            cfg = rp.figure_config(fig, preset)
            assert fig != "fig3" and 0 < rtol < 1
            assert modes is None or all(1 <= m <= cfg.latent_dim for m in modes)
            assert seeds is None or len(seeds) >= 1
    assert set(rp.LOCATE_TABLE["paper"]) == {"fig1", "fig2", "fig4", "fig5"}
    assert all(v[0] is None for v in rp.LOCATE_TABLE["paper"].values())
    assert not math.isnan(rp.LOCATE_TABLE["quick"]["fig4"][2])
