"""Blender / NeRF-synthetic format.

``transforms_train.json`` and ``transforms_test.json`` (``transforms_val.json`` is ignored)
hold ``camera_angle_x`` and frames with ``file_path`` (relative to the folder, usually
without extension: ``./train/r_0`` -> ``train/r_0.png``) and an OpenGL camera-to-world
``transform_matrix``. Pinhole: fx = fy = 0.5 W / tan(0.5 camera_angle_x), cx = W/2,
cy = H/2, with the size read from the first image's header. Images are RGBA, composited
over white.
"""

from __future__ import annotations

import math
from pathlib import Path

import torch

from splatfield.render.camera import opengl_to_opencv_c2w

from .dataset import Dataset, DatasetError, Split, check_sizes, image_size, make_split, read_json

WHITE = (1.0, 1.0, 1.0)


def is_blender(root: Path) -> bool:
    return (root / "transforms_train.json").is_file()


def frame_path(root: Path, file_path: str) -> Path:
    """``file_path`` relative to ``root``; ``.png`` appended when it has no extension."""
    p = root / file_path
    return p if p.suffix else p.with_name(p.name + ".png")


def parse_matrix(value: object, where: Path, index: int) -> torch.Tensor:  # [4, 4] float64
    try:
        m = torch.tensor(value, dtype=torch.float64)
    except (TypeError, ValueError):
        m = None
    if m is None or m.shape not in ((4, 4), (3, 4)):
        raise DatasetError(where, f"frame {index}: transform_matrix must be a 4x4 (or 3x4) matrix")
    if m.shape == (3, 4):
        m = torch.cat([m, torch.tensor([[0.0, 0.0, 0.0, 1.0]], dtype=torch.float64)])
    if not torch.isfinite(m).all():
        raise DatasetError(where, f"frame {index}: transform_matrix has non-finite values")
    return m


def _load_split(root: Path, name: str, *, downscale: float, cache_dir: Path | None) -> Split:
    path = root / f"transforms_{name}.json"
    meta = read_json(path)
    if not isinstance(meta, dict) or "camera_angle_x" not in meta:
        raise DatasetError(path, "missing 'camera_angle_x'")
    frames = meta.get("frames")
    if not isinstance(frames, list) or not frames:
        raise DatasetError(path, "no frames")
    try:
        paths = [frame_path(root, f["file_path"]) for f in frames]
    except (KeyError, TypeError):
        raise DatasetError(path, "every frame needs a 'file_path'") from None
    c2w = torch.stack([parse_matrix(f.get("transform_matrix"), path, i) for i, f in enumerate(frames)])
    W, H = image_size(paths[0])
    check_sizes(paths, W, H, f"the first image ({paths[0].name})")
    angle = float(meta["camera_angle_x"])
    f = 0.5 * W / math.tan(0.5 * angle)
    n = len(frames)
    full = lambda v: torch.full((n,), float(v), dtype=torch.float64)  # noqa: E731
    return make_split(
        opengl_to_opencv_c2w(c2w), full(f), full(f), full(W / 2), full(H / 2), W, H, "pinhole", None, paths,
        list(range(n)), downscale=downscale, background=WHITE, cache_dir=cache_dir,
    )


def load_blender(root: str | Path, *, downscale: float = 1.0, cache_dir: str | Path | None = None) -> Dataset:
    """Loads a Blender-format folder (train and test splits, white background)."""
    root = Path(root)
    cache = None if cache_dir is None else Path(cache_dir)
    train = _load_split(root, "train", downscale=downscale, cache_dir=cache)
    test = _load_split(root, "test", downscale=downscale, cache_dir=cache)
    return Dataset(name=root.name, root=root, format="blender", train=train, test=test, background=WHITE)
