"""Strategies by name, built from a run's options."""

from __future__ import annotations

from typing import Sequence

from ..config import ConfigError
from .adc import ADC
from .base import Strategies, Strategy
from .options import AdcConfig, SteepestConfig
from .steepest import Steepest


def make_strategy(name: str, *, adc: AdcConfig = AdcConfig(), steepest: SteepestConfig = SteepestConfig(),
                  steps: int | None = None, white_background: bool = False) -> Strategy:  # fmt: skip
    """One strategy; ``steps`` (the run's length) and ``white_background`` fill in the automatic schedule."""
    if name == "adc":
        return ADC(adc, steps=steps, white_background=white_background)
    if name == "steepest":
        return Steepest(adc, steepest, steps=steps, white_background=white_background)
    raise ConfigError("--strategy", f"unknown strategy {name!r}")


def make_strategies(names: Sequence[str], *, scene_kind: str, **options) -> Strategies:
    """The strategies ``names`` in order (the run config's, ``none`` already removed), checked
    against the scene kind: a strategy on a kind it does not work on is a one-line error."""
    strategies = Strategies([make_strategy(n, **options) for n in names])
    try:
        strategies.check_scene(scene_kind)
    except ValueError as e:
        raise ConfigError("--strategy", str(e)) from None
    return strategies
