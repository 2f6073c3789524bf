"""theory/ is pure numpy/scipy: importing it must not pull in torch or matplotlib."""

from __future__ import annotations

import subprocess
import sys


def test_theory_does_not_import_torch_or_matplotlib():
    code = (
        "import sys, postcollapse.theory as t, postcollapse.theory.loss\n"
        "bad = [m for m in ('torch', 'matplotlib') if m in sys.modules]\n"
        "assert not bad, bad\n"
        "assert set(t.__all__) >= {'vae_loss', 'vae_loss_and_grad', 'FlatVAELoss',\n"
        "    'origin_hessian', 'origin_hessian_min_eig', 'Moments', 'spectrum', 'optimum'}\n"
    )
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert res.returncode == 0, res.stderr
