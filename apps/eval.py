"""``splatfield eval``: re-evaluates a run's latest checkpoint on its test views."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import tyro
from typing_extensions import Annotated

from splatfield.scenes.config import check_device


from .console import bars, phase_bar, print_metrics


@dataclass(frozen=True)
class Eval:
    """Evaluates a run's latest checkpoint on its test views (PSNR, SSIM, LPIPS when its
    weights are present locally); writes metrics.json and renders/test/."""

    run: Annotated[Path, tyro.conf.Positional, tyro.conf.arg(metavar="RUN")]
    """Run directory."""
    device: str = "auto"
    """auto (CUDA when torch sees a GPU, else the CPU), cpu, cuda or cuda:N."""

    def __post_init__(self) -> None:
        check_device(self.device)


def run(cfg: Eval) -> int:
    from splatfield.render.device import resolve_device

    from . import training

    with bars() as opened:
        m = training.eval_run(cfg.run, on_phase=phase_bar(opened), device=resolve_device(cfg.device))
    print_metrics(m)
    print(f"metrics: {cfg.run / 'metrics.json'}")
    return 0
