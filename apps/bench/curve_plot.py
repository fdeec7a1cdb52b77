"""The PNG of ``splatfield bench curve``: test PSNR against training minutes, a line per run
(drawn by :mod:`splatfield.apps.plot`)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

from PIL import Image

from .. import plot
from ..plot import MARKERS, PALETTE, nice_step, tick_label, ticks

__all__ = ["MARKERS", "PALETTE", "Series", "draw_curves", "nice_step", "save_curves", "tick_label", "ticks"]


@dataclass
class Series:
    label: str
    minutes: list[float]
    psnr: list[float | None]  # None: not finite, left out of the line


def draw_curves(series: Sequence[Series], *, size: tuple[int, int] = (900, 560), title: str = "Test PSNR vs training time",
                x_label: str = "training time (minutes)", y_label: str = "test PSNR (dB)") -> Image.Image:  # fmt: skip
    return plot.draw([plot.Series(c.label, c.minutes, c.psnr) for c in series], title=title, x_label=x_label,
                     y_label=y_label, size=size)  # fmt: skip


def save_curves(path: Path, series: Sequence[Series], *, size: tuple[int, int] = (900, 560), title: str = "") -> None:
    """The plot as a PNG at ``path`` (atomically)."""
    plot.save(path, draw_curves(series, size=size, **({"title": title} if title else {})))
