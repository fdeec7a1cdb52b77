"""The forward noising process of a diffusion model: ``x_t = alpha_t x + sigma_t eps`` with
``alpha_t = sqrt(abar_t)``, ``sigma_t = sqrt(1 - abar_t)`` over integer timesteps
``0 .. T-1`` (diffusers' convention: ``alphas_cumprod[t]`` is ``abar_t``)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch
from torch import Tensor

BetaSchedule = Literal["linear", "scaled_linear"]
Prediction = Literal["epsilon", "v_prediction", "sample"]  # diffusers' prediction_type


@dataclass(frozen=True)
class NoiseSchedule:
    alphas_cumprod: Tensor  # [T], float64, decreasing in (0, 1)

    def __post_init__(self) -> None:
        a = self.alphas_cumprod
        if a.ndim != 1 or a.numel() < 2 or not bool(((a > 0) & (a < 1)).all()) or not bool((a[1:] <= a[:-1]).all()):
            raise ValueError("alphas_cumprod must be a decreasing 1-D sequence inside (0, 1)")

    @classmethod
    def from_betas(
        cls, kind: BetaSchedule = "scaled_linear", steps: int = 1000, beta_start: float = 0.00085, beta_end: float = 0.012
    ) -> "NoiseSchedule":
        """diffusers' ``DDPMScheduler`` betas: ``linear`` (DDPM's, with beta 1e-4 .. 0.02) or
        ``scaled_linear`` (Stable Diffusion's defaults, the ones given here)."""
        if kind == "linear":
            betas = torch.linspace(beta_start, beta_end, steps, dtype=torch.float64)
        elif kind == "scaled_linear":
            betas = torch.linspace(beta_start**0.5, beta_end**0.5, steps, dtype=torch.float64) ** 2
        else:
            raise ValueError(f"unknown beta schedule {kind!r}")
        return cls(torch.cumprod(1.0 - betas, 0))

    @property
    def steps(self) -> int:
        return self.alphas_cumprod.numel()

    def alpha(self, t: Tensor) -> Tensor:
        return self.alphas_cumprod.to(t.device)[t].sqrt()

    def sigma(self, t: Tensor) -> Tensor:
        return (1.0 - self.alphas_cumprod.to(t.device)[t]).sqrt()

    def coefficients(self, t: Tensor, like: Tensor) -> tuple[Tensor, Tensor]:
        """``alpha_t``, ``sigma_t`` for ``t`` [B], shaped [B, 1, ...] to broadcast against ``like`` [B, ...]."""
        shape = (-1,) + (1,) * (like.ndim - 1)
        return self.alpha(t).to(like.dtype).view(shape), self.sigma(t).to(like.dtype).view(shape)

    def add_noise(self, x: Tensor, t: Tensor, eps: Tensor) -> Tensor:
        """``x_t`` for a batch: ``x`` [B, ...], ``t`` [B] integer timesteps, ``eps`` like ``x``."""
        alpha, sigma = self.coefficients(t, x)
        return alpha * x + sigma * eps

    def training_target(self, prediction: Prediction, x: Tensor, eps: Tensor, t: Tensor) -> Tensor:
        """What a model predicting ``prediction`` should output for ``x_t = alpha_t x + sigma_t eps``.
        In terms of the clean ``x``, the plain loss on ``epsilon`` weighs the error by the
        signal-to-noise ratio ``alpha^2/sigma^2`` (0.005 at the last step of Stable Diffusion's
        schedule: high noise is hardly learnt), ``v_prediction`` (``alpha eps - sigma x``) by
        ``1 + alpha^2/sigma^2`` and ``sample`` (``x`` itself) by 1."""
        if prediction == "epsilon":
            return eps
        if prediction == "v_prediction":
            alpha, sigma = self.coefficients(t, x)
            return alpha * eps - sigma * x
        return x
