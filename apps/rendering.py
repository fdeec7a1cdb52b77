"""What ``splatfield render`` does: novel views of a trained scene, as a video or frames,
and the test views with their metrics.

The source is a run directory (its latest checkpoint, the scene ``splatfield eval``
measures) or a splat file of any supported format (ply from other trainers, splat,
compressed ply, spz, SOG). Camera paths: an orbit or a spiral around the scene, a smooth
path through the training cameras, or a nerfstudio ``camera_path.json``. Nothing in the
run directory is changed: outputs are added, and an existing output is never overwritten.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import TYPE_CHECKING, Callable, Literal

import numpy as np
import torch

from splatfield import data as sfdata
from splatfield.render import Cameras, camera_paths
from splatfield.scenes.checkpoint import write_json_atomic
from splatfield.scenes.evaluate import evaluate
from splatfield.scenes.run import RunError, numbered_output

from .media import save_png, to_uint8, write_video
from .sources import SceneSource

if TYPE_CHECKING:
    from splatfield.scenes.parallel import DataParallel

PathKind = Literal["orbit", "spiral", "interp"]


# ----------------------------------------------------------------------------- camera paths


def path_cameras(src: SceneSource, kind: PathKind, frames: int, size: tuple[int, int] | None) -> Cameras:
    """``frames`` cameras of an orbit, a spiral or a path through the training cameras."""
    if src.dataset is not None:
        train = src.dataset.train.cameras.to(dtype=torch.float64)
        W, H = size or (train.width, train.height)
        fov_y = math.degrees(2 * math.atan(0.5 * train.height / float(train.fy.median())))
        if kind == "interp":
            keys = train.scale(W / train.width) if (W, H) != (train.width, train.height) else train
            if (keys.width, keys.height) != (W, H):
                raise ValueError(f"--size {W} {H} must keep the training cameras' aspect ratio for --path interp")
            return camera_paths.interpolate(keys, frames, loop=True).to(dtype=torch.float32)
        centre = sfdata.look_at_centre(train)
        up, radius, height = camera_paths.scene_frame(train, centre)
    else:
        if kind == "interp":
            raise ValueError("--path interp follows the training cameras: give a run directory, not a bare file")
        W, H = size or (512, 512)
        fov_y = 50.0
        centre, radius = camera_paths.ring_around(src.scene.points())
        up, height = torch.tensor([0.0, 0.0, 1.0], dtype=torch.float64), 0.3 * radius
    swing = 0.5 * abs(height) + 0.15 * radius if kind == "spiral" else 0.0
    return camera_paths.orbit(centre, up, radius, height, frames, fov_y=fov_y, width=W, height_px=H,
                              height_swing=swing).to(dtype=torch.float32)  # fmt: skip


# ----------------------------------------------------------------------------- outputs


def render_frames(
    src: SceneSource, cameras: Cameras, on_frame: Callable[[int, np.ndarray], None]
) -> None:
    for i in range(len(cameras)):
        on_frame(i, to_uint8(src.scene.render(cameras[i : i + 1], background=src.background).image[0]))


def fresh_output(path: Path) -> None:
    if path.exists():
        raise RunError(path, "exists already (outputs are never overwritten; choose another --out)")
    if not path.parent.is_dir():
        raise RunError(path, f"folder {path.parent} does not exist")


def render_path(src: SceneSource, cameras: Cameras, out: Path, fps: float,
                progress: Callable[[int], None] | None = None) -> int:  # fmt: skip
    """Renders ``cameras`` into ``out``: an MP4 when it ends in .mp4, else a folder of PNGs.
    Returns the number of frames written."""
    tick = progress or (lambda n: None)
    if out.suffix.lower() == ".mp4":
        def produce(on_frame: Callable[[int, np.ndarray], None]) -> None:
            render_frames(src, cameras, lambda i, rgb: (on_frame(i, rgb), tick(1)))

        return write_video(out, (cameras.width, cameras.height), fps, produce)
    out.mkdir()
    digits = max(4, len(str(len(cameras))))

    def save(i: int, rgb: np.ndarray) -> None:
        save_png(out / f"{i:0{digits}d}.png", rgb)
        tick(1)

    render_frames(src, cameras, save)
    return len(cameras)


def render_split(src: SceneSource, split_name: Literal["test", "train"], out: Path,
                 progress: Callable[[int], None] | None = None, parallel: DataParallel | None = None) -> dict:  # fmt: skip
    """Renders a split's views into ``out`` (PNGs and ``metrics.json``) and measures them as
    ``splatfield eval`` does; returns the metrics (means and per view). With ``parallel``
    each process renders every K-th view and the first gathers the rows and writes."""
    if src.dataset is None:
        raise ValueError("--split needs a run directory (a bare file has no views with ground truth)")
    split = src.dataset.test if split_name == "test" else src.dataset.train
    if len(split) == 0:
        raise ValueError(f"the run's dataset has no {split_name} views")
    if parallel is None or parallel.is_main:
        out.mkdir()
    if parallel is not None:
        parallel.barrier()
    tick = progress or (lambda n: None)
    mine = list(range(len(split))) if parallel is None else list(range(parallel.rank, len(split), parallel.world))

    def on_view(k: int, image: torch.Tensor) -> None:
        i = mine[k]
        save_png(out / f"{i:04d}_{Path(split.image_paths[i]).stem}.png", to_uint8(image))
        tick(1)

    cams = split.cameras.to(dtype=torch.float32)[torch.tensor(mine)]
    res = evaluate(src.scene, cams, lambda k: split.image(mine[k]), background=src.background,
                   mask_at=lambda k: split.mask(mine[k]), on_view=on_view)  # fmt: skip
    rows = list(zip(mine, res.per_view))
    psnr, ssim, lpips = res.psnr, res.ssim, res.lpips
    if parallel is not None:  # the rows of every process, in view order; the means as one process takes them
        rows = sorted((r for part in parallel.gathered(rows) for r in part), key=lambda r: r[0])
        mean = lambda k: sum(float(r[k]) for _, r in rows) / max(1, len(rows))  # noqa: E731
        psnr, ssim, lpips = mean("psnr"), mean("ssim"), mean("lpips") if res.lpips is not None else None
    metrics = {
        "split": split_name, "views": len(split), "psnr": psnr, "ssim": ssim, "lpips": lpips,
        "lpips_note": res.lpips_note, "num_gaussians": len(src.scene), "count_label": src.scene.count_label,
        "per_view": [{"image": Path(split.image_paths[i]).name, **row} for i, row in rows],
    }  # fmt: skip
    if parallel is None or parallel.is_main:
        write_json_atomic(out / "metrics.json", metrics)
    return metrics


def default_output(src: SceneSource, what: str, video: bool) -> Path:
    """``RUN/renders/<what>[.mp4]`` for a run, ``<file>-<what>[.mp4]`` beside a bare file;
    numbered when taken, so that earlier outputs stay."""
    return output_path(src, what, ".mp4" if video else "")


def output_path(src: SceneSource, what: str, suffix: str) -> Path:
    base = (src.path / "renders") if src.path is not None else Path(".")
    stem = what if src.path is not None else f"{Path(src.name).name.split('.')[0]}-{what}"
    return numbered_output(base, stem, suffix)


def save_path_json(cameras: Cameras, out: Path, fps: float) -> Path:
    """The path's cameras beside the video, in nerfstudio's camera-path layout."""
    target = out.with_suffix(".camera_path.json") if out.suffix else out / "camera_path.json"
    camera_paths.write_camera_path(target, cameras, fps=fps)
    return target
