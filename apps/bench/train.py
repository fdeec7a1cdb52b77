"""``splatfield bench train``: the time of the first training steps (the measurement is
:mod:`.train_timing`)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Optional

import tyro
from typing_extensions import Annotated

from splatfield.scenes.config import at_least, check_device, finite_at_least
from splatfield.scenes.options import AppearanceMode, CameraOptMode, CorrectionConfig, SceneKind, check_corrections
from splatfield.scenes.strategies.options import StrategyName

from ..console import PROG, progress, write_json
from ..errors import check_output_file, require_exists


@dataclass(frozen=True)
class BenchTrain:
    """Times the first --steps training steps (render, loss, backward, density control,
    Adam) on a dataset initialised as `splatfield train` does; reports the median step time.
    The peers' figure (shared/bench): lego at --downscale 2 from 100k random points in
    [-1.5, 1.5]^3 (--init-half-size 1.5)."""

    data: Annotated[Path, tyro.conf.Positional, tyro.conf.arg(metavar="DATA")]
    """Dataset folder."""
    downscale: float = 2.0
    """Divide the image size by this."""
    steps: int = 100
    """Training steps timed."""
    init_points: int = 100_000
    """Random initial points when the dataset has no SfM points."""
    init_half_size: Annotated[Optional[float], tyro.conf.arg(help_behavior_hint="(default: extent / 3)")] = None
    """Half size of the cube of random initial points (around the cameras' look-at centre)."""
    strategy: StrategyName = "adc"
    """Density control during the timed steps."""
    threads: Annotated[Optional[int], tyro.conf.arg(metavar="T", help_behavior_hint="(default: torch's choice)")] = None
    """torch.set_num_threads(T)."""
    json: Annotated[Optional[Path], tyro.conf.arg(metavar="FILE", help_behavior_hint="(default: no file)")] = None
    """Also write the results as JSON (atomically) to FILE."""
    seed: int = 0
    """Seed of the initial points and view order."""
    device: str = "auto"
    """auto (CUDA when torch sees a GPU, else the CPU), cpu, cuda or cuda:N."""
    model: SceneKind = "gaussians"
    """gaussians, or field (a radiance field at the default --field. options)."""
    warmup: int = 0
    """Untimed training steps before the timed ones (a field: past its grid growths, e.g. 1600)."""
    camera_opt: CameraOptMode = "off"
    """As `splatfield train --camera-opt` (its cost per step)."""
    appearance: AppearanceMode = "none"
    """As `splatfield train --appearance`."""

    def __post_init__(self) -> None:
        check_device(self.device)
        at_least(self.steps, "steps", 1)
        at_least(self.warmup, "warmup", 0)
        at_least(self.init_points, "init_points", 1)
        at_least(self.threads, "threads", 1)
        finite_at_least(self.downscale, "downscale", 1.0)
        check_corrections(self.model, CorrectionConfig(camera_opt=self.camera_opt, appearance=self.appearance))


def run(cfg: BenchTrain) -> int:
    require_exists(cfg.data)
    if cfg.json is not None:
        check_output_file(cfg.json)
    import torch

    from splatfield.render.device import resolve_device

    from . import train_timing as bench_train

    if cfg.threads is not None:
        torch.set_num_threads(cfg.threads)
    with progress(cfg.warmup + cfg.steps, "training steps", "step") as bar:
        r = bench_train.time_training(str(cfg.data), downscale=cfg.downscale, steps=cfg.steps,
                                      init_points=cfg.init_points, init_half_size=cfg.init_half_size,
                                      strategy=cfg.strategy, seed=cfg.seed, device=resolve_device(cfg.device),
                                      model=cfg.model, warmup=cfg.warmup, progress=bar.update,
                                      corrections=CorrectionConfig(camera_opt=cfg.camera_opt,
                                                                   appearance=cfg.appearance))  # fmt: skip
    what = f"strategy {r.strategy}" if r.scene_kind == "gaussians" else f"a field, {r.rays_per_step} rays per step"
    print(f"{PROG} bench train: {r.dataset} at {r.width}x{r.height}, {r.initial_gaussians:,} {r.count_label} at the "
          f"first timed step, {what}, backend {r.backend} on {r.device}, {r.threads} threads ({r.cpu['model']})")  # fmt: skip
    spr = "" if r.samples_per_ray is None else f"; {r.samples_per_ray:.1f} samples per ray"
    print(f"step time over {r.steps} steps after {r.warmup_steps}: median {r.step_ms_median:.1f} ms "
          f"(p10 {r.step_ms_p10:.1f}, p90 {r.step_ms_p90:.1f}); {r.total_seconds:.1f} s in all; "
          f"{r.final_gaussians:,} {r.count_label} at the end{spr}; peak RSS {r.peak_rss_mb:.0f} MiB")  # fmt: skip
    write_json(cfg.json, r.to_json())
    return 0
