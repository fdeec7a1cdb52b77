"""What a render returns, including the per-Gaussian statistics strategies ask for."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from torch import Tensor

from .camera import Cameras

Statistic = Literal["grad2d", "importance", "split2d", "mean2d_grad"]
STATISTICS: tuple[Statistic, ...] = ("grad2d", "importance", "split2d", "mean2d_grad")


@dataclass
class RenderStats:
    """Per-(camera, Gaussian) statistics, returned explicitly.

    ``importance`` [B, N] (sum over pixels of alpha * T) is filled by the forward pass.
    ``grad2d`` [B, N] (|dL/d mean2d| in pixels) and ``split2d`` [B, N, 3] (the splitting
    matrix term sum_p dL/dalpha * alpha * (C d d^T C - C) as xx, xy, yy) are filled when
    the loss is back-propagated, as is ``mean2d_grad`` [B, N, 2] (dL/d mean2d itself, for
    the projection-curvature term of the splitting matrix); reading them before that is an
    error.
    """

    requested: tuple[Statistic, ...] = ()
    values: dict[str, Tensor] = field(default_factory=dict)

    def _get(self, name: Statistic) -> Tensor:
        if name not in self.requested:
            raise KeyError(f"statistic {name!r} was not requested (stats={self.requested})")
        if name not in self.values:
            raise RuntimeError(f"statistic {name!r} is computed by the backward pass: call loss.backward() first")
        return self.values[name]

    @property
    def grad2d(self) -> Tensor:
        return self._get("grad2d")

    @property
    def importance(self) -> Tensor:
        return self._get("importance")

    @property
    def split2d(self) -> Tensor:
        return self._get("split2d")

    @property
    def mean2d_grad(self) -> Tensor:
        return self._get("mean2d_grad")


@dataclass
class RenderMeta:
    means2d: Tensor  # [B, N, 2] pixel coordinates (pixel centres at integer + 0.5)
    depths: Tensor  # [B, N] camera-space z
    radii: Tensor  # [B, N, 2] int32 pixel half-extent; 0 = not rendered
    stats: RenderStats
    cameras: Cameras | None = None  # what was rendered (strategies lift 2D statistics to 3D with it)

    @property
    def visible(self) -> Tensor:  # [B, N] bool
        return (self.radii > 0).all(dim=-1)


@dataclass
class RenderOutput:
    image: Tensor  # [B, H, W, 3]
    alpha: Tensor  # [B, H, W, 1]
    depth: Tensor  # [B, H, W, 1] expected depth (0 where nothing was rendered)
    meta: RenderMeta

    @property
    def stats(self) -> RenderStats:
        return self.meta.stats
