"""``splatfield demo``: the whole job on a scene splatfield makes itself (the work is :mod:`.demo_run`)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path


from splatfield.scenes.config import at_least, check_device
from splatfield.scenes.options import SceneKind

from .console import PROG, bars, phase_bar, print_metrics, report_stop, say, train_progress
from .errors import CLIError


@dataclass(frozen=True)
class Demo:
    """The whole job on a scene splatfield makes itself: ray casts a procedural tabletop
    into a Blender-format dataset, trains Gaussians on it (3DGS density control, a few
    minutes on a CPU; --model field: a radiance field), reports the held-out PSNR and renders an orbit of the result.
    Run it again to reuse the dataset; a demo stopped with Ctrl-C continues."""

    out: Path = Path("runs/demo")
    """Output folder: data/, run/ (a run directory), frames/ and contact_sheet.png."""
    size: int = 128
    """Width and height of the dataset's images, in pixels."""
    steps: int = 3000
    """Training steps."""
    frames: int = 24
    """Views of the orbit rendered from the trained scene."""
    seed: int = 0
    """Seed of the cameras, initial points and training."""
    model: SceneKind = "gaussians"
    """gaussians, or field (a radiance field; its run, frames and contact sheet get a -field suffix)."""
    device: str = "auto"
    """auto (CUDA when torch sees a GPU, else the CPU), cpu, cuda or cuda:N."""

    def __post_init__(self) -> None:
        check_device(self.device)
        at_least(self.size, "size", 16)
        at_least(self.steps, "steps", 1)
        at_least(self.frames, "frames", 1)


def run(cfg: Demo) -> int:
    if cfg.out.exists() and not cfg.out.is_dir():
        raise CLIError(f"{cfg.out}: exists and is not a folder")

    from splatfield.render.device import resolve_device

    from . import demo_run as demo

    with bars() as opened:
        res = demo.run_demo(cfg.out, size=cfg.size, steps=cfg.steps, frames=cfg.frames, seed=cfg.seed, model=cfg.model,
                            on_phase=phase_bar(opened), on_step=train_progress(cfg.steps, opened),
                            log=say, device=resolve_device(cfg.device))  # fmt: skip
    if not res.finished:
        return report_stop(res.stop_signal, res.steps, f"run {res.run}", f"{PROG} demo --out {cfg.out}")
    print(f"{PROG} demo: dataset {res.dataset} (ray cast), run {res.run}")
    if res.metrics is not None:
        print_metrics(res.metrics)
        print(f"train time {res.metrics['train_seconds']:.0f} s for {res.steps} steps; metrics: {res.run / 'metrics.json'}")
    print(f"orbit frames: {res.frames_dir}/; contact sheet: {res.contact_sheet}")
    return 0
