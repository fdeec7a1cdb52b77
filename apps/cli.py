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

import dataclasses
import os
import sys
from pathlib import Path
from typing import Any, Callable, Literal, Optional, Sequence, Union

import tyro
from tyro.conf import Suppress, subcommand
from typing_extensions import Annotated

PROG = "splatfield"

# Mirrors splatfield.render.types.Statistic (checked by the tests); kept here so that
# parsing the command line does not import torch.
StatisticName = Literal["grad2d", "importance", "split2d"]
BackendName = Literal["native", "reference"]
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


@dataclasses.dataclass(frozen=True)
class Demo:
    """Renders an orbit around a procedural scene of Gaussians with the native rasterizer,
    writes the frames and a contact sheet, and checks a small view against the reference."""

    out: Path = Path("runs/demo")
    """Output folder: frames/ and contact_sheet.png are written there."""
    frames: int = 24
    """Views around the orbit."""
    size: int = 256
    """Width and height of each view, in pixels."""
    gaussians: int = 20000
    """Gaussians in the scene."""
    seed: int = 0
    """Seed of the scene."""


# `bench` is a group whose sub-subcommands are benchmarks; tyro wants two arms in a Union,
# hence the suppressed None (as tyro.extras.SubcommandApp does) until a second one exists.
BenchCommand = Union[
    Annotated[BenchRaster, subcommand("raster")],
    Annotated[None, Suppress],
]

Command = Union[
    Annotated[Any, subcommand("bench", description="Benchmarks.", constructor_factory=lambda: BenchCommand)],
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
    if cfg.json is not None:
        bench.write_json_atomic(cfg.json, bench.results_json(results))
        print(f"wrote {cfg.json}")
    return 0


# ----------------------------------------------------------------------------- demo


def run_demo(cfg: Demo) -> int:
    _at_least("--frames", cfg.frames, 1)
    _at_least("--size", cfg.size, 8)
    _at_least("--gaussians", cfg.gaussians, 4)
    if cfg.out.exists() and not cfg.out.is_dir():
        raise CLIError(f"{cfg.out}: exists and is not a folder")

    from . import demo

    with _progress(cfg.frames, "rendering", "frame") as bar:
        res = demo.run_demo(
            cfg.out, frames=cfg.frames, size=cfg.size, gaussians=cfg.gaussians, seed=cfg.seed,
            on_frame=lambda i: bar.update(),
        )  # fmt: skip
    print(f"{PROG} demo: {res.gaussians:,} Gaussians, {res.frames} frames at {res.size}x{res.size}")
    print(f"backend: {res.backend}; render per frame: {res.frame_ms_median:.1f} ms (median)")
    if res.check_max_abs_diff is None:
        print("check against the reference: skipped (the native rasterizer is unavailable)")
    else:
        verdict = "ok" if res.check_ok else f"EXCEEDS {demo.CHECK_TOLERANCE:g}"
        print(
            f"check native (float32) vs reference (float64), {res.check_size}x{res.check_size}, "
            f"{res.check_gaussians:,} Gaussians: max |diff| = {res.check_max_abs_diff:.2e} ({verdict})"
        )
    print(f"frames: {res.frames_dir}/")
    print(f"contact sheet: {res.contact_sheet}")
    if not res.check_ok:
        print(f"{PROG}: error: native and reference renders disagree", file=sys.stderr)
        return 1
    return 0


HANDLERS: dict[type, Callable[[Any], int]] = {
    BenchRaster: run_bench_raster,
    Demo: run_demo,
}


# ----------------------------------------------------------------------------- main


def _error(message: str) -> None:
    print(f"{PROG}: error: {message}", file=sys.stderr, flush=True)


def run(argv: Sequence[str] | None = None) -> int:
    """Parses ``argv`` (default: ``sys.argv[1:]``), runs the command; returns the exit status."""
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
        scene_io = sys.modules.get(f"{__package__}.scene_io")  # only raised once it is imported
        if scene_io is not None and isinstance(exc, scene_io.InputError):
            _error(str(exc))
            return 2
        raise


def main() -> None:
    """Console script ``splatfield``."""
    sys.exit(run())


if __name__ == "__main__":
    main()
