"""Strategies by name, built from a run's options."""

from __future__ import annotations

from typing import Sequence

from ..config import ConfigError
from .adc import ADC
from .depth_rank import DepthRank
from .distill import Distill
from .base import Strategies, Strategy
from .elastic import Elastic
from .options import DENSIFYING, AdcConfig, DepthRankConfig, DistillConfig, ElasticConfig, SteepestConfig
from .steepest import Steepest


def make_strategy(name: str, *, adc: AdcConfig = AdcConfig(), steepest: SteepestConfig = SteepestConfig(),
                  elastic: ElasticConfig = ElasticConfig(), distill: DistillConfig = DistillConfig(),
                  depth_rank: DepthRankConfig = DepthRankConfig(), steps: int | None = None,
                  background: tuple[float, float, float] = (0.0, 0.0, 0.0), densified: bool = False,
                  ssim_weight: float = 0.2) -> Strategy:  # fmt: skip
    """One strategy; ``steps`` (the run's length) and ``background`` (the run's: white
    captures also reset opacities at refine-start) fill in the automatic schedule;
    ``densified``: a densifying strategy runs beside (the elastic phase starts where it stops);
    ``ssim_weight``: the run's photometric loss (the elastic phase renders with the same
    background and loss as the trainer)."""
    white_background = tuple(background) == (1.0, 1.0, 1.0)
    if name == "adc":
        return ADC(adc, steps=steps, white_background=white_background)
    if name == "steepest":
        return Steepest(adc, steepest, steps=steps, white_background=white_background)
    if name == "elastic":
        start = elastic.start
        if start is None:
            start = adc.resolved(steps, white_background).refine_stop if densified else 1
        return Elastic(elastic, start=max(1, start), background=tuple(background), ssim_weight=ssim_weight)
    if name == "distill":
        from ..distill import GuidanceError
        from ..distill.depth_agreement import DepthModelError

        if not distill.guidance:
            raise ConfigError("--distill.guidance", "distill needs a diffusers checkpoint folder (unet/, scheduler/)")
        try:
            return Distill(distill, steps=steps or 1, background=tuple(background))
        except GuidanceError as e:
            raise ConfigError("--distill.guidance", str(e)) from None
        except DepthModelError as e:
            raise ConfigError("--distill.stein-depth", str(e)) from None
    if name == "depth_rank":
        if not depth_rank.depth:
            raise ConfigError("--depth-rank.depth", "depth_rank needs a depth map (an image or a .npy array)")
        return DepthRank(depth_rank)
    raise ConfigError("--strategy", f"unknown strategy {name!r}")


def make_strategies(names: Sequence[str], *, scene_kind: str, **options) -> Strategies:
    """The strategies ``names`` in order (the run config's, ``none`` already removed), checked
    against the scene kind: a strategy on a kind it does not work on is a one-line error."""
    densified = any(n in DENSIFYING for n in names)
    strategies = Strategies([make_strategy(n, densified=densified, **options) for n in names])
    try:
        strategies.check_scene(scene_kind)
    except ValueError as e:
        raise ConfigError("--strategy", str(e)) from None
    return strategies
