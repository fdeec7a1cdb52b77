"""The ``splatfield`` command: one entry point, subcommands parsed by tyro, dispatch.

Each subcommand is a frozen dataclass in its own module (``apps/<command>.py``, the bench
ones in ``apps/bench/``) next to its handler ``run(cfg)``; ranges are checked when the
dataclass is built, i.e. while parsing. To add a subcommand: write its module, add its
dataclass to :data:`Command` (or :data:`BenchCommand`) and its module to :data:`HANDLERS`.
The command modules import only light modules at the top, so ``--help`` is quick and
Ctrl-C is caught from the start; a handler imports what it needs when it runs.

Exit status: 0 success; 2 bad input (a parse error, an option out of range, a missing or
malformed file), reported as one line ``splatfield: error: <file or option>: <problem>``
on stderr, never a traceback; 1 a failure of the environment (e.g. the native rasterizer
cannot be built); 130 interrupted (Ctrl-C).
"""

from __future__ import annotations

import dataclasses
import importlib
import os
import sys
import warnings
from typing import Any, Sequence, Union

import tyro
from tyro.conf import subcommand
from typing_extensions import Annotated

from .bench.curve import BenchCurve
from .bench.raster import BenchRaster
from .bench.sfm import BenchSfm
from .bench.train import BenchTrain
from .bench.viewer import BenchViewer
from .console import PROG
from .demo import Demo
from .doctor import Doctor
from .errors import CLIError, is_input_error
from .eval import Eval
from .export import Export
from .lift import Lift
from .lift_prior import LiftPriorShow, LiftPriorTrain
from .render import Render
from .sfm import Sfm
from .train import Train
from .view import View

BenchCommand = Union[
    Annotated[BenchRaster, subcommand("raster")],
    Annotated[BenchTrain, subcommand("train")],
    Annotated[BenchSfm, subcommand("sfm")],
    Annotated[BenchViewer, subcommand("viewer")],
    Annotated[BenchCurve, subcommand("curve")],
]

LiftPriorCommand = Union[Annotated[LiftPriorTrain, subcommand("train")], Annotated[LiftPriorShow, subcommand("show")]]

Command = Union[
    Annotated[Any, subcommand("bench", description="Benchmarks.", constructor_factory=lambda: BenchCommand)],
    Annotated[Train, subcommand("train")],
    Annotated[Eval, subcommand("eval")],
    Annotated[Export, subcommand("export")],
    Annotated[Render, subcommand("render")],
    Annotated[Sfm, subcommand("sfm")],
    Annotated[Lift, subcommand("lift")],
    Annotated[Any, subcommand("lift-prior", description="The lifting prior of our own.",
                              constructor_factory=lambda: LiftPriorCommand)],
    Annotated[View, subcommand("view")],
    Annotated[Demo, subcommand("demo")],
    Annotated[Doctor, subcommand("doctor")],
]

# command dataclass -> the module whose run(cfg) handles it
HANDLERS: dict[type, str] = {
    Train: ".train", Eval: ".eval", Export: ".export", Render: ".render", Sfm: ".sfm", View: ".view", Demo: ".demo",
    Doctor: ".doctor", Lift: ".lift", LiftPriorTrain: ".lift_prior", LiftPriorShow: ".lift_prior",
    BenchRaster: ".bench.raster", BenchTrain: ".bench.train", BenchSfm: ".bench.sfm", BenchViewer: ".bench.viewer",
    BenchCurve: ".bench.curve",
}  # fmt: skip


def given_flags(argv: Sequence[str]) -> tuple[str, ...]:
    """The ``--flags`` on a command line (``--steps=5`` -> ``--steps``), up to a bare ``--``."""
    flags = []
    for tok in argv:
        if tok == "--":
            break
        if tok.startswith("--"):
            flags.append(tok.split("=", 1)[0])
    return tuple(flags)


def parse(argv: Sequence[str] | None = None) -> Any:
    """Parses the command line into one of the command dataclasses (exits 2 on a parse error;
    an option out of range raises :class:`~splatfield.scenes.config.ConfigError`)."""
    args = list(sys.argv[1:] if argv is None else argv)
    cmd = tyro.cli(
        Command,
        prog=PROG,
        description="splatfield: 3D Gaussian splatting on a native differentiable rasterizer.",
        args=args,
        config=(tyro.conf.DisallowNone,),
    )
    if isinstance(cmd, Train):  # a resume applies only the options given; --nproc relaunches the line
        cmd = dataclasses.replace(cmd, given=given_flags(args), argv=tuple(args))
    return cmd


def _error(message: str) -> None:
    print(f"{PROG}: error: {message}", file=sys.stderr, flush=True)


def run(argv: Sequence[str] | None = None) -> int:
    """Parses ``argv`` (default: ``sys.argv[1:]``), runs the command; returns the exit status."""
    # warnings (a skipped frame, the reference fallback) read as one line, without source
    warnings.formatwarning = lambda message, category, *args, **kw: f"{PROG}: warning: {message}\n"
    try:
        cmd = parse(argv)
        return importlib.import_module(HANDLERS[type(cmd)], __package__).run(cmd)
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
        if is_input_error(exc):
            _error(str(exc))
            return 2
        raise


def main() -> None:
    """Console script ``splatfield``."""
    sys.exit(run())


if __name__ == "__main__":
    main()
