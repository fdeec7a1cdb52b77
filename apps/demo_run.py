"""What ``splatfield demo`` does: the whole job on a scene the project makes itself.

Writes a procedural Blender-format dataset (:mod:`splatfield.data.procedural`: analytic
primitives ray cast with numpy — not splatfield's rasterizer), trains a Gaussian-splatting
run on it with the 3DGS density control for a few minutes on the CPU, evaluates the
held-out views and renders an orbit of the trained scene into frames and a contact sheet.

Nothing here prints; :mod:`splatfield.apps.cli` does (progress goes through callbacks).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np
import torch

from splatfield.data import procedural
from splatfield.render import Cameras
from splatfield.scenes.options import (
    DataConfig, FieldConfig, GaussianConfig, OutputConfig, RunConfig, SceneKind, TrainerConfig,
)  # fmt: skip
from splatfield.scenes.run import Run
from splatfield.scenes.trainer import StepInfo

from . import training
from .media import to_uint8

BACKGROUND = (1.0, 1.0, 1.0)


def orbit_cameras(frames: int, size: int, radius: float = 4.0, height: float = 2.0, fov_y: float = 40.0) -> Cameras:
    """``frames`` pinhole cameras evenly around the z axis (the procedural scene's up),
    looking at its centre."""
    phi = torch.arange(frames, dtype=torch.float64) * (2 * math.pi / frames)
    eyes = torch.stack([radius * torch.cos(phi), radius * torch.sin(phi), torch.full_like(phi, height)], -1)
    targets = torch.tensor([0.0, 0.0, -0.2], dtype=torch.float64).expand_as(eyes)
    return Cameras.look_at(eyes, targets, (0.0, 0.0, 1.0), fov_y, size, size).to(dtype=torch.float32)


# ----------------------------------------------------------------------------- images


def contact_sheet(images: list[np.ndarray], tile: int = 256, gap: int = 4) -> "PIL.Image.Image":  # noqa: F821
    from PIL import Image

    cols = max(1, math.ceil(math.sqrt(len(images))))
    rows = max(1, math.ceil(len(images) / cols))
    h, w = images[0].shape[:2]
    tw = min(tile, w)
    th = max(1, round(h * tw / w))
    sheet = Image.new("RGB", (gap + cols * (tw + gap), gap + rows * (th + gap)), (20, 20, 24))
    for i, arr in enumerate(images):
        im = Image.fromarray(arr)
        if (tw, th) != (w, h):
            im = im.resize((tw, th), Image.Resampling.LANCZOS)
        r, c = divmod(i, cols)
        sheet.paste(im, (gap + c * (tw + gap), gap + r * (th + gap)))
    return sheet


# ----------------------------------------------------------------------------- run


def demo_field(size: int, steps: int) -> FieldConfig:
    """The demo's field: its box is the procedural scene's (objects within 1 of the centre),
    a cell about a pixel of the images, growing at a sixth and a half of the run."""
    return FieldConfig(resolution=max(16, min(256, size)), grow_at=(max(1, steps // 6), max(2, steps // 2)),
                       box_half_size=1.25)  # fmt: skip


@dataclass
class DemoResult:
    dataset: Path
    run: Path
    steps: int
    finished: bool
    stop_signal: str | None
    metrics: dict | None
    frames_dir: Path | None
    contact_sheet: Path | None


def run_demo(
    out: Path,
    *,
    size: int = 128,
    steps: int = 3000,
    frames: int = 24,
    init_points: int = 20_000,
    seed: int = 0,
    model: SceneKind = "gaussians",
    device: torch.device = torch.device("cpu"),
    on_phase: Callable[[str, int], Callable[[int], None]] | None = None,
    on_step: Callable[[StepInfo], None] | None = None,
    log: Callable[[str], None] = print,
) -> DemoResult:
    phase = on_phase or (lambda name, total: (lambda n: None))
    data = out / "data"
    tick = phase("ray casting the scene", 56)
    procedural.write_demo_dataset(data, size=size, seed=seed, on_view=lambda k: tick(1))
    suffix = "" if model == "gaussians" else f"-{model}"  # a field's demo beside the Gaussians'
    run = out / f"run{suffix}"
    resume = (run / "checkpoints").is_dir() and any((run / "checkpoints").glob("step_*.pt"))
    config = RunConfig(data=str(data.resolve()), out=str(run), scene_kind=model,
                       strategy=("adc",) if model == "gaussians" else ("none",), dataset=DataConfig(),
                       scene=GaussianConfig(init_points=init_points, init_half_size=1.0),
                       trainer=TrainerConfig(steps=steps, seed=seed), outputs=OutputConfig(checkpoint_every=500),
                       field=demo_field(size, steps))  # fmt: skip
    if resume:  # a demo stopped earlier continues where it was
        config = Run.open(run).config
    res = training.train(config, run_path=run, resume=resume, on_step=on_step, on_phase=phase, log=log, device=device)
    if not res.finished:
        return DemoResult(data, run, res.step, False, res.stop_signal, None, None, None)

    scene = Run.open(run).scene(device=device)
    frames_dir = out / f"frames{suffix}"
    frames_dir.mkdir(parents=True, exist_ok=True)
    cams = orbit_cameras(frames, max(size, 256))
    tick = phase("rendering the orbit", frames)
    images = []
    from PIL import Image

    with torch.no_grad():
        for i in range(frames):
            arr = to_uint8(scene.render(cams[i : i + 1], background=BACKGROUND).image[0])
            Image.fromarray(arr).save(frames_dir / f"frame_{i:03d}.png")
            images.append(arr)
            tick(1)
    sheet = out / f"contact_sheet{suffix}.png"
    contact_sheet(images).save(sheet)
    return DemoResult(data, run, res.step, True, None, res.metrics, frames_dir, sheet)
