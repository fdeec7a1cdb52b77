"""A scene to show, render or export: a run directory (its latest checkpoint, with the run's
dataset for cameras and ground truth) or a splat file of any supported format (ply from
other trainers, splat, compressed ply, spz, SOG)."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import Tensor

from splatfield import data as sfdata
from splatfield.render import Gaussians
from splatfield.scenes import formats
from splatfield.scenes.elastic import ElasticModel
from splatfield.scenes.gaussian_scene import FixedGaussians
from splatfield.scenes.run import CONFIG, Run
from splatfield.scenes.scene import Renderable

from .run_data import background_of, load_dataset, with_refined_cameras


class ElasticError(ValueError):
    """A size ratio asked of a scene that cannot give one (one line)."""


@dataclass
class ElasticSizes:
    """Gaussians and their elastic model (None: none), served at size ratios; the ranking,
    which does not depend on the ratio, is made once."""

    gaussians: Gaussians
    model: ElasticModel | None
    who: str  # names the scene in the error of one without a model
    _order: Tensor | None = field(default=None, repr=False)

    def at_ratio(self, ratio: float, asked: str = "") -> Gaussians:
        """The Gaussians at size ratio r (r = 1: themselves); ``asked`` names the option in
        the error of a scene without an elastic model."""
        if ratio >= 1.0:
            return self.gaussians
        if self.model is None:
            raise ElasticError(f"{self.who}: has no elastic model (train it with --strategy adc elastic) "
                               f"for {asked or f'--ratio {ratio:g}'}")  # fmt: skip
        if self._order is None:
            self._order = self.model.order(self.gaussians)
        return self.model.at_ratio(self.gaussians, ratio, order=self._order)


@dataclass
class SceneSource:
    scene: Renderable
    name: str
    run: Run | None  # None for a bare file
    dataset: sfdata.Dataset | None
    background: tuple[float, float, float]
    elastic: ElasticModel | None = None  # a run trained with the elastic strategy: its size selector
    _sizes: ElasticSizes | None = field(default=None, repr=False)

    def at_ratio(self, ratio: float) -> Renderable:
        """The scene at size ratio r (the elastic model's selection and transform; r = 1: the
        scene itself). A scene without an elastic model has no ratios but 1."""
        if ratio >= 1.0:
            return self.scene
        if self._sizes is None:
            self._sizes = ElasticSizes(self.scene.gaussians, self.elastic, self.name)  # type: ignore[attr-defined]
        return FixedGaussians(self._sizes.at_ratio(ratio))

    @property
    def path(self) -> Path | None:
        return None if self.run is None else self.run.path


def is_run_dir(path: Path) -> bool:
    return path.is_dir() and (path / CONFIG).is_file()


def open_source(path: Path, device: torch.device = torch.device("cpu")) -> SceneSource:
    """The scene on ``device`` (the dataset's images stay in host memory)."""
    if is_run_dir(path):
        run = Run.open(path)
        dataset = with_refined_cameras(load_dataset(run.config), path)
        scene, elastic = run.scene_and_elastic(device=device)
        return SceneSource(scene, path.name, run, dataset, background_of(dataset), elastic)
    scene = FixedGaussians(formats.read_splats(path).to(device=device))
    return SceneSource(scene, path.name, None, None, (0.0, 0.0, 0.0))
