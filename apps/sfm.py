"""``splatfield sfm``: structure from motion (pycolmap) on a folder of photos or a video,
into a COLMAP capture that ``splatfield train`` reads. Each stage prints one line with its
counts and seconds, and shows a progress bar while it runs (on a terminal; elsewhere a line
with the time left every 30 s); the summary is also in ``<out>/sfm.json``."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Optional

import tyro
from typing_extensions import Annotated

from splatfield.scenes.config import at_least, require

from .console import PROG, bars, say, sfm_console
from .errors import require_exists
from .sfm_choices import SfmCameraModelName, SfmMatcherName


@dataclass(frozen=True)
class Sfm:
    """Structure from motion (pycolmap) on a folder of photos or a video: frames (the sharpest
    of each window), features, matching, incremental mapping. Writes a COLMAP capture
    (images/, sparse/0/, sfm.json) that `splatfield train` loads; `splatfield train
    IMAGES_OR_VIDEO` runs this step itself. The result is cached and reused."""

    source: Annotated[Path, tyro.conf.Positional, tyro.conf.arg(metavar="IMAGES_OR_VIDEO")]
    """A folder of photos (or a folder whose images/ holds them), or a video file."""
    out: Annotated[Optional[Path], tyro.conf.arg(metavar="DIR", help_behavior_hint="(default: the cache)")] = None
    """Output folder (default: <cache>/sfm/<hash of the input files and options>)."""
    matcher: SfmMatcherName = "auto"
    """Image pairs to match: exhaustive (every pair), sequential (neighbours in name order),
    retrieval (each image with its 20 most similar by a bag of visual words, plus the next 5
    when numbered names follow the capture), auto (a video: sequential; up to 100 photos:
    exhaustive; more: retrieval)."""
    camera_model: SfmCameraModelName = "SIMPLE_RADIAL"
    """COLMAP camera model fitted (distortion is removed when the capture is loaded)."""
    single_camera: bool = True
    """One shared camera for all images of a size (a phone capture); --no-single-camera: one per image."""
    frames: int = 150
    """Frames taken from a video."""
    max_size: int = 1600
    """Long side, in pixels, of the copies SfM runs on (the capture keeps full-size images)."""
    min_registered: float = 0.5
    """Fail when fewer than this fraction of the images can be registered."""

    def __post_init__(self) -> None:
        check_sfm_options(self.max_size, self.frames, self.min_registered)

    def options(self):
        from splatfield.data.sfm import SfmOptions

        return SfmOptions(matcher=self.matcher, camera_model=self.camera_model, single_camera=self.single_camera,
                          frames=self.frames, max_size=self.max_size, min_registered=self.min_registered)  # fmt: skip


def check_sfm_options(max_size: int, frames: int, min_registered: float) -> None:
    at_least(max_size, "max_size", 64)
    at_least(frames, "frames", 3)
    require(0.0 <= min_registered <= 1.0, "min_registered", f"must be in [0, 1] (got {min_registered})")


def run(cfg: Sfm) -> int:
    require_exists(cfg.source)
    from splatfield.data import sfm

    with bars() as opened:
        log, on_phase = sfm_console(opened, say)
        res = sfm.made_or_reused(cfg.source, cfg.out, cfg.options(), log=log, on_phase=on_phase)
    print(f"{PROG} sfm: {sfm.describe(res.summary)}; capture {res.out} (train it: {PROG} train {res.out}); "
          f"summary {res.out / 'sfm.json'}")  # fmt: skip
    return 0
