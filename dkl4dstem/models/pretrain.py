"""Self-supervised pre-training of the feature extractor on the survey: a head start that costs no dose.

The HAADF survey is there before the first diffraction pattern, so the network can learn what the patches look
like before any value is known; DKL training (and every refit from the initial weights) then starts from these
weights instead of random ones. Two objectives, both on a seeded subsample of at most `MAX_PATCHES` survey patches,
full-batch Adam, a few hundred iterations (well under the time the seed points take on a microscope):

- ``"pca"``: regress the network onto the patches' leading principal-component scores (one per latent dimension):
  the embedding starts as the survey's main axes of structural variation, bent by the ReLU net as training goes on.
- ``"autoencoder"``: the network is the encoder of an autoencoder (a mirrored ReLU decoder) on the patches.

Either way the embedding is finally shifted and scaled to zero mean and `LATENT_STD` per dimension over the survey,
so the GP's kernel starts at a sensible lengthscale relative to it. Which objective is the default, and whether
pre-training is on by default, was chosen by measurement (benchmarks/pretrain_transfer.py, RESULTS.md).
"""
from __future__ import annotations

import dataclasses
import math
import time
import typing

import numpy
import torch

if typing.TYPE_CHECKING:
    from dkl4dstem.models.dkl import DKLModel

METHODS = ("pca", "autoencoder")
DEFAULT_METHOD = "pca"
MAX_PATCHES = 2048
ITERATIONS = 150
LEARNING_RATE = 0.02
LATENT_STD = 1.0
SPREAD_SEEDS = 3  # seed points spread over the embedding (the first of them random), the rest random
CENTRE_SIGMA = 0.25  # of the window: the weighting that says "the structure under the probe matters most"


@dataclasses.dataclass
class PretrainReport:
    method: str
    iterations: int
    loss: float
    seconds: float
    n_patches: int


def subsample(patches: numpy.ndarray, seed: int, limit: int = MAX_PATCHES) -> numpy.ndarray:
    """At most `limit` patches, a seeded random choice (all of them for small surveys)."""
    if len(patches) <= limit:
        return numpy.asarray(patches, dtype=numpy.float32)
    chosen = numpy.sort(numpy.random.default_rng(seed).choice(len(patches), limit, replace=False))
    return numpy.asarray(patches[chosen], dtype=numpy.float32)


def pca_scores(x: torch.Tensor, k: int) -> torch.Tensor:
    """The first k principal-component scores of the rows of x, each scaled to unit standard deviation."""
    centred = x - x.mean(dim=0)
    _, _, vt = torch.linalg.svd(centred, full_matrices=False)
    scores = centred @ vt[:k].T
    scores = scores * torch.sign(scores[:, :1].sum() + 1e-12)  # SVD sign is arbitrary: fix it for reproducibility
    return scores / scores.std(dim=0).clamp_min(1e-12)


def centre_weights(n_pixels: int, sigma_fraction: float | None = None) -> torch.Tensor:
    """Gaussian weights over a flattened square patch, peaked at its centre pixel (index window // 2)."""
    sigma_fraction = CENTRE_SIGMA if sigma_fraction is None else sigma_fraction
    window = math.isqrt(n_pixels)
    offsets = torch.arange(window, dtype=torch.float32) - window // 2
    squared = offsets[:, None] ** 2 + offsets[None, :] ** 2
    return torch.exp(-squared / (2 * (sigma_fraction * window) ** 2)).reshape(-1)


def _decoder(latent_dim: int, output_dim: int, hidden: typing.Sequence[int], seed: int,
             device: torch.device) -> torch.nn.Sequential:
    """Mirror of the feature extractor, initialised from its own generator (no global RNG: runs on a thread)."""
    generator = torch.Generator().manual_seed(seed)
    layers: list[torch.nn.Module] = []
    width = latent_dim
    for size in [*reversed(hidden), output_dim]:
        linear = torch.nn.Linear(width, size)
        bound = 1.0 / math.sqrt(width)  # torch's default Linear initialisation range
        with torch.no_grad():
            linear.weight.uniform_(-bound, bound, generator=generator)
            linear.bias.uniform_(-bound, bound, generator=generator)
        layers += [linear, torch.nn.ReLU()]
        width = size
    return torch.nn.Sequential(*layers[:-1]).to(device)


def normalize_output(net: torch.nn.Sequential, x: torch.Tensor, std: float | None = None) -> None:
    """Fold a shift and scale into the last linear layer: the embedding of x gets zero mean and `std` per dim."""
    std = LATENT_STD if std is None else std
    last = net[-1]
    assert isinstance(last, torch.nn.Linear)
    with torch.no_grad():
        z = net(x)
        scale = std / z.std(dim=0).clamp_min(1e-6)
        last.weight.mul_(scale.unsqueeze(1))
        last.bias.sub_(z.mean(dim=0)).mul_(scale)


def pretrain(model: DKLModel, patches: numpy.ndarray, *, seed: int = 0, method: str = DEFAULT_METHOD,
             iterations: int = ITERATIONS, should_stop: typing.Callable[[], bool] | None = None) -> PretrainReport:
    """Fit `model.net` on the survey patches alone; the caller marks the result as the model's initial state."""
    if method not in METHODS:
        raise ValueError(f"unknown pre-training method {method!r}; choose one of {', '.join(METHODS)}")
    start = time.perf_counter()
    net = model.net
    x = torch.as_tensor(subsample(patches, seed), device=model.device)
    linears = [layer for layer in net if isinstance(layer, torch.nn.Linear)]
    latent_dim, hidden = linears[-1].out_features, [layer.out_features for layer in linears[:-1]]
    weights = centre_weights(x.shape[1]).to(x.device) if CENTRE_SIGMA else torch.ones(x.shape[1], device=x.device)
    if method == "pca":
        target = pca_scores(x * weights, latent_dim)
        head: torch.nn.Module = torch.nn.Identity()
    else:  # reconstruct the centre-weighted patch
        target = x * weights
        head = _decoder(latent_dim, x.shape[1], hidden, seed, model.device)
    optimizer = torch.optim.Adam([*net.parameters(), *head.parameters()], lr=LEARNING_RATE)
    net.train()
    loss_value = math.nan
    done = 0
    for done in range(1, iterations + 1):
        if should_stop is not None and should_stop():
            break
        optimizer.zero_grad(set_to_none=True)
        loss = torch.nn.functional.mse_loss(head(net(x)), target)
        loss.backward()
        optimizer.step()
        loss_value = float(loss.detach())
    net.eval()
    normalize_output(net, x)
    return PretrainReport(method, done, loss_value, time.perf_counter() - start, len(x))


def spread_points(latent: torch.Tensor, count: int, first: int) -> list[int]:
    """`count` candidates spread over the embedding (greedy farthest-point order, from `first`): seed points that
    cover the survey's kinds of structure, rare ones (dopants, vacancies, edges) included, instead of random ones."""
    z = latent.to(torch.float64)
    chosen = [int(first)]
    distance = ((z - z[first]) ** 2).sum(dim=1)
    for _ in range(min(count, len(z)) - 1):
        distance[chosen] = -1.0
        index = int(torch.argmax(distance))
        chosen.append(index)
        distance = torch.minimum(distance, ((z - z[index]) ** 2).sum(dim=1))
    return chosen
