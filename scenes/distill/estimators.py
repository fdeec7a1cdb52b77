"""Score-distillation gradients on a batch of renders ``x`` [B, ...] (METHODS.md §4).

Each function returns ``grad_x`` (the direction that lowers the distillation objective) for
given timesteps ``t`` [B] and noise ``eps`` (drawn by the caller, so that a step is
reproducible and the Stein control variate can reuse them); :func:`distillation_loss` hands
it to autograd as ``0.5 ||x - stopgrad(x - grad_x)||^2`` (its gradient w.r.t. ``x`` is
exactly ``grad_x``), so it flows into whatever made ``x`` and nowhere else.

- SDS: ``w(t) (eps_hat(x_t; y) - eps)``;
- VSD / ESD: ``w(t) (eps_pre(x_t; y) - lam eps_q(x_t) - (1 - lam) eps_q(x_t; camera))`` with
  ``eps_q`` a model of the current renders' own distribution; ``lam = 0`` is VSD, ``lam > 0``
  ESD (the camera-free branch adds the entropy of the renders over all cameras);
- the Stein control variate ``eps phi(x_t) - sigma_t grad phi(x_t)``, zero in expectation
  over ``eps`` for any smooth scalar baseline ``phi`` (Gaussian integration by parts:
  ``E[eps phi(alpha x + sigma eps)] = sigma E[grad phi]``). The form printed on SteinDreamer's
  project page, ``eps phi + grad phi``, is not zero-mean.
"""

from __future__ import annotations

from typing import Any, Callable, Literal

import torch
from torch import Tensor

from .guidance import Guidance, classifier_free
from .schedule import NoiseSchedule

Weighting = Literal["sigma2", "one"]


def weight(schedule: NoiseSchedule, t: Tensor, kind: Weighting) -> Tensor:
    """``w(t)`` [B]: ``sigma2`` is sigma_t^2 (DreamFusion's), ``one`` is constant."""
    if kind == "sigma2":
        return schedule.sigma(t) ** 2
    if kind == "one":
        return torch.ones(t.shape, dtype=torch.float64, device=t.device)
    raise ValueError(f"unknown weighting {kind!r}")


def _per_sample(w: Tensor, like: Tensor) -> Tensor:
    return w.to(like.dtype).view((-1,) + (1,) * (like.ndim - 1))


def sds_gradient(
    guidance: Guidance, x: Tensor, t: Tensor, eps: Tensor, condition: Any = None, *,
    weighting: Weighting = "sigma2", guidance_scale: float = 1.0, negative: Any = None,
) -> Tensor:  # fmt: skip
    """Score distillation sampling: ``w(t) (eps_hat(x_t; y) - eps)``, no gradient through the model."""
    with torch.no_grad():
        x_t = guidance.schedule.add_noise(x.detach(), t, eps)
        eps_hat = classifier_free(guidance, x_t, t, condition, guidance_scale, negative)
        return _per_sample(weight(guidance.schedule, t, weighting), x) * (eps_hat - eps)


def variational_gradient(
    pretrained: Guidance, particles: Guidance, x: Tensor, t: Tensor, eps: Tensor, condition: Any = None,
    camera: Any = None, *, entropy_weight: float = 0.0, weighting: Weighting = "sigma2", guidance_scale: float = 1.0,
    negative: Any = None,
) -> Tensor:  # fmt: skip
    """VSD (``entropy_weight`` 0) and ESD (``entropy_weight`` = lambda > 0).

    ``particles`` models the distribution of the current renders: ``predict_noise(x_t, t,
    camera)`` conditioned on the render's camera, and with ``None`` on none (the renders
    over all cameras). It shares ``pretrained``'s schedule."""
    if not 0.0 <= entropy_weight <= 1.0:
        raise ValueError(f"entropy weight {entropy_weight} is outside [0, 1]")
    with torch.no_grad():
        x_t = pretrained.schedule.add_noise(x.detach(), t, eps)
        eps_pre = classifier_free(pretrained, x_t, t, condition, guidance_scale, negative)
        eps_q = particles.predict_noise(x_t, t, camera)
        if entropy_weight > 0.0:
            eps_q = entropy_weight * particles.predict_noise(x_t, t, None) + (1.0 - entropy_weight) * eps_q
        return _per_sample(weight(pretrained.schedule, t, weighting), x) * (eps_pre - eps_q)


def stein_control_variate(phi: Callable[[Tensor], Tensor], x_t: Tensor, eps: Tensor, sigma: Tensor) -> Tensor:
    """``eps phi(x_t) - sigma_t grad phi(x_t)`` per sample [B, ...]: zero-mean over ``eps``.
    ``phi`` maps ``x_t`` [B, ...] to one baseline value per sample [B]; ``sigma`` [B]."""
    with torch.enable_grad():
        y = x_t.detach().requires_grad_(True)
        values = phi(y)
        (grad,) = torch.autograd.grad(values.sum(), y)
    return _per_sample(values.detach(), eps) * eps - _per_sample(sigma, eps) * grad


def distillation_loss(x: Tensor, grad: Tensor) -> Tensor:
    """A loss whose gradient w.r.t. ``x`` is ``grad`` (summed over the batch)."""
    target = (x - grad).detach()
    return 0.5 * (x - target).square().sum()
