"""Training views and the batches a scene draws from them.

:class:`Views` are the training cameras with their images (uint8, in memory) and masks.
:class:`ViewSampler` hands out view indices, a fresh random permutation per epoch (as
3DGS), from the trainer's generator; its position is part of a checkpoint. A
:class:`Batch` is what one step trains on: for Gaussians whole views, for a radiance field
rays drawn across views (the scene decides, see :class:`splatfield.scenes.scene.Scene`).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from splatfield.render import Cameras


@dataclass
class Views:
    """The training views: cameras and their images (uint8, kept in memory)."""

    cameras: Cameras  # B cameras
    images: Tensor  # [B, H, W, 3] uint8
    masks: Tensor | None = None  # [B, H, W] bool; False = ignored by the loss
    silhouettes: Tensor | None = None  # [B, H, W] uint8: an object mask's coverage, the alpha to train towards

    def __post_init__(self) -> None:
        B = len(self.cameras)
        if B == 0:
            raise ValueError("no training views")
        expect = (B, self.cameras.height, self.cameras.width, 3)
        if tuple(self.images.shape) != expect:
            raise ValueError(f"images must be {list(expect)}, got {list(self.images.shape)}")
        if self.masks is not None and tuple(self.masks.shape) != expect[:3]:
            raise ValueError(f"masks must be {list(expect[:3])}, got {list(self.masks.shape)}")
        if self.silhouettes is not None and tuple(self.silhouettes.shape) != expect[:3]:
            raise ValueError(f"silhouettes must be {list(expect[:3])}, got {list(self.silhouettes.shape)}")

    def __len__(self) -> int:
        return len(self.cameras)


class ViewSampler:
    """View indices in a fresh random permutation per epoch, drawn from ``generator``."""

    def __init__(self, count: int, generator: torch.Generator) -> None:
        self.count = count
        self.generator = generator
        self.order: list[int] = []  # what is left of the current epoch, taken from the end

    def next(self) -> int:
        if not self.order:
            self.order = torch.randperm(self.count, generator=self.generator).tolist()
        return self.order.pop()


@dataclass
class Batch:
    """One step's training data on the scene's device."""

    views: list[int]  # the training views it comes from
    cameras: Cameras  # [B] the cameras rendered
    target: Tensor  # [B, H, W, 3] float in [0, 1] (a field: [R, 3] ray colours)
    mask: Tensor | None = None  # [B, H, W] bool, or None
    step_views: list[int] | None = None  # the whole step's views when this is one process's share
    step_cameras: Cameras | None = None  # and their cameras
    rays: tuple[Tensor, Tensor, Tensor] | None = None  # a field's: origins [R, 3], unit directions [R, 3], jitter [R]
    silhouette: Tensor | None = None  # [B, H, W] (a field: [R]) float in [0, 1]: the alpha an object mask asks for

    @property
    def step_size(self) -> int:
        """Views in the whole step (the loss divides by it)."""
        return len(self.step_views) if self.step_views is not None else len(self.views)
