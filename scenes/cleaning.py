"""Crop and clean a set of Gaussians (``splatfield export``'s filters after the size ratio, and
the viewer's crop box): the options and their order are :class:`~.crop.CleanOptions`; a
Gaussian is inside a crop region when its mean is (:meth:`~.crop.CropRegion.contains`, the
one test the export, the viewer and the mesh export share)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch
from torch import Tensor

from splatfield.render import Cameras, Gaussians

from .config import ConfigError
from .crop import CleanOptions, CropRegion
from .elastic import importance_over, subset


@dataclass(frozen=True)
class Removed:
    """What one filter removed: its option (``--crop-box``) and how many Gaussians."""

    option: str
    count: int


def inside(g: Gaussians, region: CropRegion) -> Tensor:
    """[N] bool on ``g``'s device: the Gaussians whose mean is inside ``region``."""
    mask = region.contains(g.means.detach().to(device="cpu", dtype=torch.float64).numpy())
    return torch.from_numpy(mask).to(g.means.device)


def cropped(g: Gaussians, region: CropRegion) -> Gaussians:
    """The Gaussians of ``g`` inside ``region`` (their order kept)."""
    return subset(g, inside(g, region).nonzero()[:, 0]) if region else g


def clean(g: Gaussians, options: CleanOptions, *, cameras: Cameras | None = None,
          on_view: Callable[[int], None] | None = None) -> tuple[Gaussians, list[Removed]]:  # fmt: skip
    """``g`` through the filters of ``options`` in their order; returns what is kept (in the
    scene's order) and, per filter given, how many it removed. ``cameras``: the run's
    training views (``--min-contribution`` needs them; ``on_view`` is called after each)."""
    removed: list[Removed] = []

    def keep(option: str, mask: Tensor) -> None:
        nonlocal g
        removed.append(Removed(option, int((~mask).sum())))
        g = subset(g, mask.nonzero()[:, 0])

    if options.region.box is not None:
        keep("--crop-box", inside(g, CropRegion(box=options.region.box)))
    if options.region.sphere is not None:
        keep("--crop-sphere", inside(g, CropRegion(sphere=options.region.sphere)))
    if options.min_opacity > 0:
        keep("--min-opacity", torch.sigmoid(g.opacity_logits.detach()) >= options.min_opacity)
    if options.max_scale is not None:
        largest = g.log_scales.detach().max(dim=1).values if len(g) else g.log_scales.new_zeros(0)
        keep("--max-scale", torch.exp(largest.double()) <= options.max_scale)
    if options.min_contribution is not None:
        if cameras is None or len(cameras) == 0:
            raise ConfigError("--min-contribution", "needs the training cameras of a run (give a run directory, "
                                                    "not a splat file)")  # fmt: skip
        best = importance_over(g, cameras, on_view=on_view, reduce="max") if len(g) else g.means.new_zeros(0)
        keep("--min-contribution", best >= options.min_contribution)
    return g, removed
