"""A depth map's order taught to one training view (strategy ``depth_rank``): each step that
renders that view adds ``weight`` times :func:`~splatfield.scenes.losses.depth_ranking` of
its rendered depth against the map, on pairs drawn inside its object mask when it has one.
What ``lift --depth`` adds to the reference view (NeuralLift-360's depth ranking)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from splatfield.render import RenderOutput, Statistic

from ..config import ConfigError, first_line
from ..gaussian_scene import GaussianScene
from ..losses import depth_ranking
from .options import DepthRankConfig


def read_depth_map(path: str | Path, option: str = "--depth-rank.depth") -> np.ndarray:
    """[H, W] float64 of an image (its first channel) or a .npy array; a one-line error
    (under ``option``, the flag the user gave it with) otherwise."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(option, f"{path}: no such file")
    try:
        if path.suffix.lower() == ".npy":
            values = np.load(path, allow_pickle=False)
        else:
            from PIL import Image

            with Image.open(path) as im:
                values = np.asarray(im if im.mode in ("I", "I;16", "F", "L") else im.convert("L"))
    except Exception as e:  # PIL and numpy raise many kinds; the user needs the file and the first line
        raise ConfigError(option, f"{path}: not a depth map ({first_line(e)})") from None
    values = np.asarray(values, dtype=np.float64)
    if values.ndim == 3:
        values = values[..., 0]
    if values.ndim != 2 or not np.isfinite(values).all():
        raise ConfigError(option, f"{path}: a depth map must be a 2-D array of finite values (got shape {list(values.shape)})")
    return values


class DepthRank:
    name = "depth_rank"
    scene_kinds = frozenset({"gaussians"})

    def __init__(self, config: DepthRankConfig) -> None:
        self.config = config
        values = torch.from_numpy(read_depth_map(config.depth))
        self.order = values if config.kind == "depth" else -values  # larger = farther
        self.generator = torch.Generator().manual_seed(config.seed)
        self._sized: Tensor | None = None

    @property
    def statistics(self) -> tuple[Statistic, ...]:
        return ()

    def prior_at(self, height: int, width: int, device: torch.device) -> Tensor:
        """The map at the render's size (nearest: an order must not be blended across edges),
        on the render's device; resized and moved once, not every step."""
        sized = self._sized
        if sized is None or tuple(sized.shape) != (height, width) or sized.device != device:
            sized = F.interpolate(self.order[None, None].float(), size=(height, width), mode="nearest")[0, 0]
            self._sized = sized = sized.to(device)
        return sized

    def extra_loss(self, step: int, scene: GaussianScene, batch, out: RenderOutput) -> Tensor | None:
        rows = [r for r, v in enumerate(batch.views) if v == self.config.view]
        if not rows:
            return None
        H, W = out.depth.shape[1:3]
        prior = self.prior_at(H, W, out.depth.device)
        total = None
        for r in rows:
            mask = None if batch.silhouette is None else batch.silhouette[r] > 0.5
            term = depth_ranking(out.depth[r, ..., 0], prior, mask, self.config.pairs, self.generator)
            total = term if total is None else total + term
        return self.config.weight * total / batch.step_size

    def after_backward(self, step: int, scene: GaussianScene, out: RenderOutput) -> None:
        return None

    def after_step(self, step: int, scene: GaussianScene, generator: torch.Generator) -> dict[str, float]:
        return {}

    def schedule_at(self, step: int) -> dict[str, float]:
        return {}

    def state_dict(self) -> dict:
        return {"generator": self.generator.get_state()}

    def load_state_dict(self, state: dict) -> None:
        self.generator.set_state(state["generator"])
