"""What ``splatfield eval --ratios`` does: a run's scene at several size ratios r, measured on
its test views (all of them, as ``eval`` does), next to the baselines at the same counts.

Methods, each at ceil(r N) of the run's N Gaussians and none fine-tuned:

- ``elastic``: the run's elastic model (selection and transform; runs trained with
  ``--strategy adc elastic`` only);
- ``importance``: the top by global significance (LightGaussian): the sum over every
  training view of alpha * T per Gaussian (:func:`splatfield.scenes.elastic.importance_over`);
- ``opacity``: the top by opacity;
- ``random``: a random subset (seed 0);
- ``capped``: another run trained from scratch with ``--adc.max-gaussians`` (``--capped-runs``),
  measured once at its own size on this run's test views; its ratio is its count over N.

At r = 1 every method is the scene itself, measured once. The rows go to ``RUN/ratios.json``
and a plot of PSNR against the kept fraction to ``RUN/ratios.png``.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable, Sequence

import torch

from splatfield import data as sfdata
from splatfield.render import Gaussians
from splatfield.scenes.checkpoint import write_json_atomic
from splatfield.scenes.elastic import RANKING_METHODS, baseline_order, importance_over, subset, top
from splatfield.scenes.evaluate import evaluate
from splatfield.scenes.gaussian_scene import FixedGaussians
from splatfield.scenes.run import Run, RunError
from splatfield.scenes.scene import Renderable

from . import plot
from .run_data import load_dataset
from .sources import open_source

METHODS = ("elastic", *RANKING_METHODS, "capped")
RATIOS_JSON = "ratios.json"
RATIOS_PNG = "ratios.png"

Phase = Callable[[str, int], Callable[[int], None]]


@dataclass
class RatioRow:
    ratio: float  # asked; a capped run's: its count over the run's
    method: str  # one of METHODS
    psnr: float
    ssim: float
    num_gaussians: int


@dataclass
class RatiosResult:
    rows: list[RatioRow]
    total: int  # the run's Gaussians
    has_elastic: bool
    split: str
    views: int
    json_path: Path
    png_path: Path


def _no_phase(name: str, total: int) -> Callable[[int], None]:
    return lambda n: None


def _test_split(dataset: sfdata.Dataset) -> tuple[str, sfdata.Split]:
    return ("test", dataset.test) if len(dataset.test) else ("train", dataset.train)


def _same_views(a: sfdata.Split, b: sfdata.Split) -> bool:
    ca, cb = a.cameras, b.cameras
    if len(a) != len(b) or (ca.width, ca.height) != (cb.width, cb.height):
        return False
    close = lambda x, y: torch.allclose(x.double(), y.double(), rtol=1e-6, atol=1e-6)  # noqa: E731
    return close(ca.world_to_camera, cb.world_to_camera) and all(
        close(getattr(ca, k), getattr(cb, k)) for k in ("fx", "fy", "cx", "cy"))  # fmt: skip


def evaluate_ratios(path: Path, ratios: Sequence[float], capped_runs: Sequence[Path] = (), *,
                    device: torch.device = torch.device("cpu"), on_phase: Phase | None = None) -> RatiosResult:  # fmt: skip
    """Measures the run at ``path`` at each ratio by each method (and the capped runs); writes
    ``ratios.json`` and ``ratios.png`` into the run; returns the rows."""
    phase = on_phase or _no_phase
    Run.open(path)  # a one-line error where it is no run directory
    src = open_source(path, device)
    assert src.run is not None and src.dataset is not None
    if src.scene.kind != "gaussians":
        raise RunError(path, f"holds a {src.scene.kind} scene; size ratios are of Gaussian scenes")
    split_name, split = _test_split(src.dataset)
    cams = split.cameras.to(dtype=torch.float32)
    capped: list[tuple[Path, Renderable]] = []
    for other in capped_runs:  # every capped run checked before the first measurement
        run = Run.open(other)
        scene = run.scene(device=device)
        if scene.kind != "gaussians":
            raise RunError(other, f"holds a {scene.kind} scene; a capped run holds Gaussians")
        if not _same_views(_test_split(load_dataset(run.config))[1], split):
            raise RunError(other, f"its {split_name} views are not those of {path} "
                                  "(a capped run is trained on the same data)")  # fmt: skip
        capped.append((other, scene))

    g: Gaussians = src.scene.gaussians  # type: ignore[attr-defined]
    N = len(g)
    ratios = sorted(set(float(r) for r in ratios), reverse=True)
    methods = [m for m in METHODS[:-1] if m != "elastic" or src.elastic is not None]

    orders = {}
    if any(r < 1.0 for r in ratios):
        tick = phase("importance over the training views", len(src.dataset.train))
        importance = importance_over(g, src.dataset.train.cameras, on_view=lambda i: tick(1))
        for m in RANKING_METHODS:
            orders[m] = baseline_order(m, g, importance, seed=0)

    def at(method: str, r: float) -> Gaussians:
        if method == "elastic":
            return src.at_ratio(r).gaussians  # type: ignore[attr-defined]
        return subset(g, top(orders[method], r))

    measured = sum(1 if r >= 1.0 else len(methods) for r in ratios) + len(capped)
    tick = phase("evaluating", measured * len(split))

    def measure(scene) -> tuple[float, float]:
        res = evaluate(scene, cams, split.image, background=src.background, mask_at=split.mask,
                       on_view=lambda i, image: tick(1), use_lpips=False)  # fmt: skip
        return res.psnr, res.ssim

    rows: list[RatioRow] = []
    for r in ratios:
        if r >= 1.0:  # every method keeps every Gaussian, untransformed: the scene itself
            psnr, ssim = measure(src.scene)
            rows += [RatioRow(r, m, psnr, ssim, N) for m in methods]
            continue
        for m in methods:
            reduced = at(m, r)
            psnr, ssim = measure(FixedGaussians(reduced))
            rows.append(RatioRow(r, m, psnr, ssim, len(reduced)))
    for other, scene in capped:
        psnr, ssim = measure(scene)
        rows.append(RatioRow(len(scene) / N, "capped", psnr, ssim, len(scene)))

    run_dir = src.run.path
    write_json_atomic(run_dir / RATIOS_JSON, [asdict(row) for row in rows])
    title = f"{'Test PSNR' if split_name == 'test' else 'PSNR'} vs model size ({run_dir.name}, N = {N:,})"
    plot.save(run_dir / RATIOS_PNG, draw_ratios(rows, N, title))
    return RatiosResult(rows, N, src.elastic is not None, split_name, len(split), run_dir / RATIOS_JSON,
                        run_dir / RATIOS_PNG)  # fmt: skip


def draw_ratios(rows: Sequence[RatioRow], total: int, title: str, size: tuple[int, int] = (900, 560)):
    """PSNR against the kept fraction (log axis): a line per method, the capped runs as points."""
    finite = lambda v: v if math.isfinite(v) else None  # noqa: E731
    series = []
    for m in METHODS:
        mine = sorted((row for row in rows if row.method == m), key=lambda row: row.num_gaussians)
        if mine:
            series.append(plot.Series("capped runs" if m == "capped" else m, [row.num_gaussians / total for row in mine],
                                      [finite(row.psnr) for row in mine], line=m != "capped"))  # fmt: skip
    return plot.draw(series, title=title, x_label="kept fraction of the Gaussians (log scale)",
                     y_label="PSNR (dB)", size=size, x_log=True)  # fmt: skip
