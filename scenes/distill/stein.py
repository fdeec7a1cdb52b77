"""The Stein control variate inside a lift (``--distill.estimator stein``, METHODS.md §4).

SDS's gradient ``g = w (eps_hat(x_t) - eps)`` is noisy through ``eps``. For any baseline
``phi`` of ``x_t``, ``cv = eps phi(x_t) - sigma_t grad phi(x_t)`` has zero mean over
``eps`` (:func:`~.estimators.stein_control_variate`), so ``g + mu cv`` is an unbiased
gradient for any ``mu`` chosen without looking at this draw of ``eps``; the ``mu`` that
minimises the variance is ``-E<g, cv> / E|cv|^2``.

SteinDreamer's ``phi`` is the agreement of the rendered depth with a monocular depth
estimate of ``x_t`` (:mod:`.depth_agreement`, with a depth model folder the user has: none
can be downloaded here); without one the baseline is the constant 1, for which ``cv = eps``: the part of SDS's noise that is the
injected ``eps`` itself, not cancelled by the denoiser (a linear model of ``eps_hat`` gives
no more: any smooth ``phi`` reduces to a multiple of ``eps`` at first order). How much of it
the denoiser cancels depends on the timestep, so ``mu`` is fitted per band of timesteps, as
decaying averages of ``<g, cv>`` and ``|cv|^2`` over *earlier* steps only (the current
draw's ``mu`` never depends on its ``eps``: no bias). Reported factors: docs/LIFTING.md.
"""

from __future__ import annotations

from typing import Callable

import torch
from torch import Tensor

from .estimators import stein_control_variate


def constant_baseline(x_t: Tensor) -> Tensor:
    """phi = 1 per sample (its control variate is ``eps``)."""
    return x_t.new_ones(x_t.shape[0]) + 0.0 * x_t.flatten(1).sum(-1)  # keeps phi a function of x_t for autograd


class FittedControlVariate:
    """``mu`` per timestep band, fitted online; ``apply`` returns ``g + mu cv`` and then learns
    from this draw for the next ones. Its state is saved with the strategy (exact resume)."""

    def __init__(self, timesteps: int, bands: int = 10, decay: float = 0.98) -> None:
        if bands < 1 or not 0.0 <= decay < 1.0:
            raise ValueError(f"bands {bands} must be >= 1 and decay {decay} in [0, 1)")
        self.timesteps, self.bands, self.decay = int(timesteps), int(bands), float(decay)
        self.cross = torch.zeros(bands, dtype=torch.float64)  # decaying sums of <g, cv>
        self.power = torch.zeros(bands, dtype=torch.float64)  # ... and of |cv|^2
        self.seen = torch.zeros(bands, dtype=torch.float64)  # decaying sums of |g|^2 and |g + mu cv|^2: the log's figure
        self.kept = torch.zeros(bands, dtype=torch.float64)

    def band(self, t: Tensor) -> Tensor:
        return (t.detach().cpu().long() * self.bands // self.timesteps).clamp(0, self.bands - 1)

    def coefficient(self, t: Tensor) -> Tensor:
        """``mu`` [B] for timesteps ``t`` (0 for a band not yet seen)."""
        b = self.band(t)
        return torch.where(self.power[b] > 0, -self.cross[b] / self.power[b].clamp_min(1e-300), torch.zeros(()))

    def apply(self, grad: Tensor, x_t: Tensor, eps: Tensor, sigma: Tensor, t: Tensor,
              baseline: Callable[[Tensor], Tensor] = constant_baseline) -> Tensor:  # fmt: skip
        """``grad + mu cv`` with ``cv`` the control variate of ``baseline`` (phi of ``x_t`` [B])."""
        cv = stein_control_variate(baseline, x_t, eps, sigma)
        mu = self.coefficient(t)
        out = grad + mu.to(grad).view((-1,) + (1,) * (grad.ndim - 1)) * cv
        b = self.band(t)
        flat = lambda v: v.detach().flatten(1).to(device="cpu", dtype=torch.float64)  # noqa: E731
        g, c, o = flat(grad), flat(cv), flat(out)
        for name, values in (("cross", (g * c).sum(-1)), ("power", c.square().sum(-1)), ("seen", g.square().sum(-1)),
                             ("kept", o.square().sum(-1))):  # fmt: skip
            total = getattr(self, name)
            total[b.unique()] *= self.decay
            total.index_add_(0, b, values)
        return out

    def second_moment_ratio(self) -> float:
        """E|g|^2 / E|g + mu cv|^2 over the recent steps (> 1: the control variate helps)."""
        kept = float(self.kept.sum())
        return float(self.seen.sum()) / kept if kept > 0 else 1.0

    def state_dict(self) -> dict:
        return {k: getattr(self, k).clone() for k in ("cross", "power", "seen", "kept")}

    def load_state_dict(self, state: dict) -> None:
        for k in ("cross", "power", "seen", "kept"):
            if state[k].shape != (self.bands,):
                raise ValueError("the checkpoint's control variate has another number of timestep bands")
            setattr(self, k, state[k].clone())
