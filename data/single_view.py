"""One photo of an object as a Blender-format dataset with one view: what ``splatfield
lift`` trains on (its reference view).

The image's alpha (or a separate mask) is the object's silhouette, as Blender's RGBA images
are, so the trainer's object-mask handling supervises both colour and opacity of the
reference view. The camera sits at ``elevation`` degrees on a circle of ``radius`` around
the world origin (azimuth 0, world z up, the Blender convention), looking at the origin with
the vertical field of view ``fov``. The same frame is the test split, so ``eval`` reports
the reference view (the log of ``lift`` says so).
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
from PIL import Image

from .dataset import DatasetError
from .procedural import look_at_c2w


def object_camera(elevation: float, azimuth: float, radius: float) -> np.ndarray:
    """OpenGL camera-to-world [4, 4] of a camera around the object: at ``elevation`` and
    ``azimuth`` (degrees; azimuth 0 on +x, counter-clockwise about +z), ``radius`` from the
    origin, looking at it. The reference camera is the one at azimuth 0."""
    e, a = math.radians(elevation), math.radians(azimuth)
    return look_at_c2w((radius * math.cos(e) * math.cos(a), radius * math.cos(e) * math.sin(a), radius * math.sin(e)))


def rgba_with_mask(image: Path, mask: Path | None) -> np.ndarray:
    """[H, W, 4] uint8: the image with the mask as alpha (white = object), or its own alpha."""
    try:
        with Image.open(image) as im:
            has_alpha = "A" in im.getbands()
            rgba = np.asarray(im.convert("RGBA"))
    except OSError as e:
        raise DatasetError(image, f"cannot read the image ({e})") from None
    if mask is None:
        if not has_alpha:
            raise DatasetError(image, "has no alpha channel: give the object's silhouette with --mask")
        return rgba
    try:
        with Image.open(mask) as m:
            alpha = np.asarray(m.convert("L"))
    except OSError as e:
        raise DatasetError(mask, f"cannot read the mask ({e})") from None
    if alpha.shape != rgba.shape[:2]:
        raise DatasetError(mask, f"mask is {alpha.shape[1]}x{alpha.shape[0]} but the image {image.name} is "
                                 f"{rgba.shape[1]}x{rgba.shape[0]}")  # fmt: skip
    out = rgba.copy()
    out[..., 3] = alpha
    return out


def write_single_view_dataset(out: Path, image: Path, mask: Path | None = None, *, elevation: float = 0.0,
                              fov: float = 40.0, radius: float = 2.5, size: int | None = None) -> Path:  # fmt: skip
    """Writes ``out/transforms_{train,test}.json`` and ``out/reference.png`` (RGBA, resized to
    ``size`` x ``size`` when given; a non-square image is refused). Returns ``out``."""
    rgba = rgba_with_mask(image, mask)
    h, w = rgba.shape[:2]
    if h != w:
        raise DatasetError(image, f"is {w}x{h}: lifting takes a square image (crop it around the object)")
    if (rgba[..., 3] > 127).sum() == 0:
        raise DatasetError(mask or image, "the silhouette is empty (no pixel of the object)")
    picture = Image.fromarray(rgba, "RGBA")
    if size is not None and size != w:
        picture = picture.resize((size, size), Image.Resampling.LANCZOS)
    return _write(out, picture, elevation, fov, radius)


def write_camera_only_dataset(out: Path, *, elevation: float = 0.0, fov: float = 40.0, radius: float = 2.5,
                              size: int = 64) -> Path:  # fmt: skip
    """The same one-view dataset with an empty (transparent) image: the camera frame a
    text-to-3D lift needs, whose image is never fitted (``reference_probability`` 0)."""
    return _write(out, Image.new("RGBA", (size, size)), elevation, fov, radius)


def _write(out: Path, picture: Image.Image, elevation: float, fov: float, radius: float) -> Path:
    out.mkdir(parents=True, exist_ok=True)
    picture.save(out / "reference.png")
    doc = {"camera_angle_x": math.radians(fov),  # square: the horizontal angle is the vertical one
           "frames": [{"file_path": "./reference", "transform_matrix": object_camera(elevation, 0.0, radius).tolist()}]}  # fmt: skip
    for split in ("train", "test"):
        (out / f"transforms_{split}.json").write_text(json.dumps(doc, indent=1))
    return out
