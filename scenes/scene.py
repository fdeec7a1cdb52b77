"""The scene protocol: what the trainer, viewer, renderer, evaluator and checkpoints need
from a scene, whatever its kind (Gaussians today; a radiance field next).

:class:`Renderable` is a scene to look at (a trained scene, a snapshot, a splat file);
:class:`Scene` adds training: parameters with their optimizer, schedules, drawing a
:class:`~splatfield.scenes.views.Batch` from the training views and its loss, and the
state a checkpoint holds. A scene kind's class implements both (``GaussianScene``);
strategies say which kinds they accept (``Strategy.scene_kinds``).
"""

from __future__ import annotations

from typing import Protocol, Sequence, runtime_checkable

import torch
from torch import Tensor

from splatfield.render import Cameras, RenderOutput, Statistic

from .views import Batch, Views, ViewSampler


@runtime_checkable
class Renderable(Protocol):
    kind: str  # "gaussians", ...
    count_label: str  # what len() counts, for logs: "Gaussians"

    def __len__(self) -> int: ...

    @property
    def device(self) -> torch.device: ...

    @property
    def max_sh_degree(self) -> int: ...

    def render(
        self, cameras: Cameras, *, background: Tensor | Sequence[float] | None = None, sh_degree: int | None = None
    ) -> RenderOutput: ...

    def snapshot(self) -> Renderable:
        """A detached copy that later training steps do not change."""
        ...

    def preview(self) -> Renderable:
        """What to draw while a viewer's camera moves: a cheaper stand-in sharing the tensors
        (a field marches with longer steps), or the scene itself where nothing is cheaper."""
        ...

    def points(self) -> Tensor:  # [N, 3]
        """Representative world positions (to frame the scene when there are no cameras)."""
        ...


@runtime_checkable
class Scene(Renderable, Protocol):
    optimizer: torch.optim.Optimizer

    def set_run_length(self, steps: int) -> None:
        """Schedules that span the run (learning-rate decays) follow its length; called on
        start and on resume, so a resumed run with a new length follows the new one."""
        ...

    def set_step(self, step: int) -> None:
        """Applies the schedules of ``step`` (counted from 1) to the optimizer."""
        ...

    def schedule_at(self, step: int) -> dict[str, float]:
        """The schedule's values at ``step`` (learning rates, SH degree...), for tests and logs."""
        ...

    def set_batch_size(self, batch_size: int) -> None:
        """Learning rates (and the like) for ``batch_size`` views per step, by the kind's stated rule."""
        ...

    def draw_batch(self, views: Views, sampler: ViewSampler, size: int = 1, share: slice | None = None) -> Batch:
        """What one step trains on, drawn from ``size`` views (Gaussians: those whole views);
        ``share``: one process's part of them in data-parallel training."""
        ...

    def render_batch(self, batch: Batch, *, step: int, background: Tensor, stats: Sequence[Statistic] = ()) -> RenderOutput: ...

    def batch_loss(self, batch: Batch, out: RenderOutput, *, ssim_weight: float,
                   alpha_weight: float = 0.0) -> tuple[Tensor, float]:  # fmt: skip
        """(the loss to back-propagate, the batch's mean squared error for the log);
        ``alpha_weight``: of the L1 between the rendered alpha and ``batch.silhouette``."""
        ...

    def state_dict(self) -> dict: ...

    @classmethod
    def from_state_dict(cls, state: dict, device: torch.device | str = "cpu") -> Scene: ...
