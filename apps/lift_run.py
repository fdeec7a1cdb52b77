"""What ``splatfield lift`` does (see :mod:`.lift`); nothing here prints."""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import torch

from splatfield.data.single_view import write_camera_only_dataset, write_single_view_dataset
from splatfield.render import Cameras
from splatfield.scenes.options import FieldConfig, GaussianConfig, OutputConfig, RunConfig, TrainerConfig
from splatfield.scenes.strategies.depth_rank import read_depth_map
from splatfield.scenes.strategies.options import DepthRankConfig
from splatfield.scenes.run import Run
from splatfield.scenes.trainer import StepInfo

from . import training
from .lift_options import Lift
from .media import save_png, to_uint8, write_video


BACKGROUND = (1.0, 1.0, 1.0)
LIFT_FIELD_RESOLUTION = 128  # cells along the grid's side: 64-pixel views need no more


@dataclass
class LiftResult:
    reference: Path
    run: Path
    steps: int
    finished: bool
    stop_signal: str | None
    metrics: dict | None
    video: Path | None
    frames_dir: Path | None


def orbit(cfg: Lift, size: int) -> Cameras:
    """``cfg.frames`` cameras around the object's vertical axis at the reference camera's
    elevation and distance (the first one is the reference view)."""
    phi = torch.arange(cfg.frames, dtype=torch.float64) * (2 * math.pi / cfg.frames)
    e = math.radians(cfg.elevation)
    eyes = torch.stack([cfg.radius * math.cos(e) * torch.cos(phi), cfg.radius * math.cos(e) * torch.sin(phi),
                        torch.full_like(phi, cfg.radius * math.sin(e))], -1)  # fmt: skip
    return Cameras.look_at(eyes, torch.zeros_like(eyes), (0.0, 0.0, 1.0), cfg.fov, size, size).to(dtype=torch.float32)


def lift_config(cfg: Lift, reference: Path, run: Path) -> RunConfig:
    # --guidance is the distillation's folder; the reference dataset's world has z up
    distill = dataclasses.replace(cfg.distill, guidance="" if cfg.guidance == "none" else cfg.guidance, up=(0.0, 0.0, 1.0),
                                  prompt=cfg.prompt or cfg.distill.prompt,
                                  estimator=cfg.estimator or cfg.distill.estimator,
                                  guidance_scale=cfg.distill.guidance_scale if cfg.guidance_scale is None else cfg.guidance_scale)  # fmt: skip
    if cfg.image is None:  # text-to-3D: the one view is a camera frame, its empty image never fitted
        distill = dataclasses.replace(distill, reference_probability=(0.0, 0.0))
    depth = DepthRankConfig() if cfg.depth is None else DepthRankConfig(depth=str(cfg.depth.resolve()), kind=cfg.depth_kind,
                                                                         weight=cfg.depth_weight, seed=cfg.seed)  # fmt: skip
    distilling = ("distill",) if distill.guidance else ()
    if cfg.model == "field":
        # the grid: the cube the reference camera sees at the object's centre
        box = FieldConfig(box_half_size=cfg.radius * math.tan(math.radians(cfg.fov) / 2), resolution=LIFT_FIELD_RESOLUTION)
        return RunConfig(data=str(reference.resolve()), out=str(run), scene_kind="field", strategy=distilling or ("none",),
                         field=box, trainer=TrainerConfig(steps=cfg.steps, seed=cfg.seed),
                         outputs=OutputConfig(checkpoint_every=max(1, min(500, cfg.steps)), eval=cfg.image is not None),
                         distill=distill)  # fmt: skip
    strategy = ("adc",) + (("depth_rank",) if depth.depth else ()) + distilling
    return RunConfig(data=str(reference.resolve()), out=str(run), strategy=strategy, depth_rank=depth,
                     scene=GaussianConfig(sh_degree=cfg.sh_degree, init_points=cfg.init_points,
                                          init_half_size=cfg.init_half_size),
                     trainer=TrainerConfig(steps=cfg.steps, seed=cfg.seed),
                     outputs=OutputConfig(checkpoint_every=max(1, min(500, cfg.steps)), eval=cfg.image is not None),
                     distill=distill)  # fmt: skip


def run_lift(
    cfg: Lift, *, on_phase: Callable | None = None, on_step: Callable[[StepInfo], None] | None = None,
    log: Callable[[str], None] = print, device: torch.device = torch.device("cpu"),
) -> LiftResult:  # fmt: skip
    phase = on_phase or (lambda name, total: (lambda n: None))
    if cfg.depth is not None:
        read_depth_map(cfg.depth, option="--depth")  # a bad map stops here, named by lift's own flag
    reference = cfg.out / "reference"
    if cfg.image is None:
        write_camera_only_dataset(reference, elevation=cfg.elevation, fov=cfg.fov, radius=cfg.radius, size=cfg.size or 64)
    else:
        write_single_view_dataset(reference, cfg.image, cfg.mask, elevation=cfg.elevation, fov=cfg.fov, radius=cfg.radius,
                                  size=cfg.size)  # fmt: skip
    run = cfg.out / "run"
    resume = (run / "checkpoints").is_dir() and any((run / "checkpoints").glob("step_*.pt"))
    config = Run.open(run).config if resume else lift_config(cfg, reference, run)
    log(f"lift: reference camera at elevation {cfg.elevation:g} deg, distance {cfg.radius:g}, field of view {cfg.fov:g} deg; "
        + ("no prior (--guidance none): the reference view alone" if not config.distill.guidance else
           f"prior {config.distill.guidance}")
        + (f"; depth order from {config.depth_rank.depth} ({config.depth_rank.kind})" if config.depth_rank.depth else "")
        + ("; its test view is the reference view" if cfg.image is not None else
           "; text-to-3D: the prompt alone, no view is fitted"))  # fmt: skip
    res = training.train(config, run_path=run, resume=resume, on_step=on_step, on_phase=phase, log=log, device=device)
    if not res.finished:
        return LiftResult(reference, run, res.step, False, res.stop_signal, None, None, None)
    scene = Run.open(run).scene(device=device)
    size = max(256, scene_size(reference))
    cams = orbit(cfg, size)
    frames_dir = cfg.out / "orbit"
    frames_dir.mkdir(parents=True, exist_ok=True)
    tick = phase("rendering the orbit", cfg.frames)

    def produce(on_frame: Callable) -> None:
        with torch.no_grad():
            for i in range(cfg.frames):
                rgb = to_uint8(scene.render(cams[i : i + 1], background=BACKGROUND).image[0])
                save_png(frames_dir / f"frame_{i:03d}.png", rgb)
                on_frame(i, rgb)
                tick(1)

    video = cfg.out / "orbit.mp4"
    write_video(video, (size, size), 12.0, produce)
    return LiftResult(reference, run, res.step, True, None, res.metrics, video, frames_dir)


def scene_size(reference: Path) -> int:
    from PIL import Image

    with Image.open(reference / "reference.png") as im:
        return im.size[0]
