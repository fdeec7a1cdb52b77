"""The ``Strategy`` protocol: what a training strategy may do around one training step.

A strategy is a small object with explicit state (``state_dict``/``load_state_dict``, so a
resumed run continues exactly). The trainer calls, in order, for every step:

1. ``statistics`` — which per-Gaussian statistics the renderer must return;
2. ``extra_loss(step, scene, out)`` — a term added to the photometric loss, or None;
3. ``after_backward(step, scene, out)`` — read the statistics filled by backward;
4. (optimizer step)
5. ``after_step(step, scene, generator)`` — edit the scene (only through
   :mod:`splatfield.scenes.ops`); returns what it changed, for logging.

``step`` counts completed steps from 1. Randomness comes only from ``generator``.
"""

from __future__ import annotations

from typing import Protocol, runtime_checkable

import torch
from torch import Tensor

from splatfield.render import RenderOutput, Statistic

from ..gaussian_scene import GaussianScene


@runtime_checkable
class Strategy(Protocol):
    name: str

    @property
    def statistics(self) -> tuple[Statistic, ...]: ...

    def extra_loss(self, step: int, scene: GaussianScene, out: RenderOutput) -> Tensor | None: ...

    def after_backward(self, step: int, scene: GaussianScene, out: RenderOutput) -> None: ...

    def after_step(self, step: int, scene: GaussianScene, generator: torch.Generator) -> dict[str, float]: ...

    def state_dict(self) -> dict: ...

    def load_state_dict(self, state: dict) -> None: ...


class NoStrategy:
    """Plain optimisation: a fixed set of Gaussians."""

    name = "none"
    statistics: tuple[Statistic, ...] = ()

    def extra_loss(self, step: int, scene: GaussianScene, out: RenderOutput) -> Tensor | None:
        return None

    def after_backward(self, step: int, scene: GaussianScene, out: RenderOutput) -> None:
        pass

    def after_step(self, step: int, scene: GaussianScene, generator: torch.Generator) -> dict[str, float]:
        return {}

    def state_dict(self) -> dict:
        return {}

    def load_state_dict(self, state: dict) -> None:
        pass
