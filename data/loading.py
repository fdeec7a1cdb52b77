"""``load(path)``: detects the format and hands the path to its loader, through SfM first
for a folder of photos or a video."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Callable, Literal

import numpy as np

from . import sharpness
from .blender import load_blender
from .colmap import load_colmap
from .dataset import Dataset, DatasetError
from .detect import detect_format
from .llff import load_llff
from .masks import MaskMode, MaskSource
from .transforms_json import frame_sharpness, load_transforms_json

LensDistortion = Literal["given", "ignore"]


def load(
    path: str | Path, *, downscale: float = 1.0, test_every: int = 8, cache_dir: str | Path | None = None,
    masks: MaskSource = "auto", mask_mode: MaskMode = "auto",
    min_sharpness: float | None = None, min_relative_sharpness: float | None = None,
    lens_distortion: LensDistortion = "given", log: Callable[[str], None] | None = None,
) -> Dataset:
    """Loads the dataset at ``path`` (a folder, or its transforms/poses file).

    ``downscale`` divides the image size (cameras follow); ``test_every`` puts every n-th
    frame in the test split where the format has no split of its own (0: none);
    ``cache_dir`` overrides where downscaled/undistorted images are cached; ``masks`` and
    ``mask_mode``: where masks come from and what they mean (:mod:`.masks`). A folder of
    plain photos or a video goes through SfM first (:func:`.sfm.cached_or_run`, reused
    from the cache when done before). ``min_sharpness`` / ``min_relative_sharpness``: the
    training frames below either rule are dropped as blurred (:func:`drop_blurred`), and
    ``log`` is told how many and which. ``lens_distortion="ignore"`` treats distorted cameras
    as pinhole (:func:`without_distortion`).
    """
    from .sfm import cached_or_run, input_kind

    if input_kind(path) is not None:
        path = cached_or_run(path).out
    fmt, p = detect_format(path)
    opts = dict(downscale=downscale, test_every=test_every, cache_dir=cache_dir, masks=masks, mask_mode=mask_mode)
    if fmt == "blender":
        dataset = load_blender(p, downscale=downscale, cache_dir=cache_dir)
    elif fmt == "transforms_json":
        dataset = load_transforms_json(p, **opts)
    elif fmt == "colmap":
        dataset = load_colmap(p, **opts)
    else:
        dataset = load_llff(p, **opts)
    if lens_distortion == "ignore":
        dataset = without_distortion(dataset, log)
    if min_sharpness is None and min_relative_sharpness is None:
        return dataset
    given = frame_sharpness(p) if fmt == "transforms_json" else None
    return drop_blurred(dataset, min_sharpness=min_sharpness, min_relative_sharpness=min_relative_sharpness,
                        given=given, log=log)  # fmt: skip


def without_distortion(dataset: Dataset, log: Callable[[str], None] | None = None) -> Dataset:
    """``dataset`` with its images taken as they are on disk (pinhole cameras, same K): for a
    calibration whose distortion coefficients do not fit the photos. ``log`` gets one line
    naming what was dropped."""
    dropped = []
    splits = {}
    for name in ("train", "test"):
        split = getattr(dataset, name)
        src = split.source_cameras
        if src is not None and src.model != "pinhole":
            dropped.append((src.model, src.distortion))
            splits[name] = replace(split, source_cameras=replace(src, model="pinhole", distortion=None))
    if log is not None:
        if dropped:
            model, coeffs = dropped[0]
            first = " ".join(f"{float(v):.4g}" for v in coeffs[0]) if coeffs is not None and len(coeffs) else "-"
            log(f"lens distortion: ignored (--lens-distortion ignore): the {model} coefficients ({first} for the "
                f"first camera) are not applied; images are used as they are on disk")  # fmt: skip
        else:
            log("lens distortion: --lens-distortion ignore has nothing to ignore (the cameras are pinhole)")
    return replace(dataset, **splits)


def drop_blurred(dataset: Dataset, *, min_sharpness: float | None = None, min_relative_sharpness: float | None = None,
                 given: dict[Path, float] | None = None, log: Callable[[str], None] | None = None) -> Dataset:  # fmt: skip
    """``dataset`` without the training frames whose sharpness (:mod:`.sharpness`: ``given``,
    a dataset file's own scores by image path, when it has one for every training image, else
    computed) is below ``min_sharpness`` or below ``min_relative_sharpness`` times the median
    of the training frames'. The test frames are kept. ``log`` gets one line: the rule, the
    scores' source, how many frames were dropped and the blurriest of them. DatasetError when
    every training frame would go."""
    train = dataset.train
    if len(train) == 0:
        return dataset
    try:
        values, source = sharpness.split_scores(train.image_paths, given)
    except OSError as e:
        why = f"cannot read the image to score its sharpness ({e.strerror or e})"
        raise DatasetError(e.filename or dataset.root, why) from None
    median = float(np.median(values))
    rule = sharpness.rule(min_sharpness, min_relative_sharpness, median)
    drop = sharpness.blurred(values, min_sharpness=min_sharpness, min_relative_sharpness=min_relative_sharpness)
    n = len(train)
    if len(drop) == n:
        lo, hi = sharpness.number(min(values)), sharpness.number(max(values))
        raise DatasetError(dataset.root, f"every one of the {n} training frames has sharpness {rule} (they range "
                                         f"from {lo} to {hi}; score: {source})")  # fmt: skip
    names = [p.name for p in train.image_paths]
    if log is not None and drop:
        log(f"blurred frames: dropped {len(drop)} of {n} training frames with sharpness {rule}: "
            f"{sharpness.named(names, values, drop)}; score: {source}; the test views are kept")  # fmt: skip
    elif log is not None:
        low = min(range(n), key=lambda i: values[i])
        log(f"blurred frames: none of the {n} training frames has sharpness {rule}; the lowest: "
            f"{names[low]} ({sharpness.number(values[low])}); score: {source}")  # fmt: skip
    if not drop:
        return dataset
    gone = set(drop)
    return replace(dataset, train=train.frames([i for i in range(n) if i not in gone]))
