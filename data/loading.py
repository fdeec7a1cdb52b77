"""``load(path)``: detects the format and hands the path to its loader, through SfM first
for a folder of photos or a video."""

from __future__ import annotations

from pathlib import Path

from .blender import load_blender
from .colmap import load_colmap
from .dataset import Dataset
from .detect import detect_format
from .llff import load_llff
from .transforms_json import load_transforms_json


def load(
    path: str | Path, *, downscale: float = 1.0, test_every: int = 8, cache_dir: str | Path | None = None
) -> Dataset:
    """Loads the dataset at ``path`` (a folder, or its transforms/poses file).

    ``downscale`` divides the image size (cameras follow); ``test_every`` puts every n-th
    frame in the test split where the format has no split of its own (0: none);
    ``cache_dir`` overrides where downscaled/undistorted images are cached. A folder of
    plain photos or a video goes through SfM first (:func:`.sfm.cached_or_run`, reused
    from the cache when done before).
    """
    from .sfm import cached_or_run, input_kind

    if input_kind(path) is not None:
        path = cached_or_run(path).out
    fmt, p = detect_format(path)
    if fmt == "blender":
        return load_blender(p, downscale=downscale, cache_dir=cache_dir)
    if fmt == "transforms_json":
        return load_transforms_json(p, downscale=downscale, test_every=test_every, cache_dir=cache_dir)
    if fmt == "colmap":
        return load_colmap(p, downscale=downscale, test_every=test_every, cache_dir=cache_dir)
    return load_llff(p, downscale=downscale, test_every=test_every, cache_dir=cache_dir)
