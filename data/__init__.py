"""splatfield.data — dataset loaders (Layer 3).

``load(path)`` detects the format and returns a :class:`Dataset` with train/test
:class:`Split`s of OpenCV pinhole cameras and lazily loaded uint8 images. Supported:
Blender (``transforms_train.json``), nerfstudio/instant-ngp ``transforms.json``, COLMAP
(text or binary, in ``sparse/0``, ``sparse`` or next to ``images/``), LLFF
(``poses_bounds.npy``), and folders of photos or videos through SfM (:mod:`.sfm`). Imports only ``splatfield.render.camera`` from the project.
"""

from __future__ import annotations

from pathlib import Path

from .blender import load_blender
from .colmap import find_model, load_colmap, model_from_cameras, read_model, write_model
from .dataset import Dataset, DatasetError, DatasetFormat, Split, cache_root
from .pose_alignment import compare_poses, compare_to_reference, umeyama
from .points import look_at_centre, random_initial_points
from .llff import load_llff, read_poses_bounds, write_poses_bounds
from .transforms_json import load_transforms_json
from .undistort import distort, undistort_image, undistort_points

__all__ = [
    "Dataset", "DatasetError", "DatasetFormat", "Split", "cache_root", "load", "detect_format",
    "load_blender", "load_transforms_json", "load_colmap", "load_llff",
    "read_model", "write_model", "model_from_cameras", "find_model", "read_poses_bounds", "write_poses_bounds",
    "distort", "undistort_image", "undistort_points", "look_at_centre", "random_initial_points",
    "umeyama", "compare_poses", "compare_to_reference",
]

_EXPECTED = ("expected transforms_train.json (Blender), transforms.json, a COLMAP model "
             "(sparse/0, sparse or cameras+images next to images/) or poses_bounds.npy (LLFF)")


def detect_format(path: str | Path) -> tuple[DatasetFormat, Path]:
    """(format, path to hand its loader); DatasetError when nothing is recognised."""
    p = Path(path)
    if p.is_file():
        if p.name.startswith("transforms_") and p.suffix == ".json":
            return "blender", p.parent
        if p.suffix == ".json":
            return "transforms_json", p
        if p.name == "poses_bounds.npy":
            return "llff", p.parent
        raise DatasetError(p, f"no supported dataset found ({_EXPECTED})")
    if not p.is_dir():
        raise DatasetError(p, "no such file or directory")
    if (p / "transforms_train.json").is_file():
        return "blender", p
    if (p / "transforms.json").is_file():
        return "transforms_json", p / "transforms.json"
    if find_model(p) is not None:
        return "colmap", p
    if (p / "poses_bounds.npy").is_file():
        return "llff", p
    raise DatasetError(p, f"no supported dataset found ({_EXPECTED})")


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
