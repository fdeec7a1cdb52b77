"""``splatfield export``: a run's scene (or a splat file) in other splat formats, with what
each costs in size and quality; or a run's scene of any kind as a mesh or a point cloud (the
work is :mod:`.exporting`)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Literal, Optional

import tyro
from typing_extensions import Annotated

from splatfield.scenes.config import ConfigError, at_least, check_device, check_ratio, finite_at_least, flag, require
from splatfield.scenes.crop import CleanOptions, CropRegion

from .console import PROG, bars, phase_bar, progress
from .errors import require_exists

ExportFormat = Literal["ply", "splat", "compressed-ply", "spz", "sog", "mesh", "points", "transforms"]
GEOMETRY_FORMATS = ("mesh", "points")  # not splats: fused from a run's training views (exporting.export_geometry)
CAMERA_FORMATS = ("transforms",)  # the run's (refined) cameras as a nerfstudio transforms.json (exporting.export_cameras)
MeshFile = Literal["ply", "obj", "glb"]


@dataclass(frozen=True)
class Export:
    """Writes a run's scene (or a splat file) in other formats and reports, per format, the
    file size, bytes per splat, the ratio to ply and the PSNR of the decoded scene against
    the full-precision one (and against the ground truth of the run's test views). A run
    trained with --strategy adc elastic exports at any size: --ratio, --gaussians, --max-mb
    or --lod (one of them). Then crop and clean, in this order: the crop box (turned by
    its rotation), the crop sphere, minimum opacity, maximum scale, floaters (a Gaussian is
    inside a region when its mean is); then the SH degree. The report says how many Gaussians
    each filter removed. The viewer's "Crop" panel prints these options for its box.
    --format mesh or points instead: a coloured triangle mesh or point cloud fused from a run's
    training views, for any scene kind (--voxel-size, --max-triangles, --mesh-file).
    --format transforms: the run's cameras (refined with --camera-opt) as a nerfstudio
    transforms.json for the dataset's image files."""

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
    spz_version: Literal[2, 3, 4] = 3
    """.spz version to write: 3 (gzip) is read by every current SPZ reader; 4 (zstd streams,
    a few % smaller) by Niantic's spz >= 3.0 and PlayCanvas splat-transform >= 3.7; 2 by the
    oldest readers (spz-js). docs/FORMATS.md."""
    spz_axes: Literal["ply", "rub"] = "ply"
    """Axes of the .spz file: ply stores the scene's axes as they are (what PlayCanvas
    splat-transform/SuperSplat, spz-js and Niantic's ply_to_spz do); rub converts to
    right-up-back, the axes Niantic's README names (three.js-style loaders that convert).
    Version 4 files also say which, in Adobe's coordinate-system extension."""
    min_opacity: float = 0.0
    """Drop Gaussians below this opacity (after the crop)."""
    crop_box: Annotated[
        Optional[tuple[float, float, float, float, float, float]],
        tyro.conf.arg(metavar="CX CY CZ SX SY SZ", help_behavior_hint="(default: no box)"),
    ] = None
    """Keep the Gaussians whose mean is inside this box: centre, then full edge lengths along
    the box's axes (> 0); files named <name>-crop."""
    crop_rotation: Annotated[
        Optional[tuple[float, float, float, float]],
        tyro.conf.arg(metavar="QW QX QY QZ", help_behavior_hint="(default: 1 0 0 0, axis-aligned)"),
    ] = None
    """Rotation of the --crop-box, a quaternion w x y z from the box's axes to the world's (as
    viser's transform controls give it; normalised, not zero)."""
    crop_sphere: Annotated[
        Optional[tuple[float, float, float, float]],
        tyro.conf.arg(metavar="CX CY CZ R", help_behavior_hint="(default: no sphere)"),
    ] = None
    """Keep the Gaussians whose mean is inside this sphere (with --crop-box: inside both);
    files named <name>-crop."""
    max_scale: Annotated[Optional[float], tyro.conf.arg(metavar="S", help_behavior_hint="(default: no bound)")] = None
    """Drop Gaussians whose largest axis scale exceeds S world units."""
    min_contribution: Annotated[
        Optional[float], tyro.conf.arg(metavar="T", help_behavior_hint="(default: keep floaters)")
    ] = None
    """Drop floaters: Gaussians that give no training view at least T pixels' worth of colour
    (per view, the sum over its pixels of alpha times the transmittance in front; measured
    after the other filters). Needs a run directory (its training cameras)."""
    ratio: Annotated[Optional[float], tyro.conf.arg(metavar="R", help_behavior_hint="(default: the whole scene)")] = (
        None
    )
    """Export the scene at size ratio R in (0, 1]: its elastic model's top ceil(R N) Gaussians,
    transformed at R (before the crop and clean filters and --sh-degree); files named scene-r<R>."""
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
    voxel_size: Annotated[
        Optional[float], tyro.conf.arg(metavar="V", help_behavior_hint="(default: from the scene and cameras)")
    ] = None
    """--format mesh/points: the TSDF's voxel edge in scene units. Default: the larger of the
    scene's extent / 512 (its longest side between the 1st and 99th percentiles of its points)
    and 1.5 times the width of a pixel at the scene's centre (median camera distance / focal length).
    Mesh and points fuse the run's training views, rendered: expected depth and colour where
    alpha >= 0.8 (the rest is background), in open3d's TSDF, a surface where >= 2 views saw it;
    a crop box/sphere removes the vertices (points) outside it."""
    max_triangles: Annotated[Optional[int], tyro.conf.arg(metavar="T", help_behavior_hint="(default: all)")] = None
    """--format mesh: decimate (quadric error) to at most T triangles."""
    mesh_file: MeshFile = "ply"
    """--format mesh: ply (binary), obj (vertex colours after the positions) or glb (binary glTF);
    files named scene[-crop]-mesh.<type> and scene[-crop]-points.ply."""
    device: str = "auto"
    """auto (CUDA when torch sees a GPU, else the CPU), cpu, cuda or cuda:N."""

    def __post_init__(self) -> None:
        check_device(self.device)
        at_least(self.views, "views", 0)
        self.clean_options  # the crop and clean options, --min-opacity too, checked (one-line errors naming the option)
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
        if self.voxel_size is not None:
            finite_at_least(self.voxel_size, "voxel_size", 0.0, strict=True)
        at_least(self.max_triangles, "max_triangles", 1)
        if CAMERA_FORMATS[0] in self.format:
            require(set(self.format) == {CAMERA_FORMATS[0]}, "format",
                    f"transforms (the run's cameras) is written on its own (got {' '.join(self.format)})")  # fmt: skip
            if sizes:
                raise ConfigError(flag(sizes[0]), "sizes the splat formats, not --format transforms")
        if self.geometry:
            require(len(self.geometry) == len(set(self.format)), "format",
                    f"mesh and points are not written with splat formats (got {' '.join(self.format)}): "
                    "export them separately")  # fmt: skip
            if sizes:
                raise ConfigError(flag(sizes[0]), "sizes the splat formats, not --format mesh/points")

    @property
    def geometry(self) -> list[str]:
        """The --format entries that are not splats (mesh, points), each once."""
        return [f for f in dict.fromkeys(self.format) if f in GEOMETRY_FORMATS]

    @property
    def clean_options(self) -> CleanOptions:
        """The crop and clean filters (after the size ratio, before the SH degree)."""
        region = CropRegion.from_options(self.crop_box, self.crop_rotation, self.crop_sphere)
        return CleanOptions(region, self.min_opacity, self.max_scale, self.min_contribution)


def run(cfg: Export) -> int:
    require_exists(cfg.source)
    from splatfield.render.device import resolve_device

    from . import exporting as export

    if cfg.geometry:
        return run_geometry(cfg)
    if CAMERA_FORMATS[0] in cfg.format:
        out, frames, refined = export.export_cameras(cfg.source, out_dir=cfg.out)
        what = "refined cameras (--camera-opt)" if refined else "cameras as loaded (the run did not refine them)"
        print(f"{PROG} export: {frames} frames' {what} -> {out}")
        return 0
    src = export.load_source(cfg.source, cfg.views, resolve_device(cfg.device))
    cleaning = cfg.clean_options
    export.check_clean_options(src, cleaning)
    fmts = list(dict.fromkeys(cfg.format))
    spz = export.SpzSettings(version=cfg.spz_version, axes=cfg.spz_axes)
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
        got = export.ratio_for_size(src, fmts[0], budget, sh_degree=cfg.sh_degree, clean_options=cleaning, spz=spz)
        print(f"{PROG} export: --max-mb {cfg.max_mb:g}: ratio {got.ratio:.6g} ({got.kept:,} of {total:,} Gaussians, "
              f"{got.bytes:,} bytes as {fmts[0]}; {got.tries} file{'s' * (got.tries != 1)} tried)")  # fmt: skip
        jobs = [(export.reduced(src, got.ratio, f"{src.name}-{cfg.max_mb:g}mb"), None)]
    if cleaning:  # crop and clean each job (after its ratio, before the SH degree)
        with bars() as opened:
            if cleaning.needs_cameras:
                opened.append(progress(len(jobs) * len(src.train_cameras), "contribution", "view"))
            cleaned = [(export.cleaned(job, cleaning, on_view=lambda i: opened and opened[0].update(1)), level)
                       for job, level in jobs]  # fmt: skip
        for (job, removed), _ in cleaned:
            before = len(job.gaussians) + sum(r.count for r in removed)
            print(f"{PROG} export: {job.name}: {export.removed_text(removed, len(job.gaussians), before)}")
        jobs = [(job, level) for (job, _), level in cleaned]
    with bars() as opened:
        opened.append(progress(len(fmts) * len(jobs), "exporting", "file"))
        done = [(job, level, export.export(job, fmts, out_dir=cfg.out, sh_degree=cfg.sh_degree, spz=spz,
                                           progress=lambda f: opened[0].update(1)))
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


def run_geometry(cfg: Export) -> int:
    """--format mesh/points: fuse the run's training views, write and report the files."""
    from splatfield.render.device import resolve_device

    from . import exporting as export

    with bars() as opened:
        done = export.export_geometry(cfg.source, cfg.geometry, out_dir=cfg.out, voxel_size=cfg.voxel_size,
                                      max_triangles=cfg.max_triangles, mesh_file=cfg.mesh_file, sh_degree=cfg.sh_degree,
                                      clean_options=cfg.clean_options, device=resolve_device(cfg.device),
                                      on_phase=phase_bar(opened))  # fmt: skip
    f = done.fusion
    if done.removed:
        removed = ", ".join(f"{r.option} removed {r.count:,}" for r in done.removed)
        print(f"{PROG} export: before the renders, {removed} Gaussians ({sum(r.count for r in done.removed):,} in all)")
    print(f"{PROG} export: {f.views} training views of the {done.kind} scene fused ({f.pixels:,} pixels with alpha >= "
          f"{f.alpha_min:g}); voxel {f.voxel_size:.4g} ({done.voxel_rule}); render {f.seconds_render:.1f} s, "
          f"fusion {f.seconds_fuse:.1f} s")  # fmt: skip
    print(f"{'format':<7} {'vertices':>11} {'triangles':>11} {'cropped':>9} {'size':>13}  file")
    for r in done.rows:
        tri = f"{r.triangles:,}" if r.format == "mesh" else "-"
        print(f"{r.format:<7} {r.vertices:>11,} {tri:>11} {r.cropped:>9,} {r.bytes:>13,}  {r.path}")
    return 0
