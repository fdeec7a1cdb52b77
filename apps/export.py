"""``splatfield export``: a run's scene (or a splat file) in other splat formats, with what
each costs in size and quality (the work is :mod:`.exporting`)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Literal, Optional

import tyro
from typing_extensions import Annotated

from splatfield.scenes.config import ConfigError, at_least, check_device, check_ratio, finite_at_least, require

from .console import PROG, bars, progress
from .errors import require_exists

ExportFormat = Literal["ply", "splat", "compressed-ply", "spz", "sog"]


@dataclass(frozen=True)
class Export:
    """Writes a run's scene (or a splat file) in other formats and reports, per format, the
    file size, bytes per splat, the ratio to ply and the PSNR of the decoded scene against
    the full-precision one (and against the ground truth of the run's test views). A run
    trained with --strategy adc elastic exports at any size: --ratio, --gaussians, --max-mb
    or --lod (one of them)."""

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
    ratio: Annotated[Optional[float], tyro.conf.arg(metavar="R", help_behavior_hint="(default: the whole scene)")] = (
        None
    )
    """Export the scene at size ratio R in (0, 1]: its elastic model's top ceil(R N) Gaussians,
    transformed at R (before --min-opacity and --sh-degree); files named scene-r<R>."""
    gaussians: Annotated[Optional[int], tyro.conf.arg(metavar="N", help_behavior_hint="(default: all)")] = None
    """Export at the size ratio that keeps N Gaussians; files named scene-n<N>."""
    max_mb: Annotated[Optional[float], tyro.conf.arg(metavar="M", help_behavior_hint="(default: no bound)")] = None
    """Export at the largest size ratio whose file (one --format) fits M MB (10^6 bytes);
    files named scene-<M>mb."""
    lod: Annotated[
        Optional[tuple[float, ...]], tyro.conf.arg(metavar="R [R ...]", help_behavior_hint="(default: none)")
    ] = None
    """Levels of detail: one file per size ratio, scene-lod<k>-r<R> (level 0 the largest R); the
    levels are nested (each one's Gaussians are among the next larger level's)."""
    views: int = 0
    """Test views compared (spread evenly; 0: all of them; 16 orbit views for a bare file)."""
    device: str = "auto"
    """auto (CUDA when torch sees a GPU, else the CPU), cpu, cuda or cuda:N."""

    def __post_init__(self) -> None:
        check_device(self.device)
        at_least(self.views, "views", 0)
        require(0.0 <= self.min_opacity < 1.0, "min_opacity", f"must be in [0, 1) (got {self.min_opacity})")
        require(len(self.format) > 0, "format", "name at least one of ply, splat, compressed-ply, spz, sog")
        sizes = [f for f in ("ratio", "gaussians", "max_mb", "lod") if getattr(self, f) is not None]
        if len(sizes) > 1:
            names = [f"--{f.replace('_', '-')}" for f in sizes]
            one_of = "give one of --ratio, --gaussians, --max-mb, --lod"
            raise ConfigError(names[0], f"{one_of} (got {' and '.join(names)})")
        if self.ratio is not None:
            check_ratio(self.ratio, "ratio")
        at_least(self.gaussians, "gaussians", 1)
        if self.max_mb is not None:
            finite_at_least(self.max_mb, "max_mb", 0.0, strict=True)
            require(len(set(self.format)) == 1, "max_mb",
                    f"fits one file: give one --format (got {' '.join(self.format)})")  # fmt: skip
        if self.lod is not None:
            require(len(self.lod) > 0, "lod", "name one size ratio or more (e.g. --lod 1 0.25 0.05)")
            for r in self.lod:
                check_ratio(r, "lod")


def run(cfg: Export) -> int:
    require_exists(cfg.source)
    from splatfield.render.device import resolve_device

    from . import exporting as export

    src = export.load_source(cfg.source, cfg.views, resolve_device(cfg.device))
    fmts = list(dict.fromkeys(cfg.format))
    total = len(src.gaussians)
    jobs = [(src, None)]  # (what to export, its level and ratio under --lod)
    if cfg.lod:
        jobs = [(export.reduced(src, r, export.level_name(src.name, k, r), f"--lod {r:g}"), (k, r))
                for k, r in enumerate(export.level_ratios(cfg.lod))]  # fmt: skip
    elif cfg.ratio is not None:
        jobs = [(export.reduced(src, cfg.ratio, f"{src.name}-r{cfg.ratio:g}"), None)]
    elif cfg.gaussians is not None:
        got = export.ratio_for_count(src, cfg.gaussians)
        asked = f"--gaussians {cfg.gaussians:,}"
        print(f"{PROG} export: {asked}: ratio {got.ratio:.6g} ({got.kept:,} of {total:,} Gaussians)")
        jobs = [(export.reduced(src, got.ratio, f"{src.name}-n{cfg.gaussians}", f"{asked} (of {total:,})"), None)]
    elif cfg.max_mb is not None:
        budget = round(cfg.max_mb * export.MB)
        got = export.ratio_for_size(src, fmts[0], budget, sh_degree=cfg.sh_degree, min_opacity=cfg.min_opacity)
        print(f"{PROG} export: --max-mb {cfg.max_mb:g}: ratio {got.ratio:.6g} ({got.kept:,} of {total:,} Gaussians, "
              f"{got.bytes:,} bytes as {fmts[0]}; {got.tries} file{'s' * (got.tries != 1)} tried)")  # fmt: skip
        jobs = [(export.reduced(src, got.ratio, f"{src.name}-{cfg.max_mb:g}mb"), None)]
    with bars() as opened:
        opened.append(progress(len(fmts) * len(jobs), "exporting", "file"))
        done = [(job, level, export.export(job, fmts, out_dir=cfg.out, sh_degree=cfg.sh_degree,
                                           min_opacity=cfg.min_opacity, progress=lambda f: opened[0].update(1)))
                for job, level in jobs]  # fmt: skip
    where = "test views" if src.image_at is not None else "orbit views"
    views = f"{len(src.cameras) if src.cameras is not None else 0} {where}"
    shown = jobs[0][0].gaussians
    if cfg.lod:
        what = f"{len(jobs)} levels of {total:,} Gaussians"
    elif jobs[0][0] is not src:  # at a size ratio
        what = f"{len(shown):,} of {total:,} Gaussians"
    else:
        what = f"{total:,} Gaussians"
    print(f"{PROG} export: {what} (SH degree {shown.max_sh_degree}); PSNR of the decoded scene over {views}")
    truth = src.image_at is not None
    lead = f"{'level':<5} {'ratio':>7} {'Gaussians':>11} " if cfg.lod else ""
    print(lead + f"{'format':<15} {'size':>11} {'B/splat':>8} {'vs ply':>7} {'write s':>8} {'PSNR vs full':>13}"
          + (f" {'PSNR vs truth':>14} {'drop dB':>8}" if truth else "") + "  file")  # fmt: skip
    for job, level, rows in done:
        for r in rows:
            line = (f"{r.format:<15} {r.bytes:>11,} {r.bytes_per_splat:>8.1f} {r.ratio_to_ply:>6.1f}x "
                    f"{r.write_seconds:>8.2f} {r.psnr_vs_full:>13.2f}")  # fmt: skip
            if truth:
                line += f" {r.psnr_vs_truth:>14.2f} {r.psnr_drop:>8.2f}"
            if level is not None:
                line = f"{level[0]:<5} {level[1]:>7g} {len(job.gaussians):>11,} " + line
            print(f"{line}  {r.path}")
    return 0
