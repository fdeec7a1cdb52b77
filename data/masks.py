"""Per-image masks: where they are found, and what they mean.

Found (``masks="auto"``) in the dataset's ``masks/`` folder, or in a folder given
(``masks=DIR``), for each image under the first of these conventions that has a file (for
image ``IMG_1.JPG``): ``<name>`` (``IMG_1.JPG``), ``<name>.png`` (``IMG_1.JPG.png``, COLMAP's),
``<stem>.png`` (``IMG_1.png``), ``<stem>_mask.*`` (``IMG_1_mask.png``, NeRD's). Masks a
transforms.json names per frame (``mask_path``) come first. White = kept / the object.

Two meanings (``mask_mode``):

- ``ignore``: black pixels are left out of the loss (people, cars, sky: what should not be
  reconstructed). Metrics cover the white pixels.
- ``object``: the mask is the object's silhouette, as a Blender RGBA image's alpha: the
  image is composited over the background (image * m + background * (1 - m)), every pixel
  counts, and the rendered alpha is trained towards the mask (opacity outside it to zero).
  Metrics cover the whole image against that composite.

``auto`` picks ``object`` for NeRD's ``<stem>_mask`` naming (it marks object captures) and
``ignore`` otherwise (COLMAP's and nerfstudio's masks exclude transients); the dataset's
``masks_note`` says which was found and chosen, for the run's log.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Literal, Sequence, Union

from .dataset import Dataset, DatasetError

MaskMode = Literal["auto", "ignore", "object"]
MaskSource = Union[Literal["auto", "none"], Path]
MASK_SUFFIXES = (".png", ".jpg", ".jpeg", ".PNG", ".JPG", ".JPEG")
OBJECT_BACKGROUND = (1.0, 1.0, 1.0)  # what object masks composite over when the dataset has none

# (name in the log, candidate file names of image p); the first that covers every image wins
CONVENTIONS: tuple[tuple[str, Callable[[Path], Sequence[str]]], ...] = (
    ("<name>", lambda p: [p.name]),
    ("<name>.png", lambda p: [p.name + ".png"]),
    ("<stem>.png", lambda p: [p.stem + ".png"]),
    ("<stem>_mask.*", lambda p: [p.stem + "_mask" + s for s in MASK_SUFFIXES]),
)
OBJECT_CONVENTIONS = frozenset({"<stem>_mask.*"})


@dataclass(frozen=True)
class MaskFiles:
    paths: list[Path]  # one per image, in the images' order
    convention: str  # how they were found, for the log
    folder: Path | None  # where (None: named by the dataset file itself)


def find_masks(folder: Path, image_paths: Sequence[Path]) -> MaskFiles:
    """The masks in ``folder`` for ``image_paths``: for each image, the first convention
    (in :data:`CONVENTIONS`' order) that has a file for it; :class:`DatasetError` naming the
    first image none covers."""
    found, used = [], []
    for p in image_paths:
        hit = next(((name, folder / c) for name, cs in CONVENTIONS for c in cs(p) if (folder / c).is_file()), None)
        if hit is None:
            looked = ", ".join(name for name, _ in CONVENTIONS)
            raise DatasetError(folder, f"no mask for image {p.name} under any naming ({looked}); "
                                       "--masks none trains without masks")  # fmt: skip
        if hit[0] not in used:
            used.append(hit[0])
        found.append(hit[1])
    return MaskFiles(found, " and ".join(used), folder)


def resolve_mode(mode: MaskMode, files: MaskFiles) -> tuple[Literal["ignore", "object"], str]:
    """The mask mode to use and why (for the log)."""
    if mode != "auto":
        return mode, f"--mask-mode {mode}"
    if files.convention in OBJECT_CONVENTIONS:  # every mask named so
        return "object", f"auto: {files.convention} is an object capture's naming; --mask-mode ignore to change"
    return "ignore", "auto: masks exclude pixels; --mask-mode object if they are an object's silhouette"


def with_masks(ds: Dataset, masks: MaskSource = "auto", mode: MaskMode = "auto") -> Dataset:
    """``ds`` with its masks found (``masks``: auto = the dataset file's own, else its
    ``masks/`` folder if there is one; none; or a folder) and their meaning set (``mode``);
    an object mask gives the dataset a background (white) when it has none."""
    splits = [ds.train, ds.test]
    if masks == "none":
        for s in splits:
            s.mask_paths = None
        return ds
    images = [p for s in splits for p in s.image_paths]
    if masks == "auto" and images and all(s.mask_paths is not None for s in splits if len(s)):
        files = MaskFiles([p for s in splits for p in s.mask_paths or []], "the dataset file's mask paths", None)
    else:
        folder = ds.root / "masks" if masks == "auto" else Path(masks)
        if not folder.is_dir():
            if masks == "auto":
                return ds
            raise DatasetError(folder, "no such folder of masks (--masks)")
        files = find_masks(folder, images)
        at = 0
        for s in splits:
            s.mask_paths, at = files.paths[at : at + len(s)], at + len(s)
    chosen, why = resolve_mode(mode, files)
    for s in splits:
        s.mask_mode = chosen
    if chosen == "object" and ds.background is None:
        ds.background = OBJECT_BACKGROUND
        for s in splits:
            s.background = OBJECT_BACKGROUND
    where = f"in {files.folder}" if files.folder is not None else "named by the dataset"
    meaning = "the object's silhouette (alpha supervised; metrics over whole images)" if chosen == "object" else \
        "pixels to ignore (metrics over the kept pixels)"
    ds.masks_note = f"masks: {len(files.paths)} {where} as {files.convention}, used as {meaning} ({why})"
    return ds
