"""The ``splatfield`` command: one entry point, subcommands parsed by tyro.

Each subcommand is a flat, typed, frozen dataclass whose options are validated when the
command line is parsed (``Literal`` choices, typed numbers); this module parses, checks
what the types cannot (ranges, files), calls into :mod:`splatfield.apps.bench` /
:mod:`splatfield.apps.demo`, and prints. To add a subcommand (train, view, render,
export, eval, ...): write its dataclass, add it to :data:`Command` with a
``subcommand(...)`` name, and register its handler in :data:`HANDLERS`.

Exit status: 0 success; 2 bad input (a parse error, an option out of range, a missing or
malformed file), reported as one line ``splatfield: error: <file or option>: <problem>``
on stderr, never a traceback; 1 a failure of the environment (e.g. the native rasterizer
cannot be built); 130 interrupted (Ctrl-C).

Heavy modules (torch, the renderer) are imported only once a command runs, so ``--help``
is quick and Ctrl-C is caught from the start.
"""

from __future__ import annotations

import contextlib
import dataclasses
import math
import os
import sys
import time
import warnings
from pathlib import Path
from typing import Any, Callable, Iterator, Literal, Optional, Sequence, Union

import tyro
from tyro.conf import subcommand
from typing_extensions import Annotated

PROG = "splatfield"

# Mirrors splatfield.render.types.Statistic (checked by the tests); kept here so that
# parsing the command line does not import torch.
StatisticName = Literal["grad2d", "importance", "split2d", "mean2d_grad"]
BackendName = Literal["native", "reference"]
StrategyName = Literal["adc", "steepest", "none"]
ExportFormat = Literal["ply", "splat", "compressed-ply", "spz", "sog"]
PathKind = Literal["orbit", "spiral", "interp"]  # mirrors splatfield.apps.render.PathKind
SplitName = Literal["test", "train"]
# Mirror splatfield.data.sfm.SfmMatcher / SfmCameraModel (checked by the tests).
SfmMatcherName = Literal["auto", "exhaustive", "sequential"]
SfmCameraModelName = Literal["SIMPLE_PINHOLE", "PINHOLE", "SIMPLE_RADIAL", "RADIAL", "OPENCV", "OPENCV_FISHEYE"]
SceneSource = tyro.conf.create_mutex_group(required=False, title="scene (one of)")

DEFAULT_GAUSSIANS = 100_000


class CLIError(Exception):
    """An error reported as one line; ``code`` is the exit status."""

    def __init__(self, message: str, code: int = 2) -> None:
        super().__init__(message)
        self.code = code


# ----------------------------------------------------------------------------- commands


@dataclasses.dataclass(frozen=True)
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


@dataclasses.dataclass(frozen=True)
class Demo:
    """The whole job on a scene splatfield makes itself: ray casts a procedural tabletop
    into a Blender-format dataset, trains Gaussians on it (3DGS density control, a few
    minutes on a CPU), reports the held-out PSNR and renders an orbit of the result.
    Run it again to reuse the dataset; a demo stopped with Ctrl-C continues."""

    out: Path = Path("runs/demo")
    """Output folder: data/, run/ (a run directory), frames/ and contact_sheet.png."""
    size: int = 128
    """Width and height of the dataset's images, in pixels."""
    steps: int = 3000
    """Training steps."""
    frames: int = 24
    """Views of the orbit rendered from the trained scene."""
    seed: int = 0
    """Seed of the cameras, initial points and training."""


@dataclasses.dataclass(frozen=True)
class Train:
    """Trains a Gaussian-splatting scene on a dataset (Blender, transforms.json, COLMAP, LLFF)
    into a run directory: config.yaml, checkpoints/, scene.ply, cameras.json, metrics.json,
    renders/test/. Ctrl-C (or SIGTERM) saves a checkpoint; --resume RUN continues it."""

    data: Annotated[Optional[Path], tyro.conf.Positional, tyro.conf.arg(metavar="DATA")] = None
    """Dataset folder (or its transforms/poses file), or a folder of photos or a video (SfM first,
    with `splatfield sfm`'s defaults, cached); not needed with --resume."""
    strategy: StrategyName = "adc"
    """Density control: adc (3DGS adaptive density control), steepest (SteepGS: split only at
    saddle points, two offspring along the splitting matrix's most negative eigenvector) or
    none (fixed Gaussians)."""
    steps: Annotated[Optional[int], tyro.conf.arg(help_behavior_hint="(default: 7000, or the resumed run's)")] = None
    """Training steps (one view per step)."""
    downscale: float = 1.0
    """Divide the image size by this (cached resized images)."""
    out: Annotated[Optional[Path], tyro.conf.arg(metavar="RUN", help_behavior_hint="(default: runs/<data>-<time>)")] = None
    """Run directory to create."""
    resume: Annotated[Optional[Path], tyro.conf.arg(metavar="RUN", help_behavior_hint="(default: a new run)")] = None
    """Continue this run from its latest checkpoint, exactly where it stopped."""
    seed: int = 0
    """Seed of the initial points, view order and density control."""
    sh_degree: Literal[0, 1, 2, 3] = 3
    """Highest spherical-harmonics degree (grown by one every 1000 steps)."""
    init_points: int = 100_000
    """Random initial points when the dataset has no SfM points."""
    init_half_size: Annotated[Optional[float], tyro.conf.arg(help_behavior_hint="(default: extent / 3)")] = None
    """Half size of the cube of random initial points (around the cameras' look-at centre)."""
    test_every: int = 8
    """Every n-th frame is a test view when the dataset has no split of its own."""
    checkpoint_every: int = 1000
    """Steps between checkpoints (0: only at the end and on Ctrl-C)."""
    keep_checkpoints: int = 3
    """Checkpoints kept (the newest)."""
    eval: bool = True
    """Evaluate on the test views when training finishes."""
    threads: Annotated[Optional[int], tyro.conf.arg(metavar="T", help_behavior_hint="(default: torch's choice)")] = None
    """torch.set_num_threads(T)."""
    split_threshold: float = 1e-6
    """steepest: split where the smallest eigenvalue of the splitting matrix times extent^2 is
    below minus this (without the gradient gate use a far larger one, e.g. 0.1 on lego)."""
    split_grad_gate: bool = True
    """steepest: also require the 3DGS gradient test (average NDC gradient >= 2e-4)."""
    split_displacement: float = 1.0
    """steepest: offspring at mu +- this many standard deviations along the eigenvector."""
    max_splits: Annotated[Optional[int], tyro.conf.arg(metavar="N", help_behavior_hint="(default: no budget)")] = None
    """steepest: at most N splits per densification step, most negative eigenvalue first."""
    projection_curvature: bool = True
    """steepest: include the projection's curvature term in the splitting matrix."""
    split_criterion: Literal["curvature", "loss-change"] = "curvature"
    """steepest: compare --split-threshold with the smallest eigenvalue times extent^2
    (curvature), or with the split's predicted loss change 1/2 delta^2 lambda_min (loss-change,
    scale-free; thresholds near 1e-8)."""
    viewer: bool = True
    """Serve a live browser viewer while training (its URL is printed); --no-viewer for headless."""
    viewer_port: int = 8080
    """Port of the viewer (the next free one if taken; 0: any free port)."""
    viewer_host: str = "127.0.0.1"
    """Interface the viewer listens on (0.0.0.0: reachable from other machines)."""


@dataclasses.dataclass(frozen=True)
class Eval:
    """Evaluates a run's latest checkpoint on its test views (PSNR, SSIM, LPIPS when its
    weights are present locally); writes metrics.json and renders/test/."""

    run: Annotated[Path, tyro.conf.Positional, tyro.conf.arg(metavar="RUN")]
    """Run directory."""


@dataclasses.dataclass(frozen=True)
class BenchTrain:
    """Times the first --steps training steps (render, loss, backward, density control,
    Adam) on a dataset initialised as `splatfield train` does; reports the median step time.
    The peers' figure (shared/bench): lego at --downscale 2 from 100k random points in
    [-1.5, 1.5]^3 (--init-half-size 1.5)."""

    data: Annotated[Path, tyro.conf.Positional, tyro.conf.arg(metavar="DATA")]
    """Dataset folder."""
    downscale: float = 2.0
    """Divide the image size by this."""
    steps: int = 100
    """Training steps timed."""
    init_points: int = 100_000
    """Random initial points when the dataset has no SfM points."""
    init_half_size: Annotated[Optional[float], tyro.conf.arg(help_behavior_hint="(default: extent / 3)")] = None
    """Half size of the cube of random initial points (around the cameras' look-at centre)."""
    strategy: StrategyName = "adc"
    """Density control during the timed steps."""
    threads: Annotated[Optional[int], tyro.conf.arg(metavar="T", help_behavior_hint="(default: torch's choice)")] = None
    """torch.set_num_threads(T)."""
    json: Annotated[Optional[Path], tyro.conf.arg(metavar="FILE", help_behavior_hint="(default: no file)")] = None
    """Also write the results as JSON (atomically) to FILE."""
    seed: int = 0
    """Seed of the initial points and view order."""


@dataclasses.dataclass(frozen=True)
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


@dataclasses.dataclass(frozen=True)
class Render:
    """Renders a trained scene (a run directory, or a .ply/.splat/.compressed.ply/.spz/.sog
    file) along a camera path into an MP4 or a folder of PNGs, or renders a split's views with
    their metrics (the figures `splatfield eval` reports). Adds outputs; never overwrites."""

    source: Annotated[Path, tyro.conf.Positional, tyro.conf.arg(metavar="RUN_OR_FILE")]
    """A run directory, or a splat file."""
    path: Union[PathKind, Path] = "orbit"
    """orbit, spiral (around the scene, at the training cameras' distance and height), interp
    (a smooth loop through the training cameras), or a nerfstudio camera_path.json."""
    split: Annotated[Optional[SplitName], tyro.conf.arg(help_behavior_hint="(default: render --path)")] = None
    """Render this split's views instead, writing PNGs, metrics.json and a per-view table."""
    frames: int = 120
    """Frames of an orbit, spiral or interp path."""
    fps: Annotated[Optional[float], tyro.conf.arg(help_behavior_hint="(default: 30, or the camera path's)")] = None
    """Frames per second of the video."""
    size: Annotated[Optional[tuple[int, int]], tyro.conf.arg(metavar="W H", help_behavior_hint="(default: the training views')")] = None
    """Image size in pixels."""
    out: Annotated[Optional[Path], tyro.conf.arg(metavar="OUT", help_behavior_hint="(default: RUN/renders/<path>.mp4)")] = None
    """A .mp4 file, or a folder for PNG frames (must not exist yet)."""


@dataclasses.dataclass(frozen=True)
class View:
    """Opens a trained scene (a run directory, or a .ply/.splat/.compressed.ply/.spz/.sog file) in
    the browser viewer: server-side rendering with the native rasterizer, RGB/depth/alpha modes,
    the training cameras (click one to jump to it), and camera paths rendered to MP4. Ctrl-C stops."""

    source: Annotated[Path, tyro.conf.Positional, tyro.conf.arg(metavar="RUN_OR_FILE")]
    """A run directory, or a splat file."""
    port: int = 8080
    """Port to serve on (the next free one if taken; 0: any free port)."""
    host: str = "127.0.0.1"
    """Interface to listen on (0.0.0.0: reachable from other machines)."""


@dataclasses.dataclass(frozen=True)
class Sfm:
    """Structure from motion (pycolmap) on a folder of photos or a video: frames (the sharpest
    of each window), features, matching, incremental mapping. Writes a COLMAP capture
    (images/, sparse/0/, sfm.json) that `splatfield train` loads; `splatfield train
    IMAGES_OR_VIDEO` runs this step itself. The result is cached and reused."""

    source: Annotated[Path, tyro.conf.Positional, tyro.conf.arg(metavar="IMAGES_OR_VIDEO")]
    """A folder of photos (or a folder whose images/ holds them), or a video file."""
    out: Annotated[Optional[Path], tyro.conf.arg(metavar="DIR", help_behavior_hint="(default: the cache)")] = None
    """Output folder (default: <cache>/sfm/<hash of the input files and options>)."""
    matcher: SfmMatcherName = "auto"
    """Image pairs to match: exhaustive (every pair; photos), sequential (neighbours in name
    order; video frames), auto (by the input's kind)."""
    camera_model: SfmCameraModelName = "SIMPLE_RADIAL"
    """COLMAP camera model fitted (distortion is removed when the capture is loaded)."""
    single_camera: bool = True
    """One shared camera for all images of a size (a phone capture); --no-single-camera: one per image."""
    frames: int = 150
    """Frames taken from a video."""
    max_size: int = 1600
    """Long side, in pixels, of the copies SfM runs on (the capture keeps full-size images)."""
    min_registered: float = 0.5
    """Fail when fewer than this fraction of the images can be registered."""


@dataclasses.dataclass(frozen=True)
class BenchSfm:
    """Runs SfM afresh on a folder of photos and compares the recovered cameras with reference
    poses (transforms.json, COLMAP, ...) matched by file name, after a similarity alignment of
    the camera centres: rotation error in degrees, position error relative to the scene extent."""

    source: Annotated[Path, tyro.conf.Positional, tyro.conf.arg(metavar="IMAGES")]
    """A folder of photos."""
    reference: Annotated[Path, tyro.conf.arg(metavar="DATA")]
    """Dataset with the reference poses (e.g. ../shared/datasets/ingp_fox/transforms.json)."""
    max_size: int = 1600
    """Long side of the copies SfM runs on."""
    matcher: SfmMatcherName = "auto"
    """As `splatfield sfm --matcher`."""
    camera_model: SfmCameraModelName = "SIMPLE_RADIAL"
    """As `splatfield sfm --camera-model`."""
    out: Annotated[Optional[Path], tyro.conf.arg(metavar="DIR", help_behavior_hint="(default: a temporary folder)")] = None
    """Keep the SfM output here (must not exist yet)."""
    json: Annotated[Optional[Path], tyro.conf.arg(metavar="FILE", help_behavior_hint="(default: no file)")] = None
    """Also write the results as JSON (atomically) to FILE."""


@dataclasses.dataclass(frozen=True)
class BenchViewer:
    """Measures the browser viewer on a run: frames/s of still (full-size) and moving frames at
    --size x --size over a websocket client, the time from starting `splatfield view RUN` to
    the first frame on a Chromium page (needs playwright and Debian's chromium), and the
    training slowdown with the viewer attached and a client moving its camera all the time
    (alternating blocks of steps of the run's training, continued from its checkpoint; the run
    directory is not changed)."""

    run: Annotated[Path, tyro.conf.Positional, tyro.conf.arg(metavar="RUN")]
    """A run directory (its scene is served; its training is continued for the slowdown)."""
    size: int = 800
    """Width and height of the client's canvas, in pixels."""
    frames: int = 30
    """Frames timed for each of the still and the moving rate."""
    train_slowdown: bool = True
    """Also measure the training slowdown: the run's training continued from its latest
    checkpoint, in blocks of steps alternating without and with the viewer."""
    blocks: int = 10
    """Blocks of steps with and without the viewer (alternating) for the slowdown."""
    block_steps: int = 10
    """Training steps per block."""
    json: Annotated[Optional[Path], tyro.conf.arg(metavar="FILE", help_behavior_hint="(default: no file)")] = None
    """Also write the results as JSON (atomically) to FILE."""


BenchCommand = Union[
    Annotated[BenchRaster, subcommand("raster")],
    Annotated[BenchTrain, subcommand("train")],
    Annotated[BenchSfm, subcommand("sfm")],
    Annotated[BenchViewer, subcommand("viewer")],
]

Command = Union[
    Annotated[Any, subcommand("bench", description="Benchmarks.", constructor_factory=lambda: BenchCommand)],
    Annotated[Train, subcommand("train")],
    Annotated[Eval, subcommand("eval")],
    Annotated[Export, subcommand("export")],
    Annotated[Render, subcommand("render")],
    Annotated[Sfm, subcommand("sfm")],
    Annotated[View, subcommand("view")],
    Annotated[Demo, subcommand("demo")],
]


def parse(argv: Sequence[str] | None = None) -> Any:
    """Parses the command line into one of the command dataclasses (exits 2 on a parse error)."""
    return tyro.cli(
        Command,
        prog=PROG,
        description="splatfield: 3D Gaussian splatting on a native differentiable rasterizer.",
        args=argv,
        config=(tyro.conf.DisallowNone,),
    )


# ----------------------------------------------------------------------------- helpers


def _at_least(option: str, value: int, minimum: int) -> None:
    if value < minimum:
        raise CLIError(f"{option}: must be >= {minimum} (got {value})")


def _check_output_file(path: Path) -> None:
    folder = path.parent if str(path.parent) else Path(".")
    if path.is_dir():
        raise CLIError(f"{path}: is a directory")
    if not folder.is_dir():
        raise CLIError(f"{path}: folder {folder} does not exist")
    if not os.access(folder, os.W_OK):
        raise CLIError(f"{path}: folder {folder} is not writable")


def _say(message: str) -> None:
    """The commands' log lines: printed at once (they interleave with progress bars)."""
    print(message, flush=True)


def _write_json(path: Path | None, doc: dict) -> None:
    """A benchmark's results as JSON (atomically), when --json was given."""
    if path is not None:
        from .bench import write_json_atomic

        write_json_atomic(path, doc)
        print(f"wrote {path}")


def _progress(total: int, desc: str, unit: str):
    from tqdm import tqdm

    # disable=None: shown on a terminal, silent when stderr is a file or a pipe.
    return tqdm(total=total, desc=desc, unit=unit, leave=False, disable=None, file=sys.stderr, dynamic_ncols=True)


# ----------------------------------------------------------------------------- bench raster


def run_bench_raster(cfg: BenchRaster) -> int:
    _at_least("--width", cfg.width, 1)
    _at_least("--height", cfg.height, 1)
    _at_least("--repeats", cfg.repeats, 1)
    _at_least("--warmup", cfg.warmup, 0)
    _at_least("--reference-repeats", cfg.reference_repeats, 1)
    if cfg.gaussians is not None:
        _at_least("--gaussians", cfg.gaussians, 1)
    if cfg.threads is not None:
        _at_least("--threads", cfg.threads, 1)
    if not cfg.backend:
        raise CLIError("--backend: name at least one of native, reference")
    if cfg.compare_stats and not cfg.stats:
        raise CLIError("--compare-stats: name the statistics to compare with --stats")
    if cfg.json is not None:
        _check_output_file(cfg.json)

    import torch

    from splatfield.render import resolve_backend

    from . import bench, scene_io

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
    backends = list(dict.fromkeys(cfg.backend))
    if "native" in backends:
        try:
            resolve_backend("native", torch.device("cpu"))
        except RuntimeError as exc:
            raise CLIError(str(exc), code=1) from None

    machine = bench.machine_info()
    fx = float(camera.fx[0])
    print(
        f"{PROG} bench raster: {len(gaussians):,} Gaussians ({scene_label}), {cfg.width}x{cfg.height}, "
        f"60° fov (fx={fx:.2f}), sh degree {cfg.sh_degree}, stats: {', '.join(cfg.stats) or 'none'}"
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
        with _progress(cfg.warmup + repeats, backend, "it") as bar:
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
        with _progress(cfg.warmup + cfg.repeats, "stats A/B", "pair") as bar:
            ab = bench.time_stats_overhead(gaussians, camera, cfg.stats, repeats=cfg.repeats, warmup=cfg.warmup,
                                           sh_degree=cfg.sh_degree, progress=bar.update)  # fmt: skip
        print(f"statistics overhead, native, {ab.repeats} alternating pairs: without {ab.without_forward_ms:.1f} + "
              f"{ab.without_backward_ms:.1f} ms, with {', '.join(ab.stats)} {ab.with_forward_ms:.1f} + "
              f"{ab.with_backward_ms:.1f} ms (forward + backward medians): backward {100 * ab.backward_overhead:+.1f}%, "
              f"total {100 * ab.total_overhead:+.1f}% (median of the pairs {100 * ab.paired_total_overhead:+.1f}%)")  # fmt: skip
        doc = {**doc, "stats_overhead": ab.to_json()}
    _write_json(cfg.json, doc)
    return 0


# ----------------------------------------------------------------------------- demo


def run_demo(cfg: Demo) -> int:
    _at_least("--size", cfg.size, 16)
    _at_least("--steps", cfg.steps, 1)
    _at_least("--frames", cfg.frames, 1)
    if cfg.out.exists() and not cfg.out.is_dir():
        raise CLIError(f"{cfg.out}: exists and is not a folder")

    from . import demo

    with _bars() as bars:
        res = demo.run_demo(cfg.out, size=cfg.size, steps=cfg.steps, frames=cfg.frames, seed=cfg.seed,
                            on_phase=_phase_bar(bars), on_step=_train_progress(cfg.steps, bars),
                            log=_say)  # fmt: skip
    if not res.finished:
        return _report_stop(res.stop_signal, res.steps, f"run {res.run}", f"{PROG} demo --out {cfg.out}")
    print(f"{PROG} demo: dataset {res.dataset} (ray cast), run {res.run}")
    if res.metrics is not None:
        _print_metrics(res.metrics)
        print(f"train time {res.metrics['train_seconds']:.0f} s for {res.steps} steps; metrics: {res.run / 'metrics.json'}")
    print(f"orbit frames: {res.frames_dir}/; contact sheet: {res.contact_sheet}")
    return 0


# ----------------------------------------------------------------------------- train / eval


@contextlib.contextmanager
def _bars() -> Iterator[list]:
    """A list of progress bars, all closed on the way out."""
    bars: list = []
    try:
        yield bars
    finally:
        for b in bars:
            b.close()


def _report_stop(signal_name: str | None, step: int, saved: str, resume_command: str) -> int:
    print(f"stopped by {signal_name} at step {step}; {saved}")
    print(f"continue with: {resume_command}")
    return 130 if signal_name == "SIGINT" else 143


def _phase_bar(bars: list):
    """on_phase for apps.train: a progress bar per phase (loading, evaluating)."""

    def start(name: str, total: int) -> Callable[[int], None]:
        for b in bars:
            b.close()
        bars.clear()
        bars.append(_progress(total, name, "view"))
        return bars[-1].update

    return start


def _train_progress(steps: int, bars: list) -> Callable[[Any], None]:
    """on_step for apps.train: one bar over the steps with loss, PSNR and Gaussian count;
    when stderr is not a terminal (a log file), a line every 5% of the steps instead."""
    state: dict = {"bar": None, "t": None}
    every = max(1, steps // 20)

    def on_step(info: Any) -> None:
        if state["bar"] is None:
            for b in bars:
                b.close()
            bars.clear()
            state["bar"] = _progress(steps, "training", "step")
            state["bar"].update(info.step - 1)
            bars.append(state["bar"])
        bar = state["bar"]
        bar.update(1)
        if bar.disable and (info.step % every == 0 or info.step == steps):
            now = time.perf_counter()
            rate = "" if state["t"] is None else f", {(now - state['t'][0]) / (info.step - state['t'][1]):.3f} s/step"
            state["t"] = (now, info.step)
            print(f"step {info.step}/{steps}: loss {info.loss:.4f}, train-view PSNR {info.psnr:.2f} dB, "
                  f"{info.num_gaussians:,} Gaussians{rate}", flush=True)  # fmt: skip
        if info.changes:
            bar.write(f"step {info.step}: {describe_changes(info.changes)} -> {info.num_gaussians:,} Gaussians",
                      file=sys.stdout)  # fmt: skip
        if info.step % 10 == 0 or info.step == steps:
            bar.set_postfix(loss=f"{info.loss:.4f}", psnr=f"{info.psnr:.2f}", n=f"{info.num_gaussians:,}", refresh=False)

    return on_step


def describe_changes(changes: dict) -> str:
    """One log line for what a strategy did at a step (counts, then the λ_min distribution)."""
    parts = []
    if "candidates" in changes:
        parts.append(f"split {changes['split']:,} of {changes['candidates']:,} candidates")
    else:
        parts += [f"{k} {changes[k]:,}" for k in ("cloned", "split") if k in changes]
    if "pruned" in changes:
        parts.append(f"pruned {changes['pruned']:,}")
    if "opacity_reset" in changes:
        parts.append("opacities reset")
    if "lambda_p50" in changes:
        parts.append(f"lambda_min p1 {changes['lambda_p01']:.2e}, p10 {changes['lambda_p10']:.2e}, "
                     f"median {changes['lambda_p50']:.2e}, {100 * changes['negative_fraction']:.0f}% negative")  # fmt: skip
    return ", ".join(parts)


def _print_metrics(m: dict) -> None:
    lp = "unavailable" if m["lpips"] is None else f"{m['lpips']:.4f}"
    print(f"{m['split']} views: {m['views']} at {m['width']}x{m['height']} — PSNR {m['psnr']:.3f} dB, "
          f"SSIM {m['ssim']:.4f}, LPIPS {lp}; {m['num_gaussians']:,} Gaussians")  # fmt: skip


def run_train(cfg: Train) -> int:
    from . import train as tr

    if cfg.resume is None and cfg.data is None:
        raise CLIError("DATA: give a dataset folder (or --resume RUN)")
    for opt, v, lo in (("--steps", cfg.steps, 1), ("--init-points", cfg.init_points, 1), ("--test-every", cfg.test_every, 0),
                       ("--checkpoint-every", cfg.checkpoint_every, 0), ("--keep-checkpoints", cfg.keep_checkpoints, 1),
                       ("--threads", cfg.threads, 1), ("--max-splits", cfg.max_splits, 0)):  # fmt: skip
        if v is not None:
            _at_least(opt, v, lo)
    if cfg.viewer:
        _check_port("--viewer-port", cfg.viewer_port)
    if not cfg.downscale >= 1.0:
        raise CLIError(f"--downscale: must be >= 1 (got {cfg.downscale})")
    if not (cfg.split_threshold >= 0.0 and math.isfinite(cfg.split_threshold)):
        raise CLIError(f"--split-threshold: must be a finite number >= 0 (got {cfg.split_threshold})")
    if not (cfg.split_displacement > 0.0 and math.isfinite(cfg.split_displacement)):
        raise CLIError(f"--split-displacement: must be a finite number > 0 (got {cfg.split_displacement})")
    import torch

    if cfg.threads is not None:
        torch.set_num_threads(cfg.threads)
    if cfg.resume is not None:
        run = cfg.resume
        opts = tr.TrainOptions.from_yaml(run / "config.yaml")
        if cfg.steps is not None:
            opts = dataclasses.replace(opts, steps=cfg.steps)
    else:
        data = cfg.data
        assert data is not None
        if not data.exists():
            raise CLIError(f"{data}: no such file or directory")
        run = cfg.out if cfg.out is not None else tr.default_run_dir(data)
        if (run / "checkpoints").is_dir() and any((run / "checkpoints").iterdir()):
            raise CLIError(f"{run}: already holds a run (continue it with --resume {run}, or choose another --out)")
        from .sfm import capture_for_training

        data = capture_for_training(data, log=_say)  # photos or a video: SfM first
        opts = tr.TrainOptions(
            data=str(data.resolve()), out=str(run), strategy=cfg.strategy, steps=7000 if cfg.steps is None else cfg.steps,
            downscale=cfg.downscale, test_every=cfg.test_every, seed=cfg.seed, sh_degree=cfg.sh_degree,
            init_points=cfg.init_points, init_half_size=cfg.init_half_size, checkpoint_every=cfg.checkpoint_every,
            keep_checkpoints=cfg.keep_checkpoints, evaluate=cfg.eval, split_threshold=cfg.split_threshold,
            split_grad_gate=cfg.split_grad_gate, split_displacement=cfg.split_displacement, max_splits=cfg.max_splits,
            projection_curvature=cfg.projection_curvature, split_criterion=cfg.split_criterion,
        )  # fmt: skip
    with _bars() as bars:
        res = tr.train(opts, resume=cfg.resume is not None, on_step=_train_progress(opts.steps, bars),
                       on_phase=_phase_bar(bars), log=_say,
                       viewer=(cfg.viewer_host, cfg.viewer_port) if cfg.viewer else None)  # fmt: skip
    if not res.finished:
        return _report_stop(res.stop_signal, res.step, f"checkpoint {res.checkpoint}", f"{PROG} train --resume {res.run}")
    print(f"trained {res.step} steps; checkpoint {res.checkpoint}; scene {res.run / 'scene.ply'}")
    if res.metrics is not None:
        _print_metrics(res.metrics)
        print(f"train time {res.metrics['train_seconds']:.0f} s, peak RSS {res.metrics['peak_rss_mb']:.0f} MiB; "
              f"metrics: {res.run / 'metrics.json'}")  # fmt: skip
    return 0


def run_eval(cfg: Eval) -> int:
    from . import train as tr

    with _bars() as bars:
        m = tr.eval_run(cfg.run, on_phase=_phase_bar(bars))
    _print_metrics(m)
    print(f"metrics: {cfg.run / 'metrics.json'}")
    return 0


def run_bench_train(cfg: BenchTrain) -> int:
    _at_least("--steps", cfg.steps, 1)
    _at_least("--init-points", cfg.init_points, 1)
    if cfg.threads is not None:
        _at_least("--threads", cfg.threads, 1)
    if not cfg.downscale >= 1.0:
        raise CLIError(f"--downscale: must be >= 1 (got {cfg.downscale})")
    if not cfg.data.exists():
        raise CLIError(f"{cfg.data}: no such file or directory")
    if cfg.json is not None:
        _check_output_file(cfg.json)
    import torch

    from . import bench_train

    if cfg.threads is not None:
        torch.set_num_threads(cfg.threads)
    with _progress(cfg.steps, "training steps", "step") as bar:
        r = bench_train.time_training(str(cfg.data), downscale=cfg.downscale, steps=cfg.steps,
                                      init_points=cfg.init_points, init_half_size=cfg.init_half_size,
                                      strategy=cfg.strategy, seed=cfg.seed, progress=bar.update)  # fmt: skip
    print(f"{PROG} bench train: {r.dataset} at {r.width}x{r.height}, {r.initial_gaussians:,} initial Gaussians, "
          f"strategy {r.strategy}, backend {r.backend}, {r.threads} threads ({r.cpu['model']})")  # fmt: skip
    print(f"step time over the first {r.steps} steps: median {r.step_ms_median:.1f} ms "
          f"(p10 {r.step_ms_p10:.1f}, p90 {r.step_ms_p90:.1f}); {r.total_seconds:.1f} s in all; "
          f"{r.final_gaussians:,} Gaussians at the end; peak RSS {r.peak_rss_mb:.0f} MiB")  # fmt: skip
    _write_json(cfg.json, r.to_json())
    return 0


def run_bench_viewer(cfg: BenchViewer) -> int:
    for opt, v, lo in (("--size", cfg.size, 16), ("--frames", cfg.frames, 1), ("--blocks", cfg.blocks, 1),
                       ("--block-steps", cfg.block_steps, 1)):  # fmt: skip
        _at_least(opt, v, lo)
    if not (cfg.run / "config.yaml").is_file():
        raise CLIError(f"{cfg.run}: not a run directory (no config.yaml)")
    if cfg.json is not None:
        _check_output_file(cfg.json)
    from . import bench_viewer

    steps = 2 * cfg.blocks * cfg.block_steps if cfg.train_slowdown else 0
    with _progress(steps, "training with and without the viewer", "step") as bar:
        r = bench_viewer.bench_viewer(cfg.run, size=cfg.size, frames=cfg.frames, train_slowdown=cfg.train_slowdown,
                                      blocks=cfg.blocks, block_steps=cfg.block_steps, progress=bar.update)  # fmt: skip
    print(f"{PROG} bench viewer: {r.run}, {r.gaussians:,} Gaussians, {r.threads} threads ({r.cpu['model']})")
    print(f"still frames at {r.size}x{r.size}: {r.still_fps:.1f} frames/s (median {r.still_ms_median:.0f} ms: render, "
          f"JPEG, send); moving camera: {r.moving_fps:.1f} frames/s at {r.moving_size[0]}x{r.moving_size[1]}")  # fmt: skip
    if r.first_frame_seconds is not None:
        print(f"`{PROG} view`: URL after {r.url_seconds:.1f} s, first frame on the page after {r.first_frame_seconds:.1f} s "
              f"({r.first_frame_note})")  # fmt: skip
    else:
        print(f"time to first frame {r.first_frame_note}")
    if r.train_slowdown is not None:
        print(f"training at {r.train_size[0]}x{r.train_size[1]}: {r.train_step_ms_without:.0f} ms/step without the viewer, "
              f"{r.train_step_ms_with:.0f} ms/step with it and a camera moving all the time "
              f"({100 * (r.train_slowdown - 1):+.1f}%); {r.train_viewer_frames} frames served, rendering them took "
              f"{100 * r.train_viewer_share:.1f}% of the training time")  # fmt: skip
    _write_json(cfg.json, r.to_json())
    return 0


def run_export(cfg: Export) -> int:
    if not cfg.source.exists():
        raise CLIError(f"{cfg.source}: no such file or directory")
    if not 0.0 <= cfg.min_opacity < 1.0:
        raise CLIError(f"--min-opacity: must be in [0, 1) (got {cfg.min_opacity})")
    _at_least("--views", cfg.views, 0)
    if not cfg.format:
        raise CLIError("--format: name at least one of ply, splat, compressed-ply, spz, sog")
    from . import export

    src = export.load_source(cfg.source, cfg.views)
    with _bars() as bars:
        bars.append(_progress(len(cfg.format), "exporting", "format"))
        rows = export.export(src, list(dict.fromkeys(cfg.format)), out_dir=cfg.out, sh_degree=cfg.sh_degree,
                             min_opacity=cfg.min_opacity, progress=lambda f: bars[0].update(1))  # fmt: skip
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


def run_render(cfg: Render) -> int:
    if not cfg.source.exists():
        raise CLIError(f"{cfg.source}: no such file or directory")
    _at_least("--frames", cfg.frames, 1)
    if cfg.fps is not None and not (cfg.fps > 0 and math.isfinite(cfg.fps)):
        raise CLIError(f"--fps: must be a positive number (got {cfg.fps})")
    if cfg.size is not None and not (1 <= cfg.size[0] <= 8192 and 1 <= cfg.size[1] <= 8192):
        raise CLIError(f"--size: width and height must be in 1..8192 (got {cfg.size[0]} {cfg.size[1]})")
    from . import render as rd

    src = rd.load_render_source(cfg.source)
    try:
        if cfg.split is not None:
            out = cfg.out or rd.default_output(src, f"split-{cfg.split}", video=False)
            rd.fresh_output(out)
            views = len(src.dataset.test if cfg.split == "test" else src.dataset.train) if src.dataset else 0
            with _progress(views, f"rendering {cfg.split} views", "view") as bar:
                m = rd.render_split(src, cfg.split, out, progress=bar.update)
            print(f"{'view':<28} {'PSNR':>8} {'SSIM':>7}")
            for row in m["per_view"]:
                print(f"{row['image']:<28} {row['psnr']:>8.3f} {row['ssim']:>7.4f}")
            lp = "unavailable" if m["lpips"] is None else f"{m['lpips']:.4f}"
            print(f"{cfg.split} views: {m['views']} — PSNR {m['psnr']:.3f} dB, SSIM {m['ssim']:.4f}, LPIPS {lp}; "
                  f"{m['num_gaussians']:,} Gaussians; images and metrics.json in {out}")  # fmt: skip
            return 0
        if isinstance(cfg.path, Path):
            from splatfield.render.camera_paths import read_camera_path

            cams, file_fps = read_camera_path(cfg.path, width=cfg.size[0] if cfg.size else None,
                                              height=cfg.size[1] if cfg.size else None)  # fmt: skip
            fps, what = cfg.fps or file_fps, cfg.path.stem
        else:
            cams, fps, what = rd.path_cameras(src, cfg.path, cfg.frames, cfg.size), cfg.fps or 30.0, cfg.path
        out = cfg.out or rd.default_output(src, what, video=True)
        rd.fresh_output(out)
        with _progress(len(cams), "rendering", "frame") as bar:
            n = rd.render_path(src, cams, out, fps, progress=bar.update)
        path_json = rd.save_path_json(cams, out, fps)
    except ValueError as exc:  # a path or split the source cannot give
        if _is_input_error(exc):
            raise
        raise CLIError(str(exc)) from None
    print(f"{PROG} render: {n} frames at {cams.width}x{cams.height}, {fps:g} fps -> {out}; camera path {path_json}")
    return 0


def _check_port(option: str, port: int) -> None:
    if not 0 <= port <= 65535:
        raise CLIError(f"{option}: must be a port number in 0..65535 (got {port})")


def run_view(cfg: View) -> int:
    if not cfg.source.exists():
        raise CLIError(f"{cfg.source}: no such file or directory")
    _check_port("--port", cfg.port)
    from . import view

    viewer = view.open_view(cfg.source, host=cfg.host, port=cfg.port, log=_say)
    print(f"{PROG} view: {len(viewer.scene_snapshot()):,} Gaussians at {viewer.url} — open it in a browser; Ctrl-C stops",
          flush=True)  # fmt: skip
    try:
        while True:
            time.sleep(3600)
    finally:
        viewer.stop()


def _sfm_options(cfg: Any, frames: int = 150, min_registered: float = 0.5) -> Any:
    from splatfield.data.sfm import SfmOptions

    _at_least("--max-size", cfg.max_size, 64)
    _at_least("--frames", frames, 3)
    if not 0.0 <= min_registered <= 1.0:
        raise CLIError(f"--min-registered: must be in [0, 1] (got {min_registered})")
    return SfmOptions(matcher=cfg.matcher, camera_model=cfg.camera_model, single_camera=getattr(cfg, "single_camera", True),
                      frames=frames, max_size=cfg.max_size, min_registered=min_registered)  # fmt: skip


def run_sfm(cfg: Sfm) -> int:
    opts = _sfm_options(cfg, cfg.frames, cfg.min_registered)
    if not cfg.source.exists():
        raise CLIError(f"{cfg.source}: no such file or directory")
    from . import sfm

    res = sfm.run(cfg.source, cfg.out, opts, log=_say)
    print(f"{PROG} sfm: {sfm.describe(res.summary)}; capture {res.out} (train it: {PROG} train {res.out}); "
          f"summary {res.out / 'sfm.json'}")  # fmt: skip
    return 0


def run_bench_sfm(cfg: BenchSfm) -> int:
    opts = _sfm_options(cfg)
    for p in (cfg.source, cfg.reference):
        if not p.exists():
            raise CLIError(f"{p}: no such file or directory")
    if cfg.out is not None and cfg.out.exists():
        raise CLIError(f"{cfg.out}: exists already (the bench runs SfM afresh; choose another --out)")
    if cfg.json is not None:
        _check_output_file(cfg.json)
    from . import sfm

    r = sfm.bench(cfg.source, cfg.reference, opts, cfg.out, log=_say)
    a, s = r["alignment"], r["sfm"]
    print(f"{PROG} bench sfm: {sfm.describe(s)} ({', '.join(f'{k} {v:.1f} s' for k, v in s['stage_seconds'].items())}) "
          f"on {r['machine']['model']}")  # fmt: skip
    print(f"against {cfg.reference} ({a['cameras']} cameras matched by name, similarity on camera centres): rotation "
          f"error mean {a['rotation_error_deg_mean']:.3f} deg, max {a['rotation_error_deg_max']:.3f} deg; position error "
          f"mean {100 * a['position_error_rel_mean']:.2f}%, max {100 * a['position_error_rel_max']:.2f}% of the scene "
          f"extent ({a['extent']:.3g}, the camera rig's radius)")  # fmt: skip
    _write_json(cfg.json, r)
    return 0


HANDLERS: dict[type, Callable[[Any], int]] = {
    Sfm: run_sfm,
    BenchSfm: run_bench_sfm,
    View: run_view,
    BenchViewer: run_bench_viewer,
    Render: run_render,
    Export: run_export,
    BenchTrain: run_bench_train,
    Train: run_train,
    Eval: run_eval,
    BenchRaster: run_bench_raster,
    Demo: run_demo,
}


# ----------------------------------------------------------------------------- main


def _error(message: str) -> None:
    print(f"{PROG}: error: {message}", file=sys.stderr, flush=True)


def run(argv: Sequence[str] | None = None) -> int:
    """Parses ``argv`` (default: ``sys.argv[1:]``), runs the command; returns the exit status."""
    # warnings (a skipped frame, the reference fallback) read as one line, without source
    warnings.formatwarning = lambda message, category, *args, **kw: f"{PROG}: warning: {message}\n"
    try:
        cmd = parse(argv)
        return HANDLERS[type(cmd)](cmd)
    except KeyboardInterrupt:
        print(f"{PROG}: interrupted", file=sys.stderr, flush=True)
        return 130
    except CLIError as exc:
        _error(str(exc))
        return exc.code
    except OSError as exc:
        if isinstance(exc, BrokenPipeError):  # e.g. `splatfield ... | head`
            try:
                devnull = os.open(os.devnull, os.O_WRONLY)
                os.dup2(devnull, sys.stdout.fileno())
            except OSError:
                pass
            return 1
        if exc.filename is None:
            raise
        _error(f"{exc.filename}: {(exc.strerror or str(exc)).lower()}")
        return 2
    except Exception as exc:
        if _is_input_error(exc):
            _error(str(exc))
            return 2
        raise


# Errors about what the user gave (a file, a run directory), each one line naming the file;
# looked up only in modules already imported, so parsing stays free of heavy imports.
_INPUT_ERRORS = (
    ("splatfield.apps.scene_io", "InputError"),
    ("splatfield.apps.train", "RunError"),
    ("splatfield.data.dataset", "DatasetError"),
    ("splatfield.scenes.formats.ply", "PlyError"),
    ("splatfield.scenes.formats.common", "FormatError"),
    ("splatfield.render.camera_paths", "CameraPathError"),
)


def _is_input_error(exc: Exception) -> bool:
    for module, name in _INPUT_ERRORS:
        cls = getattr(sys.modules.get(module), name, None)
        if cls is not None and isinstance(exc, cls):
            return True
    return False


def main() -> None:
    """Console script ``splatfield``."""
    sys.exit(run())


if __name__ == "__main__":
    main()
