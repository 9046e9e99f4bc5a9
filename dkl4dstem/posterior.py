"""Exact GP posterior over every candidate on a fixed embedding: the fast decision path.

Why hand-written instead of gpytorch's ExactGP prediction: for one new measurement we need the posterior at all
N candidates again. gpytorch recomputes the prediction strategy (caches and test-train solves) from scratch each
time the training set changes, O(n^2 N). Here the Cholesky factor L of K_XX + noise and the whitened
cross-covariance V = L^-1 K_X* are extended by one row per new point (rank-1 append), O(n N) per point, and the
variance is kept as a running sum of squares. Kernel evaluations still come from gpytorch's kernel module.
Nothing candidate-by-candidate is ever formed: memory is the n x N buffer V. V is float64 unless that buffer would
exceed FLOAT64_BUDGET_BYTES (e.g. 512 x 512 candidates with 500 points): then float32, which halves the memory;
the Cholesky factor and the running sum of squares stay float64, so the variance keeps ~1e-7 relative accuracy and
the mean ~1e-4 of the target's standard deviation.
"""
from __future__ import annotations

import gpytorch
import numpy
import torch

FLOAT64_BUDGET_BYTES = 512 << 20


class PosteriorCache:
    def __init__(self, kernel: gpytorch.kernels.Kernel, noise: float, mean_constant: float, latent: torch.Tensor,
                 capacity: int, batch_size: int = 65536, storage_dtype: torch.dtype | None = None) -> None:
        self.kernel = kernel
        self.noise = float(noise)
        self.mean_constant = float(mean_constant)
        self.latent = latent  # (N, d) float64
        self.batch_size = batch_size
        n_candidates = latent.shape[0]
        device = latent.device
        self.capacity = max(1, int(capacity))
        if storage_dtype is None:
            fits = self.capacity * n_candidates * 8 <= FLOAT64_BUDGET_BYTES
            storage_dtype = torch.float64 if fits else torch.float32
        self.L = torch.zeros((self.capacity, self.capacity), dtype=torch.float64, device=device)
        self.V = torch.empty((self.capacity, n_candidates), dtype=storage_dtype, device=device)
        with torch.no_grad():
            self.prior_variance = self._kernel_rows(None, diag=True)
        self.sum_squares = torch.zeros(n_candidates, dtype=torch.float64, device=device)
        self.indices: list[int] = []

    @property
    def n(self) -> int:
        return len(self.indices)

    def _kernel_rows(self, rows: torch.Tensor | None, diag: bool = False) -> torch.Tensor:
        """k(rows, all candidates) in batches (or the prior diagonal when diag)."""
        out = []
        with torch.no_grad(), gpytorch.settings.lazily_evaluate_kernels(False):
            for start in range(0, self.latent.shape[0], self.batch_size):
                batch = self.latent[start:start + self.batch_size]
                if diag:
                    out.append(self.kernel(batch, batch, diag=True))
                else:
                    out.append(self.kernel(rows, batch).to_dense())
        return torch.cat(out, dim=-1)

    def add(self, index: int) -> None:
        """Condition on one more candidate (its value is supplied at predict time): O(n N)."""
        if self.n >= self.capacity:
            self._grow()
        n = self.n
        with torch.no_grad():
            k_row = self._kernel_rows(self.latent[index:index + 1])[0]  # (N,)
            l_vec = self.V[:n, index]  # = L^-1 k_X,new, already known
            diag = float(k_row[index]) + self.noise - float(l_vec @ l_vec)
            d = max(diag, self.noise * 1e-6) ** 0.5
            self.L[n, :n] = l_vec
            self.L[n, n] = d
            if n:
                v_row = (k_row - (l_vec.to(self.V.dtype) @ self.V[:n]).to(torch.float64)) / d
            else:
                v_row = k_row / d
            self.V[n] = v_row.to(self.V.dtype)
            self.sum_squares += v_row * v_row
        self.indices.append(int(index))

    def add_many(self, indices: list[int]) -> None:
        """Condition on k more points at once with a block Cholesky update: O(k n N + k^2 N) in matrix products.

        Used after retraining (n = 0: one factorization and one batched triangular solve) and to catch up on the
        points measured while a long training ran (one block instead of k rank-1 updates).
        """
        if not indices:
            return
        if len(indices) == 1:
            self.add(indices[0])
            return
        n, k = self.n, len(indices)
        while n + k > self.capacity:
            self._grow()
        with torch.no_grad(), gpytorch.settings.lazily_evaluate_kernels(False):
            z = self.latent[indices]
            # the new points' whitened cross-covariance with the old ones is already in V
            l21 = self.V[:n, indices].to(torch.float64).T  # (k, n)
            k22 = self.kernel(z, z).to_dense() + self.noise * torch.eye(k, dtype=torch.float64, device=z.device)
            l22 = torch.linalg.cholesky(k22 - l21 @ l21.T)
            self.L[n:n + k, :n] = l21
            self.L[n:n + k, n:n + k] = l22
            for start in range(0, self.latent.shape[0], self.batch_size):
                stop = start + self.batch_size
                rhs = self.kernel(z, self.latent[start:stop]).to_dense()
                if n:
                    rhs = rhs - l21 @ self.V[:n, start:stop].to(torch.float64)
                block = torch.linalg.solve_triangular(l22, rhs, upper=False)
                self.V[n:n + k, start:stop] = block.to(self.V.dtype)
                self.sum_squares[start:stop] += (block * block).sum(dim=0)
        self.indices.extend(int(i) for i in indices)

    def _grow(self) -> None:
        capacity = self.capacity * 2
        L = torch.zeros((capacity, capacity), dtype=torch.float64, device=self.L.device)
        L[:self.capacity, :self.capacity] = self.L
        V = torch.empty((capacity, self.V.shape[1]), dtype=self.V.dtype, device=self.V.device)
        V[:self.capacity] = self.V
        self.L, self.V, self.capacity = L, V, capacity

    def predict(self, targets_standardized: numpy.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
        """Posterior mean and latent variance (standardized units) at every candidate."""
        n = self.n
        with torch.no_grad():
            if n == 0:
                mean = torch.full_like(self.prior_variance, self.mean_constant)
                return mean, self.prior_variance.clone()
            y = torch.as_tensor(targets_standardized, dtype=torch.float64, device=self.V.device) - self.mean_constant
            # contiguous: a strided view of the capacity-sized buffer made this solve ~60x slower at n = 2000
            L = self.L[:n, :n].contiguous()
            beta = torch.linalg.solve_triangular(L, y.reshape(-1, 1), upper=False).reshape(-1)
            mean = self.mean_constant + (beta.to(self.V.dtype) @ self.V[:n]).to(torch.float64)
            variance = (self.prior_variance - self.sum_squares).clamp_min(1e-12)
        return mean, variance
