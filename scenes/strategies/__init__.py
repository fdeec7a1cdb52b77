"""Training strategies: small objects with explicit state and hooks (see ``base``)."""

from __future__ import annotations

from typing import Literal

from .adc import ADC, AdcConfig
from .base import NoStrategy, Strategy

StrategyName = Literal["adc", "none"]


def make_strategy(name: StrategyName, *, adc: AdcConfig = AdcConfig()) -> Strategy:
    if name == "adc":
        return ADC(adc)
    if name == "none":
        return NoStrategy()
    raise ValueError(f"unknown strategy {name!r}")


__all__ = ["ADC", "AdcConfig", "NoStrategy", "Strategy", "StrategyName", "make_strategy"]
