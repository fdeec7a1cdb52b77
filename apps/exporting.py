"""What ``splatfield export`` does: write a scene in other splat formats and say what each costs.

The input is a run directory (its ``scene.ply``, or its latest checkpoint when there is no
ply yet) or a splat file of any supported format. Each requested format is written,
read back, and the decoded scene rendered next to the full-precision one: on the run's
test views (and then also against their ground truth), or, for a bare file, on an orbit
around the scene. The run's own ``scene.ply`` is never overwritten.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Sequence

import torch

from splatfield.render import Cameras, Gaussians, rasterize
from splatfield.render.camera_paths import orbit_around
from splatfield.scenes import formats
from splatfield.scenes.metrics import psnr
from splatfield.scenes.run import RunError

from .sources import SceneSource, open_source


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
                            path / "scene.ply")  # fmt: skip
    return ExportSource(g, _stem(path), path.parent, orbit_around(g.means, max(1, views if views > 0 else 16)), None,
                        (0.0, 0.0, 0.0), path)  # fmt: skip


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
    g = src.gaussians
    if min_opacity > 0:
        g = g.select(torch.sigmoid(g.opacity_logits) >= min_opacity)
    if sh_degree is not None and sh_degree < g.max_sh_degree:
        g = g.with_(shN=g.shN[:, : (sh_degree + 1) ** 2 - 1].contiguous())
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
        size = sum(p.stat().st_size for p in path.rglob("*") if p.is_file()) if path.is_dir() else path.stat().st_size
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
