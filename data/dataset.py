"""`Dataset` and `Split`: posed images, loaded lazily, shared by every format loader.

Conventions:
- Cameras are OpenCV (x right, y down, z forward), float64, pinhole: distorted captures are
  undistorted at load time (same K, same size) and the cameras say ``model="pinhole"``.
  Call ``split.cameras.to(dtype=torch.float32)`` for rendering.
- ``Split.image(i)`` is ``torch.uint8 [H, W, 3]``; ``Split.mask(i)`` is ``torch.bool [H, W]``
  (True = keep) or None.
- Images are decoded only when asked for. Downscaled and/or undistorted images are produced
  once with Pillow (box filter) and cached as PNG under
  ``<cache root>/images/<hash of source folder + factor + undistortion params>/<name>.png``;
  the cache root is ``cache_dir``, else ``$SPLATFIELD_CACHE``, else
  ``$XDG_CACHE_HOME/splatfield`` (``~/.cache/splatfield``). Writes are atomic.
- Errors are :class:`DatasetError` with a one-line message ``<file>: <problem>``.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
from PIL import Image
from torch import Tensor

from splatfield.render.camera import Cameras

from .undistort import is_identity, undistort_image

DatasetFormat = Literal["blender", "transforms_json", "colmap", "llff"]


class DatasetError(ValueError):
    """A dataset cannot be read. The message is one line: ``<file>: <problem>``."""

    def __init__(self, file: str | os.PathLike[str], problem: str) -> None:
        self.file = str(file)
        self.problem = " ".join(str(problem).split())  # one line, whatever the cause says
        super().__init__(f"{self.file}: {self.problem}")


def cache_root() -> Path:
    """Same rule as ``splatfield.render._ext.cache_root`` (SPLATFIELD_CACHE overrides)."""
    root = os.environ.get("SPLATFIELD_CACHE") or os.path.join(
        os.environ.get("XDG_CACHE_HOME", os.path.expanduser("~/.cache")), "splatfield"
    )
    return Path(root)


def read_json(path: Path) -> Any:
    """Parses a JSON file; a missing or malformed file raises DatasetError naming it."""
    try:
        with open(path, encoding="utf-8") as f:
            return json.load(f)
    except FileNotFoundError:
        raise DatasetError(path, "file not found") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise DatasetError(path, f"malformed JSON ({e})") from None


def image_size(path: Path) -> tuple[int, int]:
    """(width, height) from the file header, without decoding the pixels."""
    try:
        with Image.open(path) as im:
            return im.size
    except FileNotFoundError:
        raise DatasetError(path, "image not found") from None
    except OSError as e:
        raise DatasetError(path, f"cannot read image ({e})") from None


def check_sizes(paths: list[Path], width: int, height: int, what: str) -> None:
    """Every image header must say ``width`` x ``height`` (one size per split)."""
    for p in paths:
        if image_size(p) != (width, height):
            w, h = image_size(p)
            raise DatasetError(p, f"image is {w}x{h} but {what} is {width}x{height}; sizes must agree within a split")


def _to_pil(a: Tensor, mode: str) -> Image.Image:
    arr = a.round().clamp(0, 255).to(torch.uint8).numpy()
    return Image.fromarray(arr[..., 0] if mode == "L" else arr, mode=mode)


@dataclass
class Split:
    """One split (train or test): pinhole cameras and their images, loaded lazily.

    ``source_cameras`` are the cameras of the files on disk (full size, possibly distorted);
    ``cameras`` those of the images returned (pinhole, downscaled).
    """

    cameras: Cameras
    image_paths: list[Path]
    mask_paths: list[Path] | None = None
    background: tuple[float, float, float] | None = None
    source_cameras: Cameras | None = field(default=None, repr=False)
    mask_mode: Literal["ignore", "object"] = "ignore"  # what mask_paths mean (data/masks.py)
    cache_dir: Path | None = field(default=None, repr=False)

    def __len__(self) -> int:
        return len(self.image_paths)

    def frames(self, keep: list[int]) -> Split:
        """The frames ``keep`` of this split: its cameras and every per-frame list."""
        n = len(self)
        changes: dict[str, Any] = {}
        for f in fields(self):
            v = getattr(self, f.name)
            if isinstance(v, Cameras) and len(v) == n:
                changes[f.name] = v[torch.as_tensor(keep, dtype=torch.long)]
            elif isinstance(v, list) and len(v) == n:
                changes[f.name] = [v[i] for i in keep]
        return replace(self, **changes)

    def _processed(self, i: int, path: Path) -> Image.Image:
        """The file at ``path`` as it looks through camera i: undistorted, resized."""
        src = self.source_cameras if self.source_cameras is not None else self.cameras
        out_size = (self.cameras.width, self.cameras.height)
        coeffs = None if src.distortion is None else src.distortion[i]
        undistort = not is_identity(src.model, coeffs)
        resize = out_size != (src.width, src.height)
        if not undistort and not resize:
            return _open(path, (src.width, src.height))
        key = repr(
            (str(path.resolve().parent), out_size, (src.width, src.height), src.model if undistort else "pinhole",
             [round(float(v), 12) for v in (src.fx[i], src.fy[i], src.cx[i], src.cy[i])] if undistort else None,
             None if not undistort else [round(float(v), 12) for v in coeffs])
        )
        root = self.cache_dir if self.cache_dir is not None else cache_root()
        folder = Path(root) / "images" / hashlib.sha256(key.encode()).hexdigest()[:16]
        cached = folder / (path.name + ".png")
        if cached.exists():
            return _open(cached, out_size)
        im = _open(path, (src.width, src.height))
        if undistort:
            a = torch.from_numpy(np.asarray(im, dtype=np.float32))
            a = a[..., None] if a.dim() == 2 else a
            a = undistort_image(a, float(src.fx[i]), float(src.fy[i]), float(src.cx[i]), float(src.cy[i]), src.model, coeffs)
            im = _to_pil(a, im.mode)
        if resize:
            im = im.resize(out_size, Image.Resampling.BOX)
        folder.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=folder, suffix=".tmp.png")
        try:
            with os.fdopen(fd, "wb") as f:
                im.save(f, format="PNG")
            os.replace(tmp, cached)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
        return im

    def _rgba(self, i: int) -> Image.Image:
        return self._processed(i, self.image_paths[i])

    def _mask_file(self, i: int) -> np.ndarray:  # [H, W] uint8
        """Mask i as the image through its camera (one line if its size is not the image's)."""
        path, image = self.mask_paths[i], self.image_paths[i]  # type: ignore[index]
        src = self.source_cameras if self.source_cameras is not None else self.cameras
        try:
            with Image.open(path) as m:
                size = m.size
        except FileNotFoundError:
            raise DatasetError(path, "mask not found") from None
        except OSError as e:
            raise DatasetError(path, f"cannot read mask ({e})") from None
        if size != (src.width, src.height):
            raise DatasetError(path, f"mask is {size[0]}x{size[1]} but its image {image.name} is {src.width}x{src.height}")
        return np.asarray(self._processed(i, path).convert("L"))

    def image(self, i: int) -> Tensor:  # [H, W, 3] uint8
        """Image i; RGBA, or an image with an object mask, is composited over ``background``;
        else the alpha is dropped (see mask)."""
        im = self._rgba(i)
        if self.mask_mode == "object" and self.mask_paths is not None and self.background is not None:
            a = np.asarray(im.convert("RGB"))
            alpha = self._mask_file(i)[..., None]
        elif im.mode != "RGBA":
            return torch.from_numpy(np.array(im.convert("RGB")))
        else:
            a = np.asarray(im)
            if self.background is None:
                return torch.from_numpy(np.ascontiguousarray(a[..., :3]))
            alpha = a[..., 3:]
        rgb = a[..., :3].astype(np.float32)
        alpha = alpha.astype(np.float32) / 255.0
        bg = np.asarray(self.background, dtype=np.float32) * 255.0
        out = rgb * alpha + bg * (1.0 - alpha)
        return torch.from_numpy(np.clip(np.rint(out), 0, 255).astype(np.uint8))

    def silhouette(self, i: int) -> Tensor | None:  # [H, W] uint8
        """The object's coverage per pixel (0..255) of an object mask; None otherwise."""
        if self.mask_mode == "object" and self.mask_paths is not None:
            return torch.from_numpy(self._mask_file(i).copy())
        return None

    def mask(self, i: int) -> Tensor | None:  # [H, W] bool
        """The pixels the loss counts: an (ignore) mask file when there is one, else the alpha
        channel when it is not composited; None: all of them."""
        if self.mask_paths is not None:
            if self.mask_mode == "object":
                return None
            return torch.from_numpy(self._mask_file(i) >= 128)
        if self.background is None:
            im = self._rgba(i)
            if im.mode == "RGBA":
                return torch.from_numpy(np.asarray(im)[..., 3] >= 128)
        return None


def _open(path: Path, size: tuple[int, int]) -> Image.Image:
    """Decodes an image as RGB, RGBA or L; checks it has the size the cameras say."""
    try:
        with Image.open(path) as im:
            im.load()
            if im.mode in ("RGBA", "LA", "PA") or (im.mode == "P" and "transparency" in im.info):
                im = im.convert("RGBA")
            elif im.mode == "L":
                im = im.convert("L")
            else:
                im = im.convert("RGB")
    except FileNotFoundError:
        raise DatasetError(path, "image not found") from None
    except OSError as e:
        raise DatasetError(path, f"cannot read image ({e})") from None
    if im.size != size:
        raise DatasetError(path, f"image is {im.size[0]}x{im.size[1]} but its camera says {size[0]}x{size[1]}")
    return im


@dataclass
class Dataset:
    """A posed capture: train/test splits, background, optional initial points."""

    name: str
    root: Path
    format: DatasetFormat
    train: Split
    test: Split
    background: tuple[float, float, float] | None = None
    points: Tensor | None = None  # [P, 3] float
    point_colors: Tensor | None = None  # [P, 3] uint8
    bounds: tuple[tuple[float, float, float], tuple[float, float, float]] | None = None  # the capture's own box (lo, hi)
    masks_note: str | None = None  # where the masks came from and what they mean, for the log

    def scene_extent(self) -> float:
        """1.1 x the largest distance of a train camera centre from their mean (as 3DGS). With
        one camera (or all at one place: a single-view capture, ``lift``) that is 0, which would
        freeze the Gaussians' positions (their learning rate is proportional): then 1.1 x the
        camera's distance from the world origin, where a single-view capture puts its object."""
        c = self.train.cameras.centers
        if c.shape[0] == 0:
            c = self.test.cameras.centers
        if c.shape[0] == 0:
            return 1.0
        spread = float(1.1 * (c - c.mean(dim=0)).norm(dim=-1).max())
        if spread > 1e-9:
            return spread
        return float(1.1 * c[0].norm()) or 1.0


def make_split(
    world_to_camera: Tensor,  # [N, 4, 4] OpenCV
    fx: Tensor,  # [N]
    fy: Tensor,  # [N]
    cx: Tensor,  # [N]
    cy: Tensor,  # [N]
    width: int,
    height: int,
    model: str,
    distortion: Tensor | None,  # [N, D]
    image_paths: list[Path],
    indices: list[int],
    *,
    mask_paths: list[Path] | None = None,
    downscale: float = 1.0,
    background: tuple[float, float, float] | None = None,
    cache_dir: Path | None = None,
) -> Split:
    """Selects ``indices`` and builds the split: source cameras as on disk, output cameras
    pinhole and scaled by ``1 / downscale``."""
    if downscale <= 0:
        raise ValueError(f"downscale must be positive, got {downscale}")
    idx = torch.as_tensor(indices, dtype=torch.long)
    f64 = dict(dtype=torch.float64)
    if distortion is not None and is_identity(model, distortion):
        model, distortion = "pinhole", None
    if model == "pinhole":
        distortion = None
    src = Cameras(
        world_to_camera.to(**f64)[idx], fx.to(**f64)[idx], fy.to(**f64)[idx], cx.to(**f64)[idx], cy.to(**f64)[idx],
        int(width), int(height), model=model,  # type: ignore[arg-type]
        distortion=None if distortion is None else distortion.to(**f64)[idx],
    )
    out = Cameras(src.world_to_camera, src.fx, src.fy, src.cx, src.cy, src.width, src.height)
    if downscale != 1.0:
        out = out.scale(1.0 / downscale)
    return Split(
        cameras=out,
        image_paths=[image_paths[i] for i in indices],
        mask_paths=None if mask_paths is None else [mask_paths[i] for i in indices],
        background=background,
        source_cameras=src,
        cache_dir=None if cache_dir is None else Path(cache_dir),
    )


def every_nth_split(n: int, test_every: int) -> tuple[list[int], list[int]]:
    """(train, test) indices: frame i is test when ``i % test_every == 0`` (3DGS's LLFF hold);
    ``test_every <= 0`` puts everything in train."""
    if test_every <= 0:
        return list(range(n)), []
    test = [i for i in range(n) if i % test_every == 0]
    train = [i for i in range(n) if i % test_every != 0]
    return train, test


def drop_missing(paths: list[Path], listing: Path, what: str = "frames") -> list[int]:
    """Indices of ``paths`` that exist; warns once, counting the missing ones."""
    keep = [i for i, p in enumerate(paths) if p.is_file()]
    missing = len(paths) - len(keep)
    if missing:
        import warnings

        warnings.warn(
            f"{listing}: {missing} of {len(paths)} {what} list a missing image; skipped "
            f"(first: {next(p for p in paths if not p.is_file())})",
            stacklevel=3,
        )
    return keep
