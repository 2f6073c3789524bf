"""Figures: theory curves against the closed forms, and the drawn figures' content."""

from __future__ import annotations

import matplotlib

matplotlib.use("Agg")

import numpy as np
import pytest

from postcollapse.figures import (
    loss_sigma_figure,
    montage,
    samples_figure,
    save_figure,
    theory_curves,
    theory_sigma,
)
from postcollapse.theory import Moments, min_loss, optimum, spectrum

ZETA2 = np.array([14.0, 8.0, 4.5, 2.0, 0.8])


@pytest.fixture(scope="module")
def spec():
    # Whitened x, y = diag(zeta) x: the sample spectrum is exactly ZETA2.
    rng = np.random.default_rng(0)
    x = rng.standard_normal((400, 5))
    x -= x.mean(0)
    x = x @ np.linalg.inv(np.linalg.cholesky(np.cov(x.T, bias=True))).T
    return spectrum(Moments.from_arrays(x, x * np.sqrt(ZETA2)))


def _rows(spec, betas, seeds=(0,), noise=0.0, rng=None):
    rows = []
    lstar = min_loss(spec, betas, latent_dim=5)
    sstar = theory_sigma(spec.zeta_padded(5), betas)
    for s in seeds:
        for b, l, sg in zip(betas, lstar, sstar, strict=True):
            sg = sg * (1 + noise * rng.standard_normal(5)) if noise else sg
            r = {"beta": b, "seed": s, "loss": l, "active_units": int((ZETA2 > b).sum())}
            r.update({f"sigma_{i + 1}": v for i, v in enumerate(np.sort(sg)[::-1])})
            rows.append(r)
    return rows


def test_theory_sigma_matches_closed_form_optimum(spec):
    for beta in (0.3, 1.0, 3.0, 7.9, 8.1, 20.0):
        opt = optimum(spec, latent_dim=5, beta=beta, sigma="learnable")
        got = theory_sigma(spec.zeta_padded(5), [beta])[0]
        np.testing.assert_allclose(np.sort(got), np.sort(np.sqrt(opt.sigma2)), rtol=1e-10)


def test_theory_sigma_prop3_values_and_zero_modes():
    s = theory_sigma([2.0, 1.0, 0.0], [0.25, 1.0, 9.0], eta_enc=1.5, eta_dec=1.0)
    # mode 1: sqrt(beta) eta_enc / zeta while beta < zeta^2 = 4
    np.testing.assert_allclose(s[:, 0], [0.5 * 1.5 / 2, 1.0 * 1.5 / 2, 1.5], rtol=1e-12)
    np.testing.assert_allclose(s[:, 1], [0.5 * 1.5, 1.5, 1.5], rtol=1e-12)
    np.testing.assert_allclose(s[:, 2], 1.5)  # zeta = 0: always collapsed, no divide warning


def test_theory_curves_default_range_and_loss(spec):
    c = theory_curves(spec, latent_dim=5, n=50)
    assert c.betas.shape == (50,) and c.sigma.shape == (50, 5)
    np.testing.assert_allclose(c.betas[[0, -1]], [0.05 * 0.8, 3 * 14.0], rtol=1e-9)
    np.testing.assert_allclose(c.thresholds, ZETA2, rtol=1e-9)
    np.testing.assert_allclose(c.loss, min_loss(spec, c.betas, latent_dim=5), rtol=1e-12)
    assert np.all(np.diff(c.loss) >= -1e-12)  # min loss is non-decreasing in beta
    with pytest.raises(ValueError, match="beta_range must be increasing"):
        theory_curves(spec, latent_dim=5, beta_range=(2.0, 1.0))


def _texts(fig):
    out = []
    for ax in fig.axes:
        out += [ax.get_xlabel(), ax.get_ylabel()]
        out += [t.get_text() for t in ax.texts]
        leg = ax.get_legend()
        if leg is not None:
            out += [t.get_text() for t in leg.get_texts()]
    return out


def test_loss_sigma_figure_content(spec, tmp_path):
    betas = np.geomspace(0.08, 28, 12)
    rng = np.random.default_rng(1)
    rows = _rows(spec, betas, seeds=(0, 1), noise=0.02, rng=rng)
    c = theory_curves(spec, latent_dim=5)
    fig = loss_sigma_figure(rows, c, title="t", observed_collapse=15.0)
    ax_l, ax_s = fig.axes[:2]
    assert ax_l.get_xscale() == "log" and ax_s.get_xscale() == "log"
    assert "loss" in ax_l.get_ylabel() and "sigma" in ax_s.get_ylabel()
    assert ax_l.get_legend() is not None and ax_s.get_legend() is not None
    for ax in (ax_l, ax_s):
        dashed = [ln for ln in ax.get_lines() if ln.get_linestyle() == "--"]
        np.testing.assert_allclose(sorted(ln.get_xdata()[0] for ln in dashed),
                                   np.sort(ZETA2))
        red = [ln for ln in ax.get_lines() if ln.get_linestyle() == ":"]
        assert [ln.get_xdata()[0] for ln in red] == [15.0]
    # The trained points drawn are the seed means of the rows.
    pts = [ln for ln in ax_l.get_lines() if ln.get_marker() == "o"][0]
    np.testing.assert_allclose(pts.get_xdata(), betas)
    np.testing.assert_allclose(pts.get_ydata(), min_loss(spec, betas, latent_dim=5))
    texts = " ".join(_texts(fig))
    for i in range(1, 6):
        assert f"beta_{i}^*" in texts and f"mode {i}" in texts
    paths = save_figure(fig, tmp_path / "f")
    assert [p.name for p in paths] == ["f.png", "f.pdf"]
    assert paths[0].read_bytes()[:4] == b"\x89PNG" and paths[1].read_bytes()[:4] == b"%PDF"
    assert not list(tmp_path.glob(".*tmp*"))  # no temporary files left behind


def test_loss_sigma_figure_without_rows(spec):
    fig = loss_sigma_figure([], theory_curves(spec, latent_dim=5))
    assert len(fig.axes) == 2


def test_montage_and_samples_figure(tmp_path):
    imgs = np.linspace(-1, 2, 3 * 784).reshape(3, 784)
    m = montage(imgs)
    assert m.shape == (28, 3 * 30 - 2) and m.min() >= 0 and m.max() <= 1
    with pytest.raises(ValueError, match=r"images must have shape \(n, 784\)"):
        montage(np.zeros((2, 10)))
    fig = samples_figure([imgs, imgs[:2]], ["a\n5 modes", "b\n0 modes"], title="samples")
    assert [ax.get_ylabel() for ax in fig.axes] == ["a\n5 modes", "b\n0 modes"]
    save_figure(fig, tmp_path / "s", formats=("png",))
    assert (tmp_path / "s.png").stat().st_size > 1000
    with pytest.raises(ValueError, match="2 sample arrays but 1 labels"):
        samples_figure([imgs, imgs], ["x"])
    with pytest.raises(ValueError, match="samples is empty"):
        samples_figure([], [])
