"""The map model: Gaussian processes on FIXED features of the survey, fitted by their marginal likelihood.

Why: the scalar (e.g. |CoM|) is a function of the local structure under the probe, and the survey shows that
structure at every position before any dose. A DKL network trained on the few points measured early in a run
(11-60) squeezes its embedding around them and extrapolates poorly (RESULTS.md, "Maps after 1%"); a GP over a
fixed embedding of the whole survey has only a handful of hyperparameters to learn from those points (one
lengthscale per feature, signal and noise variance), so it generalizes from few points. The embeddings: the
rotation-invariant local jet of the survey at a few scales (`local_jet`) and the centre-weighted principal
components of the patches (`survey_features`, as the pre-training uses); `SurveyMapModel` fits one GP on each and
averages them by their evidence, so the data choose the embedding.

The constant prior mean is the generalized least-squares estimate (the marginal likelihood's own optimum for a
constant mean), not the mean of the measured values: expected-improvement runs measure near the maximum, and
such clustered points are correlated, so GLS weighs them down where the plain mean is biased towards the maximum.
Its uncertainty is part of the predictive variance (universal kriging). With pre-training on, the map model also
steers the acquisition while it predicts the measured values better than the DKL (experiment/steering.py).
"""
from __future__ import annotations

import math
import typing

import numpy
import torch

from dkl4dstem.models import pretrain

COMPONENTS = 4          # principal components of the centre-weighted patches (the fixed embedding)
BASIS_PATCHES = 2048    # the basis is computed on at most this many patches (seeded subsample)
LENGTHSCALE_PRIOR = (math.log(1.5), 0.75)  # log-normal (mu, sigma) of each lengthscale, features of unit std
NOISE_PRIOR = (math.log(0.05), 1.5)        # log-normal of the noise variance relative to the values' variance
SIGNAL_PRIOR = (0.0, 1.0)                  # log-normal of the signal variance relative to the values' variance
ITERATIONS = 60
JITTER = 1e-8


def survey_features(patches: numpy.ndarray, components: int = COMPONENTS, seed: int = 0,
                    centre_sigma: float | None = None) -> torch.Tensor:
    """Leading principal-component scores of the centre-weighted patches, each scaled to unit std (N, k) float64."""
    x = torch.as_tensor(numpy.asarray(patches, dtype=numpy.float32)).to(torch.float64)
    weights = pretrain.centre_weights(x.shape[1], centre_sigma).to(torch.float64)
    weighted = x * weights
    sample = torch.as_tensor(pretrain.subsample(weighted.numpy(), seed, BASIS_PATCHES)).to(torch.float64)
    mean = sample.mean(dim=0)
    _, _, vt = torch.linalg.svd(sample - mean, full_matrices=False)
    scores = (weighted - mean) @ vt[:components].T
    scores = scores * torch.sign(scores.sum(dim=0) + 1e-12)  # fix the SVD's arbitrary signs
    return scores / scores.std(dim=0).clamp_min(1e-12)


def local_jet(image: numpy.ndarray, scale_px: float) -> torch.Tensor:
    """Rotation-invariant local jet of the survey at one scale (Koenderink & van Doorn): Gaussian-smoothed
    intensity, gradient magnitude, Laplacian and Hessian determinant at every position, each of unit std (N, 4).

    Why these: the scalars of a diffraction pattern are functions of the structure under the probe, and the
    common ones (|CoM|, disc shifts, intensities) do not depend on the direction the structure faces; e.g. the
    CoM shift follows the gradient of the projected potential, which the survey's gradient tracks.
    """
    import scipy.ndimage  # lazy, as elsewhere in the engine

    img = numpy.asarray(image, dtype=numpy.float64)
    img = (img - img.mean()) / (img.std() if img.std() > 0 else 1.0)

    def derivative(order: tuple[int, int]) -> numpy.ndarray:
        return scipy.ndimage.gaussian_filter(img, scale_px, order=order, mode="reflect")

    gy, gx = derivative((1, 0)), derivative((0, 1))
    hyy, hxx, hxy = derivative((2, 0)), derivative((0, 2)), derivative((1, 1))
    features = numpy.stack([derivative((0, 0)), numpy.hypot(gx, gy), hxx + hyy, hxx * hyy - hxy * hxy], axis=-1)
    features = features.reshape(-1, 4)
    features = (features - features.mean(axis=0)) / numpy.where(features.std(axis=0) > 0, features.std(axis=0), 1.0)
    return torch.as_tensor(features)


def _variance_reduction(model: FixedFeatureGP, reference: torch.Tensor) -> torch.Tensor:
    """sum_r cov(r, x)^2 / (var(x) + noise) at every position x: how much a measurement at x lowers the summed
    posterior variance over the reference positions r (Seo et al. 2000), in the model's standardized units."""
    features = model.features
    signal, noise = float(torch.exp(model.log_signal)), float(torch.exp(model.log_noise))
    with torch.no_grad():
        covariance = signal * _matern52(features[reference], features, torch.exp(model.log_lengthscale))
        variance = torch.full((features.shape[0],), signal, dtype=torch.float64)
        if model.indices:
            _, whitened, sum_squares = model._whitened()
            covariance -= whitened[:, reference].T @ whitened
            variance -= sum_squares
        return (covariance * covariance).sum(dim=0) / (variance.clamp_min(0) + noise)


def _matern52(a: torch.Tensor, b: torch.Tensor, lengthscale: torch.Tensor) -> torch.Tensor:
    d = torch.cdist(a / lengthscale, b / lengthscale).clamp_min(0) * math.sqrt(5.0)
    return (1 + d + d * d / 3) * torch.exp(-d)


class FixedFeatureGP:
    """Exact GP with a Matern-5/2 ARD kernel on fixed features; MAP hyperparameters (log-normal priors)."""

    def __init__(self, features: torch.Tensor) -> None:
        self.features = features.to(torch.float64)
        d = self.features.shape[1]
        self.log_lengthscale = torch.full((d,), LENGTHSCALE_PRIOR[0], dtype=torch.float64)
        self.log_signal = torch.tensor(0.0, dtype=torch.float64)
        self.log_noise = torch.tensor(NOISE_PRIOR[0], dtype=torch.float64)
        self.indices: list[int] = []
        self.values = numpy.zeros(0)
        self._y_mean, self._y_std = 0.0, 1.0
        self._cache: tuple[typing.Any, ...] | None = None  # see _whitened

    # --- fitting ---------------------------------------------------------------------------------------------
    def _parts(self, params: tuple[torch.Tensor, ...], x: torch.Tensor, y: torch.Tensor
               ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        """Cholesky factor, GLS mean, K^-1 (y - m), K^-1 1 for the given (log) hyperparameters."""
        log_ls, log_signal, log_noise = params
        n = x.shape[0]
        k = torch.exp(log_signal) * _matern52(x, x, torch.exp(log_ls))
        k = k + (torch.exp(log_noise) + JITTER) * torch.eye(n, dtype=x.dtype)
        factor = torch.linalg.cholesky(k)
        ones = torch.ones(n, 1, dtype=x.dtype)
        k_inv_1 = torch.cholesky_solve(ones, factor)[:, 0]
        k_inv_y = torch.cholesky_solve(y[:, None], factor)[:, 0]
        m = k_inv_y.sum() / k_inv_1.sum()
        return factor, m, k_inv_y - m * k_inv_1, k_inv_1

    def _objective(self, params: tuple[torch.Tensor, ...], x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        factor, m, alpha, _ = self._parts(params, x, y)
        nll = 0.5 * ((y - m) * alpha).sum() + torch.log(factor.diagonal()).sum()
        log_ls, log_signal, log_noise = params
        for value, (mu, sigma) in ((log_ls, LENGTHSCALE_PRIOR), (log_signal, SIGNAL_PRIOR), (log_noise, NOISE_PRIOR)):
            nll = nll + (0.5 * ((value - mu) / sigma) ** 2).sum()
        return nll

    def fit(self, indices: typing.Sequence[int], values: typing.Sequence[float], iterations: int = ITERATIONS
            ) -> None:
        """MAP hyperparameters on the measured points (finite values only), warm-started from the last fit."""
        pairs = [(int(i), float(v)) for i, v in zip(indices, values) if math.isfinite(v)]
        self.indices = [i for i, _ in pairs]
        self.values = numpy.array([v for _, v in pairs], dtype=numpy.float64)
        self._y_mean = float(self.values.mean()) if self.values.size else 0.0
        std = float(self.values.std()) if self.values.size > 1 else 0.0
        self._y_std = std if std > 1e-12 * max(1.0, abs(self._y_mean)) else 1.0
        if len(self.indices) < 2 or iterations <= 0:
            return
        x, y = self._train()
        params = [p.clone().requires_grad_(True) for p in (self.log_lengthscale, self.log_signal, self.log_noise)]
        optimizer = torch.optim.LBFGS(params, lr=0.5, max_iter=iterations, line_search_fn="strong_wolfe",
                                      tolerance_change=1e-6)

        def closure() -> torch.Tensor:
            optimizer.zero_grad()
            loss = self._objective(tuple(params), x, y)
            loss.backward()
            return loss

        try:
            optimizer.step(closure)
        except (torch.linalg.LinAlgError, RuntimeError):
            return  # keep the previous hyperparameters
        if all(bool(torch.isfinite(p).all()) for p in params):
            for p in params:
                p.data.clamp_(-8.0, 8.0)
            self.log_lengthscale, self.log_signal, self.log_noise = (p.detach() for p in params)

    def _train(self) -> tuple[torch.Tensor, torch.Tensor]:
        x = self.features[torch.as_tensor(self.indices, dtype=torch.long)]
        y = torch.as_tensor((self.values - self._y_mean) / self._y_std, dtype=torch.float64)
        return x, y

    def condition(self, indices: typing.Sequence[int], values: typing.Sequence[float]) -> None:
        """All measured points, hyperparameters unchanged."""
        self.fit(indices, values, iterations=0)

    # --- prediction -------------------------------------------------------------------------------------------
    @property
    def noise(self) -> float:
        """Noise variance in the values' units squared."""
        return float(torch.exp(self.log_noise)) * self._y_std ** 2

    def _whitened(self) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Cholesky factor L of K + noise, V = L^-1 k(X, all) (n x N) and the column sums of V^2, for the current
        points and hyperparameters: extended by the new points' rows (O(n N) per point) while the
        hyperparameters stay, recomputed when they change."""
        key = (self.log_lengthscale.clone(), float(self.log_signal), float(self.log_noise))
        signal, noise = math.exp(key[1]), math.exp(key[2]) + JITTER
        lengthscale = torch.exp(self.log_lengthscale)
        cache = self._cache
        n_old = 0
        if (cache is not None and torch.equal(cache[0][0], key[0]) and cache[0][1:] == key[1:]
                and self.indices[:len(cache[1])] == cache[1]):
            n_old = len(cache[1])
            factor, whitened, sum_squares = cache[2], cache[3], cache[4]
        if n_old == len(self.indices) and cache is not None and n_old:
            return factor, whitened, sum_squares
        x_all = self.features
        new = torch.as_tensor(self.indices[n_old:], dtype=torch.long)
        k_new_all = signal * _matern52(x_all[new], x_all, lengthscale)  # (m, N)
        k_new_new = k_new_all[:, new] + noise * torch.eye(len(new), dtype=torch.float64)
        if n_old:
            old = torch.as_tensor(cache[1], dtype=torch.long)  # type: ignore[index]
            l21 = torch.linalg.solve_triangular(factor, k_new_all[:, old].T, upper=False).T  # (m, n_old)
            l22 = torch.linalg.cholesky(k_new_new - l21 @ l21.T)
            v_new = torch.linalg.solve_triangular(l22, k_new_all - l21 @ whitened, upper=False)
            factor = torch.cat([torch.cat([factor, torch.zeros(n_old, len(new), dtype=torch.float64)], dim=1),
                                torch.cat([l21, l22], dim=1)])
            whitened = torch.cat([whitened, v_new])
            sum_squares = sum_squares + (v_new * v_new).sum(dim=0)
        else:
            factor = torch.linalg.cholesky(k_new_new)
            whitened = torch.linalg.solve_triangular(factor, k_new_all, upper=False)
            sum_squares = (whitened * whitened).sum(dim=0)
        self._cache = (key, list(self.indices), factor, whitened, sum_squares)
        return factor, whitened, sum_squares

    def predict(self) -> tuple[torch.Tensor, torch.Tensor]:
        """Mean and latent variance (values' units) at every position, the constant mean's uncertainty included."""
        n_all = self.features.shape[0]
        signal = float(torch.exp(self.log_signal))
        if not self.indices:
            return (torch.full((n_all,), self._y_mean, dtype=torch.float64),
                    torch.full((n_all,), signal * self._y_std ** 2, dtype=torch.float64))
        _, y = self._train()
        with torch.no_grad():
            try:
                factor, whitened, sum_squares = self._whitened()
            except torch.linalg.LinAlgError:
                self._cache = None
                factor, whitened, sum_squares = self._whitened()
            ones = torch.linalg.solve_triangular(factor, torch.ones(len(y), 1, dtype=torch.float64), upper=False)[:, 0]
            white_y = torch.linalg.solve_triangular(factor, y[:, None], upper=False)[:, 0]
            w_w = float(ones @ ones)
            m = float(ones @ white_y) / w_w  # the GLS constant mean
            mean = m + whitened.T @ (white_y - m * ones)
            gls = 1.0 - whitened.T @ ones  # the GLS mean's share of the uncertainty
            variance = (signal - sum_squares).clamp_min(0) + gls * gls / w_w
        return mean * self._y_std + self._y_mean, variance.clamp_min(1e-12) * self._y_std ** 2

    def log_evidence(self) -> float:
        """Log marginal likelihood plus log prior at the current hyperparameters (up to a shared constant)."""
        if len(self.indices) < 2:
            return -math.inf
        params = (self.log_lengthscale, self.log_signal, self.log_noise)
        with torch.no_grad():
            try:
                return -float(self._objective(params, *self._train())) - len(self.indices) * math.log(self._y_std)
            except (torch.linalg.LinAlgError, RuntimeError):
                return -math.inf

    def loo(self) -> tuple[numpy.ndarray, numpy.ndarray]:
        """Closed-form leave-one-out means and predictive variances (values' units) of the measured points."""
        x, y = self._train()
        params = (self.log_lengthscale, self.log_signal, self.log_noise)
        with torch.no_grad():
            factor, m, alpha, _ = self._parts(params, x, y)
            inverse_diag = torch.cholesky_inverse(factor).diagonal()
            mean = y - alpha / inverse_diag
            variance = 1.0 / inverse_diag
        return ((mean * self._y_std + self._y_mean).numpy(), (variance * self._y_std ** 2).numpy())


JET_SCALES_PX = (0.5, 0.7, 1.0, 1.4, 2.0)  # candidate scales of the local jet (survey pixels)
MAX_POSITIONS = 1 << 16     # larger surveys keep the DKL map model (its latent grid); this one is O(N n) per map
REFERENCE_BUDGET = 1 << 22  # mapping design: reference positions x candidates at most this
DESIGN_MIXTURE = True       # mapping design on every embedding with weight (True) or the leading one only


def for_run(config: typing.Any, survey_image: numpy.ndarray, patches: numpy.ndarray, n_candidates: int
            ) -> SurveyMapModel | None:
    """The run's map model, or None where the DKL map model stays: `map_model="dkl"`, a transferred run (its
    prior points lie on another survey) or a survey of more than MAX_POSITIONS positions."""
    if config.map_model != "survey" or config.init_from or n_candidates > MAX_POSITIONS:
        return None
    return SurveyMapModel(survey_image, patches, seed=config.seed)


def _same(a: tuple[list[int], list[float]], b: tuple[list[int], list[float]]) -> bool:
    return a[0] == b[0] and numpy.array_equal(numpy.asarray(a[1]), numpy.asarray(b[1]), equal_nan=True)


class SurveyMapModel:
    """Several fixed embeddings of the survey (the local jet at a few scales, centre-weighted PCA), one GP each,
    averaged with weights from their evidence (Bayesian model averaging; the MAP objective stands in for the log
    marginal likelihood): the data choose the embedding, no truth needed. With few points the weights are broad,
    with more they settle on one embedding."""

    def __init__(self, survey_image: numpy.ndarray, patches: numpy.ndarray | None = None, seed: int = 0,
                 scales_px: typing.Sequence[float] = JET_SCALES_PX) -> None:
        self.names: list[str] = [f"jet{s:g}" for s in scales_px]
        features = [local_jet(survey_image, s) for s in scales_px]
        if patches is not None:
            self.names.append(f"pca{COMPONENTS}")
            features.append(survey_features(patches, COMPONENTS, seed))
        self.models = [FixedFeatureGP(f) for f in features]
        self.weights = numpy.full(len(self.models), 1.0 / len(self.models))
        self._fitted_n = 0
        self._data: tuple[list[int], list[float]] | None = None  # what the current state is conditioned on
        self._prediction: tuple[torch.Tensor, torch.Tensor] | None = None

    def fit(self, indices: typing.Sequence[int], values: typing.Sequence[float], iterations: int = ITERATIONS,
            refit: bool = True) -> None:
        """Hyperparameters again when the data grew by a tenth (at least one point) since the last fit; else
        (or with `refit` False once fitted: the decision's part, fast) conditioned on the new points with the
        hyperparameters kept."""
        n = sum(1 for v in values if math.isfinite(v))
        if (not refit and self._fitted_n) or n - self._fitted_n < max(1, self._fitted_n // 10):
            iterations = 0
        else:
            self._fitted_n = n
        data = (list(indices), [float(v) for v in values])
        if iterations == 0 and self._data is not None and _same(data, self._data):
            return  # nothing new: keep the state and the cached prediction
        self._data, self._prediction = data, None
        evidence = []
        for model in self.models:
            model.fit(indices, values, iterations)
            evidence.append(model.log_evidence())
        evidence_array = numpy.asarray(evidence)
        if numpy.isfinite(evidence_array).any():
            evidence_array = numpy.where(numpy.isfinite(evidence_array), evidence_array, -numpy.inf)
            weights = numpy.exp(evidence_array - evidence_array.max())
            self.weights = weights / weights.sum()

    @property
    def best(self) -> FixedFeatureGP:
        return self.models[int(numpy.argmax(self.weights))]

    @property
    def name(self) -> str:
        return self.names[int(numpy.argmax(self.weights))]

    @property
    def noise(self) -> float:
        return float(sum(w * m.noise for w, m in zip(self.weights, self.models)))

    def predict(self) -> tuple[torch.Tensor, torch.Tensor]:
        """Mixture mean and latent variance (values' units) over the embeddings with a weight of at least 1e-3;
        cached until the next change."""
        if self._prediction is None:
            self._prediction = self._mixture()
        return self._prediction

    def _mixture(self) -> tuple[torch.Tensor, torch.Tensor]:
        keep = [k for k in range(len(self.models)) if self.weights[k] >= 1e-3]
        total = float(sum(self.weights[k] for k in keep))
        mean = second = None
        for k in keep:
            m, v = self.models[k].predict()
            w = float(self.weights[k]) / total
            mean = w * m if mean is None else mean + w * m
            second = w * (v + m * m) if second is None else second + w * (v + m * m)
        assert mean is not None and second is not None
        return mean, (second - mean * mean).clamp_min(1e-12)

    def maps(self, indices: typing.Sequence[int], values: typing.Sequence[float]
             ) -> tuple[torch.Tensor, torch.Tensor, float]:
        """Prediction, variance of a measurement (latent + noise) and the LOO variance scale, after fitting."""
        self.fit(indices, values)
        mean, variance = self.predict()
        return mean, variance + self.noise, self.loo_variance_scale()

    def design_values(self, indices: typing.Sequence[int], values: typing.Sequence[float], blocked: numpy.ndarray
                      ) -> torch.Tensor:
        """`--acquisition map`: log integrated variance reduction over a fixed reference set of positions, of the
        embeddings' GPs averaged with their weights (DESIGN_MIXTURE; else the leading one's), so the design serves
        the model that draws the map."""
        self.fit(indices, values)
        n_all = self.models[0].features.shape[0]
        n_reference = max(64, min(n_all, REFERENCE_BUDGET // n_all))
        reference = torch.as_tensor(numpy.sort(numpy.random.default_rng(0).choice(n_all, n_reference, replace=False)))
        if DESIGN_MIXTURE:
            keep = [k for k in range(len(self.models)) if self.weights[k] >= 1e-3]
        else:
            keep = [int(numpy.argmax(self.weights))]
        total = torch.stack([float(self.weights[k]) * _variance_reduction(self.models[k], reference) for k in keep])
        return (total.sum(dim=0) / sum(float(self.weights[k]) for k in keep)).clamp_min(1e-300).log()

    def loo_variance_scale(self) -> float:
        """Mean squared closed-form leave-one-out z-score of the leading embedding (a prior for recalibration)."""
        model = self.best
        if len(model.indices) < 3:
            return 1.0
        mean, variance = model.loo()
        return float(numpy.mean((model.values - mean) ** 2 / variance))
