"""postcollapse.LinearVAE: scikit-learn conformance and agreement with the theory."""

from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("sklearn")

from sklearn.decomposition import PCA  # noqa: E402
from sklearn.linear_model import LogisticRegression  # noqa: E402
from sklearn.model_selection import GridSearchCV  # noqa: E402
from sklearn.pipeline import make_pipeline  # noqa: E402
from sklearn.preprocessing import StandardScaler  # noqa: E402
from sklearn.utils.estimator_checks import parametrize_with_checks  # noqa: E402

from postcollapse import LinearVAE, theory  # noqa: E402
from postcollapse.estimator import expected_failed_checks  # noqa: E402


def _data(n=400, d=6, scales=(4.0, 3.0, 2.0), noise=0.3, seed=0):
    """Rows with len(scales) strong directions plus isotropic noise of std ``noise``."""
    rng = np.random.default_rng(seed)
    q, _ = np.linalg.qr(rng.normal(size=(d, d)))
    z = rng.normal(size=(n, len(scales))) * np.asarray(scales)
    return z @ q[:, : len(scales)].T + noise * rng.normal(size=(n, d)) + 5.0


@parametrize_with_checks(
    [
        LinearVAE(),
        LinearVAE(latent_dim=1, sigma="prior", conditional=False),
        LinearVAE(latent_dim=3, beta=0.5, sigma=[0.5, 1.0, 2.0], eta_dec=0.7, eta_enc=1.3),
    ],
    expected_failed_checks=expected_failed_checks,
)
def test_sklearn_estimator_checks(estimator, check):
    check(estimator)


@pytest.mark.parametrize("sigma", ["learnable", "prior", [0.3, 1.0, 2.5]])
@pytest.mark.parametrize("conditional", [False, True])
def test_mean_score_is_minus_the_theory_loss(sigma, conditional):
    """score(X_train) = -L_VAE at the fitted parameters, the loss evaluated independently."""
    X = _data()
    rng = np.random.default_rng(1)
    y = X[:, :4] @ rng.normal(size=(4, 3)) + 0.5 * rng.normal(size=(len(X), 3)) if conditional \
        else None
    vae = LinearVAE(latent_dim=3, beta=1.7, sigma=sigma, eta_dec=0.8, eta_enc=1.2).fit(X, y)
    direct = theory.vae_loss(
        (X, y), U=vae.components_.T, W=vae.encoder_weights_.T, sigma2=vae.sigma2_,
        b_e=vae.encoder_bias_, b_d=vae.decoder_bias_, beta=1.7, eta_enc=1.2, eta_dec=0.8,
    )
    np.testing.assert_allclose(-vae.score(X, y), direct, rtol=1e-10)
    np.testing.assert_allclose(vae.loss_, direct, rtol=1e-10)
    assert vae.conditional_ is conditional
    assert vae.components_.shape == (3, 3 if conditional else 6)


def test_collapse_follows_thresholds():
    X = _data()
    for beta in (0.05, 5.0, 10.0, 40.0):
        vae = LinearVAE(latent_dim=4, beta=beta, eta_dec=0.9).fit(X)
        expected = min(4, int(np.sum(vae.zeta_**2 / 0.81 > beta)))
        assert vae.n_active_ == expected
        np.testing.assert_allclose(vae.thresholds_, vae.zeta_**2 / 0.81, rtol=1e-12)
        # collapsed dimensions: posterior = prior, no decoder weight
        assert np.all(vae.components_[~vae.active_] == 0)
        np.testing.assert_allclose(vae.sigma2_[~vae.active_], 1.0)
        # zeta^2 are the PCA variances (population normalisation) for the plain VAE
        ev = np.linalg.eigvalsh(np.cov(X.T, bias=True))[::-1]
        np.testing.assert_allclose(vae.zeta_**2, ev, rtol=1e-9)


def test_transform_inverse_transform_and_sample():
    X = _data(n=300)
    vae = LinearVAE(latent_dim=3, beta=0.5).fit(X)
    Z = vae.transform(X)
    np.testing.assert_allclose(Z, X @ vae.encoder_weights_.T + vae.encoder_bias_, atol=1e-10)
    np.testing.assert_allclose(Z.mean(axis=0), 0.0, atol=1e-10)
    R = vae.inverse_transform(Z)
    assert R.shape == X.shape
    # the reconstruction error is smaller than the data's variance around the mean
    assert np.mean((R - X) ** 2) < 0.2 * np.mean((X - X.mean(0)) ** 2)
    a = vae.sample(20000, random_state=3)
    b = vae.sample(20000, random_state=3)
    np.testing.assert_array_equal(a, b)
    # model covariance: U U^T eta_enc^2 + eta_dec^2 I
    U = vae.components_.T
    cov = U @ U.T + np.eye(X.shape[1])
    np.testing.assert_allclose(np.cov(a.T), cov, atol=0.06 * np.abs(cov).max())
    np.testing.assert_allclose(a.mean(0), vae.mean_, atol=0.1)
    assert vae.sample(5, random_state=np.random.default_rng(0), noise=False).shape == (5, 6)
    assert list(vae.get_feature_names_out()) == ["linearvae0", "linearvae1", "linearvae2"]


def test_pipeline_with_classifier_ignores_labels_when_not_conditional():
    rng = np.random.default_rng(0)
    X = _data(n=300)
    y = (X[:, 0] > np.median(X[:, 0])).astype(int)
    pipe = make_pipeline(StandardScaler(), LinearVAE(latent_dim=3, beta=0.1, conditional=False),
                         LogisticRegression())
    pipe.fit(X, y)
    assert pipe.named_steps["linearvae"].conditional_ is False
    assert pipe.score(X, y) > 0.8
    assert pipe[:-1].transform(rng.normal(size=(4, 6))).shape == (4, 3)


def test_grid_search_over_latent_dim_on_held_out_elbo():
    """Held-out ELBO picks the three strong directions; more latent dims change nothing
    (they collapse: noise variance 0.09 is below beta * eta_dec^2 = 1)."""
    X = _data(n=600, scales=(4.0, 3.0, 2.0), noise=0.3)
    grid = GridSearchCV(LinearVAE(beta=1.0), {"latent_dim": [1, 2, 3, 4, 5]}, cv=3)
    grid.fit(X)
    means = grid.cv_results_["mean_test_score"]
    assert grid.best_params_["latent_dim"] >= 3
    # gain of mode 3 (variance 4, b = 1): (4 - (1 - log(1/4))) / 2 = 0.81 nats per example
    assert means[0] < means[1] < means[2] - 0.5
    np.testing.assert_allclose(means[3:], means[2], rtol=1e-12)
    assert grid.best_estimator_.n_active_ == 3


@pytest.mark.parametrize("q", [1, 2, 4])
def test_learned_variance_beta_one_is_probabilistic_pca(q):
    """At beta = 1 with learned decoder variance, score = the pPCA log-likelihood.

    scikit-learn's PCA estimates the covariance with 1/(N-1) (explained_variance_ and
    noise_variance_ are unbiased); the VAE's optimum uses the population moments (1/N).
    Scaling PCA's variances by (N-1)/N turns its model into the maximum-likelihood pPCA,
    which must equal the VAE's bound pointwise (the encoder is the exact posterior).
    """
    X = _data(n=250, d=7)
    X_test = _data(n=50, d=7, seed=9)
    n = X.shape[0]
    vae = LinearVAE(latent_dim=q, beta=1.0, eta_dec="learn").fit(X)
    pca = PCA(n_components=q).fit(X)
    raw = pca.score(X_test)
    pca.explained_variance_ = pca.explained_variance_ * (n - 1) / n
    pca.noise_variance_ = pca.noise_variance_ * (n - 1) / n
    np.testing.assert_allclose(vae.eta_dec2_, pca.noise_variance_, rtol=1e-10)
    for data in (X, X_test):
        np.testing.assert_allclose(vae.score(data), pca.score(data), rtol=0, atol=1e-8)
        np.testing.assert_allclose(
            vae.score_samples(data), pca.score_samples(data), rtol=0, atol=1e-8
        )
    assert abs(raw - vae.score(X_test)) > 1e-4  # the N vs N-1 difference is not negligible


def test_errors():
    X = _data(n=50)
    with pytest.raises(ValueError, match="eta_dec must be a positive number or 'learn'"):
        LinearVAE(eta_dec="fixed").fit(X)
    with pytest.raises(ValueError, match="conditional=True needs a target"):
        LinearVAE(conditional=True).fit(X)
    with pytest.raises(ValueError, match="conditional must be"):
        LinearVAE(conditional="yes").fit(X)
    with pytest.raises(ValueError, match="sigma must be one of"):
        LinearVAE(sigma="diag").fit(X)
    with pytest.raises(ValueError, match="length latent_dim=2"):
        LinearVAE(sigma=[1.0, 2.0, 3.0]).fit(X)
    with pytest.raises(ValueError, match="beta must be"):
        LinearVAE(beta=-1).fit(X)
    vae = LinearVAE().fit(X, X[:, :2])
    with pytest.raises(ValueError, match="pass y to score"):
        vae.score(X)
    with pytest.raises(ValueError, match=r"latent codes must have shape \(n_samples, 2\)"):
        vae.inverse_transform(np.zeros((3, 5)))


@pytest.mark.parametrize(
    "sigma, eta_dec", [("learnable", 0.8), ("prior", 1.3), ([0.4, 1.0, 2.0], 0.9),
                       ("learnable", "learn"), ("prior", "learn")],
)
def test_thresholds_attribute_brackets_each_collapse(sigma, eta_dec):
    """Just below thresholds_[j] mode j is active; just above it is collapsed."""
    X = _data(n=300, d=6, scales=(4.0, 2.5, 1.5))
    thr = LinearVAE(latent_dim=3, sigma=sigma, eta_dec=eta_dec).fit(X).thresholds_
    for j in range(3):
        lo = LinearVAE(latent_dim=3, beta=thr[j] * 0.999, sigma=sigma, eta_dec=eta_dec).fit(X)
        hi = LinearVAE(latent_dim=3, beta=thr[j] * 1.001, sigma=sigma, eta_dec=eta_dec).fit(X)
        assert lo.n_active_ == j + 1 and hi.n_active_ == j, (j, thr)


def test_grid_search_with_learned_variance_finds_the_dimension():
    """Learned decoder variance at beta = 1 is pPCA: held-out likelihood peaks at the three
    signal directions (extra dimensions fit noise and lose ~0.01 nats per example)."""
    X = _data(n=600, d=10, noise=0.5, seed=0)
    grid = GridSearchCV(LinearVAE(eta_dec="learn"), {"latent_dim": [1, 2, 3, 4, 5, 6]}, cv=3)
    grid.fit(X)
    assert grid.best_params_["latent_dim"] == 3
    assert np.all(np.diff(grid.cv_results_["mean_test_score"][2:]) < 0)
