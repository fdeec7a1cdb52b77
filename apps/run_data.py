"""A run's dataset as the commands use it: loaded with the run's options, its training views
in memory, its background colour, and its cameras as ``cameras.json`` records."""

from __future__ import annotations

from pathlib import Path
from typing import Callable

import torch

from splatfield import data as sfdata
from splatfield.scenes.options import RunConfig
from splatfield.scenes.views import Views


def load_dataset(config: RunConfig, log: Callable[[str], None] | None = None) -> sfdata.Dataset:
    """The run's dataset; ``log`` hears which blurred training frames were dropped (if asked)."""
    d = config.dataset
    masks = d.masks if d.masks in ("auto", "none") else Path(d.masks)
    return sfdata.load(config.data, downscale=d.downscale, test_every=d.test_every, masks=masks, mask_mode=d.mask_mode,
                       min_sharpness=d.min_sharpness, min_relative_sharpness=d.min_relative_sharpness, log=log)


def load_views(split: sfdata.Split, progress: Callable[[int], None] | None = None) -> Views:
    images, masks, silhouettes = [], [], []
    for i in range(len(split)):
        images.append(split.image(i))
        masks.append(split.mask(i))
        silhouettes.append(split.silhouette(i))
        if progress:
            progress(1)
    have_masks = any(m is not None for m in masks)
    if have_masks:
        full = torch.ones(split.cameras.height, split.cameras.width, dtype=torch.bool)
        mask_t = torch.stack([full if m is None else m for m in masks])
    objects = torch.stack(silhouettes) if silhouettes and all(s is not None for s in silhouettes) else None
    return Views(split.cameras.to(dtype=torch.float32), torch.stack(images), mask_t if have_masks else None, objects)


def background_of(dataset: sfdata.Dataset) -> tuple[float, float, float]:
    return tuple(dataset.background) if dataset.background is not None else (0.0, 0.0, 0.0)  # type: ignore[return-value]


def cameras_json(dataset: sfdata.Dataset) -> dict:
    def split(s: sfdata.Split) -> list[dict]:
        c = s.cameras
        return [
            {"image": str(s.image_paths[i]), "width": c.width, "height": c.height,
             "fx": float(c.fx[i]), "fy": float(c.fy[i]), "cx": float(c.cx[i]), "cy": float(c.cy[i]),
             "world_to_camera": c.world_to_camera[i].tolist()}
            for i in range(len(s))
        ]  # fmt: skip

    return {"convention": "OpenCV (x right, y down, z forward)", "train": split(dataset.train), "test": split(dataset.test)}
