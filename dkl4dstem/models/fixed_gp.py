"""An exact GP with a Matern-5/2 ARD kernel on FIXED features (one per embedding of the map model, survey_map.py).

MAP hyperparameters under log-normal priors (L-BFGS), a generalized-least-squares constant mean whose uncertainty is
part of the predictive variance (universal kriging), and a posterior over every position that is extended point by
point while the hyperparameters stay (`_whitened`), so the decision can read it when the map model steers.
"""
from __future__ import annotations

import math
import typing

import numpy
import torch

LENGTHSCALE_PRIOR = (math.log(1.5), 0.75)  # log-normal (mu, sigma) of each lengthscale, features of unit std
NOISE_PRIOR = (math.log(0.05), 1.5)        # log-normal of the noise variance relative to the values' variance
SIGNAL_PRIOR = (0.0, 1.0)                  # log-normal of the signal variance relative to the values' variance
ITERATIONS = 60
JITTER = 1e-8


def matern52(a: torch.Tensor, b: torch.Tensor, lengthscale: torch.Tensor) -> torch.Tensor:
    """Matern-5/2 correlation between the rows of a and b (ARD lengthscales), unit signal variance."""
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
        self._buffer: torch.Tensor | None = None  # holds V's rows (see _rows)

    # --- fitting ---------------------------------------------------------------------------------------------
    def _parts(self, params: tuple[torch.Tensor, ...], x: torch.Tensor, y: torch.Tensor
               ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        """Cholesky factor, GLS mean, K^-1 (y - m), K^-1 1 for the given (log) hyperparameters."""
        log_ls, log_signal, log_noise = params
        n = x.shape[0]
        k = torch.exp(log_signal) * matern52(x, x, torch.exp(log_ls))
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

    def _whitened(self) -> tuple[torch.Tensor, ...]:
        """For the current points and hyperparameters: Cholesky factor L of K + noise, V = L^-1 k(X, all) (n x N),
        the column sums of V^2, u = L^-1 1, w = L^-1 v (the raw values) and the running sums V^T u, V^T w. Extended
        by the new points' rows while the hyperparameters stay (O(n N) per point, the sums O(N): the decision
        path when the map model steers), recomputed when they change."""
        key = (self.log_lengthscale.clone(), float(self.log_signal), float(self.log_noise))
        signal, noise = math.exp(key[1]), math.exp(key[2]) + JITTER
        cache, n_old = self._cache, 0
        if (cache is not None and torch.equal(cache[0][0], key[0]) and cache[0][1:] == key[1:]
                and self.indices[:len(cache[1])] == cache[1] and numpy.array_equal(self.values[:len(cache[1])],
                                                                                     cache[2])):
            n_old = len(cache[1])
            factor, whitened, sum_squares, u, w, vu, vw = cache[3:]
            if n_old == len(self.indices) and n_old:
                return cache[3:]
        x_all, f64 = self.features, torch.float64
        new = torch.as_tensor(self.indices[n_old:], dtype=torch.long)
        k_new_all = signal * matern52(x_all[new], x_all, torch.exp(self.log_lengthscale))  # (m, N)
        k_new_new = k_new_all[:, new] + noise * torch.eye(len(new), dtype=f64)
        b = torch.stack([torch.ones(len(new), dtype=f64), torch.as_tensor(self.values[n_old:], dtype=f64)], dim=1)
        if n_old:
            l21 = torch.linalg.solve_triangular(factor, k_new_all[:, torch.as_tensor(cache[1])].T,  # type: ignore[index]
                                                upper=False).T  # (m, n_old)
            l22 = torch.linalg.cholesky(k_new_new - l21 @ l21.T)
            v_new = torch.linalg.solve_triangular(l22, k_new_all - l21 @ whitened, upper=False)
            uw_new = torch.linalg.solve_triangular(l22, b - l21 @ torch.stack([u, w], dim=1), upper=False)
            factor = torch.cat([torch.cat([factor, torch.zeros(n_old, len(new), dtype=f64)], dim=1),
                                torch.cat([l21, l22], dim=1)])
            whitened = self._rows(n_old, v_new)
            sum_squares = sum_squares + (v_new * v_new).sum(dim=0)
            u, w = torch.cat([u, uw_new[:, 0]]), torch.cat([w, uw_new[:, 1]])
            vu, vw = vu + v_new.T @ uw_new[:, 0], vw + v_new.T @ uw_new[:, 1]
        else:
            factor = torch.linalg.cholesky(k_new_new)
            whitened = self._rows(0, torch.linalg.solve_triangular(factor, k_new_all, upper=False))
            sum_squares = (whitened * whitened).sum(dim=0)
            uw = torch.linalg.solve_triangular(factor, b, upper=False)
            u, w = uw[:, 0], uw[:, 1]
            vu, vw = whitened.T @ u, whitened.T @ w
        self._cache = (key, list(self.indices), self.values.copy(), factor, whitened, sum_squares, u, w, vu, vw)
        return factor, whitened, sum_squares, u, w, vu, vw

    def _rows(self, n_old: int, rows: torch.Tensor) -> torch.Tensor:
        """V: its first n_old rows and `rows` below, in a buffer grown by half when full (no O(n N) copy a point)."""
        n, buffer = n_old + rows.shape[0], self._buffer
        if buffer is None or buffer.shape[0] < n:
            grown = torch.empty((max(n, 32, 3 * (0 if buffer is None else buffer.shape[0]) // 2), rows.shape[1]),
                                dtype=rows.dtype)
            if n_old and buffer is not None:
                grown[:n_old] = buffer[:n_old]
            buffer = self._buffer = grown
        buffer[n_old:n] = rows
        return buffer[:n]

    def predict(self) -> tuple[torch.Tensor, torch.Tensor]:
        """Mean and latent variance (values' units) at every position, the constant mean's uncertainty included."""
        n_all = self.features.shape[0]
        signal = float(torch.exp(self.log_signal))
        if not self.indices:
            return (torch.full((n_all,), self._y_mean, dtype=torch.float64),
                    torch.full((n_all,), signal * self._y_std ** 2, dtype=torch.float64))
        with torch.no_grad():
            try:
                _, _, sum_squares, u, w, vu, vw = self._whitened()
            except torch.linalg.LinAlgError:
                self._cache = None
                _, _, sum_squares, u, w, vu, vw = self._whitened()
            # standardized targets y = (v - mean) / std, so L^-1 y = (w - mean u) / std and V^T L^-1 y likewise
            white_y, v_white_y = (w - self._y_mean * u) / self._y_std, (vw - self._y_mean * vu) / self._y_std
            u_u = float(u @ u)
            m = float(u @ white_y) / u_u  # the GLS constant mean
            mean = m + v_white_y - m * vu
            gls = 1.0 - vu  # the GLS mean's share of the uncertainty
            variance = (signal - sum_squares).clamp_min(0) + gls * gls / u_u
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
