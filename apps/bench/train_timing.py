"""``splatfield bench train``: the time of a training step, the way the peers were measured.

Loads a dataset, initialises the scene as ``splatfield train`` does (Gaussians: SfM points,
else random points in a cube; a field: its coarse grid), trains ``warmup`` untimed steps,
then times ``Trainer.train_step`` (render, loss, backward, density control or grid growth,
Adam) for ``steps`` steps; reports the median, the 10th/90th percentiles, the scene's count
at the end and, for a field, the samples per ray after occupancy skipping. Image loading
and initialisation are not timed.
"""

from __future__ import annotations

import statistics
import time
from dataclasses import asdict, dataclass, field
from typing import Callable

import torch

from splatfield import data as sfdata
from splatfield.render._ext import native_available, native_has_cuda
from splatfield.scenes.options import CorrectionConfig, DataConfig, GaussianConfig, RunConfig, SceneKind, TrainerConfig
from splatfield.scenes.strategies import StrategyName
from splatfield.scenes.trainer import Trainer

from ..machine import machine_info, peak_rss_mb
from ..run_data import load_dataset, load_views
from ..training import new_trainer


@dataclass
class TrainBenchResult:
    dataset: str
    width: int
    height: int
    strategy: str
    steps: int
    initial_gaussians: int
    final_gaussians: int
    step_ms_median: float
    step_ms_p10: float
    step_ms_p90: float
    total_seconds: float
    peak_rss_mb: float
    threads: int
    backend: str
    cpu: dict
    torch: str
    device: str = "cpu"
    peak_device_mb: float | None = None  # peak memory allocated on a GPU (None on the CPU)
    step_ms_all: list[float] = field(default_factory=list)
    scene_kind: str = "gaussians"
    count_label: str = "Gaussians"  # what initial_gaussians and final_gaussians count
    warmup_steps: int = 0
    samples_per_ray: float | None = None  # a field's, mean over the timed steps
    rays_per_step: int | None = None

    def to_json(self) -> dict:
        return asdict(self)


def _quantile(xs: list[float], q: float) -> float:
    s = sorted(xs)
    return s[min(len(s) - 1, max(0, round(q * (len(s) - 1))))]


def start_training(
    data: str, *, downscale: float, steps: int, init_points: int, init_half_size: float | None,
    strategy: StrategyName = "adc", seed: int = 0, device: torch.device = torch.device("cpu"),
    model: SceneKind = "gaussians", corrections: CorrectionConfig = CorrectionConfig(),
) -> tuple[Trainer, sfdata.Dataset]:
    """A trainer at step 0, initialised as ``splatfield train`` does, with the schedules
    (learning-rate decay, densification window, grid growth) of a default-length run."""
    config = RunConfig(data=data, scene_kind=model, strategy=(strategy,) if model == "gaussians" else ("none",),
                       dataset=DataConfig(downscale=downscale),
                       scene=GaussianConfig(init_points=init_points, init_half_size=init_half_size),
                       trainer=TrainerConfig(seed=seed), corrections=corrections)  # fmt: skip
    dataset = load_dataset(config)
    return new_trainer(config, dataset, load_views(dataset.train), device=device), dataset


def time_training(
    data: str,
    *,
    downscale: float,
    steps: int,
    init_points: int,
    init_half_size: float | None,
    strategy: StrategyName = "adc",
    seed: int = 0,
    device: torch.device = torch.device("cpu"),
    model: SceneKind = "gaussians",
    warmup: int = 0,
    progress: Callable[[], None] | None = None,
    corrections: CorrectionConfig = CorrectionConfig(),
) -> TrainBenchResult:
    """(A step's time includes its GPU work: the loss read back at its end waits for it.)"""
    trainer, dataset = start_training(data, downscale=downscale, steps=steps, init_points=init_points,
                                      init_half_size=init_half_size, strategy=strategy, seed=seed, device=device,
                                      model=model, corrections=corrections)  # fmt: skip
    views = trainer.views
    for _ in range(warmup):
        trainer.train_step()
        if progress:
            progress()
    n0 = len(trainer.scene)
    native = native_has_cuda() if device.type == "cuda" else native_available()  # builds/loads the extension, untimed
    backend = "native" if native else "reference"
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    times: list[float] = []
    samples: list[float] = []
    t0 = time.perf_counter()
    for _ in range(steps):
        times.append(trainer.train_step().step_seconds * 1e3)
        samples.append(getattr(trainer.scene, "samples_per_ray", 0.0))
        if progress:
            progress()
    total = time.perf_counter() - t0
    return TrainBenchResult(
        dataset=str(data), width=views.cameras.width, height=views.cameras.height, strategy=strategy, steps=steps,
        initial_gaussians=n0, final_gaussians=len(trainer.scene), step_ms_median=statistics.median(times),
        step_ms_p10=_quantile(times, 0.1), step_ms_p90=_quantile(times, 0.9), total_seconds=total,
        peak_rss_mb=peak_rss_mb(), threads=torch.get_num_threads(), backend=backend, cpu=machine_info(),
        torch=torch.__version__, device=str(device),
        peak_device_mb=torch.cuda.max_memory_allocated(device) / 2**20 if device.type == "cuda" else None,
        step_ms_all=times, scene_kind=trainer.scene.kind, count_label=trainer.scene.count_label, warmup_steps=warmup,
        samples_per_ray=statistics.mean(samples) if model == "field" else None,
        rays_per_step=getattr(trainer.scene, "rays_per_step", None),
    )  # fmt: skip
