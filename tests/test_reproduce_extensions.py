"""The report's section beyond the paper (two-level VAE, free bits) on real tiny sweeps."""

import json
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from postcollapse.reproduce.extensions import (
    EXTENSIONS_PRESETS,
    extension_blocks,
    extensions_section,
)
from postcollapse.reproduce.report import to_markdown
from postcollapse.reproduce.runs import RunContext


@pytest.mark.slow
def test_extensions_section_trains_compares_and_reports(tmp_path: Path):
    from postcollapse.train import sweep

    logs = []
    ctx = RunContext(out=tmp_path, trainer=sweep, device="cpu", log=logs.append)
    cfg = replace(EXTENSIONS_PRESETS["test"], steps=300)
    rec = extensions_section(ctx, cfg)
    assert (tmp_path / "ext" / "ext.png").is_file() and (tmp_path / "ext" / "ext.csv").is_file()
    assert len(rec.hierarchical) == cfg.n_betas and len(rec.free_bits) == cfg.n_betas
    # Linear two-level models trained to convergence sit on the closed form.
    for r in rec.hierarchical:
        assert r["converged"] and abs(r["gap"]) < 1e-6, r
        assert (r["level1"], r["level2"]) == (r["theory_level1"], r["theory_level2"])
    for r in rec.free_bits:
        assert r["signal"] == r["theory_signal"] and abs(r["gap"]) < 1e-2, r
    gh, gf = rec.max_gap
    assert gh < 1e-6 and np.isfinite(gf)
    assert any("largest loss gap" in m for m in logs)
    js = json.loads(json.dumps(rec.to_json()))
    assert js["kind"] == "extensions" and js["config"]["latent_dim"] == cfg.latent_dim
    md = to_markdown(extension_blocks(rec))
    assert rec.title in md and "ext/ext.png" in md and "modes with signal" in md
    # A second call resumes the finished sweeps: same numbers.
    again = extensions_section(ctx, cfg)
    assert again.hierarchical == rec.hierarchical and again.free_bits == rec.free_bits
