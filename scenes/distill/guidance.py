"""The guidance interface: anything that predicts the noise in ``x_t``.

A guidance model has a :class:`~.schedule.NoiseSchedule` and
``predict_noise(x_t, t, condition) -> eps_hat`` (``x_t`` [B, ...], ``t`` [B] integer
timesteps; ``condition`` whatever the model is conditioned on, ``None`` for the
unconditional prediction). ``eps_hat`` is ``-sigma_t`` times the score of the noised
distribution at ``x_t``. Implementations: the exact priors of :mod:`.analytic`; diffusers
checkpoints from a local directory (later).
"""

from __future__ import annotations

from typing import Any, Protocol, runtime_checkable

from torch import Tensor

from .schedule import NoiseSchedule


@runtime_checkable
class Guidance(Protocol):
    schedule: NoiseSchedule

    def predict_noise(self, x_t: Tensor, t: Tensor, condition: Any = None) -> Tensor: ...


def classifier_free(guidance: Guidance, x_t: Tensor, t: Tensor, condition: Any, scale: float, negative: Any = None) -> Tensor:
    """Classifier-free guidance, in the convention ``eps_u + s (eps_c - eps_u)``: ``s = 1`` is
    the conditional prediction alone, ``s = 0`` the unconditional one (``negative``, default
    ``None``). Some codebases write ``eps_c + s (eps_c - eps_u)``, which is this one's
    ``s + 1``. ``scale = 1`` skips the unconditional evaluation."""
    conditional = guidance.predict_noise(x_t, t, condition)
    if scale == 1.0:
        return conditional
    unconditional = guidance.predict_noise(x_t, t, negative)
    return unconditional + scale * (conditional - unconditional)
