"""The photos of a folder made ready for SfM and for training.

Rules (each skip is reported once, as a warning listing the files):
- Only files with an image suffix count; other files (``.txt``, ``.DS_Store``, sidecars)
  and sub-folders are ignored.
- A file that cannot be decoded completely (truncated, corrupt) is skipped.
- A byte-identical copy of an earlier file (same SHA-256) is skipped: COLMAP would place the
  two at one pose and learn nothing from the second.
- EXIF orientation is applied (phones store portrait shots as rotated landscape pixels).
- Mixed resolutions: the most common size (after rotation) is the training size. Images of
  the same aspect ratio (within 1%) but another size are resized to it and keep a camera
  of their own in SfM (another size usually means another camera or zoom); images of another
  aspect ratio are skipped, since one training size is supported.
- Masks come from a ``masks/`` folder next to the photos (``x.jpg``: ``masks/x.jpg``,
  ``masks/x.jpg.png`` or ``masks/x.png``; white = keep) or from the alpha channel. They are
  also given to COLMAP, so no features are taken on masked-out pixels.

Outputs: full-size images in ``images/`` (byte copies when nothing had to change), masks in
``masks/<name>.png``, and SfM copies at most ``max_size`` pixels on the long side (grouped in
one folder per original size when sizes are mixed) with their masks; and a sharpness score
per image (:mod:`.sharpness`), to report blurred ones. The SfM copies' names have no white
space (COLMAP's list of image pairs separates the two names by a space).
"""

from __future__ import annotations

import hashlib
import io
import re
import shutil
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps

from .dataset import DatasetError
from .sfm_progress import Phase, no_progress
from .sharpness import sharpness

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp")
_EXIF_ORIENTATION = 0x0112


def image_files(folder: Path) -> tuple[list[Path], list[Path]]:
    """(image files, other files) directly in ``folder``, sorted by name; hidden files ignored."""
    images, other = [], []
    for p in sorted(folder.iterdir()):
        if p.name.startswith(".") or not p.is_file():
            continue
        (images if p.suffix.lower() in IMAGE_SUFFIXES else other).append(p)
    return images, other


def photo_folder(path: Path) -> Path | None:
    """``path`` when it holds images, else ``path/images`` when that does, else None."""
    for d in (path, path / "images"):
        if d.is_dir() and image_files(d)[0]:
            return d
    return None


def sfm_size(size: tuple[int, int], max_size: int) -> tuple[int, int]:
    """The size SfM sees: the long side at most ``max_size``, the aspect ratio kept."""
    W, H = size
    s = min(1.0, max_size / max(W, H))
    return max(1, round(W * s)), max(1, round(H * s))


@dataclass
class Prepared:
    """What :func:`prepare_images` wrote and skipped."""

    names: list[str]  # file names in images/, sorted
    sfm_names: dict[str, str]  # name in images/ -> name under the SfM folder
    size: tuple[int, int]  # every image in images/ is this size
    sfm_size: tuple[int, int]
    groups: int  # cameras SfM gets with a shared camera per original size
    masks: bool
    skipped: dict[str, list[str]] = field(default_factory=dict)  # reason -> file names
    rotated: list[str] = field(default_factory=list)  # EXIF orientation applied
    resized: list[str] = field(default_factory=list)  # to the common size
    ignored: list[str] = field(default_factory=list)  # not image files
    sharpness: dict[str, float] = field(default_factory=dict)  # name -> score (.sharpness), at the training size


@dataclass
class _Probe:
    path: Path
    size: tuple[int, int]  # after EXIF rotation
    orientation: int
    alpha: bool


def _mask_file(masks: Path, name: str) -> Path:
    stem = Path(name).stem
    for c in (masks / name, masks / (name + ".png"), masks / (stem + ".png")):
        if c.is_file():
            return c
    raise DatasetError(masks, f"no mask for image {name} (looked for {name}, {name}.png, {stem}.png)")


def _save(im: Image.Image, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.suffix.lower() in (".jpg", ".jpeg"):
        im.convert("RGB").save(path, quality=95)
    else:
        im.save(path)


def prepare_images(
    files: list[Path],
    out_images: Path,
    out_masks: Path,
    sfm_images: Path,
    sfm_masks: Path,
    *,
    max_size: int,
    masks_dir: Path | None = None,
    on_phase: Phase = no_progress,
) -> Prepared:
    """Checks ``files`` and writes the training and SfM copies (see the module docstring);
    reports the phases "reading images" and "preparing images" to ``on_phase``."""
    skipped: dict[str, list[str]] = {"unreadable": [], "duplicate": [], "other aspect ratio": []}
    probes: list[_Probe] = []
    seen: dict[str, str] = {}
    tick = on_phase("reading images", len(files))
    for p in files:
        tick(1)
        try:
            data = p.read_bytes()
            digest = hashlib.sha256(data).hexdigest()
            if digest in seen:
                skipped["duplicate"].append(f"{p.name} (= {seen[digest]})")
                continue
            probe = _probe_bytes(p, data)
        except (OSError, SyntaxError, ValueError, Image.DecompressionBombError):
            skipped["unreadable"].append(p.name)
            continue
        seen[digest] = p.name
        probes.append(probe)
    if not probes:
        return Prepared([], {}, (0, 0), (0, 0), 0, False, skipped)

    size = Counter(pr.size for pr in probes).most_common(1)[0][0]
    aspect = size[0] / size[1]
    kept = []
    for pr in probes:
        if abs(pr.size[0] / pr.size[1] - aspect) > 0.01 * aspect:
            skipped["other aspect ratio"].append(f"{pr.path.name} ({pr.size[0]}x{pr.size[1]})")
        else:
            kept.append(pr)
    sizes = sorted({pr.size for pr in kept})
    small = sfm_size(size, max_size)
    use_masks = masks_dir is not None or any(pr.alpha for pr in kept)
    out = Prepared([], {}, size, small, len(sizes), use_masks, skipped)
    taken: set[str] = set()
    tick = on_phase("preparing images", len(kept))
    for pr in kept:
        tick(1)
        name = pr.path.name
        sub = "" if len(sizes) == 1 else f"{pr.size[0]}x{pr.size[1]}/"  # one SfM camera per original size
        sfm_name = _without_spaces(sub + (name if name.lower().endswith((".jpg", ".jpeg")) else name + ".jpg"), taken)
        with Image.open(pr.path) as raw:
            im = ImageOps.exif_transpose(raw) if pr.orientation != 1 else raw.copy()
        if pr.orientation != 1:
            out.rotated.append(name)
        if pr.size != size:
            im = im.resize(size, Image.Resampling.LANCZOS)
            out.resized.append(name)
        if pr.orientation == 1 and pr.size == size:
            out_images.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(pr.path, out_images / name)  # exact bytes: nothing to change
        else:
            _save(im, out_images / name)
        keep = None  # [H, W] bool at the training size
        if masks_dir is not None:
            with Image.open(_mask_file(masks_dir, name)) as m:
                keep = np.asarray(m.convert("L").resize(size, Image.Resampling.NEAREST)) >= 128
        elif pr.alpha:
            keep = np.asarray(im.convert("RGBA"))[..., 3] >= 128
        if use_masks:
            full = keep if keep is not None else np.ones(size[::-1], dtype=bool)
            _save(Image.fromarray(full.astype(np.uint8) * 255), out_masks / f"{name}.png")
            # COLMAP's convention: the mask of <name> is <name>.png, black = no features
            _save(Image.fromarray(full.astype(np.uint8) * 255).resize(small, Image.Resampling.NEAREST),
                  sfm_masks / f"{sfm_name}.png")  # fmt: skip
        _save(im.convert("RGB").resize(small, Image.Resampling.LANCZOS) if small != size else im.convert("RGB"),
              sfm_images / sfm_name)  # fmt: skip
        out.names.append(name)
        out.sfm_names[name] = sfm_name
        out.sharpness[name] = sharpness(im)
    return out


def _without_spaces(name: str, taken: set[str]) -> str:
    """``name`` with white space replaced by ``_`` (and ``~2``... before the suffix if that is
    taken); records it in ``taken``."""
    base = re.sub(r"\s", "_", name)
    stem, dot, suffix = base.rpartition(".")
    out, k = base, 1
    while out in taken:
        k += 1
        out = f"{stem}~{k}{dot}{suffix}"
    taken.add(out)
    return out


def _probe_bytes(path: Path, data: bytes) -> _Probe:
    """Decodes the whole file (a truncated JPEG fails only on its last rows)."""
    if not data:
        raise OSError("empty file")
    with Image.open(io.BytesIO(data)) as im:
        im.load()
        orientation = int(im.getexif().get(_EXIF_ORIENTATION, 1) or 1)
        w, h = im.size
        alpha = im.mode in ("RGBA", "LA", "PA") or (im.mode == "P" and "transparency" in im.info)
    if orientation in (5, 6, 7, 8):  # transposed: width and height swap
        w, h = h, w
    return _Probe(path, (w, h), orientation, alpha)
