"""What ``splatfield export`` does: write a scene in other splat formats and say what each costs.

The input is a run directory (its latest checkpoint, else its ``scene.ply``) or a splat file
of any supported format. A run trained with the elastic strategy can be exported at a size
ratio r (its elastic model's top ceil(r N) Gaussians, transformed at r), given as r, as a
count, or as the largest r whose file fits a size, or at several ratios at once (levels of
detail: the kept sets are nested, so the levels share their Gaussians). The ratio comes
before the other filters (minimum opacity, SH degree). Each requested format is written,
read back, and the decoded scene rendered next to the full-precision one: on the run's
test views (and then also against their ground truth), or, for a bare file, on an orbit
around the scene. The run's own ``scene.ply`` is never overwritten.
"""

from __future__ import annotations

import dataclasses
import math
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Sequence

import torch

from splatfield.render import Cameras, Gaussians, rasterize
from splatfield.render.camera_paths import orbit_around
from splatfield.scenes import formats
from splatfield.scenes.elastic import ElasticModel, kept_count
from splatfield.scenes.metrics import psnr
from splatfield.scenes.run import RunError

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
        return ExportSource(g, "scene", path / "exports", cams, lambda i: split.image(pick[i]), src.background,
                            path / "scene.ply", path, src.elastic)  # fmt: skip
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


def filtered(g: Gaussians, *, sh_degree: int | None = None, min_opacity: float = 0.0) -> Gaussians:
    """The filters after the ratio: Gaussians below ``min_opacity`` dropped, SH bands above
    ``sh_degree`` cut."""
    if min_opacity > 0:
        g = g.select(torch.sigmoid(g.opacity_logits) >= min_opacity)
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


def export(
    src: ExportSource,
    fmts: Sequence[str],
    *,
    out_dir: Path | None = None,
    sh_degree: int | None = None,
    min_opacity: float = 0.0,
    progress: Callable[[str], None] | None = None,
) -> list[ExportRow]:
    """Writes ``src`` in each format, decodes it, compares renders; returns one row per format."""
    g = filtered(src.gaussians, sh_degree=sh_degree, min_opacity=min_opacity)
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
        formats.write_splats(path, g.to(device="cpu"), fmt)
        dt = time.perf_counter() - t0
        size = file_size(path)
        if fmt == "ply":
            ply_bytes = size
        decoded = formats.read_splats(path).to(device=g.means.device)
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
                   min_opacity: float = 0.0, max_tries: int = 8) -> Resolved:  # fmt: skip
    """``--max-mb``: the largest ratio whose ``fmt`` file (after the other filters) fits
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
            g = filtered(src.at_ratio(k / total, f"--max-mb (the full scene takes more than {max_bytes / MB:g} MB)"),
                         sh_degree=sh_degree, min_opacity=min_opacity)  # fmt: skip
            path = Path(tmp) / f"probe{tries}{formats.FORMAT_SUFFIX[fmt]}"
            formats.write_splats(path, g.to(device="cpu"), fmt)
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
