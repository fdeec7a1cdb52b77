"""A run's dataset as the commands use it: loaded with the run's options, its training views
in memory, its background colour, and its cameras as ``cameras.json`` records."""

from __future__ import annotations

import json
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Callable

import torch

from splatfield import data as sfdata
from splatfield.data.pose_noise import perturb_poses
from splatfield.render import Cameras
from splatfield.scenes.options import RunConfig
from splatfield.scenes.views import Views


def load_dataset(config: RunConfig, log: Callable[[str], None] | None = None) -> sfdata.Dataset:
    """The run's dataset; ``log`` hears which blurred training frames were dropped (if asked)."""
    d = config.dataset
    masks = d.masks if d.masks in ("auto", "none") else Path(d.masks)
    dataset = sfdata.load(config.data, downscale=d.downscale, test_every=d.test_every, masks=masks,
                          mask_mode=d.mask_mode, min_sharpness=d.min_sharpness,
                          min_relative_sharpness=d.min_relative_sharpness, lens_distortion=d.lens_distortion,
                          log=log)  # fmt: skip
    degrees, fraction = d.train_pose_noise
    if degrees > 0 or fraction > 0:
        noisy = perturb_poses(dataset.train.cameras, degrees, fraction * dataset.scene_extent(), d.pose_noise_seed)
        dataset = replace(dataset, train=replace(dataset.train, cameras=noisy))
        if log:
            log(f"training poses perturbed by {degrees:g}° and {fraction:g} of the scene extent "
                f"(seed {d.pose_noise_seed}); test poses as given")  # fmt: skip
    return dataset


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


def _camera_record(c: Cameras, i: int) -> dict:
    return {"fx": float(c.fx[i]), "fy": float(c.fy[i]), "cx": float(c.cx[i]), "cy": float(c.cy[i]),
            "world_to_camera": c.world_to_camera[i].tolist()}  # fmt: skip


def cameras_json(dataset: sfdata.Dataset, refined: RefinedCameras | None = None) -> dict:
    """The run's cameras as given by the dataset; with ``refined`` (camera refinement) each
    record also holds its ``refined`` camera (training views: pose and intrinsics; test views:
    moved by the change of frame, with the refined intrinsics of their physical camera). The
    evaluation adds the test views' ``aligned`` poses."""

    def split(s: sfdata.Split, name: str) -> list[dict]:
        c = s.cameras
        out = []
        for i in range(len(s)):
            rec = {"image": str(s.image_paths[i]), "width": c.width, "height": c.height, **_camera_record(c, i)}
            if refined is not None:
                rec["refined"] = _camera_record(refined.train if name == "train" else refined.test, i)
            out.append(rec)
        return out

    doc = {"convention": "OpenCV (x right, y down, z forward)", "train": split(dataset.train, "train"),
           "test": split(dataset.test, "test")}  # fmt: skip
    if refined is not None:
        doc["refinement"] = refined.summary
    return doc


@dataclass
class RefinedCameras:
    """A run's refined cameras: its training views' and its test views' (in the refined frame,
    with the refined intrinsics); ``summary``: the sizes of the corrections."""

    train: Cameras
    test: Cameras
    summary: dict = field(default_factory=dict)


def _cameras_from_records(records: list[dict], like: Cameras, key: str) -> Cameras:
    rec = [r[key] for r in records]
    t = lambda name: torch.tensor([r[name] for r in rec], dtype=like.fx.dtype)  # noqa: E731
    w2c = torch.tensor([r["world_to_camera"] for r in rec], dtype=like.world_to_camera.dtype)
    return replace(like, world_to_camera=w2c, fx=t("fx"), fy=t("fy"), cx=t("cx"), cy=t("cy"))


def with_refined_cameras(dataset: sfdata.Dataset, run_dir: Path) -> sfdata.Dataset:
    """``dataset`` with the cameras a run refined (its ``cameras.json``): what ``render``,
    ``eval``, ``export`` and the viewer use. A run without refinement is returned as is."""
    path = run_dir / "cameras.json"
    if not path.is_file():
        return dataset
    try:
        doc = json.loads(path.read_text())
    except (OSError, ValueError) as e:
        raise sfdata.DatasetError(path, f"unreadable ({e})") from None
    splits = {}
    for name in ("train", "test"):
        split: sfdata.Split = getattr(dataset, name)
        records = doc.get(name, [])
        if not records or "refined" not in records[0]:
            return dataset
        if [Path(r["image"]).name for r in records] != [Path(p).name for p in split.image_paths]:
            raise sfdata.DatasetError(path, f"its {name} views are not the dataset's (was the dataset changed?)")
        splits[name] = replace(split, cameras=_cameras_from_records(records, split.cameras, "refined"))
    return replace(dataset, **splits)
