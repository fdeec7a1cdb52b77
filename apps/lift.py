"""``splatfield lift``: one image of an object to a 3D scene (issue 17, in part).

The image (its alpha, or ``--mask``, as the object's silhouette) becomes a one-view
Blender-format dataset at a stated reference camera (:mod:`splatfield.data.single_view`);
Gaussians are trained on it with the density control and, with ``--guidance PATH``, the
``distill`` strategy (score distillation from a diffusers checkpoint on random views around
the object); ``--guidance none`` trains on the reference view alone (the baseline a prior
must beat). The result is a normal run directory (``view``, ``render``, ``export`` and
``eval`` work on it), plus an orbit video at the reference elevation and distance.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Optional

import tyro
from typing_extensions import Annotated

from splatfield.scenes.config import at_least, check_device, finite_at_least, require
from splatfield.scenes.strategies.options import DistillConfig

from .console import PROG, bars, phase_bar, print_metrics, report_stop, say, train_progress
from .errors import CLIError


@dataclass(frozen=True)
class Lift:
    """Lifts one image of an object into 3D Gaussians: its reference view's colour and
    silhouette, plus score distillation from a diffusion prior on random views around it
    (--guidance). Prompts and Zero-1-to-3-style priors are not supported yet (docs/LIFTING.md)."""

    image: Annotated[Path, tyro.conf.Positional, tyro.conf.arg(metavar="IMAGE")]
    """A square image of the object (PNG with alpha, or any image with --mask)."""
    mask: Optional[Path] = None
    """The object's silhouette (white = object); default: the image's alpha channel."""
    guidance: str = "none"
    """A diffusers checkpoint folder (unet/, scheduler/, optional vae/; read locally), or none
    (the reference view alone)."""
    out: Path = Path("runs/lift")
    """Output folder: reference/ (the one-view dataset), run/ (a run directory), orbit.mp4."""
    steps: int = 1000
    """Training steps."""
    size: Optional[int] = None
    """Resize the image to SIZE x SIZE (None: as it is)."""
    elevation: float = 0.0
    """Elevation of the reference camera above the object's horizontal plane, in degrees."""
    fov: float = 40.0
    """Field of view of the reference camera, in degrees."""
    radius: float = 2.5
    """Distance of the reference camera from the object's centre (the object should fill a
    good part of the image: at 40 degrees it sees about +-0.9 units around the centre)."""
    init_points: int = 5000
    """Random initial Gaussians in a cube around the centre."""
    init_half_size: float = 0.5
    """Half size of that cube."""
    sh_degree: int = 0
    """Spherical-harmonics degree (0: one colour per Gaussian; one view cannot teach more)."""
    frames: int = 24
    """Frames of the orbit video."""
    seed: int = 0
    """Seed of the initial Gaussians, training and distillation."""
    distill: DistillConfig = DistillConfig()
    """Score distillation's options (--distill.estimator, --distill.guidance-scale, ...); its
    guidance folder is --guidance."""
    device: str = "auto"
    """auto (CUDA when torch sees a GPU, else the CPU), cpu, cuda or cuda:N."""

    def __post_init__(self) -> None:
        check_device(self.device)
        at_least(self.steps, "steps", 1)
        at_least(self.size, "size", 8)
        require(-89.0 <= self.elevation <= 89.0, "elevation", f"must be within [-89, 89] degrees (got {self.elevation})")
        require(0.0 < self.fov < 180.0, "fov", f"must be in (0, 180) degrees (got {self.fov})")
        finite_at_least(self.radius, "radius", 0.0, strict=True)
        at_least(self.init_points, "init_points", 1)
        finite_at_least(self.init_half_size, "init_half_size", 0.0, strict=True)
        require(self.sh_degree in (0, 1, 2, 3), "sh_degree", f"must be 0, 1, 2 or 3 (got {self.sh_degree})")
        at_least(self.frames, "frames", 1)
        require(self.guidance.strip() != "", "guidance", "give a diffusers checkpoint folder or none")


def run(cfg: Lift) -> int:
    if cfg.out.exists() and not cfg.out.is_dir():
        raise CLIError(f"{cfg.out}: exists and is not a folder")
    from splatfield.render.device import resolve_device

    from . import lift_run

    with bars() as opened:
        res = lift_run.run_lift(cfg, on_phase=phase_bar(opened), on_step=train_progress(cfg.steps, opened), log=say,
                                device=resolve_device(cfg.device))  # fmt: skip
    if not res.finished:
        return report_stop(res.stop_signal, res.steps, f"run {res.run}", f"{PROG} lift {cfg.image} --out {cfg.out}")
    print(f"{PROG} lift: run {res.run} (reference view: {res.reference})")
    if res.metrics is not None:
        print_metrics(res.metrics)
    print(f"orbit: {res.video}; frames: {res.frames_dir}/")
    return 0

