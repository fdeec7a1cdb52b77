"""splatfield.data — dataset loaders (Layer 3).

``load(path)`` detects the format and returns a :class:`Dataset` with train/test
:class:`Split`s of OpenCV pinhole cameras and lazily loaded uint8 images. Supported:
Blender (``transforms_train.json``), nerfstudio/instant-ngp ``transforms.json``, COLMAP
(text or binary, in ``sparse/0``, ``sparse`` or next to ``images/``), LLFF
(``poses_bounds.npy``), and folders of photos or videos through SfM (:mod:`.sfm`). Imports only ``splatfield.render.camera`` from the project.
"""

from __future__ import annotations

from .blender import load_blender
from .colmap import find_model, load_colmap, model_from_cameras, read_model, write_model
from .dataset import Dataset, DatasetError, DatasetFormat, Split, cache_root
from .detect import detect_format
from .pose_alignment import compare_poses, compare_to_reference, umeyama
from .points import look_at_centre, random_initial_points, visual_hull_points
from .llff import load_llff, read_poses_bounds, write_poses_bounds
from .loading import load
from .transforms_json import load_transforms_json
from .undistort import distort, undistort_image, undistort_points

__all__ = [
    "Dataset", "DatasetError", "DatasetFormat", "Split", "cache_root", "load", "detect_format",
    "load_blender", "load_transforms_json", "load_colmap", "load_llff",
    "read_model", "write_model", "model_from_cameras", "find_model", "read_poses_bounds", "write_poses_bounds",
    "distort", "undistort_image", "undistort_points", "look_at_centre", "random_initial_points", "visual_hull_points",
    "umeyama", "compare_poses", "compare_to_reference",
]
