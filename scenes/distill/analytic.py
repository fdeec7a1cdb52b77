"""Exact priors: a Gaussian mixture in ``D`` dimensions, whose noised density stays a
Gaussian mixture, so its noise prediction is exact:

    p_t = sum_k w_k N(alpha mu_k, alpha^2 Sigma_k + sigma^2 I),
    eps*(x_t) = sigma sum_k r_k(x_t) (alpha^2 Sigma_k + sigma^2 I)^-1 (x_t - alpha mu_k),

``r_k`` the posterior weights of the components at ``x_t``. A point mass is the one-component
case with ``Sigma = 0`` (``eps* = (x_t - alpha mu) / sigma``), a Gaussian the one-component
case. Components may carry integer labels: the condition ``c`` keeps the components labelled
``c`` (a class-conditional prior, for classifier-free guidance); ``None`` keeps all.
Inputs ``[B, ...]`` are flattened to ``[B, D]``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

from .schedule import NoiseSchedule


@dataclass(frozen=True)
class GaussianMixture:
    schedule: NoiseSchedule
    weights: Tensor  # [K], positive
    means: Tensor  # [K, D]
    covariances: Tensor  # [K, D, D], symmetric positive semi-definite
    labels: Tensor | None = None  # [K] integer class of each component

    def __post_init__(self) -> None:
        K, D = self.means.shape
        if self.weights.shape != (K,) or self.covariances.shape != (K, D, D):
            raise ValueError(f"a mixture of {K} components in {D} dimensions needs weights [{K}] and covariances [{K}, {D}, {D}]")
        if self.labels is not None and self.labels.shape != (K,):
            raise ValueError(f"labels must be [{K}]")

    @property
    def dim(self) -> int:
        return self.means.shape[1]

    def _log_weights(self, condition: Any, dtype: torch.dtype) -> Tensor:
        logw = self.weights.to(dtype).log()
        if condition is None:
            return logw
        if self.labels is None:
            raise ValueError("this prior has no labels to condition on")
        keep = self.labels == int(condition)
        if not bool(keep.any()):
            raise ValueError(f"no component has label {condition}")
        return torch.where(keep, logw, torch.full_like(logw, -torch.inf))

    def predict_noise(self, x_t: Tensor, t: Tensor, condition: Any = None) -> Tensor:
        B = x_t.shape[0]
        x = x_t.reshape(B, -1)
        if x.shape[1] != self.dim:
            raise ValueError(f"the prior is {self.dim}-dimensional, x_t has {x.shape[1]} values per sample")
        dt = x.dtype
        alpha = self.schedule.alpha(t).to(dt)[:, None]  # [B, 1]
        sigma = self.schedule.sigma(t).to(dt)[:, None]
        eye = torch.eye(self.dim, dtype=dt, device=x.device)
        cov = alpha[:, :, None, None] ** 2 * self.covariances.to(dt)[None] + (sigma**2)[:, :, None, None] * eye  # [B, K, D, D]
        diff = x[:, None, :] - alpha[:, :, None] * self.means.to(dt)[None]  # [B, K, D]
        chol = torch.linalg.cholesky(cov)
        sol = torch.cholesky_solve(diff[..., None], chol)[..., 0]  # C^-1 (x_t - alpha mu)
        logdet = 2 * torch.diagonal(chol, dim1=-2, dim2=-1).log().sum(-1)  # [B, K]
        logp = self._log_weights(condition, dt)[None] - 0.5 * (diff * sol).sum(-1) - 0.5 * logdet
        r = torch.softmax(logp, dim=-1)  # [B, K]
        return (sigma * (r[..., None] * sol).sum(1)).reshape(x_t.shape)

    def sample(self, n: int, generator: torch.Generator | None = None, condition: Any = None) -> Tensor:
        """``n`` draws of the clean distribution [n, D] (for tests: the true spread)."""
        w = self._log_weights(condition, self.means.dtype).softmax(0)
        k = torch.multinomial(w, n, replacement=True, generator=generator)
        z = torch.randn(n, self.dim, dtype=self.means.dtype, generator=generator)
        # Cholesky of a PSD matrix that may be singular (a point mass): through the eigenbasis.
        vals, vecs = torch.linalg.eigh(self.covariances)
        root = vecs * vals.clamp_min(0).sqrt()[:, None, :]
        return self.means[k] + (root[k] @ z[..., None])[..., 0]


def point_mass(schedule: NoiseSchedule, mu: Tensor) -> GaussianMixture:
    """The prior that puts all its mass at ``mu`` [D]."""
    D = mu.numel()
    mu = mu.reshape(1, D)
    return GaussianMixture(schedule, torch.ones(1, dtype=mu.dtype), mu, torch.zeros(1, D, D, dtype=mu.dtype))


def fit_gaussian(schedule: NoiseSchedule, samples: Tensor, ridge: float = 1e-6) -> GaussianMixture:
    """The Gaussian with the mean and covariance of ``samples`` [N, ...] (a small ridge keeps
    it proper): the exact variational model of a set of renders within the Gaussian family."""
    x = samples.reshape(samples.shape[0], -1).detach()
    mean = x.mean(0)
    centred = x - mean
    cov = centred.T @ centred / max(1, x.shape[0] - 1) + ridge * torch.eye(x.shape[1], dtype=x.dtype, device=x.device)
    return GaussianMixture(schedule, torch.ones(1, dtype=x.dtype, device=x.device), mean[None], cov[None])


class RenderGaussians:
    """The variational model of VSD/ESD within the Gaussian family: Gaussian fits of the
    current renders ``[N, ...]`` taken by ``cameras`` [N] (integer ids), one per camera and
    one over all of them. ``predict_noise(x_t, t, camera)`` uses the fit of each sample's
    camera ([B] ids), or the fit over all cameras for ``None``. A camera seen by one render
    only gets a point mass there (up to the ridge): its conditional noise prediction is then
    ``eps`` itself and VSD reduces to SDS, the degeneracy ESD's camera-free branch is for."""

    def __init__(self, schedule: NoiseSchedule, renders: Tensor, cameras: Tensor, ridge: float = 1e-6) -> None:
        self.schedule = schedule
        x = renders.detach().reshape(renders.shape[0], -1)
        self.ids = cameras.unique()
        self.per_camera = {int(c): fit_gaussian(schedule, x[cameras == c], ridge) for c in self.ids}
        self.over_all = fit_gaussian(schedule, x, ridge)

    def predict_noise(self, x_t: Tensor, t: Tensor, camera: Tensor | None = None) -> Tensor:
        if camera is None:
            return self.over_all.predict_noise(x_t, t)
        out = torch.empty_like(x_t)
        for c in camera.unique().tolist():
            if c not in self.per_camera:
                raise ValueError(f"camera {c} has no renders in this model")
            pick = camera == c
            out[pick] = self.per_camera[c].predict_noise(x_t[pick], t[pick])
        return out
