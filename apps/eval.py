"""``splatfield eval``: re-evaluates a run's latest checkpoint on its test views."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Optional

import tyro
from typing_extensions import Annotated

from splatfield.scenes.config import at_least, check_device, check_ratio, require

from .console import bars, phase_bar, print_metrics
from .errors import require_exists


@dataclass(frozen=True)
class Eval:
    """Evaluates a run's latest checkpoint on its test views (PSNR, SSIM, LPIPS when its
    weights are present locally); writes metrics.json and renders/test/. With --ratios,
    measures the scene at size ratios instead: its elastic model and the importance, opacity
    and random baselines at the same counts (and --capped-runs); writes ratios.json and
    ratios.png."""

    run: Annotated[Path, tyro.conf.Positional, tyro.conf.arg(metavar="RUN")]
    """Run directory."""
    ratios: Annotated[
        Optional[tuple[float, ...]],
        tyro.conf.arg(metavar="R [R ...]", help_behavior_hint="(default: the plain evaluation)"),
    ] = None
    """Size ratios in (0, 1] to measure (PSNR and SSIM of every method at ceil(R N) Gaussians)."""
    capped_runs: Annotated[
        Optional[tuple[Path, ...]], tyro.conf.arg(metavar="RUN [RUN ...]", help_behavior_hint="(default: none)")
    ] = None
    """With --ratios: runs trained on the same data with --adc.max-gaussians, each measured once at
    its own size (method capped)."""
    align_steps: Annotated[
        Optional[int], tyro.conf.arg(metavar="N", help_behavior_hint="(default: the run's, with --camera-opt)")
    ] = None
    """Also evaluate after a test-time alignment of each test view's pose (N steps, the scene
    frozen): the headline of a run trained with --camera-opt; any Gaussian run takes it."""
    device: str = "auto"
    """auto (CUDA when torch sees a GPU, else the CPU), cpu, cuda or cuda:N."""

    def __post_init__(self) -> None:
        check_device(self.device)
        at_least(self.align_steps, "align_steps", 0)
        if self.ratios is not None:
            require(len(self.ratios) > 0, "ratios", "name one size ratio or more (e.g. --ratios 1 0.5 0.25 0.1)")
            for r in self.ratios:
                check_ratio(r, "ratios")
        if self.capped_runs is not None:
            require(self.ratios is not None, "capped_runs", "are compared at --ratios: give --ratios too")
            require(len(self.capped_runs) > 0, "capped_runs", "name one run directory or more")


def run(cfg: Eval) -> int:
    from splatfield.render.device import resolve_device

    if cfg.ratios is not None:
        return run_ratios(cfg, resolve_device(cfg.device))
    from . import training

    with bars() as opened:
        m = training.eval_run(cfg.run, on_phase=phase_bar(opened), device=resolve_device(cfg.device),
                              align_steps=cfg.align_steps)  # fmt: skip
    print_metrics(m)
    print(f"metrics: {cfg.run / 'metrics.json'}")
    return 0


def run_ratios(cfg: Eval, device) -> int:
    for path in (cfg.run, *(cfg.capped_runs or ())):
        require_exists(path)
    from . import ratios

    with bars() as opened:
        res = ratios.evaluate_ratios(cfg.run, cfg.ratios or (), cfg.capped_runs or (), device=device,
                                     on_phase=phase_bar(opened))  # fmt: skip
    if not res.has_elastic:
        print(f"{cfg.run}: no elastic model (train with --strategy adc elastic): the baselines only")
    print(f"{res.split} views: {res.views}; {res.total:,} Gaussians at ratio 1")
    print(f"{'ratio':>8} {'method':<11} {'Gaussians':>11} {'PSNR':>8} {'SSIM':>7}")
    for row in res.rows:
        print(f"{row.ratio:>8.4g} {row.method:<11} {row.num_gaussians:>11,} {row.psnr:>8.3f} {row.ssim:>7.4f}")
    print(f"ratios: {res.json_path}; plot: {res.png_path}")
    return 0
