"""examples/lightning_collapse.py and examples/pythae_collapse.py run end to end (CI form)."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"


@pytest.mark.slow
@pytest.mark.parametrize("script, package", [("lightning_collapse.py", "lightning"),
                                             ("pythae_collapse.py", "pythae")])
def test_integration_example_runs(script, package):
    pytest.importorskip(package)
    r = subprocess.run(
        [sys.executable, str(EXAMPLES / script), "--epochs", "2", "--n-samples", "600",
         "--beta", "8"],
        capture_output=True, text=True, timeout=300,
    )
    assert r.returncode == 0, r.stderr[-2000:]
    assert len(re.findall(r"^epoch +\d+ +active units \d+", r.stdout, re.M)) == 2
    # beta * eta_dec^2 = 8 is above every threshold of the subset: complete collapse
    assert "predicted surviving modes 0" in r.stdout
