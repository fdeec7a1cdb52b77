"""``splatfield render``: a trained scene along a camera path into an MP4 or PNGs, or a
split's views with their metrics (the work is :mod:`.rendering`)."""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Literal, Optional, Union

import tyro
from typing_extensions import Annotated

from splatfield.scenes.config import at_least, check_device, check_ratio, require

from .console import PROG, progress
from .errors import CLIError, is_input_error, require_exists

PathKind = Literal["orbit", "spiral", "interp"]  # mirrors splatfield.apps.rendering.PathKind
SplitName = Literal["test", "train"]


@dataclass(frozen=True)
class Render:
    """Renders a trained scene (a run directory, or a .ply/.splat/.compressed.ply/.spz/.sog
    file) along a camera path into an MP4 or a folder of PNGs, or renders a split's views with
    their metrics (the figures `splatfield eval` reports). Adds outputs; never overwrites."""

    source: Annotated[Path, tyro.conf.Positional, tyro.conf.arg(metavar="RUN_OR_FILE")]
    """A run directory, or a splat file."""
    path: Union[PathKind, Path] = "orbit"
    """orbit, spiral (around the scene, at the training cameras' distance and height), interp
    (a smooth loop through the training cameras), or a nerfstudio camera_path.json."""
    split: Annotated[Optional[SplitName], tyro.conf.arg(help_behavior_hint="(default: render --path)")] = None
    """Render this split's views instead, writing PNGs, metrics.json and a per-view table."""
    frames: int = 120
    """Frames of an orbit, spiral or interp path."""
    fps: Annotated[Optional[float], tyro.conf.arg(help_behavior_hint="(default: 30, or the camera path's)")] = None
    """Frames per second of the video."""
    size: Annotated[Optional[tuple[int, int]], tyro.conf.arg(metavar="W H", help_behavior_hint="(default: the training views')")] = None
    """Image size in pixels."""
    out: Annotated[Optional[Path], tyro.conf.arg(metavar="OUT", help_behavior_hint="(default: RUN/renders/<path>.mp4)")] = None
    """A .mp4 file, or a folder for PNG frames (must not exist yet)."""
    ratio: Annotated[float, tyro.conf.arg(metavar="R")] = 1.0
    """Render the scene at size ratio R in (0, 1]: its elastic model's top ceil(R N) Gaussians,
    transformed at R (a run trained with --strategy adc elastic); outputs named <path>-r<R>."""
    device: str = "auto"
    """auto (CUDA when torch sees a GPU, else the CPU), cpu, cuda or cuda:N."""

    def __post_init__(self) -> None:
        check_device(self.device)
        check_ratio(self.ratio, "ratio")
        at_least(self.frames, "frames", 1)
        if self.fps is not None:
            require(self.fps > 0 and math.isfinite(self.fps), "fps", f"must be a positive number (got {self.fps})")
        if self.size is not None:
            require(1 <= self.size[0] <= 8192 and 1 <= self.size[1] <= 8192, "size",
                    f"width and height must be in 1..8192 (got {self.size[0]} {self.size[1]})")


def run(cfg: Render) -> int:
    from splatfield.scenes.parallel import launched_processes, launched_rank

    if cfg.split is None and launched_rank() > 0:
        return 0  # under torchrun a camera path is rendered by the first process alone
    require_exists(cfg.source)
    from splatfield.render.device import resolve_device
    from splatfield.scenes.parallel import DataParallel

    from . import rendering as rd
    from .sources import open_source

    device = resolve_device(cfg.device)
    parallel = None
    if cfg.split is not None and launched_processes() > 1:  # the split's views shared among the processes
        parallel = DataParallel.start(device, timeout_s=60.0)
        device = parallel.device
    try:
        src = open_source(cfg.source, device)
        tag = ""
        if cfg.ratio < 1.0:  # an ordinary scene of ceil(r N) Gaussians from here on
            src, tag = dataclasses.replace(src, scene=src.at_ratio(cfg.ratio)), f"-r{cfg.ratio:g}"
        if cfg.split is not None:
            main = parallel is None or parallel.is_main
            out = cfg.out or (rd.default_output(src, f"split-{cfg.split}{tag}", video=False) if main else None)
            if main:
                rd.fresh_output(out)
            if parallel is not None:
                out = parallel.from_main(out)
            views = len(src.dataset.test if cfg.split == "test" else src.dataset.train) if src.dataset else 0
            with progress(views if main else 0, f"rendering {cfg.split} views", "view") as bar:
                m = rd.render_split(src, cfg.split, out, progress=bar.update, parallel=parallel)
            if not main:
                return 0
            print(f"{'view':<28} {'PSNR':>8} {'SSIM':>7}")
            for row in m["per_view"]:
                print(f"{row['image']:<28} {row['psnr']:>8.3f} {row['ssim']:>7.4f}")
            lp = "unavailable" if m["lpips"] is None else f"{m['lpips']:.4f}"
            print(f"{cfg.split} views: {m['views']} — PSNR {m['psnr']:.3f} dB, SSIM {m['ssim']:.4f}, LPIPS {lp}; "
                  f"{m['num_gaussians']:,} {m['count_label']}; images and metrics.json in {out}")  # fmt: skip
            return 0
        if isinstance(cfg.path, Path):
            from splatfield.render.camera_paths import read_camera_path

            cams, file_fps = read_camera_path(cfg.path, width=cfg.size[0] if cfg.size else None,
                                              height=cfg.size[1] if cfg.size else None)  # fmt: skip
            fps, what = cfg.fps or file_fps, cfg.path.stem
        else:
            cams, fps, what = rd.path_cameras(src, cfg.path, cfg.frames, cfg.size), cfg.fps or 30.0, cfg.path
        out = cfg.out or rd.default_output(src, f"{what}{tag}", video=True)
        rd.fresh_output(out)
        with progress(len(cams), "rendering", "frame") as bar:
            n = rd.render_path(src, cams, out, fps, progress=bar.update)
        path_json = rd.save_path_json(cams, out, fps)
    except ValueError as exc:  # a path or split the source cannot give
        if is_input_error(exc):
            raise
        raise CLIError(str(exc)) from None
    finally:
        if parallel is not None:
            parallel.stop()
    size = f" of {len(src.scene):,} {src.scene.count_label} (ratio {cfg.ratio:g})" if cfg.ratio < 1.0 else ""
    print(f"{PROG} render: {n} frames at {cams.width}x{cams.height}{size}, {fps:g} fps -> {out}; "
          f"camera path {path_json}")  # fmt: skip
    return 0
