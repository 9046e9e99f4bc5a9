"""Deep kernel learning: a small network embeds HAADF patches, an exact GP works in that latent space.

The network runs in float32 (it is the expensive, batched part); the GP arithmetic runs in float64 (small n x n
Cholesky factors whose conditioning matters). Network and GP hyperparameters are trained jointly on the exact
marginal log-likelihood: gpytorch's kernel, likelihood, mean, priors and added loss terms, with the Gaussian term
evaluated densely (`GaussianNegLogLikelihood`, see there why). Prediction over all candidates does not go through
gpytorch's ExactGP prediction path: `posterior.PosteriorCache` does it incrementally on the fixed embedding.
"""
from __future__ import annotations

import copy
import dataclasses
import math
import time
import typing
import warnings

import gpytorch
import linear_operator
import linear_operator.utils.cholesky
import numpy
import torch

from dkl4dstem.runtime import ensure_threads_configured, pick_device


class FeatureExtractor(torch.nn.Sequential):
    """MLP patch -> latent, ReLU 64-64 (gpax viDKL's default). Small on purpose: a few hundred points cannot support
    a deep net.

    Chosen on three abTEM datasets (benchmarks/RESULTS.md, "Model choice"): against the spectrally normalized tanh
    64-32 net used before, together with EI on the predictive distribution of the next measurement
    (`ExperimentConfig.observation_noise`), the predicted maps are better on all three (NRMSE after 2.5% of the
    positions lower by 0.14-0.25, paired over 20 seeds), and the first top-1% position is found sooner on the
    48 x 48 set (mean 29.5 -> 23.0 measurements, misses 3 -> 0) and as soon on the two 32 x 32 sets.
    """

    def __init__(self, input_dim: int, latent_dim: int = 2, hidden: typing.Sequence[int] = (64, 64)) -> None:
        layers: list[torch.nn.Module] = []
        width = input_dim
        for size in hidden:
            layers += [torch.nn.Linear(width, size), torch.nn.ReLU()]
            width = size
        layers.append(torch.nn.Linear(width, latent_dim))
        super().__init__(*layers)


class LatentGP(gpytorch.models.ExactGP):
    """Exact GP on latent coordinates: constant mean, scaled ARD RBF kernel, Gaussian likelihood."""

    def __init__(self, latent_dim: int, likelihood: gpytorch.likelihoods.GaussianLikelihood) -> None:
        super().__init__(None, None, likelihood)
        self.mean_module = gpytorch.means.ConstantMean()
        self.covar_module = gpytorch.kernels.ScaleKernel(gpytorch.kernels.RBFKernel(ard_num_dims=latent_dim))

    def forward(self, z: torch.Tensor) -> gpytorch.distributions.MultivariateNormal:
        return gpytorch.distributions.MultivariateNormal(self.mean_module(z), self.covar_module(z))


LOG_2PI = math.log(2 * math.pi)


class GaussianNegLogLikelihood(torch.autograd.Function):
    """-log N(r | 0, K) for a dense K, with the closed-form gradient dK = (K^-1 - a a^T) / 2, a = K^-1 r.

    Why not gpytorch's `MultivariateNormal.log_prob` (what `ExactMarginalLogLikelihood` calls): linear_operator's
    per-call bookkeeping (thousands of Python calls an iteration) and torch's generic Cholesky backward (many times
    the factorization; the closed form needs one `cholesky_inverse`) made a training iteration about twice as slow
    (benchmarks/RESULTS.md). Values and gradients agree with gpytorch's to rounding (tests/test_engine.py).
    """

    @staticmethod
    def forward(ctx: typing.Any, covariance: torch.Tensor, residual: torch.Tensor) -> torch.Tensor:
        # psd_safe_cholesky: gpytorch's jitter retries for a numerically semi-definite K
        factor = linear_operator.utils.cholesky.psd_safe_cholesky(covariance)
        alpha = torch.cholesky_solve(residual.unsqueeze(-1), factor).squeeze(-1)
        ctx.save_for_backward(factor, alpha)
        return 0.5 * (residual @ alpha) + factor.diagonal().log().sum() + 0.5 * residual.shape[-1] * LOG_2PI

    @staticmethod
    def backward(ctx: typing.Any, grad: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        factor, alpha = ctx.saved_tensors
        grad_covariance = (0.5 * grad) * (torch.cholesky_inverse(factor) - torch.outer(alpha, alpha))
        return grad_covariance, grad * alpha


def snapshot(tree: typing.Any) -> typing.Any:
    """Copy of nested state dicts with every tensor cloned: what deepcopy does, without its memo bookkeeping."""
    if isinstance(tree, torch.Tensor):
        return tree.detach().clone()
    if isinstance(tree, dict):  # an nn.Module state dict is an OrderedDict with version `_metadata`: keep both
        copied = type(tree)((key, snapshot(value)) for key, value in tree.items())
        if hasattr(tree, "_metadata"):
            copied._metadata = copy.copy(tree._metadata)  # type: ignore[attr-defined]
        return copied
    if isinstance(tree, (list, tuple)):
        return type(tree)(snapshot(value) for value in tree)
    return tree


@dataclasses.dataclass
class FitReport:
    iterations: int
    loss: float
    seconds: float
    failed: str | None = None  # reason when the fit was rolled back


class DKLModel:
    """Feature extractor + latent GP, trained jointly; warm-started between experiment steps, restarted at refits."""

    def __init__(self, input_dim: int, *, latent_dim: int = 2, hidden: typing.Sequence[int] = (64, 64),
                 learning_rate: float = 0.01, seed: int = 0, device: str | torch.device | None = None) -> None:
        ensure_threads_configured()
        self.device = device if isinstance(device, torch.device) else pick_device(device)
        generator_state = torch.random.get_rng_state()
        torch.manual_seed(seed)  # deterministic initial weights for a given seed, without leaking global state
        self.net = FeatureExtractor(input_dim, latent_dim, hidden).to(self.device)
        torch.random.set_rng_state(generator_state)
        self.likelihood = gpytorch.likelihoods.GaussianLikelihood(
            noise_constraint=gpytorch.constraints.GreaterThan(1e-4)).to(self.device, torch.float64)
        self.gp = LatentGP(latent_dim, self.likelihood).to(self.device, torch.float64)
        self.mll = gpytorch.mlls.ExactMarginalLogLikelihood(self.likelihood, self.gp)
        self.learning_rate = learning_rate
        self.optimizer = self._new_optimizer()
        self._initial_state = snapshot(self.state())

    def _new_optimizer(self) -> torch.optim.Optimizer:
        # fused: torch's default Adam on CPU updates parameter by parameter in Python; the fused kernel took an
        # iteration at n = 100 from 5.9 to 4.2 ms on the 2-core box
        return torch.optim.Adam([
            {"params": self.net.parameters(), "weight_decay": 1e-4},
            {"params": self.gp.parameters()},
        ], lr=self.learning_rate, fused=True)

    def embed(self, patches: numpy.ndarray | torch.Tensor, batch_size: int = 32768) -> torch.Tensor:
        """Latent coordinates (float64) of patches, in batches so a 512x512 survey never forms huge activations."""
        self.net.eval()
        chunks = []
        with torch.no_grad():
            for start in range(0, len(patches), batch_size):
                chunk = torch.as_tensor(patches[start:start + batch_size], dtype=torch.float32, device=self.device)
                chunks.append(self.net(chunk).to(torch.float64))
        return torch.cat(chunks) if chunks else torch.empty((0, 0), dtype=torch.float64, device=self.device)

    def fit(self, patches: numpy.ndarray, targets: numpy.ndarray, iterations: int,
            should_stop: typing.Callable[[], bool] | None = None, from_initial: bool = False) -> FitReport:
        """Adam on the exact marginal log-likelihood; on NaN loss or a non-PSD kernel roll back and report.

        `from_initial` restarts from the weights the model was built with and a fresh optimizer (a failure restores
        the trained state it replaced, not the initial one).
        """
        start = time.perf_counter()
        x = torch.as_tensor(patches, dtype=torch.float32, device=self.device)
        y = torch.as_tensor(targets, dtype=torch.float64, device=self.device)
        backup = snapshot((self.net.state_dict(), self.gp.state_dict(), self.optimizer.state_dict()))
        if from_initial:
            self.load_state(self._initial_state)  # load_state_dict copies into the parameters: no clone needed
            self.optimizer = self._new_optimizer()
        self.net.train()
        self.gp.train()
        self.likelihood.train()
        loss_value = math.nan
        try:
            with gpytorch.settings.debug(False):
                for _ in range(iterations):
                    if should_stop is not None and should_stop():
                        break
                    self.optimizer.zero_grad(set_to_none=True)
                    loss = self.negative_mll(self.net(x).to(torch.float64), y)
                    if not torch.isfinite(loss):
                        raise FloatingPointError("loss is not finite")
                    loss.backward()
                    self.optimizer.step()
                    loss_value = float(loss.detach())
        except (FloatingPointError, linear_operator.utils.errors.NotPSDError, RuntimeError) as exc:
            net_state, gp_state, optimizer_state = backup
            self.net.load_state_dict(net_state)
            self.gp.load_state_dict(gp_state)
            self.optimizer.load_state_dict(optimizer_state)
            warnings.warn(f"DKL training step failed and was rolled back: {exc}", RuntimeWarning, stacklevel=2)
            return FitReport(iterations, loss_value, time.perf_counter() - start, failed=str(exc))
        finally:
            self.net.eval()
            self.gp.eval()
            self.likelihood.eval()
        return FitReport(iterations, loss_value, time.perf_counter() - start)

    def negative_mll(self, z: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """gpytorch's `ExactMarginalLogLikelihood` (per data point, priors included), negated, on a dense kernel."""
        eye = torch.eye(len(y), dtype=z.dtype, device=z.device)
        covariance = self.gp.covar_module.forward(z, z) + self.likelihood.noise * eye
        residual = y - self.gp.mean_module(z)
        log_likelihood = -GaussianNegLogLikelihood.apply(covariance, residual)
        # the prior / added-loss terms exactly as gpytorch's ExactMarginalLogLikelihood adds them
        return -self.mll._add_other_terms(log_likelihood, ()) / len(y)

    @property
    def noise(self) -> float:
        return float(self.likelihood.noise.detach().reshape(-1)[0])

    @property
    def mean_constant(self) -> float:
        return float(self.gp.mean_module.constant.detach().reshape(-1)[0])

    @property
    def lengthscale(self) -> torch.Tensor:
        return self.gp.covar_module.base_kernel.lengthscale.detach().reshape(-1)

    def kernel(self) -> gpytorch.kernels.Kernel:
        """A frozen copy of the trained kernel for the decision path (training may go on in parallel)."""
        kernel = copy.deepcopy(self.gp.covar_module)
        kernel.requires_grad_(False)
        return kernel.eval()

    def state(self) -> dict[str, typing.Any]:
        return {"net": self.net.state_dict(), "gp": self.gp.state_dict()}

    def load_state(self, state: dict[str, typing.Any]) -> None:
        self.net.load_state_dict(state["net"])
        self.gp.load_state_dict(state["gp"])

    def mark_initial(self) -> None:
        """The current weights (pre-trained or transferred, `pretrain.py`) become what refits restart from."""
        self._initial_state = snapshot(self.state())
