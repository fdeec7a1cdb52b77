"""The ``Strategy`` protocol: what a training strategy may do around one training step, and
:class:`Strategies`, several of them run in order around the same step.

A strategy is a small object with explicit state (``state_dict``/``load_state_dict``, so a
resumed run continues exactly). The trainer shows them the training views once
(``bind_views``, optional), then calls, in order, for every step:

1. ``statistics`` — which per-element statistics the renderer must return;
2. ``extra_loss(step, scene, batch, out)`` — a term added to the photometric loss, or None
   (``batch``: the step's views and targets, for a loss of another render); before it, a
   strategy that defines ``photometric_weight(step) -> float`` scales the training views'
   own loss (optional: the distill strategy draws its reference view with a probability);
3. ``after_backward(step, scene, out)`` — read the statistics filled by backward;
4. (optimizer step)
5. ``after_step(step, scene, generator)`` — edit the scene (only through
   :mod:`splatfield.scenes.ops`); returns what it changed, for logging.

``step`` counts completed steps from 1. Randomness comes only from ``generator``.
``scene_kinds`` names the scene kinds a strategy works on; ``schedule_at(step)`` says what
its schedule does after a step (for tests and logs).
"""

from __future__ import annotations

from typing import Protocol, Sequence, runtime_checkable

import torch
from torch import Tensor

from splatfield.render import RenderOutput, Statistic


@runtime_checkable
class Strategy(Protocol):
    name: str
    scene_kinds: frozenset[str]

    @property
    def statistics(self) -> tuple[Statistic, ...]: ...

    def extra_loss(self, step: int, scene, batch, out: RenderOutput) -> Tensor | None: ...

    def after_backward(self, step: int, scene, out: RenderOutput) -> None: ...

    def after_step(self, step: int, scene, generator: torch.Generator) -> dict[str, float]: ...

    def schedule_at(self, step: int) -> dict[str, float]: ...

    def state_dict(self) -> dict: ...

    def load_state_dict(self, state: dict) -> None: ...


class Strategies:
    """Strategies run in order around one step: their statistics are the union, their extra
    losses add up, their hooks run one after the other, and each keeps its own state."""

    def __init__(self, strategies: Sequence[Strategy] = ()) -> None:
        self.items = list(strategies)

    @property
    def names(self) -> list[str]:
        return [s.name for s in self.items]

    def check_scene(self, kind: str) -> None:
        for s in self.items:
            if kind not in s.scene_kinds:
                raise ValueError(f"strategy {s.name} works on {', '.join(sorted(s.scene_kinds))} scenes, not on {kind}")

    @property
    def statistics(self) -> tuple[Statistic, ...]:
        return tuple(dict.fromkeys(st for s in self.items for st in s.statistics))

    def extra_loss(self, step: int, scene, batch, out: RenderOutput) -> Tensor | None:
        total = None
        for s in self.items:
            term = s.extra_loss(step, scene, batch, out)
            if term is not None:
                total = term if total is None else total + term
        return total

    def bind_views(self, views) -> None:
        """Shows the training views to the strategies that define ``bind_views`` (optional:
        the distill strategy's reference-conditioned prior reads the first view's image)."""
        for s in self.items:
            if hasattr(s, "bind_views"):
                s.bind_views(views)

    def photometric_weight(self, step: int) -> float:
        """The product of the weights the strategies put on the training views' loss this step (1 when none does)."""
        weight = 1.0
        for s in self.items:
            if hasattr(s, "photometric_weight"):
                weight *= s.photometric_weight(step)
        return weight

    def after_backward(self, step: int, scene, out: RenderOutput) -> None:
        for s in self.items:
            s.after_backward(step, scene, out)

    def after_step(self, step: int, scene, generator: torch.Generator) -> dict[str, float]:
        return self._merged(lambda s: s.after_step(step, scene, generator))

    def schedule_at(self, step: int) -> dict[str, float]:
        return self._merged(lambda s: s.schedule_at(step))

    def _merged(self, each) -> dict[str, float]:
        """Their dicts in one; a key that two strategies report is prefixed by the second's name."""
        out: dict[str, float] = {}
        for s in self.items:
            for k, v in each(s).items():
                out[f"{s.name}.{k}" if k in out else k] = v
        return out

    def state_dict(self) -> list[dict]:
        return [{"name": s.name, "state": s.state_dict()} for s in self.items]

    def load_state_dict(self, states: list[dict]) -> None:
        saved = [st["name"] for st in states]
        if saved != self.names:
            raise ValueError(f"the checkpoint was trained with strategies {saved or ['none']}, not {self.names or ['none']}")
        for s, st in zip(self.items, states):
            s.load_state_dict(st["state"])
