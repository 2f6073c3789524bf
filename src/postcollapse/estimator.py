"""``LinearVAE``: the closed-form linear beta-VAE as a scikit-learn estimator.

``fit`` computes the global minimum of the linear (conditional) beta-VAE in closed form
(docs/THEORY.md, "Global minimum") from the data's moments: no training loop, no random
start. The fitted model is the encoder ``q(z|x) = N(W^T x + b_e, Sigma)``, the decoder
``p(y|z) = N(U z + b_d, eta_dec^2 I)`` and the prior ``N(0, eta_enc^2 I)``; ``transform``
gives the posterior mean, ``inverse_transform`` the decoder mean, ``sample`` draws from the
generative model and ``score_samples`` is the per-example beta-ELBO (higher is better).

scikit-learn is imported by this module only (``import postcollapse`` stays light).
"""

from __future__ import annotations

import numpy as np
from sklearn.base import BaseEstimator, ClassNamePrefixFeaturesOutMixin, TransformerMixin
from sklearn.utils import check_random_state
from sklearn.utils.validation import check_is_fitted, validate_data

from postcollapse import theory
from postcollapse._checks import check_int_at_least, check_positive

__all__ = ["LinearVAE", "expected_failed_checks"]

_CONDITIONAL = ("auto", True, False)


class LinearVAE(ClassNamePrefixFeaturesOutMixin, TransformerMixin, BaseEstimator):
    """Linear (conditional) beta-VAE fitted in closed form at its global minimum.

    The objective is the beta-weighted negative ELBO per example (docs/THEORY.md,
    "Model and objective"). Its global minimiser depends on the data only through the
    central moments, so ``fit`` is exact and deterministic; which latent dimensions collapse
    is read off the spectrum: mode i survives iff ``zeta_i^2 > beta * eta_dec^2``.

    Parameters
    ----------
    latent_dim : int, default 2
        d1, the number of latent dimensions (>= 1).
    beta : float, default 1.0
        Weight of the KL term (> 0).
    sigma : {"learnable", "prior"} or array-like of shape (latent_dim,), default "learnable"
        Encoder variance: a learnable diagonal, fixed at the prior ``eta_enc^2 I``, or
        these fixed variances sigma_i^2.
    eta_dec : float or "learn", default 1.0
        Decoder standard deviation. ``"learn"`` fits the decoder variance too (then the
        objective includes the Gaussian normaliser; at beta = 1 and y = x this is
        probabilistic PCA).
    eta_enc : float, default 1.0
        Prior standard deviation.
    conditional : {"auto", True, False}, default "auto"
        ``"auto"``: a ``y`` passed to ``fit`` is the decoder's target (the conditional
        model, encoder from x, decoder to y); without ``y`` the model is the plain VAE
        (y = x). ``False`` ignores ``y`` (use this inside a ``Pipeline`` that passes class
        labels to a later step). ``True`` requires ``y``.

    Attributes
    ----------
    components_ : ndarray of shape (latent_dim, n_targets)
        Decoder weights U^T: ``inverse_transform(Z) = Z @ components_ + decoder_bias_``.
        Rows of collapsed dimensions are zero.
    encoder_weights_ : ndarray of shape (latent_dim, n_features_in_)
        Encoder mean weights W^T: ``transform(X) = (X - mean_) @ encoder_weights_.T``.
    encoder_bias_ : ndarray of shape (latent_dim,)
        b_e = -W^T mean_.
    decoder_bias_ : ndarray of shape (n_targets,)
        b_d, the target mean (equal to ``mean_`` for the plain VAE).
    mean_ : ndarray of shape (n_features_in_,)
        Mean of the training inputs.
    sigma2_ : ndarray of shape (latent_dim,)
        Encoder variances sigma_i^2 (eta_enc^2 for collapsed dimensions when learnable).
    zeta_ : ndarray of shape (n_modes,)
        Singular values of the whitened cross-moment Z = C A^{-1/2}, descending (the
        square roots of the PCA variances for the plain VAE).
    thresholds_ : ndarray of shape (n_modes,)
        Critical betas beta_i*: mode i is collapsed iff ``beta >= thresholds_[i]``
        (``zeta_i^2 / eta_dec^2``; under a learned decoder variance the closed form of
        docs/THEORY.md). With fixed variances ``sigma`` only the first ``latent_dim`` modes
        have one (``zeta_j^2 eta_enc^2 / (sigma_(j)^2 eta_dec^2)``, sigma sorted
        increasingly), and it is NaN when the decoder variance is learned too.
    active_ : ndarray of bool of shape (latent_dim,)
        Latent dimensions that carry information at the optimum.
    n_active_ : int
        Their number.
    eta_dec2_ : float
        The decoder variance: eta_dec^2, learned when ``eta_dec="learn"``.
    loss_ : float
        The minimum objective on the training data (per example; includes the Gaussian
        normaliser only when the decoder variance is learned). Equals
        ``-score(X_train)``.
    conditional_ : bool
        Whether a separate target y was fitted.
    n_targets_ : int
        Dimension of the decoder's output (n_features_in_ for the plain VAE).
    n_features_in_ : int
    feature_names_in_ : ndarray of shape (n_features_in_,)
        Defined only when X has feature names that are all strings.

    Examples
    --------
    >>> import numpy as np
    >>> from postcollapse import LinearVAE
    >>> X = np.random.default_rng(0).normal(size=(200, 5)) * [3.0, 2.0, 1.0, 0.5, 0.1]
    >>> vae = LinearVAE(latent_dim=3, beta=2.0).fit(X)
    >>> vae.n_active_  # modes with variance above beta * eta_dec^2 = 2
    2
    """

    def __init__(
        self,
        latent_dim=2,
        *,
        beta=1.0,
        sigma="learnable",
        eta_dec=1.0,
        eta_enc=1.0,
        conditional="auto",
    ):
        self.latent_dim = latent_dim
        self.beta = beta
        self.sigma = sigma
        self.eta_dec = eta_dec
        self.eta_enc = eta_enc
        self.conditional = conditional

    # ------------------------------------------------------------------ tags
    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.target_tags.required = False
        tags.input_tags.allow_nan = False
        tags.transformer_tags.preserves_dtype = ["float64"]
        return tags

    # ------------------------------------------------------------------ helpers
    def _check_params(self):
        d1 = check_int_at_least("latent_dim", self.latent_dim, 1)
        beta = check_positive("beta", self.beta)
        eta_enc = check_positive("eta_enc", self.eta_enc)
        if isinstance(self.eta_dec, str):
            if self.eta_dec != theory.LEARN:
                raise ValueError(
                    f"eta_dec must be a positive number or 'learn', got {self.eta_dec!r}"
                )
            eta_dec = theory.LEARN
        else:
            eta_dec = check_positive("eta_dec", self.eta_dec)
        if self.conditional not in _CONDITIONAL:
            raise ValueError(
                f"conditional must be 'auto', True or False, got {self.conditional!r}"
            )
        sigma = self.sigma
        if isinstance(sigma, str):
            if sigma not in theory.SIGMA_MODES:
                raise ValueError(
                    f"sigma must be one of {theory.SIGMA_MODES} or an array of "
                    f"latent_dim variances, got {sigma!r}"
                )
        else:
            sigma = np.asarray(sigma, dtype=np.float64).reshape(-1)
        return d1, beta, sigma, eta_dec, eta_enc

    def _target(self, X, y, *, reset: bool = True):
        """Return (X, Y) validated; Y is None for the plain model."""
        use_y = self.conditional is True or (self.conditional == "auto" and y is not None)
        if reset and self.conditional is True and y is None:
            raise ValueError("conditional=True needs a target: call fit(X, y)")
        if not use_y:
            X = validate_data(self, X, reset=reset, dtype=np.float64, ensure_min_samples=2)
            return X, None
        X, Y = validate_data(
            self, X, y, reset=reset, dtype=np.float64, multi_output=True, y_numeric=True,
            ensure_min_samples=2,
        )
        Y = np.asarray(Y, dtype=np.float64)
        if Y.ndim == 1:
            Y = Y.reshape(-1, 1)
        return X, Y

    # ------------------------------------------------------------------ fit
    def fit(self, X, y=None):
        """Compute the global minimum of the linear beta-VAE on ``X`` (and target ``y``).

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features)
            Inputs (at least 2 rows).
        y : array-like of shape (n_samples,) or (n_samples, n_targets), optional
            Decoder target for the conditional model (see ``conditional``); without it the
            decoder reconstructs X.

        Returns
        -------
        self : LinearVAE
        """
        d1, beta, sigma, eta_dec, eta_enc = self._check_params()
        X, Y = self._target(X, y, reset=True)
        spec = theory.spectrum(theory.Moments.from_arrays(X, Y))
        opt = theory.optimum(
            spec, latent_dim=d1, beta=beta, sigma=sigma, eta_enc=eta_enc, eta_dec=eta_dec
        )
        self.eta_dec2_ = float(opt.eta_dec2)
        # the fitted objective: the beta-NLL (with the Gaussian normaliser) when v is learned
        self.loss_ = float(opt.nll) if eta_dec == theory.LEARN else float(opt.loss)
        self.thresholds_ = self._thresholds(spec, d1, sigma, eta_dec, eta_enc)
        self.conditional_ = Y is not None
        self.mean_ = spec.mean_x.copy()
        self.components_ = np.ascontiguousarray(opt.U.T)
        self.encoder_weights_ = np.ascontiguousarray(opt.W.T)
        self.encoder_bias_ = np.asarray(opt.b_e, dtype=np.float64)
        self.decoder_bias_ = np.asarray(opt.b_d, dtype=np.float64)
        self.sigma2_ = np.asarray(opt.sigma2, dtype=np.float64)
        self.zeta_ = spec.zeta.copy()
        self.active_ = np.asarray(opt.active, dtype=bool)
        self.n_active_ = int(self.active_.sum())
        self.n_targets_ = int(spec.d2)
        self._n_features_out = d1
        self._fit_beta = beta
        self._fit_eta_enc = eta_enc
        self._fit_learned_v = eta_dec == theory.LEARN
        return self

    @staticmethod
    def _thresholds(spec, d1, sigma, eta_dec, eta_enc):
        """Critical betas of the modes (NaN where no closed form: fixed Sigma, learned v)."""
        if isinstance(sigma, str):
            return np.asarray(theory.thresholds(spec, eta_dec=eta_dec, sigma=sigma), float)
        # fixed Sigma: the dimension with the j-th smallest sigma serves mode j and collapses
        # iff zeta_j <= sqrt(beta) sigma_(j) eta_dec / eta_enc (docs/THEORY.md, Prop. 2)
        m = min(d1, spec.d_star)
        if eta_dec == theory.LEARN:
            return np.full(m, np.nan)
        s2 = np.sort(np.asarray(sigma, dtype=np.float64))[:m]
        return spec.zeta[:m] ** 2 * eta_enc**2 / (s2 * eta_dec**2)

    # ------------------------------------------------------------------ maps
    def transform(self, X):
        """Posterior mean E[z | x] = W^T x + b_e.

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features_in_)

        Returns
        -------
        Z : ndarray of shape (n_samples, latent_dim)
        """
        check_is_fitted(self)
        X = validate_data(self, X, reset=False, dtype=np.float64)
        return (X - self.mean_) @ self.encoder_weights_.T

    def inverse_transform(self, X):
        """Decoder mean U z + b_d of latent codes.

        Parameters
        ----------
        X : array-like of shape (n_samples, latent_dim)
            Latent codes (e.g. the output of ``transform``).

        Returns
        -------
        Y : ndarray of shape (n_samples, n_targets_)
        """
        check_is_fitted(self)
        Z = np.asarray(X, dtype=np.float64)
        if Z.ndim != 2 or Z.shape[1] != self.components_.shape[0]:
            raise ValueError(
                f"latent codes must have shape (n_samples, {self.components_.shape[0]}), "
                f"got {Z.shape}"
            )
        return Z @ self.components_ + self.decoder_bias_

    def sample(self, n_samples=1, *, random_state=None, noise=True):
        """Draw from the generative model: z ~ N(0, eta_enc^2 I), y ~ N(U z + b_d, eta_dec^2 I).

        Parameters
        ----------
        n_samples : int, default 1
        random_state : int, numpy Generator or RandomState, optional
            Source of randomness (None: fresh entropy).
        noise : bool, default True
            Add the decoder noise; False returns the decoder means.

        Returns
        -------
        Y : ndarray of shape (n_samples, n_targets_)
        """
        check_is_fitted(self)
        n = check_int_at_least("n_samples", n_samples, 1)
        rng = (random_state if isinstance(random_state, np.random.Generator)
               else check_random_state(random_state))
        d1 = self.components_.shape[0]
        z = rng.standard_normal((n, d1)) * self._fit_eta_enc
        out = self.inverse_transform(z)
        if noise:
            out = out + rng.standard_normal(out.shape) * np.sqrt(self.eta_dec2_)
        return out

    # ------------------------------------------------------------------ scores
    def score_samples(self, X, y=None):
        """Per-example beta-ELBO (higher is better), exact in the encoder noise.

        ``-[ (||U mu + b_d - y||^2 + Tr(U Sigma U^T)) / (2 eta_dec^2)
        + beta KL(N(mu, Sigma) || N(0, eta_enc^2 I)) ]`` with mu = W^T x + b_e; with a
        learned decoder variance minus ``(d2/2) log(2 pi eta_dec^2)`` as well, so that at
        beta = 1 it is a lower bound on log p(y | x) (equal to it at the optimum: the
        probabilistic-PCA log-likelihood for y = x). With a fixed eta_dec the constant is
        left out, as in the project's loss (docs/THEORY.md); the mean over the training
        set is then ``-loss_``.

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features_in_)
        y : array-like of shape (n_samples,) or (n_samples, n_targets_), optional
            The target; required when the model was fitted with one, ignored otherwise.

        Returns
        -------
        scores : ndarray of shape (n_samples,)
        """
        check_is_fitted(self)
        if self.conditional_:
            if y is None:
                raise ValueError("this LinearVAE was fitted with a target y: pass y to score")
            X, Y = validate_data(self, X, y, reset=False, dtype=np.float64, multi_output=True,
                                 y_numeric=True)
            Y = np.asarray(Y, dtype=np.float64).reshape(X.shape[0], -1)
            if Y.shape[1] != self.n_targets_:
                raise ValueError(f"y has {Y.shape[1]} columns, expected {self.n_targets_}")
        else:
            X = validate_data(self, X, reset=False, dtype=np.float64)
            Y = X
        v = self.eta_dec2_
        e2 = self._fit_eta_enc**2
        mu = (X - self.mean_) @ self.encoder_weights_.T
        resid = mu @ self.components_ + self.decoder_bias_ - Y
        se = np.einsum("ij,ij->i", resid, resid)
        se += float(np.sum(self.sigma2_ * np.einsum("ij,ij->i", self.components_,
                                                     self.components_)))
        r = self.sigma2_ / e2
        kl = 0.5 * (np.einsum("ij,ij->i", mu, mu) / e2 + float(np.sum(r - 1.0 - np.log(r))))
        loss = se / (2.0 * v) + self._fit_beta * kl
        if self._fit_learned_v:
            loss += 0.5 * self.n_targets_ * np.log(2.0 * np.pi * v)
        return -loss

    def score(self, X, y=None):
        """Mean per-example beta-ELBO of :meth:`score_samples` (higher is better).

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features_in_)
        y : array-like, optional
            The target, for a model fitted with one.

        Returns
        -------
        float
        """
        return float(np.mean(self.score_samples(X, y)))


def expected_failed_checks(estimator) -> dict[str, str]:
    """scikit-learn estimator checks that cannot apply to ``estimator``, with the reason.

    For ``sklearn.utils.estimator_checks.parametrize_with_checks(...,
    expected_failed_checks=expected_failed_checks)`` (and ``check_estimator``).

    Parameters
    ----------
    estimator : LinearVAE

    Returns
    -------
    dict
        Check name -> reason; empty when every check applies.
    """
    if not isinstance(estimator, LinearVAE) or estimator.conditional is False:
        return {}
    reason = (
        "the check fits with a y (so conditional='auto' fits the conditional model, "
        "y as decoder target) and then calls score_samples(X) without y, which that "
        "model needs; LinearVAE(conditional=False) passes it"
    )
    return {
        "check_methods_sample_order_invariance": reason,
        "check_methods_subset_invariance": reason,
    }
