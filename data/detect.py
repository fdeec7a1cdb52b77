"""Which dataset format a path holds.

Not in :mod:`.loading`: :mod:`.sfm` asks this (is a folder already a dataset?) while
``load`` runs SfM, so the two in one module would import each other.
"""

from __future__ import annotations

from pathlib import Path

from .colmap import find_model
from .dataset import DatasetError, DatasetFormat

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
