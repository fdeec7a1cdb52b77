"""What ``splatfield export`` does: write a scene in other splat formats and say what each costs.

The input is a run directory (its latest checkpoint, else its ``scene.ply``) or a splat file
of any supported format. A run trained with the elastic strategy can be exported at a size
ratio r (its elastic model's top ceil(r N) Gaussians, transformed at r), given as r, as a
count, or as the largest r whose file fits a size, or at several ratios at once (levels of
detail: the kept sets are nested, so the levels share their Gaussians). The ratio comes
before the other filters: crop and clean (crop box, crop sphere, minimum opacity, maximum
scale, floaters: :class:`~splatfield.scenes.crop.CleanOptions`, :func:`cleaned`), then the
SH degree. Each requested format is written,
read back, and the decoded scene rendered next to the full-precision one: on the run's
test views (and then also against their ground truth), or, for a bare file, on an orbit
around the scene. The run's own ``scene.ply`` is never overwritten.

``--format mesh`` / ``points`` (:func:`export_geometry`) are not splat formats: a run's
training views, rendered, fused into a mesh or a point cloud (:mod:`splatfield.scenes.mesh`).
"""

from __future__ import annotations

import dataclasses
import math
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

import torch

from splatfield.render import Cameras, Gaussians, rasterize
from splatfield.render.camera_paths import orbit_around
from splatfield.scenes import formats
from splatfield.scenes.cleaning import Removed, clean
from splatfield.scenes.config import ConfigError
from splatfield.scenes.crop import CleanOptions
from splatfield.scenes.elastic import ElasticModel, kept_count
from splatfield.scenes.metrics import psnr
from splatfield.scenes.run import RunError, numbered_output

from .sources import ElasticError, ElasticSizes, SceneSource, open_source

MB = 1_000_000  # --max-mb counts decimal megabytes


@dataclass
class ExportRow:
    format: str
    path: Path
    bytes: int
    bytes_per_splat: float
    ratio_to_ply: float  # ply size / this size
    write_seconds: float
    psnr_vs_full: float  # decoded vs full-precision renders
    psnr_vs_truth: float | None  # decoded vs ground truth (runs with a test split)
    psnr_drop: float | None  # full-precision PSNR to truth minus decoded PSNR to truth


@dataclass
class ExportSource:
    gaussians: Gaussians
    name: str
    out_dir: Path
    cameras: Cameras | None  # views to compare on (test views of the run)
    image_at: Callable[[int], torch.Tensor] | None  # ground truth of those views
    background: tuple[float, float, float]
    protect: Path  # never overwritten: the run's scene.ply, or the input file
    path: Path | None = None  # what was given (named by errors)
    elastic: ElasticModel | None = None  # the run's elastic model, for size ratios
    _sizes: ElasticSizes | None = field(default=None, repr=False)
    train_cameras: Cameras | None = None  # the run's training views (--min-contribution); None for a bare file

    def at_ratio(self, ratio: float, asked: str = "") -> Gaussians:
        """The scene at size ratio r (r = 1: the scene itself); ``asked`` names the option
        in the error of a scene without an elastic model."""
        if self._sizes is None:
            self._sizes = ElasticSizes(self.gaussians, self.elastic, str(self.path or self.name))
        return self._sizes.at_ratio(ratio, asked)


def load_source(path: Path, views: int, device: torch.device = torch.device("cpu")) -> ExportSource:
    """Reads a run directory or a splat file; picks the views the comparison renders. Splat
    formats hold Gaussians: another kind of scene is refused in one line."""
    src: SceneSource = open_source(path, device)
    if src.scene.kind != "gaussians":
        raise RunError(path, f"holds a {src.scene.kind} scene; the splat formats hold Gaussians only")
    g = src.scene.gaussians  # type: ignore[attr-defined]
    if src.run is not None and src.dataset is not None:
        split = src.dataset.test if len(src.dataset.test) else src.dataset.train
        pick = _spread(len(split), views)
        cams = split.cameras.to(dtype=torch.float32)[torch.tensor(pick)]
        train = src.dataset.train.cameras.to(dtype=torch.float32) if len(src.dataset.train) else None
        return ExportSource(g, "scene", path / "exports", cams, lambda i: split.image(pick[i]), src.background,
                            path / "scene.ply", path, src.elastic, train_cameras=train)  # fmt: skip
    return ExportSource(g, _stem(path), path.parent, orbit_around(g.means, max(1, views if views > 0 else 16)), None,
                        (0.0, 0.0, 0.0), path, path)  # fmt: skip


def _stem(path: Path) -> str:
    name = path.name
    for suffix in sorted(formats.FORMAT_SUFFIX.values(), key=len, reverse=True):
        if name.endswith(suffix):
            return name[: -len(suffix)]
    return path.stem


def _spread(n: int, k: int) -> list[int]:
    """``k`` indices spread evenly over ``range(n)`` (all of them when k <= 0 or k >= n)."""
    if k <= 0 or k >= n:
        return list(range(n))
    return sorted({round(i * (n - 1) / (k - 1)) for i in range(k)}) if k > 1 else [n // 2]


def filtered(g: Gaussians, *, sh_degree: int | None = None) -> Gaussians:
    """The last filter, after the ratio and the crop and clean ones: SH bands above
    ``sh_degree`` cut."""
    if sh_degree is not None and sh_degree < g.max_sh_degree:
        g = g.with_(shN=g.shN[:, : (sh_degree + 1) ** 2 - 1].contiguous())
    return g


def file_size(path: Path) -> int:
    """Bytes of a splat file, or of every file in a SOG folder."""
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file()) if path.is_dir() else path.stat().st_size


@torch.no_grad()
def _renders(g: Gaussians, cams: Cameras, background: Sequence[float]) -> list[torch.Tensor]:
    cams = cams.to(device=g.means.device)
    return [rasterize(g, cams[i : i + 1], background=background).image[0].clamp(0, 1) for i in range(len(cams))]


def _mean(xs: list[float]) -> float:
    finite = [x for x in xs if math.isfinite(x)]
    return sum(finite) / len(finite) if finite else float("inf")


@dataclass(frozen=True)
class SpzSettings:
    """How ``.spz`` files are written (and read back for the comparison)."""

    version: int = 3
    axes: str = "ply"  # scenes.formats.spz.SpzAxes

    def options(self, fmt: str) -> dict:
        return {"version": self.version, "axes": self.axes} if fmt == "spz" else {}


def write_format(path: Path, g: Gaussians, fmt: str, spz: SpzSettings) -> None:
    formats.write_splats(path, g.to(device="cpu"), fmt, **spz.options(fmt))


def read_format(path: Path, fmt: str, spz: SpzSettings) -> Gaussians:
    """What :func:`write_format` wrote, read back (an .spz in the axes it was written in)."""
    return formats.read_splats(path, **({"axes": spz.axes} if fmt == "spz" else {}))


def export(
    src: ExportSource,
    fmts: Sequence[str],
    *,
    out_dir: Path | None = None,
    sh_degree: int | None = None,
    progress: Callable[[str], None] | None = None,
    spz: SpzSettings = SpzSettings(),
) -> list[ExportRow]:
    """Writes ``src`` in each format, decodes it, compares renders; returns one row per format."""
    g = filtered(src.gaussians, sh_degree=sh_degree)
    folder = out_dir if out_dir is not None else src.out_dir
    folder.mkdir(parents=True, exist_ok=True)
    n = max(1, len(g))
    full = _renders(g, src.cameras, src.background) if src.cameras is not None else []
    truth = [src.image_at(i).to(g.means.device).float() / 255 for i in range(len(full))] if src.image_at is not None else None
    full_vs_truth = _mean([float(psnr(a, b)) for a, b in zip(full, truth)]) if truth else None
    ply_bytes = None
    rows: list[ExportRow] = []
    for fmt in fmts:
        if progress:
            progress(fmt)
        path = folder / f"{src.name}{formats.FORMAT_SUFFIX[fmt]}"
        if path.resolve() == src.protect.resolve():
            raise RunError(path, "refusing to overwrite the scene being exported (choose another --out)")
        t0 = time.perf_counter()
        write_format(path, g, fmt, spz)
        dt = time.perf_counter() - t0
        size = file_size(path)
        if fmt == "ply":
            ply_bytes = size
        decoded = read_format(path, fmt, spz).to(device=g.means.device)
        dec = _renders(decoded, src.cameras, src.background) if src.cameras is not None else []
        vs_full = _mean([float(psnr(a, b)) for a, b in zip(dec, full)])
        vs_truth = _mean([float(psnr(a, b)) for a, b in zip(dec, truth)]) if truth else None
        rows.append(ExportRow(fmt, path, size, size / n, math.nan, dt, vs_full, vs_truth,
                              None if vs_truth is None or full_vs_truth is None else full_vs_truth - vs_truth))  # fmt: skip
    if ply_bytes is None:  # the ply size without writing one: header + 4 bytes per property per splat
        K = (g.max_sh_degree + 1) ** 2
        ply_bytes = 4 * len(g) * (14 + 3 * K) + 400
    for r in rows:
        r.ratio_to_ply = ply_bytes / r.bytes if r.bytes else math.nan
    return rows


# ----------------------------------------------------------------------------- size ratios


@dataclass
class Resolved:
    """A size target resolved to a ratio."""

    ratio: float
    kept: int  # Gaussians kept at the ratio (before the other filters)
    total: int
    bytes: int | None = None  # --max-mb: the size of the file at the ratio
    tries: int = 0  # --max-mb: files written to find it


def ratio_for_count(src: ExportSource, count: int) -> Resolved:
    """``--gaussians N``: the ratio keeping N Gaussians (all of them when N >= the scene's)."""
    total = len(src.gaussians)
    if count >= total:
        return Resolved(1.0, total, total)
    ratio = count / total
    return Resolved(ratio, kept_count(ratio, total), total)


def ratio_for_size(src: ExportSource, fmt: str, max_bytes: int, *, sh_degree: int | None = None,
                   max_tries: int = 8, clean_options: CleanOptions | None = None,
                   spz: SpzSettings = SpzSettings()) -> Resolved:  # fmt: skip
    """``--max-mb``: the largest ratio whose ``fmt`` file (after the other filters, crop and
    clean included: ``clean_options``) fits
    ``max_bytes``, to within 0.2% of the Gaussians. The full scene is written first; if it is
    too big, the kept count is estimated from the bytes per Gaussian of the files written so
    far (a line through the nearest sizes above and below the bound), the file written and
    measured, and the estimate stepped down while it is over."""
    total = len(src.gaussians)
    tolerance = max(1, total // 500)
    with tempfile.TemporaryDirectory(prefix="splatfield-size-") as tmp:
        tries = 0

        def size_at(k: int) -> int:
            nonlocal tries
            tries += 1
            g = src.at_ratio(k / total, f"--max-mb (the full scene takes more than {max_bytes / MB:g} MB)")
            if clean_options:
                g = clean(g, clean_options, cameras=src.train_cameras)[0]
            g = filtered(g, sh_degree=sh_degree)
            path = Path(tmp) / f"probe{tries}{formats.FORMAT_SUFFIX[fmt]}"
            write_format(path, g, fmt, spz)
            return file_size(path)

        over = (total, size_at(total))
        if over[1] <= max_bytes:
            return Resolved(1.0, total, total, over[1], tries)
        under: tuple[int, int] | None = None
        while under is None or (over[0] - under[0] > tolerance and tries < max_tries):
            if over[0] <= 1:
                raise ElasticError(f"--max-mb {max_bytes / MB:g}: even one Gaussian takes {over[1]:,} bytes as {fmt}")
            if under is None:  # bytes per Gaussian of the smallest file over the bound
                k = math.floor(over[0] * max_bytes / over[1])
            else:  # between the two nearest files
                k = under[0] + math.floor((over[0] - under[0]) * (max_bytes - under[1]) / max(1, over[1] - under[1]))
            k = max(under[0] + 1 if under else 1, min(over[0] - 1, k))
            size = size_at(k)
            if size <= max_bytes:
                under = (k, size)
            else:
                over = (k, size)
        return Resolved(under[0] / total, under[0], total, under[1], tries)


def level_ratios(ratios: Sequence[float]) -> list[float]:
    """--lod's ratios, finest first (level 0), each once."""
    return sorted(set(float(r) for r in ratios), reverse=True)


def level_name(stem: str, level: int, ratio: float) -> str:
    return f"{stem}-lod{level}-r{ratio:g}"


def reduced(src: ExportSource, ratio: float, name: str, asked: str = "") -> ExportSource:
    """``src`` at size ratio r, its files named ``name``."""
    return dataclasses.replace(src, gaussians=src.at_ratio(ratio, asked), name=name, elastic=None, _sizes=None)


# ----------------------------------------------------------------------------- crop and clean


def check_clean_options(src: ExportSource, options: CleanOptions) -> None:
    """Refuses, in one line, filters the source cannot take (floaters of a bare file)."""
    if options.needs_cameras and src.train_cameras is None:
        raise ConfigError("--min-contribution", f"needs a run's training cameras; {src.path or src.name} is a splat "
                                                "file (give the run directory)")  # fmt: skip


def crop_name(name: str, options: CleanOptions) -> str:
    """Files of a cropped scene are named ``<name>-crop`` (the other filters keep the name)."""
    return f"{name}-crop" if options.region else name


def clean_some(g: Gaussians, options: CleanOptions, *, cameras: Cameras | None, what: str,
               on_view: Callable[[int], None] | None = None) -> tuple[Gaussians, list[Removed]]:  # fmt: skip
    """:func:`~splatfield.scenes.cleaning.clean`, refused in one line (naming the last filter
    that removed any) when it leaves none of the Gaussians ``what`` (``to export``)."""
    kept, removed = clean(g, options, cameras=cameras, on_view=on_view)
    if len(kept) == 0:
        last = next(r.option for r in reversed(removed) if r.count)
        raise ConfigError(last, f"leaves none of the {len(g):,} Gaussians {what}")
    return kept, removed


def cleaned(src: ExportSource, options: CleanOptions, *,
            on_view: Callable[[int], None] | None = None) -> tuple[ExportSource, list[Removed]]:  # fmt: skip
    """``src`` through the crop and clean filters (after any size ratio, before the SH degree),
    its files named by :func:`crop_name`; and what each filter removed. A filter that leaves
    nothing is refused in one line."""
    if not options:
        return src, []
    check_clean_options(src, options)
    g, removed = clean_some(src.gaussians, options, cameras=src.train_cameras, what="to export", on_view=on_view)
    return dataclasses.replace(src, gaussians=g, name=crop_name(src.name, options), elastic=None, _sizes=None), removed


def removed_text(removed: Sequence[Removed], kept: int, total: int) -> str:
    """``--crop-box removed 120, --max-scale removed 3 (kept 877 of 1,000 Gaussians)``."""
    parts = ", ".join(f"{r.option} removed {r.count:,}" for r in removed)
    return f"{parts} (kept {kept:,} of {total:,} Gaussians)"


@dataclass
class CroppedExport:
    """What :func:`write_cropped` wrote."""

    row: ExportRow
    kept: int
    total: int  # Gaussians before the filters (at the ratio)
    removed: list[Removed]


def write_cropped(path: Path, options: CleanOptions, *, ratio: float = 1.0, fmt: str = "spz", views: int = 1,
                  device: torch.device = torch.device("cpu")) -> CroppedExport:  # fmt: skip
    """The viewer's "Export": ``splatfield export PATH [--ratio R] <options> --format FMT`` into
    the run's ``exports`` (next to a bare file), as the next free ``scene[-r<R>]-crop[-k]``
    (the viewer never overwrites a file)."""
    src = load_source(path, views, device)
    job = reduced(src, ratio, f"{src.name}-r{ratio:g}") if ratio < 1.0 else src
    total = len(job.gaussians)
    job, removed = cleaned(job, options)
    free = numbered_output(job.out_dir, job.name, formats.FORMAT_SUFFIX[fmt])
    job = dataclasses.replace(job, name=free.name[: -len(formats.FORMAT_SUFFIX[fmt])])
    return CroppedExport(export(job, [fmt])[0], len(job.gaussians), total, removed)


# ----------------------------------------------------------------------------- meshes and point clouds


@dataclass
class GeometryRow:
    """One mesh or point-cloud file written by :func:`export_geometry`."""

    format: str  # mesh | points
    path: Path
    vertices: int  # a point cloud's points
    triangles: int  # 0 for points
    fused: int  # vertices (points) of the fused surface, before the crop and the decimation
    cropped: int  # vertices (points) the crop region removed
    bytes: int


@dataclass
class GeometryExport:
    """What :func:`export_geometry` did: the fusion (views, voxel size, timings) and its files."""

    kind: str  # the scene's kind
    fusion: Any  # scenes.mesh.Fusion
    voxel_rule: str  # how the voxel size was chosen
    removed: list[Removed]  # Gaussians the clean filters removed before the renders
    rows: list[GeometryRow]


def export_geometry(
    path: Path,
    fmts: Sequence[str],
    *,
    out_dir: Path | None = None,
    voxel_size: float | None = None,
    max_triangles: int | None = None,
    mesh_file: str = "ply",
    sh_degree: int | None = None,
    clean_options: CleanOptions = CleanOptions(),
    device: torch.device = torch.device("cpu"),
    on_phase: Callable[[str, int], Callable[[int], None]] | None = None,
) -> GeometryExport:
    """``--format mesh`` / ``points``: a run's scene (any kind) rendered from its training
    cameras and fused (:mod:`splatfield.scenes.mesh`); the mesh cut to the crop region (its
    vertices outside removed), then decimated to ``max_triangles``; written to ``out_dir``
    (default: the run's ``exports``) as ``scene[-crop]-mesh.<mesh_file>`` and
    ``scene[-crop]-points.ply``. For Gaussians the clean filters (crop, opacity, scale,
    floaters) apply to the Gaussians first, so what they remove neither shows nor occludes; a
    field takes the crop only. A splat file has no cameras and is refused in one line."""
    from splatfield.render.camera_paths import scene_frame
    from splatfield.scenes import mesh as sm
    from splatfield.scenes.gaussian_scene import FixedGaussians

    src = open_source(path, device)
    if src.run is None or src.dataset is None:
        raise RunError(path, "a splat file has no cameras: --format mesh/points fuse a run's training views "
                             "(give the run directory)")  # fmt: skip
    if len(src.dataset.train) == 0:
        raise RunError(path, "the run's dataset has no training views to fuse")
    cams = src.dataset.train.cameras.to(dtype=torch.float32)
    scene = src.scene
    removed: list[Removed] = []
    if scene.kind == "gaussians" and clean_options:
        update = on_phase("contribution", len(cams)) if on_phase and clean_options.needs_cameras else None
        g, removed = clean_some(scene.gaussians, clean_options, cameras=cams, what="to mesh",  # type: ignore[attr-defined]
                                on_view=update)  # fmt: skip
        scene = FixedGaussians(g)
    elif scene.kind != "gaussians":
        for option, on in (("--min-opacity", clean_options.min_opacity > 0),
                           ("--max-scale", clean_options.max_scale is not None),
                           ("--min-contribution", clean_options.min_contribution is not None)):  # fmt: skip
            if on:
                raise ConfigError(option, f"filters Gaussians; {path} holds a {scene.kind} scene (its mesh takes "
                                          "--crop-box/--crop-sphere only)")  # fmt: skip
    extent = sm.scene_extent(scene)
    if voxel_size is None:
        voxel_size = sm.default_voxel_size(extent, cams)
        rule = (f"default: the larger of the extent {extent.longest:.4g} / {sm.VOXELS_ACROSS} and {sm.VOXEL_PIXELS:g} "
                f"times a pixel's width at the centre, {sm.pixel_footprint(cams, extent):.4g}")  # fmt: skip
    else:
        rule = "--voxel-size"
    fusion = sm.fuse(scene, cams, background=src.background, voxel_size=voxel_size, extent=extent,
                     sh_degree=sh_degree, on_view=on_phase("fusing", len(cams)) if on_phase else None)  # fmt: skip
    folder = out_dir if out_dir is not None else path / "exports"
    stem = crop_name("scene", clean_options)
    region = clean_options.region
    rows = []
    for fmt in fmts:
        geometry = sm.mesh_of(fusion) if fmt == "mesh" else sm.points_of(fusion)
        fused = sm.count(geometry)[0]
        if region:
            geometry = sm.keep_inside(geometry, region.contains)
        kept = sm.count(geometry)[0]
        if kept == 0:
            what = "vertices" if fmt == "mesh" else "points"
            raise ConfigError(region.options()[0], f"leaves none of the {fused:,} {what}")
        if fmt == "mesh":
            if max_triangles is not None:
                geometry = sm.decimate(geometry, max_triangles)
            out = folder / f"{stem}-mesh.{mesh_file}"
            sm.write_mesh(out, geometry, up=scene_frame(cams, torch.tensor(extent.centre))[0].tolist())
        else:
            out = folder / f"{stem}-points.ply"
            sm.write_points(out, geometry)
        rows.append(GeometryRow(fmt, out, *sm.count(geometry), fused, fused - kept, out.stat().st_size))
    return GeometryExport(scene.kind, fusion, rule, removed, rows)


# ----------------------------------------------------------------------------- cameras


def export_cameras(path: Path, *, out_dir: Path | None = None) -> tuple[Path, int, bool]:
    """``--format transforms``: a run's cameras as a nerfstudio ``transforms.json`` for the
    dataset's own image files, written to ``out_dir`` (default: the run's ``exports``): the
    refined cameras of a run trained with ``--camera-opt`` (test views in the refined frame),
    else the cameras as loaded. Returns (file, frames, refined)."""
    from splatfield.data.transforms_json import transforms_document
    from splatfield.scenes.checkpoint import write_json_atomic
    from splatfield.scenes.run import Run

    from .run_data import load_dataset, with_refined_cameras
    from .sources import is_run_dir

    if not is_run_dir(path):
        raise RunError(path, "a splat file has no cameras: --format transforms writes a run's cameras (give the run directory)")
    run = Run.open(path)
    given = load_dataset(run.config)
    dataset = with_refined_cameras(given, path)
    splits = {name: (s.cameras, list(s.image_paths), s.source_cameras)
              for name in ("train", "test") if len(s := getattr(dataset, name))}  # fmt: skip
    folder = out_dir if out_dir is not None else path / "exports"
    folder.mkdir(parents=True, exist_ok=True)
    out = folder / "transforms.json"
    doc = transforms_document(splits, relative_to=folder)
    write_json_atomic(out, doc)
    return out, len(doc["frames"]), dataset is not given
