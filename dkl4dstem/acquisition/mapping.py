"""`--acquisition map`: where to measure for the best map of the whole survey, not for its extreme values.

Integrated variance reduction (ALC; Seo et al. 2000) in a *fixed* feature space of the survey: the leading
principal components of the HAADF patches. Why not in the DKL's latent space: there the design inherits the
network's overfitting (the latent space is fitted to the few points measured so far), and on abTEM data it gave
worse maps than a random subset of the same size. In a fixed feature space the greedy design spreads the measurements over the kinds of local structure the survey holds,
weighted by how many positions share each (RESULTS.md, "Mapping mode"). The DKL model itself is unchanged: it is
trained on whatever points the design chose and gives the maps.
"""
from __future__ import annotations

import gpytorch
import numpy
import torch

from dkl4dstem.posterior.cache import PosteriorCache

COMPONENTS = 8              # principal components of the patches
LENGTHSCALE_FACTOR = 1.0    # RBF lengthscale as a fraction of the median distance between candidates
NOISE = 1e-2                # relative to the unit prior variance: a measured position is known to ~10%
REFERENCE = 2048            # reference positions of the integrated variance (one fixed draw per run) ...
REFERENCE_BUDGET = 1 << 23  # ... fewer on large surveys: reference x candidates at most this (a step's cost)


def patch_features(patches: numpy.ndarray, components: int = COMPONENTS) -> torch.Tensor:
    """Leading principal components of the patches, scaled to unit mean standard deviation per component."""
    data = numpy.asarray(patches, dtype=numpy.float64)
    data = data - data.mean(axis=0)
    eigenvalues, eigenvectors = numpy.linalg.eigh(data.T @ data / len(data))  # ascending
    basis = eigenvectors[:, ::-1][:, :min(components, data.shape[1])]
    features = data @ basis
    scale = float(features.std(axis=0).mean())
    return torch.as_tensor(features / (scale if scale > 0 else 1.0))


class FeatureSpaceDesign:
    """A GP on fixed patch features whose only job is to say where a measurement teaches the map most.

    The integrated variance reduction of a candidate x is sum_r cov(r, x)^2 / (var(x) + noise) over a fixed set of
    reference positions r. With cov(r, x) = k(r, x) - sum_i V_ir V_ix (V: the whitened cross-covariances of
    `PosteriorCache`), k(R, X) is computed once and the sum over the measured points i is kept as a running
    matrix, one rank-k update per new batch: a step costs O(reference x candidates), not O(reference x candidates
    x n). The same reference set at every step (a fresh draw each step made the greedy choices noisy).
    """

    def __init__(self, patches: numpy.ndarray, capacity: int, seed: int = 0,
                 lengthscale_factor: float = LENGTHSCALE_FACTOR) -> None:
        features = patch_features(patches)
        generator = numpy.random.default_rng(seed)
        sample = torch.as_tensor(generator.choice(len(features), min(512, len(features)), replace=False))
        distances = torch.cdist(features[sample], features[sample])
        median = float(distances[distances > 0].median()) if bool((distances > 0).any()) else 1.0
        kernel = gpytorch.kernels.ScaleKernel(gpytorch.kernels.RBFKernel()).to(torch.float64)
        kernel.base_kernel.lengthscale = lengthscale_factor * median
        kernel.outputscale = 1.0
        kernel.requires_grad_(False)
        self.cache = PosteriorCache(kernel.eval(), NOISE, 0.0, features, capacity)
        n_reference = max(128, min(REFERENCE, REFERENCE_BUDGET // len(features), len(features)))
        self.reference = torch.as_tensor(numpy.sort(generator.choice(len(features), n_reference, replace=False)))
        with torch.no_grad(), gpytorch.settings.lazily_evaluate_kernels(False):
            # k(R, X), then minus V_R^T V; float32: it only ranks the candidates, and the pass over it is the cost
            self._covariance = kernel(features[self.reference], features).to_dense().to(torch.float32)
        self._known: set[int] = set()

    def values(self, measured: list[int]) -> torch.Tensor:
        """log of the integrated variance reduction at every candidate, given the measured positions."""
        new = [int(i) for i in dict.fromkeys(measured) if int(i) not in self._known]
        if new:
            start = self.cache.n
            self.cache.add_many(new, [0.0] * len(new))  # the variance does not depend on the values
            self._known.update(new)
            rows = self.cache.V[start:self.cache.n].to(torch.float32)
            self._covariance -= rows[:, self.reference].T @ rows
        variance = (self.cache.prior_variance - self.cache.sum_squares).clamp_min(1e-12)
        reduction = torch.linalg.vector_norm(self._covariance, dim=0).to(torch.float64) ** 2 / (variance + NOISE)
        return reduction.clamp_min(1e-300).log()
