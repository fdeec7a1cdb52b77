"""How sharp a photo is: a score per image, to find motion-blurred or defocused frames.

The score is the variance of the 4-neighbour Laplacian (``4 g - g_left - g_right - g_up -
g_down``) of the grey image (Pillow's ``L``: ITU-R 601 luma, 0-255) once the image is
reduced with a box filter so that its long side is :data:`WORKING_SIZE` pixels. A blurred
frame has weak second derivatives, so a low variance. Scoring every image on one grid makes
the score independent of the image's size: the same photo resized to between a third of its
size and its full size (box or Lanczos filter, every size at least the working one) scores
within 15% (``tests/test_sharpness.py``), where the plain variance at the image's own size
grows 1.5-fold and more at half the size. An image smaller than the working size is scored
at its own size (blowing it up adds nothing to see).
It is the measure instant-ngp's ``colmap2nerf.py`` writes as a frame's ``sharpness`` in
``transforms.json``, except that it computes it at the full size: those scores are on
another scale, so a dataset's scores all come from one source (:func:`split_scores`).

JPEG files are decoded straight to grey at a reduced scale (the decoder's DCT scaling,
never below the working size; within 10% of the score of a full decode), which makes
scoring cost about a third of decoding the photo in full; files are scored on several
threads (:func:`scores`).

The rules (:func:`blurred`): an absolute floor on the score (``min_sharpness``, in the
units of the scores the log shows) and a relative one (``min_relative_sharpness`` F: below
F times the median of the training frames' scores). The relative rule is the one to reach
for: the score's scale depends on the scene's texture and the score's source, its ratio to
the median does not. numpy and Pillow only.
"""

from __future__ import annotations

import os
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
from PIL import Image

WORKING_SIZE = 512
"""Long side, in pixels, of the grey image the Laplacian is taken on."""
REPORT_RATIO = 0.5
"""Frames below this fraction of the median are reported as blurred where nothing drops them (SfM)."""
_NAMED = 5  # frames named in one log line before "and N more"


def _working_size(size: tuple[int, int], working: int = WORKING_SIZE) -> tuple[int, int]:
    w, h = size
    s = min(1.0, working / max(w, h))
    return max(1, round(w * s)), max(1, round(h * s))


def grey(image: Image.Image, working: int = WORKING_SIZE) -> np.ndarray:
    """The image as float32 grey [h, w] with its long side at most ``working`` pixels."""
    im = image if image.mode == "L" else image.convert("L")
    size = _working_size(im.size, working)
    if size != im.size:
        im = im.resize(size, Image.Resampling.BOX)
    return np.asarray(im, dtype=np.float32)


def laplacian_variance(g: np.ndarray) -> float:
    """Variance of the 4-neighbour Laplacian of a grey image (its border pixels left out)."""
    if g.shape[0] < 3 or g.shape[1] < 3:
        return 0.0
    lap = 4.0 * g[1:-1, 1:-1] - g[:-2, 1:-1] - g[2:, 1:-1] - g[1:-1, :-2] - g[1:-1, 2:]
    return float(lap.var(dtype=np.float64))


def sharpness(image: Image.Image | np.ndarray) -> float:
    """The score of a Pillow image or a uint8 array ([H, W] grey or [H, W, 3|4] RGB(A))."""
    if isinstance(image, np.ndarray):
        image = Image.fromarray(image[..., :3] if image.ndim == 3 else image)
    return laplacian_variance(grey(image))


def file_sharpness(path: str | os.PathLike[str]) -> float:
    """The score of an image file (OSError naming it, as ``filename``, when it cannot be read)."""
    try:
        with Image.open(path) as im:
            if im.format == "JPEG":  # decode at the smallest DCT scale that still covers the working size
                im.draft("L", _working_size(im.size))
            return sharpness(im)
    except OSError as e:
        if e.filename is None:
            e.filename = str(path)
        raise


def scores(paths: Sequence[str | os.PathLike[str]], threads: int | None = None) -> list[float]:
    """The scores of image files, in order; decoded on ``threads`` threads (default: the
    CPUs, at most 8; Pillow decodes without holding the GIL)."""
    n = min(len(paths), threads or min(8, os.cpu_count() or 1))
    if n <= 1:
        return [file_sharpness(p) for p in paths]
    with ThreadPoolExecutor(n) as pool:
        return list(pool.map(file_sharpness, paths))


def split_scores(image_paths: Sequence[Path], given: dict[Path, float] | None = None) -> tuple[list[float], str]:
    """(a score per image, where the scores come from): ``given`` (a dataset file's own
    scores, by image path) when it has one for every image, else computed here."""
    if given:
        found = [given.get(Path(p)) for p in image_paths]
        if all(s is not None for s in found):
            return [float(s) for s in found], "the dataset's own sharpness field"  # type: ignore[arg-type]
    return scores(image_paths), f"variance of the Laplacian at {WORKING_SIZE} px"


def blurred(values: Sequence[float], *, min_sharpness: float | None = None,
            min_relative_sharpness: float | None = None) -> list[int]:  # fmt: skip
    """Indices of the frames below either rule (None: that rule is off)."""
    if not values:
        return []
    floor = max(min_sharpness or 0.0, (min_relative_sharpness or 0.0) * float(np.median(values)))
    return [i for i, s in enumerate(values) if s < floor]


def number(v: float) -> str:
    """A score as the log writes it: ``4,267``, ``405``, ``23.3``, ``3.52``."""
    return f"{v:,.0f}" if abs(v) >= 100 else f"{v:.3g}"


def rule(min_sharpness: float | None, min_relative_sharpness: float | None, median: float) -> str:
    """The rules in words, as the log says them."""
    parts = []
    if min_sharpness is not None:
        parts.append(f"below {min_sharpness:g} (--min-sharpness)")
    if min_relative_sharpness is not None:
        parts.append(f"below {min_relative_sharpness:g} x the median {number(median)} "
                     f"= {number(min_relative_sharpness * median)} (--min-relative-sharpness)")  # fmt: skip
    return " or ".join(parts)


def named(names: Sequence[str], values: Sequence[float], indices: Sequence[int]) -> str:
    """``a.jpg (12.3), b.jpg (10.1) and 4 more``: the blurriest first."""
    order = sorted(indices, key=lambda i: values[i])
    listed = ", ".join(f"{names[i]} ({number(values[i])})" for i in order[:_NAMED])
    return listed + (f" and {len(order) - _NAMED} more" if len(order) > _NAMED else "")


def report_blurred(names: Sequence[str], values: Sequence[float], log: Callable[[str], None],
                   what: str = "images") -> list[int]:  # fmt: skip
    """Logs the frames below :data:`REPORT_RATIO` times the median (nothing when there are
    none); returns their indices."""
    low = blurred(values, min_relative_sharpness=REPORT_RATIO)
    if low:
        median = float(np.median(values))
        log(f"sharpness: {len(low)} of {len(values)} {what} look blurred (below {REPORT_RATIO:g} x the median "
            f"{number(median)}): {named(names, values, low)}; train with --min-relative-sharpness {REPORT_RATIO:g} "
            f"to leave them out")  # fmt: skip
    return low
