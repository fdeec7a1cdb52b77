"""``splatfield bench raster``: rasterize() forward and backward timed (the measurement is
:mod:`.raster_timing`)."""

from __future__ import annotations

import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Literal, Optional

import tyro
from typing_extensions import Annotated

from splatfield.scenes.config import at_least, check_device, require

from ..console import PROG, progress, write_json
from ..errors import CLIError, check_output_file

# Mirrors splatfield.render.types.Statistic (checked by the tests); kept here so that
# parsing the command line does not import torch.
StatisticName = Literal["grad2d", "importance", "split2d", "mean2d_grad"]
BackendName = Literal["native", "reference"]
DEFAULT_GAUSSIANS = 100_000
SceneSource = tyro.conf.create_mutex_group(required=False, title="scene (one of)")


@dataclass(frozen=True)
class BenchRaster:
    """Times rasterize() forward (autograd on) and backward (loss mean((image - 0.5)^2), then
    backward) the way the shared/bench peers were measured: medians of --repeats after --warmup.
    pairs/s = Gaussian-pixel pairs in the alpha >= 1/255 footprints / median forward time.
    Peak RSS is the whole process's peak: compare configurations from separate invocations.
    """

    scene: Annotated[
        Optional[Path], SceneSource, tyro.conf.arg(metavar="FILE", help_behavior_hint="(default: a random scene)")
    ] = None
    """Benchmark scene (float32 LE rows: x y z | log_scale0..2 | qw qx qy qz | opacity | r g b)."""
    gaussians: Annotated[
        Optional[int], SceneSource, tyro.conf.arg(metavar="N", help_behavior_hint=f"(default: {DEFAULT_GAUSSIANS})")
    ] = None
    """N random Gaussians distributed like the shared scene, seeded by --seed."""
    width: int = 400
    """Image width in pixels (the camera has a 60 degree field of view in x and in y)."""
    height: int = 400
    """Image height in pixels."""
    backend: tuple[BackendName, ...] = ("native",)
    """Backends to time, in order; with both, the speed ratio native/reference is printed."""
    repeats: int = 10
    """Timed iterations per backend (median reported)."""
    warmup: int = 2
    """Untimed iterations before the timed ones."""
    reference_repeats: int = 3
    """Caps --repeats for the (slow, pure PyTorch) reference backend."""
    threads: Annotated[Optional[int], tyro.conf.arg(metavar="T", help_behavior_hint="(default: torch's choice)")] = None
    """torch.set_num_threads(T) before running (otherwise torch's default, e.g. OMP_NUM_THREADS)."""
    stats: Annotated[tuple[StatisticName, ...], tyro.conf.arg(help_behavior_hint="(default: none)")] = ()
    """Per-Gaussian statistics the backward pass also accumulates."""
    sh_degree: Literal[0, 1, 2, 3] = 0
    """Spherical-harmonics degree evaluated (coefficients above 0 are zero)."""
    json: Annotated[Optional[Path], tyro.conf.arg(metavar="FILE", help_behavior_hint="(default: no file)")] = None
    """Also write the results as JSON (atomically) to FILE."""
    seed: int = 0
    """Seed of the random scene (--gaussians)."""
    compare_stats: bool = False
    """Also time the native forward+backward without and with --stats, alternating run by run
    in this process, and report the overhead of the statistics."""
    device: str = "auto"
    """auto (CUDA when torch sees a GPU, else the CPU), cpu, cuda or cuda:N."""

    def __post_init__(self) -> None:
        check_device(self.device)
        at_least(self.width, "width", 1)
        at_least(self.height, "height", 1)
        at_least(self.repeats, "repeats", 1)
        at_least(self.warmup, "warmup", 0)
        at_least(self.reference_repeats, "reference_repeats", 1)
        at_least(self.gaussians, "gaussians", 1)
        at_least(self.threads, "threads", 1)
        require(len(self.backend) > 0, "backend", "name at least one of native, reference")
        require(self.stats or not self.compare_stats, "compare_stats", "name the statistics to compare with --stats")


def run(cfg: BenchRaster) -> int:
    if cfg.json is not None:
        check_output_file(cfg.json)

    import torch

    from splatfield.render import resolve_backend
    from splatfield.render.device import resolve_device

    from ..machine import machine_info
    from . import raster_timing as bench
    from . import scene as scene_io

    if cfg.threads is not None:
        torch.set_num_threads(cfg.threads)
    camera = scene_io.bench_camera(cfg.width, cfg.height)
    if cfg.scene is not None:
        gaussians = scene_io.read_bench_scene(cfg.scene, sh_degree=cfg.sh_degree)
        scene_label = str(cfg.scene)
    else:
        n = DEFAULT_GAUSSIANS if cfg.gaussians is None else cfg.gaussians
        gaussians = scene_io.random_bench_gaussians(n, camera, seed=cfg.seed, sh_degree=cfg.sh_degree)
        scene_label = f"random (seed {cfg.seed})"
    device = resolve_device(cfg.device)
    gaussians, camera = gaussians.to(device=device), camera.to(device=device)
    backends = list(dict.fromkeys(cfg.backend))
    if "native" in backends:
        try:
            resolve_backend("native", device)
        except RuntimeError as exc:
            raise CLIError(str(exc), code=1) from None

    machine = machine_info()
    fx = float(camera.fx[0])
    print(
        f"{PROG} bench raster: {len(gaussians):,} Gaussians ({scene_label}), {cfg.width}x{cfg.height}, "
        f"60° fov (fx={fx:.2f}), sh degree {cfg.sh_degree}, stats: {', '.join(cfg.stats) or 'none'}; device {device}"
    )
    print(
        f"torch {torch.__version__}, threads: {torch.get_num_threads()}, {machine['model']} "
        f"({machine['logical_cores']} logical cores); medians after warm-ups"
    )
    header = (
        f"{'backend':<10} {'runs':>6} {'forward ms':>11} {'backward ms':>12} {'total ms':>10} "
        f"{'Mpairs/s':>9} {'peak RSS MiB':>13} {'threads':>7}"
    )
    print(header)
    sys.stdout.flush()
    results = []
    for backend in backends:
        repeats = cfg.repeats if backend == "native" else min(cfg.repeats, cfg.reference_repeats)
        with progress(cfg.warmup + repeats, backend, "it") as bar:
            r = bench.time_raster(
                gaussians, camera, backend, repeats=repeats, warmup=cfg.warmup, stats=cfg.stats,
                sh_degree=cfg.sh_degree, scene=scene_label, progress=bar.update,
            )  # fmt: skip
        results.append(r)
        print(
            f"{backend:<10} {f'{r.warmup}+{r.repeats}':>6} {r.forward_ms:>11.1f} {r.backward_ms:>12.1f} "
            f"{r.total_ms:>10.1f} {r.pairs_per_s / 1e6:>9.3g} {r.peak_rss_mb:>13.0f} {r.threads:>7}",
            flush=True,
        )
    ratios = bench.speed_ratios(results)
    if ratios is not None:
        print(
            f"speed native/reference (reference time / native time): forward {ratios['forward']:.1f}x, "
            f"backward {ratios['backward']:.1f}x, total {ratios['total']:.1f}x"
        )
    r0 = results[0]
    print(
        f"{r0.pairs:,} pairs, {r0.visible:,} Gaussians visible; {bench.PAIRS_DEFINITION}; "
        f"pairs/s = pairs / median forward time"
    )
    print("runs = warm-ups + timed; peak RSS is this process's peak so far (use separate invocations to compare)")
    doc = bench.results_json(results)
    if cfg.compare_stats:
        with progress(cfg.warmup + cfg.repeats, "stats A/B", "pair") as bar:
            ab = bench.time_stats_overhead(gaussians, camera, cfg.stats, repeats=cfg.repeats, warmup=cfg.warmup,
                                           sh_degree=cfg.sh_degree, progress=bar.update)  # fmt: skip
        print(f"statistics overhead, native, {ab.repeats} alternating pairs: without {ab.without_forward_ms:.1f} + "
              f"{ab.without_backward_ms:.1f} ms, with {', '.join(ab.stats)} {ab.with_forward_ms:.1f} + "
              f"{ab.with_backward_ms:.1f} ms (forward + backward medians): backward {100 * ab.backward_overhead:+.1f}%, "
              f"total {100 * ab.total_overhead:+.1f}% (median of the pairs {100 * ab.paired_total_overhead:+.1f}%)")  # fmt: skip
        doc = {**doc, "stats_overhead": ab.to_json()}
    write_json(cfg.json, doc)
    return 0
