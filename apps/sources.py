"""A scene to show, render or export: a run directory (its latest checkpoint, with the run's
dataset for cameras and ground truth) or a splat file of any supported format (ply from
other trainers, splat, compressed ply, spz, SOG)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch

from splatfield import data as sfdata
from splatfield.scenes import formats
from splatfield.scenes.gaussian_scene import FixedGaussians
from splatfield.scenes.run import CONFIG, Run
from splatfield.scenes.elastic import ElasticModel
from splatfield.scenes.scene import Renderable


class ElasticError(ValueError):
    """A size ratio asked of a scene that cannot give one (one line)."""

from .run_data import background_of, load_dataset


@dataclass
class SceneSource:
    scene: Renderable
    name: str
    run: Run | None  # None for a bare file
    dataset: sfdata.Dataset | None
    background: tuple[float, float, float]
    elastic: ElasticModel | None = None  # a run trained with the elastic strategy: its size selector

    def at_ratio(self, ratio: float) -> Renderable:
        """The scene at size ratio r (the elastic model's selection and transform; r = 1: the
        scene itself). A scene without an elastic model has no ratios but 1."""
        if ratio >= 1.0:
            return self.scene
        if self.elastic is None:
            raise ElasticError(f"{self.name}: has no elastic model (train it with --strategy adc elastic) for --ratio {ratio:g}")
        return FixedGaussians(self.elastic.at_ratio(self.scene.gaussians, ratio))

    @property
    def path(self) -> Path | None:
        return None if self.run is None else self.run.path


def is_run_dir(path: Path) -> bool:
    return path.is_dir() and (path / CONFIG).is_file()


def open_source(path: Path, device: torch.device = torch.device("cpu")) -> SceneSource:
    """The scene on ``device`` (the dataset's images stay in host memory)."""
    if is_run_dir(path):
        run = Run.open(path)
        dataset = load_dataset(run.config)
        return SceneSource(run.scene(device=device), path.name, run, dataset, background_of(dataset),
                           run.elastic(device=device))  # fmt: skip
    scene = FixedGaussians(formats.read_splats(path).to(device=device))
    return SceneSource(scene, path.name, None, None, (0.0, 0.0, 0.0))
