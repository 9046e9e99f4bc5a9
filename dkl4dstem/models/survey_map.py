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
from dkl4dstem.models.fixed_gp import ITERATIONS, FixedFeatureGP, matern52

COMPONENTS = 4          # principal components of the centre-weighted patches (the fixed embedding)
BASIS_PATCHES = 2048    # the basis is computed on at most this many patches (seeded subsample)


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
        covariance = signal * matern52(features[reference], features, torch.exp(model.log_lengthscale))
        variance = torch.full((features.shape[0],), signal, dtype=torch.float64)
        if model.indices:
            _, whitened, sum_squares = model._whitened()[:3]
            covariance -= whitened[:, reference].T @ whitened
            variance -= sum_squares
        return (covariance * covariance).sum(dim=0) / (variance.clamp_min(0) + noise)


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
        self._stale = False  # conditioned on points the weights do not yet reflect

    def fit(self, indices: typing.Sequence[int], values: typing.Sequence[float], iterations: int = ITERATIONS,
            refit: bool = True) -> None:
        """Hyperparameters again when the data grew by a tenth (at least one point) since the last fit; else
        conditioned on the new points with the hyperparameters kept. With `refit` False once fitted (the decision's
        part while the map model steers: fast) only conditioned, the weights kept until the next call without."""
        n = sum(1 for v in values if math.isfinite(v))
        if (not refit and self._fitted_n) or n - self._fitted_n < max(1, self._fitted_n // 10):
            iterations = 0
        else:
            self._fitted_n = n
        data = (list(indices), [float(v) for v in values])
        if iterations == 0 and self._data is not None and _same(data, self._data):
            if refit and self._stale:
                self._reweight()
            return  # nothing new: keep the state and the cached prediction
        self._data, self._prediction = data, None
        for model in self.models:
            model.fit(indices, values, iterations)
        self._stale = True
        if refit or not self._fitted_n:
            self._reweight()

    def _reweight(self) -> None:
        """The weights from each embedding's evidence on the current points."""
        evidence_array = numpy.asarray([model.log_evidence() for model in self.models])
        self._stale = False
        if numpy.isfinite(evidence_array).any():
            evidence_array = numpy.where(numpy.isfinite(evidence_array), evidence_array, -numpy.inf)
            weights = numpy.exp(evidence_array - evidence_array.max())
            if not numpy.array_equal(weights / weights.sum(), self.weights):
                self.weights, self._prediction = weights / weights.sum(), None

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
