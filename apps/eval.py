"""``splatfield eval``: re-evaluates a run's latest checkpoint on its test views."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import tyro
from typing_extensions import Annotated


from .console import bars, phase_bar, print_metrics


@dataclass(frozen=True)
class Eval:
    """Evaluates a run's latest checkpoint on its test views (PSNR, SSIM, LPIPS when its
    weights are present locally); writes metrics.json and renders/test/."""

    run: Annotated[Path, tyro.conf.Positional, tyro.conf.arg(metavar="RUN")]
    """Run directory."""


def run(cfg: Eval) -> int:
    from . import training

    with bars() as opened:
        m = training.eval_run(cfg.run, on_phase=phase_bar(opened))
    print_metrics(m)
    print(f"metrics: {cfg.run / 'metrics.json'}")
    return 0
