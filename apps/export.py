"""``splatfield export``: a run's scene (or a splat file) in other splat formats, with what
each costs in size and quality (the work is :mod:`.exporting`)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Literal, Optional

import tyro
from typing_extensions import Annotated

from splatfield.scenes.config import at_least, check_device, require

from .console import PROG, bars, progress
from .errors import require_exists

ExportFormat = Literal["ply", "splat", "compressed-ply", "spz", "sog"]


@dataclass(frozen=True)
class Export:
    """Writes a run's scene (or a splat file) in other formats and reports, per format, the
    file size, bytes per splat, the ratio to ply and the PSNR of the decoded scene against
    the full-precision one (and against the ground truth of the run's test views)."""

    source: Annotated[Path, tyro.conf.Positional, tyro.conf.arg(metavar="RUN_OR_FILE")]
    """A run directory, or a .ply/.splat/.compressed.ply/.spz/.sog file (or SOG folder)."""
    format: tuple[ExportFormat, ...] = ("spz",)
    """Formats to write (several allowed)."""
    out: Annotated[
        Optional[Path], tyro.conf.arg(metavar="DIR", help_behavior_hint="(default: RUN/exports or next to FILE)")
    ] = None
    """Folder the files go to."""
    sh_degree: Annotated[Optional[Literal[0, 1, 2, 3]], tyro.conf.arg(help_behavior_hint="(default: the scene's)")] = None
    """Keep SH bands up to this degree."""
    min_opacity: float = 0.0
    """Drop Gaussians below this opacity first."""
    views: int = 0
    """Test views compared (spread evenly; 0: all of them; 16 orbit views for a bare file)."""
    device: str = "auto"
    """auto (CUDA when torch sees a GPU, else the CPU), cpu, cuda or cuda:N."""

    def __post_init__(self) -> None:
        check_device(self.device)
        at_least(self.views, "views", 0)
        require(0.0 <= self.min_opacity < 1.0, "min_opacity", f"must be in [0, 1) (got {self.min_opacity})")
        require(len(self.format) > 0, "format", "name at least one of ply, splat, compressed-ply, spz, sog")


def run(cfg: Export) -> int:
    require_exists(cfg.source)
    from splatfield.render.device import resolve_device

    from . import exporting as export

    src = export.load_source(cfg.source, cfg.views, resolve_device(cfg.device))
    with bars() as opened:
        opened.append(progress(len(cfg.format), "exporting", "format"))
        rows = export.export(src, list(dict.fromkeys(cfg.format)), out_dir=cfg.out, sh_degree=cfg.sh_degree,
                             min_opacity=cfg.min_opacity, progress=lambda f: opened[0].update(1))  # fmt: skip
    where = "test views" if src.image_at is not None else "orbit views"
    print(f"{PROG} export: {len(src.gaussians):,} Gaussians (SH degree {src.gaussians.max_sh_degree}); PSNR of the decoded "
          f"scene over {len(src.cameras) if src.cameras is not None else 0} {where}")  # fmt: skip
    truth = src.image_at is not None
    print(f"{'format':<15} {'size':>11} {'B/splat':>8} {'vs ply':>7} {'write s':>8} {'PSNR vs full':>13}"
          + (f" {'PSNR vs truth':>14} {'drop dB':>8}" if truth else "") + "  file")  # fmt: skip
    for r in rows:
        line = (f"{r.format:<15} {r.bytes:>11,} {r.bytes_per_splat:>8.1f} {r.ratio_to_ply:>6.1f}x {r.write_seconds:>8.2f} "
                f"{r.psnr_vs_full:>13.2f}")  # fmt: skip
        if truth:
            line += f" {r.psnr_vs_truth:>14.2f} {r.psnr_drop:>8.2f}"
        print(f"{line}  {r.path}")
    return 0
