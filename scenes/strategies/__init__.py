"""Training strategies: small objects with explicit state and hooks (see ``base``)."""

from __future__ import annotations

from typing import Literal

from .adc import ADC, AdcConfig
from .base import NoStrategy, Strategy
from .steepest import Steepest, SteepestConfig

StrategyName = Literal["adc", "steepest", "none"]


def make_strategy(
    name: StrategyName, *, adc: AdcConfig = AdcConfig(), steepest: SteepestConfig = SteepestConfig()
) -> Strategy:
    if name == "adc":
        return ADC(adc)
    if name == "steepest":
        return Steepest(steepest)
    if name == "none":
        return NoStrategy()
    raise ValueError(f"unknown strategy {name!r}")


__all__ = ["ADC", "AdcConfig", "NoStrategy", "Steepest", "SteepestConfig", "Strategy", "StrategyName", "make_strategy"]
