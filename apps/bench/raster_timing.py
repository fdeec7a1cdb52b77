"""Rasterizer benchmark: the measurement behind ``splatfield bench raster``.

Protocol (the one the peer figures in ``../shared/bench/README.md`` were measured with):

* forward  = ``rasterize(...)`` (projection + rasterization) with autograd on, every
  Gaussian tensor ``requires_grad``;
* backward = ``loss = mean((image - 0.5)^2)`` then ``loss.backward()``;
* ``warmup`` untimed iterations, then ``repeats`` timed ones (``time.perf_counter``, the
  gradients cleared between iterations); the figures are medians.

``pairs_per_s`` is the number of Gaussian-pixel pairs inside the Gaussians' alpha >= 1/255
footprints (see :func:`count_footprint_pairs`) divided by the median forward time: a
measure of rasterization work per second that does not depend on how an implementation
bins or culls.

Nothing here prints; :mod:`splatfield.apps.cli` does.
"""

from __future__ import annotations

import math
import statistics
import time
from dataclasses import asdict, dataclass, field
from typing import Any, Callable, Literal, Sequence

import torch
from torch import Tensor

from splatfield.render import Cameras, Gaussians, Statistic, rasterize, reference
from splatfield.render.device import synchronize

from ..machine import machine_info, peak_rss_mb

BenchBackend = Literal["native", "reference"]

# The rasterizer's defaults, which the benchmark uses; the pair count projects with the same.
NEAR_PLANE = 0.01
FAR_PLANE = 1e10
EPS2D = 0.3
ALPHA_MIN = 1.0 / 255.0

PAIRS_DEFINITION = (
    "pairs = Gaussian-pixel pairs with alpha >= 1/255, i.e. d^T C d <= 2 ln(255 o) for pixel centres "
    "at integer+0.5 inside the image (float64 projection; compositing's early stop not applied)"
)


# ----------------------------------------------------------------------------- pairs


def count_footprint_pairs(
    means2d: Tensor,  # [N, 2] pixel coordinates (pixel centres at integer + 0.5)
    conics: Tensor,  # [N, 3] a, b, c of the inverse 2D covariance [[a, b], [b, c]]
    opacities: Tensor,  # [N] (after any antialiasing compensation)
    radii: Tensor,  # [N, 2]; a Gaussian counts only where both are > 0 (rendered)
    width: int,
    height: int,
    max_rows: int = 1 << 20,
) -> int:
    """Counts the Gaussian-pixel pairs inside the Gaussians' alpha >= 1/255 footprints, exactly.

    A pixel (x, y) with centre p = (x + 0.5, y + 0.5) belongs to a rendered Gaussian's
    footprint when ``o * exp(-1/2 d^T C d) >= 1/255`` with ``d = p - mean2d``, i.e. when
    ``d^T C d <= K`` with ``K = 2 ln(255 o)``, and 0 <= x < width, 0 <= y < height. This is
    every pair a rasterizer has to evaluate and keep, whatever its tiling; it ignores the
    early stop of compositing (transmittance < 1e-4), which depends on depth order.

    Computed in float64 and vectorised: for each visible Gaussian and each pixel row whose
    centre lies within the ellipse's vertical extent (which lies inside its radius), the
    footprint on that row is an interval of x, the roots of a quadratic in dx; the integer
    pixel centres inside it and inside [0, width) are counted. Rows are expanded with
    ``torch.repeat_interleave``, in chunks of at most ``max_rows`` rows to bound memory.
    """
    f64 = torch.float64
    means2d, conics, opacities = (t.detach().to("cpu", f64) for t in (means2d, conics, opacities))
    radii = radii.detach().cpu()
    a, b, c = conics.unbind(-1)
    with torch.no_grad():
        det = a * c - b * b
        ok = (
            (radii > 0).all(-1)
            & (opacities * 255.0 > 1.0)
            & (a > 0)
            & (det > 0)
            & means2d.isfinite().all(-1)
            & conics.isfinite().all(-1)
        )
        idx = ok.nonzero()[:, 0]
        if idx.numel() == 0:
            return 0
        mx, my = means2d[idx, 0], means2d[idx, 1]
        a, b, c, det = a[idx], b[idx], c[idx], det[idx]
        K = 2.0 * torch.log(255.0 * opacities[idx])
        # The ellipse d^T C d <= K spans |dy| <= sqrt(K a / det) (C^-1 has yy entry a / det).
        ext_y = torch.sqrt(K * a / det)
        # Rows whose centre y + 0.5 lies in [my - ext_y, my + ext_y], clipped to the image.
        y0 = torch.ceil(my - ext_y - 0.5).clamp(0, height).to(torch.int64)
        y1 = torch.floor(my + ext_y - 0.5).clamp(-1, height - 1).to(torch.int64)
        n_rows = (y1 - y0 + 1).clamp_min(0)
        ends = torch.cumsum(n_rows, 0)  # rows up to and including Gaussian i
        budget = max(int(max_rows), height)  # one Gaussian spans at most `height` rows
        total = 0
        start = 0
        n = idx.numel()
        while start < n:
            base = int(ends[start - 1]) if start > 0 else 0
            stop = int(torch.searchsorted(ends, base + budget, right=True))
            stop = max(stop, start + 1)
            sl = slice(start, stop)
            counts = n_rows[sl]
            rows_here = int(counts.sum())
            if rows_here:
                g = torch.repeat_interleave(torch.arange(stop - start), counts)
                first = torch.cumsum(counts, 0) - counts  # first row's position of each Gaussian
                offset = torch.arange(rows_here) - first[g]
                ys = (y0[sl][g] + offset).to(f64)
                dy = ys + 0.5 - my[sl][g]
                ag, bg = a[sl][g], b[sl][g]
                # a dx^2 + 2 b dy dx + (c dy^2 - K) <= 0
                disc = (bg * bg - ag * c[sl][g]) * dy * dy + ag * K[sl][g]
                root = torch.sqrt(disc.clamp_min(0))
                lo = (-bg * dy - root) / ag
                hi = (-bg * dy + root) / ag
                mxg = mx[sl][g]
                # pixel centres x + 0.5 in [mx + lo, mx + hi]
                x0 = torch.ceil(mxg + lo - 0.5).clamp_min(0)
                x1 = torch.floor(mxg + hi - 0.5).clamp_max(width - 1)
                cnt = torch.where(disc >= 0, (x1 - x0 + 1).clamp_min(0), torch.zeros_like(x0))
                total += int(cnt.sum().item())
            start = stop
        return total


def footprint_pairs(
    gaussians: Gaussians,
    cameras: Cameras,
    radii: Tensor,  # [B, N, 2] from the render
    means2d: Tensor,  # [B, N, 2] from the render
    *,
    sh_degree: int,
    antialiased: bool = False,
    chunk: int = 1 << 17,
) -> int:
    """Pairs of one render (summed over its cameras): visibility and centres from the render,
    conics and opacities from :func:`splatfield.render.reference.project` in float64 on the
    same inputs. See :func:`count_footprint_pairs` for the definition."""
    f64 = torch.float64
    cams = cameras.to(device="cpu", dtype=f64)
    n_sh = (sh_degree + 1) ** 2
    total = 0
    # Projection is per Gaussian: chunk it so that 1M Gaussians in float64 stay small.
    for s in range(0, len(gaussians), chunk):
        g = Gaussians(*(t[s : s + chunk] for t in gaussians.tensors())).detach().to(device="cpu", dtype=f64)
        with torch.no_grad():
            _, conics, opacities, _, _, _ = reference.project(
                g.means, g.quats, g.log_scales, g.opacity_logits, g.sh[:, :n_sh], cams.world_to_camera, cams.Ks,
                cams.width, cams.height, sh_degree, NEAR_PLANE, FAR_PLANE, EPS2D, antialiased,
            )  # fmt: skip
        for b in range(len(cams)):
            total += count_footprint_pairs(
                means2d[b, s : s + chunk], conics[b], opacities[b], radii[b, s : s + chunk], cams.width, cams.height
            )
    return total


# ----------------------------------------------------------------------------- machine


# ----------------------------------------------------------------------------- timing


@dataclass
class RasterBenchResult:
    """One backend's figures. :meth:`to_json` gives the documented JSON object."""

    backend: str
    forward_ms: float  # median
    backward_ms: float  # median (loss + backward)
    total_ms: float  # median of forward + backward per iteration
    pairs_per_s: float  # footprint pairs / median forward time
    pairs: int
    visible: int  # Gaussians rendered (radii > 0) in the camera
    peak_rss_mb: float  # this process's peak RSS after this backend's runs (cumulative)
    threads: int
    gaussians: int
    width: int
    height: int
    repeats: int
    warmup: int
    stats: list[str]
    scene: str
    cpu: dict
    torch: str
    device: str = "cpu"
    peak_device_mb: float | None = None  # peak memory allocated on a GPU (None on the CPU)
    forward_ms_all: list[float] = field(default_factory=list)
    backward_ms_all: list[float] = field(default_factory=list)

    JSON_KEYS = (
        "forward_ms", "backward_ms", "pairs_per_s", "peak_rss_mb", "threads", "backend", "gaussians", "width",
        "height", "total_ms", "stats", "scene", "repeats", "cpu", "torch", "device", "peak_device_mb",
    )  # fmt: skip

    def to_json(self) -> dict:
        d = asdict(self)
        return {k: d[k] for k in self.JSON_KEYS}


def _median(xs: Sequence[float]) -> float:
    return float(statistics.median(xs))


def time_raster(
    gaussians: Gaussians,
    cameras: Cameras,
    backend: BenchBackend,
    *,
    repeats: int = 10,
    warmup: int = 2,
    stats: Sequence[Statistic] = (),
    sh_degree: int = 0,
    scene: str = "",
    progress: Callable[[], None] | None = None,
) -> RasterBenchResult:
    """Times ``rasterize`` forward and backward on ``backend`` (the module docstring's protocol),
    then counts the footprint pairs of the last render (untimed)."""
    if repeats < 1 or warmup < 0:
        raise ValueError(f"need repeats >= 1 and warmup >= 0, got {repeats}, {warmup}")
    params = Gaussians(*(t.detach().clone() for t in gaussians.tensors())).requires_grad_(True)
    device = params.means.device
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    fwd: list[float] = []
    bwd: list[float] = []
    tot: list[float] = []
    meta = None
    for it in range(warmup + repeats):
        f_ms, b_ms, meta = _time_once(params, cameras, backend, stats, sh_degree)
        if it >= warmup:
            fwd.append(f_ms)
            bwd.append(b_ms)
            tot.append(f_ms + b_ms)
        if progress is not None:
            progress()
    rss = peak_rss_mb()  # before the (untimed) pair count, which allocates its own memory
    assert meta is not None
    radii, means2d = meta.radii.detach(), meta.means2d.detach()
    del meta
    for t in params.tensors():
        t.grad = None
    pairs = footprint_pairs(params, cameras, radii, means2d, sh_degree=sh_degree)
    forward_ms = _median(fwd)
    return RasterBenchResult(
        backend=backend,
        forward_ms=forward_ms,
        backward_ms=_median(bwd),
        total_ms=_median(tot),
        pairs_per_s=pairs / (forward_ms / 1e3) if forward_ms > 0 else math.nan,
        pairs=pairs,
        visible=int((radii > 0).all(-1).sum()),
        peak_rss_mb=rss,
        threads=torch.get_num_threads(),
        gaussians=len(gaussians),
        width=cameras.width,
        height=cameras.height,
        repeats=repeats,
        warmup=warmup,
        stats=list(dict.fromkeys(stats)),
        scene=scene,
        cpu=machine_info(),
        torch=torch.__version__,
        device=str(device),
        peak_device_mb=torch.cuda.max_memory_allocated(device) / 2**20 if device.type == "cuda" else None,
        forward_ms_all=fwd,
        backward_ms_all=bwd,
    )


def _time_once(
    params: Gaussians, cameras: Cameras, backend: BenchBackend, stats: Sequence[Statistic], sh_degree: int
) -> tuple[float, float, Any]:
    """One forward and backward: (forward ms, backward ms, the render's meta)."""
    for t in params.tensors():
        t.grad = None
    device = params.means.device  # a GPU queues its work: wait for it before each clock reading
    synchronize(device)
    t0 = time.perf_counter()
    out = rasterize(params, cameras, sh_degree=sh_degree, stats=stats, backend=backend, antialiased=False)
    synchronize(device)
    t1 = time.perf_counter()
    loss = ((out.image - 0.5) ** 2).mean()
    loss.backward()
    synchronize(device)
    t2 = time.perf_counter()
    return (t1 - t0) * 1e3, (t2 - t1) * 1e3, out.meta


@dataclass
class StatsOverhead:
    """Forward+backward without and with statistics, timed alternately in one process (so
    that the machine's drift falls on both arms alike)."""

    stats: list[str]
    repeats: int
    without_forward_ms: float
    without_backward_ms: float
    with_forward_ms: float
    with_backward_ms: float
    backward_overhead: float  # with / without - 1, of the backward medians
    total_overhead: float  # of the forward+backward medians
    paired_total_overhead: float  # median over the pairs of (with / without - 1)

    def to_json(self) -> dict:
        return asdict(self)


def time_stats_overhead(
    gaussians: Gaussians,
    cameras: Cameras,
    stats: Sequence[Statistic],
    *,
    repeats: int = 10,
    warmup: int = 2,
    sh_degree: int = 0,
    progress: Callable[[], None] | None = None,
) -> StatsOverhead:
    """Native forward+backward with no statistics and with ``stats``, alternating run by run."""
    params = Gaussians(*(t.detach().clone() for t in gaussians.tensors())).requires_grad_(True)
    arms: dict[bool, list[tuple[float, float]]] = {False: [], True: []}
    for it in range(warmup + repeats):
        for with_stats in ((False, True) if it % 2 == 0 else (True, False)):
            f_ms, b_ms, _ = _time_once(params, cameras, "native", stats if with_stats else (), sh_degree)
            if it >= warmup:
                arms[with_stats].append((f_ms, b_ms))
        if progress is not None:
            progress()
    (wo_f, wo_b), (w_f, w_b) = ([_median([x[i] for x in arms[k]]) for i in (0, 1)] for k in (False, True))
    paired = [(a[0] + a[1]) / (b[0] + b[1]) - 1.0 for a, b in zip(arms[True], arms[False])]
    return StatsOverhead(
        stats=list(dict.fromkeys(stats)), repeats=repeats, without_forward_ms=wo_f, without_backward_ms=wo_b,
        with_forward_ms=w_f, with_backward_ms=w_b, backward_overhead=w_b / wo_b - 1.0,
        total_overhead=(w_f + w_b) / (wo_f + wo_b) - 1.0, paired_total_overhead=_median(paired),
    )  # fmt: skip


def speed_ratios(results: Sequence[RasterBenchResult]) -> dict[str, float] | None:
    """How many times faster native is than reference (reference time / native time), or None."""
    by = {r.backend: r for r in results}
    if "native" not in by or "reference" not in by:
        return None
    n, r = by["native"], by["reference"]
    return {
        "forward": r.forward_ms / n.forward_ms,
        "backward": r.backward_ms / n.backward_ms,
        "total": r.total_ms / n.total_ms,
    }


def results_json(results: Sequence[RasterBenchResult]) -> dict:
    """One backend: its object; several: ``{"results": [...], "ratios": {...}}`` (ratios only when
    both native and reference ran; each is reference time / native time)."""
    if len(results) == 1:
        return results[0].to_json()
    out: dict = {"results": [r.to_json() for r in results]}
    ratios = speed_ratios(results)
    if ratios is not None:
        out["ratios"] = ratios
    return out
