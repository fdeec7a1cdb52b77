"""The viewer of ``splatfield view RUN_OR_FILE`` and the one ``splatfield train`` attaches:
the glue between a scene source (a run, a splat file, a training in progress) and
:class:`~.server.Viewer`."""

from __future__ import annotations

from pathlib import Path
from typing import Callable

import numpy as np
from PIL import Image

from splatfield import data as sfdata
from splatfield.scenes.run import numbered_output

from ..rendering import output_path
from ..sources import open_source
from .crop import CropPanel, crop_export
from .panel import TrainingPanel
from .paths import CameraPathPanel
from .server import Viewer
from .sizes import ModelSizePanel

THUMBNAIL_SIDE = 128


def thumbnails(split: sfdata.Split) -> Callable[[int], np.ndarray]:
    def thumb(i: int) -> np.ndarray:
        im = Image.fromarray(split.image(i).numpy())
        im.thumbnail((THUMBNAIL_SIDE, THUMBNAIL_SIDE), Image.Resampling.BILINEAR)
        return np.asarray(im)

    return thumb


def open_view(path: Path, *, host: str, port: int, log: Callable[[str], None] = print, device=None) -> Viewer:
    """Serves a finished run or a splat file (on ``device``, default the CPU); renders in a
    background thread. A run with an elastic model gets a "Model size" slider (:mod:`.sizes`);
    a Gaussian scene gets a crop box (:mod:`.crop`; not a radiance field)."""
    src = open_source(path) if device is None else open_source(path, device)
    scene = src.scene
    train = src.dataset.train if src.dataset is not None and len(src.dataset.train) else None
    # a run with an elastic model: the scene shown is the one at the "Model size" slider's ratio
    sizes = ModelSizePanel(src.at_ratio, scene, log=log) if src.elastic is not None else None
    shown = sizes.scene if sizes is not None else lambda: scene
    # a Gaussian scene: the scene shown is cropped to the "Crop" panel's box while it is on
    crop = None
    if scene.kind == "gaussians":
        crop = CropPanel(shown, scene, path, ratio=(lambda: sizes.ratio) if sizes is not None else (lambda: 1.0),
                         export=crop_export(path, device), log=log)  # fmt: skip
        shown = crop.scene
    viewer = Viewer(shown, host=host, port=port, background=src.background, max_sh_degree=scene.max_sh_degree,
                    training_cameras=None if train is None else train.cameras,
                    thumbnail=None if train is None else thumbnails(train), title=f"splatfield — {src.name}",
                    log=log)  # fmt: skip
    if sizes is not None:
        sizes.add_controls(viewer)
    if crop is not None:
        crop.add_controls(viewer)
    size = (train.cameras.width, train.cameras.height) if train is not None else (800, 800)
    CameraPathPanel(viewer, lambda what, suffix: output_path(src, what, suffix), size)
    viewer.start_rendering_thread()
    return viewer


def training_viewer(trainer, dataset: sfdata.Dataset, run: Path, total_steps: int, background, *, host: str, port: int,
                    log: Callable[[str], None] = print) -> tuple[Viewer, TrainingPanel]:  # fmt: skip
    """A live viewer of ``trainer``; the returned panel is the trainer callback that feeds it."""
    train = dataset.train
    viewer = Viewer(lambda: trainer.scene, host=host, port=port, background=background,
                    max_sh_degree=trainer.scene.max_sh_degree, training_cameras=train.cameras,
                    thumbnail=thumbnails(train), title=f"splatfield — training {run.name}", live=True, log=log)  # fmt: skip

    CameraPathPanel(viewer, lambda what, suffix: numbered_output(run / "renders", what, suffix),
                    (train.cameras.width, train.cameras.height))  # fmt: skip
    return viewer, TrainingPanel(viewer, total_steps)
