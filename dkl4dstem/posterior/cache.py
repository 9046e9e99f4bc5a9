"""Exact GP posterior over every candidate on a fixed embedding: the fast decision path.

Why hand-written instead of gpytorch's ExactGP prediction: for one new measurement we need the posterior at all
N candidates again. gpytorch recomputes the prediction strategy (caches and test-train solves) from scratch each
time the training set changes, O(n^2 N). Here the Cholesky factor L of K_XX + noise and the whitened
cross-covariance V = L^-1 K_X* are extended by one row per new point (rank-1 append), O(n N) per point, and the
variance is kept as a running sum of squares. The mean is kept the same way: the loop re-standardizes the targets
every step, but L^-1 (y - offset) and L^-1 1 only grow by one entry per point (forward substitution), so the mean
for any standardization is a combination of two running sums over V's rows. One decision therefore reads V once
(for the new row), not twice: at 512 x 512 candidates V is the dominant memory traffic.
Kernel evaluations still come from gpytorch's kernel module.
Nothing candidate-by-candidate is ever formed: memory is the n x N buffer V. V is float64 unless that buffer would
exceed FLOAT64_BUDGET_BYTES: then float32, which halves the memory and the decision's pass over it (the pass is
memory-bound); the Cholesky factor and the running sums stay
float64 (they are accumulated from the float64 rows before rounding), so the variance keeps ~1e-7 relative
accuracy and the mean ~1e-4 of the target's standard deviation.
With a `LatentGrid` (large surveys) the columns of V are the grid's nodes instead of the candidates, and `predict`
interpolates to the candidates; a measured point is then not a column, so its whitened cross-covariance with the
earlier points comes from one n x n triangular solve instead of a column of V.
"""
from __future__ import annotations

import typing

import gpytorch
import torch

from dkl4dstem.posterior.latentgrid import LatentGrid

FLOAT64_BUDGET_BYTES = 16 << 20
BLOCK_BYTES = 32 << 20


class PosteriorCache:
    def __init__(self, kernel: gpytorch.kernels.Kernel, noise: float, mean_constant: float, latent: torch.Tensor,
                 capacity: int, batch_size: int = 65536, storage_dtype: torch.dtype | None = None,
                 grid: LatentGrid | None = None) -> None:
        self.kernel = kernel
        self.noise = float(noise)
        self.mean_constant = float(mean_constant)
        self.latent = latent  # (N, d) float64: where measured candidates are looked up
        self.grid = grid
        self.columns = grid.nodes if grid is not None else latent  # where the posterior is computed
        self.batch_size = batch_size
        n_columns = self.columns.shape[0]
        device = latent.device
        self.capacity = max(1, int(capacity))
        if storage_dtype is None:
            fits = self.capacity * n_columns * 8 <= FLOAT64_BUDGET_BYTES
            storage_dtype = torch.float64 if fits else torch.float32
        self.L = torch.zeros((self.capacity, self.capacity), dtype=torch.float64, device=device)
        self.V = torch.empty((self.capacity, n_columns), dtype=storage_dtype, device=device)
        with torch.no_grad():
            self.prior_variance = self._kernel_rows(None, diag=True)
        self.sum_squares = torch.zeros(n_columns, dtype=torch.float64, device=device)
        # running mean terms: u = L^-1 (y - offset), w = L^-1 1, and sum_i u_i V_i, sum_i w_i V_i
        self.offset: float | None = None  # first value: keeps u small whatever the units of y
        self.u = torch.zeros(self.capacity, dtype=torch.float64, device=device)
        self.w = torch.zeros(self.capacity, dtype=torch.float64, device=device)
        self.sum_u = torch.zeros(n_columns, dtype=torch.float64, device=device)
        self.sum_w = torch.zeros(n_columns, dtype=torch.float64, device=device)
        self.indices: list[int] = []

    @property
    def n(self) -> int:
        return len(self.indices)

    def _kernel_rows(self, rows: torch.Tensor | None, diag: bool = False) -> torch.Tensor:
        """k(rows, all columns) in batches (or the prior diagonal when diag)."""
        out = []
        with torch.no_grad(), gpytorch.settings.lazily_evaluate_kernels(False):
            for start in range(0, self.columns.shape[0], self.batch_size):
                batch = self.columns[start:start + self.batch_size]
                if diag:
                    out.append(self.kernel(batch, batch, diag=True))
                else:
                    out.append(self.kernel(rows, batch).to_dense())
        return torch.cat(out, dim=-1)

    def add(self, index: int, value: float) -> None:
        """Condition on one more candidate and its measured value: O(n N)."""
        if self.n >= self.capacity:
            self._grow()
        n = self.n
        if self.offset is None:
            self.offset = float(value)
        with torch.no_grad(), gpytorch.settings.lazily_evaluate_kernels(False):
            z = self.latent[index:index + 1]
            k_row = self._kernel_rows(z)[0]  # (columns,)
            l_vec = self._whitened_cross([index])[0]  # L^-1 k_X,new
            prior = k_row[index] if self.grid is None else self.kernel(z, z, diag=True)[0]
            diag = float(prior) + self.noise - float(l_vec @ l_vec)
            d = max(diag, self.noise * 1e-6) ** 0.5
            self.L[n, :n] = l_vec
            self.L[n, n] = d
            if n:
                v_row = (k_row - (l_vec.to(self.V.dtype) @ self.V[:n]).to(torch.float64)) / d
            else:
                v_row = k_row / d
            self.V[n] = v_row.to(self.V.dtype)
            self.sum_squares += v_row * v_row
            self.u[n] = (float(value) - self.offset - float(l_vec @ self.u[:n])) / d
            self.w[n] = (1.0 - float(l_vec @ self.w[:n])) / d
            self.sum_u.add_(v_row, alpha=float(self.u[n]))
            self.sum_w.add_(v_row, alpha=float(self.w[n]))
        self.indices.append(int(index))

    def add_many(self, indices: list[int], values: typing.Sequence[float]) -> None:
        """Condition on k more points at once with a block Cholesky update: O(k n N + k^2 N) in matrix products.

        Used after retraining (n = 0: one factorization, one k x k triangular inverse, then matrix products) and to
        catch up on the points measured while a long training ran (one block instead of k rank-1 updates).
        """
        if len(values) != len(indices):
            raise ValueError(f"{len(indices)} indices but {len(values)} values")
        if not indices:
            return
        if len(indices) == 1:
            self.add(indices[0], values[0])
            return
        n, k = self.n, len(indices)
        while n + k > self.capacity:
            self._grow()
        if self.offset is None:
            self.offset = float(values[0])
        with torch.no_grad(), gpytorch.settings.lazily_evaluate_kernels(False):
            z = self.latent[indices]
            l21 = self._whitened_cross(indices)  # (k, n)
            k22 = self.kernel(z, z).to_dense() + self.noise * torch.eye(k, dtype=torch.float64, device=z.device)
            l22 = torch.linalg.cholesky(k22 - l21 @ l21.T)
            self.L[n:n + k, :n] = l21
            self.L[n:n + k, n:n + k] = l22
            # L22^-1 once (k x k), then plain matrix products over the candidates: cheaper than a triangular solve
            # with N right-hand sides (MKL trsm)
            l22_inverse = torch.linalg.solve_triangular(
                l22, torch.eye(k, dtype=torch.float64, device=z.device), upper=False)
            y = torch.as_tensor(values, dtype=torch.float64, device=z.device) - self.offset
            u_new = l22_inverse @ (y - l21 @ self.u[:n])
            w_new = l22_inverse @ (1.0 - l21 @ self.w[:n])
            self.u[n:n + k] = u_new
            self.w[n:n + k] = w_new
            # column blocks of <= BLOCK_BYTES per k x columns temporary (the kernel evaluation makes several):
            # at 512 x 512 candidates and k = 500 a 65,536-column block peaked RSS 0.7 GB above the buffers
            columns = max(1024, min(self.batch_size, BLOCK_BYTES // (8 * k)))
            for start in range(0, self.columns.shape[0], columns):
                stop = start + columns
                rhs = self.kernel(z, self.columns[start:stop]).to_dense()
                if n:  # in V's dtype, as in `add`: a float64 copy of the n x columns slice doubled the traffic
                    rhs = rhs - (l21.to(self.V.dtype) @ self.V[:n, start:stop]).to(torch.float64)
                block = l22_inverse @ rhs
                self.V[n:n + k, start:stop] = block.to(self.V.dtype)
                self.sum_squares[start:stop] += (block * block).sum(dim=0)
                self.sum_u[start:stop] += u_new @ block
                self.sum_w[start:stop] += w_new @ block
        self.indices.extend(int(i) for i in indices)

    def _whitened_cross(self, indices: list[int]) -> torch.Tensor:
        """L^-1 k(X, new points) as (k, n): a slice of V when the candidates are the columns, else a solve."""
        n = self.n
        if self.grid is None:
            return self.V[:n, indices].to(torch.float64).T
        if n == 0:
            return torch.zeros((len(indices), 0), dtype=torch.float64, device=self.latent.device)
        cross = self.kernel(self.latent[self.indices], self.latent[indices]).to_dense()  # (n, k)
        return torch.linalg.solve_triangular(self.L[:n, :n], cross, upper=False).T

    def _grow(self) -> None:
        capacity = self.capacity * 2
        L = torch.zeros((capacity, capacity), dtype=torch.float64, device=self.L.device)
        L[:self.capacity, :self.capacity] = self.L
        V = torch.empty((capacity, self.V.shape[1]), dtype=self.V.dtype, device=self.V.device)
        V[:self.capacity] = self.V
        u = torch.zeros(capacity, dtype=torch.float64, device=self.u.device)
        w = torch.zeros(capacity, dtype=torch.float64, device=self.w.device)
        u[:self.capacity] = self.u
        w[:self.capacity] = self.w
        self.L, self.V, self.u, self.w, self.capacity = L, V, u, w, capacity

    def predict(self, target_mean: float = 0.0, target_std: float = 1.0) -> tuple[torch.Tensor, torch.Tensor]:
        """Posterior mean and latent variance at every candidate, for targets standardized as (y - mean) / std.

        O(columns + N): with r = (y - mean) / std - c = (y - offset) / std + ((offset - mean) / std - c) 1, the
        whitened residual L^-1 r is u / std + ((offset - mean) / std - c) w, and the mean is c + V^T L^-1 r.
        """
        with torch.no_grad():
            if self.n == 0:
                mean = torch.full_like(self.prior_variance, self.mean_constant)
                variance = self.prior_variance.clone()
            else:
                assert self.offset is not None
                shift = (self.offset - target_mean) / target_std - self.mean_constant
                mean = self.mean_constant + self.sum_u / target_std + shift * self.sum_w
                variance = (self.prior_variance - self.sum_squares).clamp_min(1e-12)
            if self.grid is not None:
                mean, variance = self.grid.interpolate(mean), self.grid.interpolate(variance)
        return mean, variance
