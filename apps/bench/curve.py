"""``splatfield bench curve``: test PSNR against training time from runs' checkpoints (the
measurement is :mod:`.curve_timing`, the plot :mod:`.curve_plot`)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Optional

import tyro
from typing_extensions import Annotated

from splatfield.scenes.config import ConfigError, at_least, check_device, finite_at_least, require

from ..console import PROG, progress, write_json
from ..errors import CLIError, check_output_file, require_exists


@dataclass(frozen=True)
class BenchCurve:
    """Measures test PSNR against training time for one or more runs: every checkpoint of each
    run (in step order) is evaluated on the run's test views; its training time is the
    checkpoint's train_seconds (the training loop only, without evaluation or checkpoint
    writing). Prints a table, and writes the points as JSON (--json) and a plot of the curves
    side by side (--png). A run keeps only its newest --keep-checkpoints: train with e.g.
    --checkpoint-every 500 --keep-checkpoints 100 to get a curve."""

    runs: Annotated[tuple[Path, ...], tyro.conf.Positional,
                    tyro.conf.arg(metavar="RUN [RUN ...]", help_behavior_hint="(required)")]  # fmt: skip
    """Run directories (one or more)."""
    label: Annotated[tuple[str, ...], tyro.conf.UseAppendAction,
                     tyro.conf.arg(metavar="NAME", help_behavior_hint="(default: each run's directory name)")] = ()  # fmt: skip
    """A run's name in the table, the JSON and the legend; repeat once per RUN, in order."""
    every: Annotated[int, tyro.conf.arg(metavar="K")] = 1
    """Evaluate every K-th test view (views 0, K, 2K, ...); 1: all of them."""
    max_seconds: Annotated[Optional[float], tyro.conf.arg(metavar="S", help_behavior_hint="(default: no limit)")] = None
    """Only the checkpoints with at most S seconds of training."""
    json: Annotated[Optional[Path], tyro.conf.arg(metavar="FILE", help_behavior_hint="(default: no file)")] = None
    """Also write the results as JSON (atomically) to FILE."""
    png: Annotated[Optional[Path], tyro.conf.arg(metavar="FILE", help_behavior_hint="(default: no file)")] = None
    """Also plot the curves (test PSNR against training minutes) as a PNG at FILE."""
    png_size: Annotated[tuple[int, int], tyro.conf.arg(metavar="W H")] = (900, 560)
    """Width and height of the PNG in pixels."""
    device: str = "auto"
    """auto (CUDA when torch sees a GPU, else the CPU), cpu, cuda or cuda:N."""
    threads: Annotated[Optional[int], tyro.conf.arg(metavar="T", help_behavior_hint="(default: torch's choice)")] = None
    """torch.set_num_threads(T)."""

    def __post_init__(self) -> None:
        check_device(self.device)
        if not self.runs:
            raise ConfigError("RUN", "name at least one run directory")
        n, m = len(self.runs), len(self.label)
        plural = lambda k, word: f"{k} {word}{'s' * (k != 1)}"  # noqa: E731
        require(m in (0, n), "label", f"give one per RUN, in order ({plural(n, 'run')}, {plural(m, 'label')})")
        at_least(self.every, "every", 1)
        if self.max_seconds is not None:
            finite_at_least(self.max_seconds, "max_seconds", 0.0)
        at_least(self.threads, "threads", 1)
        require(self.png_size[0] >= 320 and self.png_size[1] >= 240, "png_size",
                f"must be at least 320 240 (got {self.png_size[0]} {self.png_size[1]})")  # fmt: skip


def default_labels(runs: tuple[Path, ...]) -> list[str]:
    """Each run's directory name; the paths as given where two names are the same."""
    names = [p.resolve().name or str(p) for p in runs]
    return names if len(set(names)) == len(names) else [str(p) for p in runs]


def _check_run(path: Path) -> None:
    require_exists(path)
    if not path.is_dir():
        raise CLIError(f"{path}: not a run directory (a file)")
    if not (path / "config.yaml").is_file():
        raise CLIError(f"{path}: not a run directory (no config.yaml)")


def _ordinal(k: int) -> str:
    return {1: "", 2: "2nd ", 3: "3rd "}.get(k, f"{k}th ")


def run(cfg: BenchCurve) -> int:
    for path in cfg.runs:
        _check_run(path)
    for out in (cfg.json, cfg.png):
        if out is not None:
            check_output_file(out)
    labels = list(cfg.label) or default_labels(cfg.runs)
    import torch

    from splatfield.render.device import resolve_device

    from . import curve_timing

    if cfg.threads is not None:
        torch.set_num_threads(cfg.threads)
    device = resolve_device(cfg.device)
    planned = curve_timing.plan(cfg.runs, labels)  # every run checked before the first evaluation
    with progress(sum(len(p.checkpoints) for p in planned), "evaluating checkpoints", "checkpoint") as bar:
        r = curve_timing.measure(planned, every=cfg.every, max_seconds=cfg.max_seconds, device=device,
                                 progress=bar.update)  # fmt: skip

    views = "all test views" if cfg.every == 1 else f"every {_ordinal(cfg.every)}test view"
    print(f"{PROG} bench curve: {len(r.runs)} run{'s' * (len(r.runs) != 1)}, {views} on {r.device} "
          f"(backend {r.backend}, {r.threads} threads, {r.cpu['model']}); {r.total_seconds:.1f} s")  # fmt: skip
    width = max([len("run")] + [len(c.label) for c in r.runs])
    print(f"{'run':<{width}} {'step':>8} {'minutes':>9} {'PSNR':>8} {'SSIM':>7} {'count':>12}")
    fmt = lambda v, spec: "-" if v is None else format(v, spec)  # noqa: E731
    for c in r.runs:
        for p in c.points:
            print(f"{c.label:<{width}} {p.step:>8} {p.train_seconds / 60:>9.2f} {fmt(p.psnr, '.3f'):>8} "
                  f"{fmt(p.ssim, '.4f'):>7} {p.count:>12,}")  # fmt: skip
    for c in r.runs:
        skipped = f" ({c.checkpoints_skipped} later checkpoint{'s' * (c.checkpoints_skipped != 1)} past --max-seconds)" \
            if c.checkpoints_skipped else ""  # fmt: skip
        shown = f"{len(c.views)} of the {c.split} views at {c.width}x{c.height}"
        if c.last is None:
            print(f"{c.label}: no checkpoint within --max-seconds {cfg.max_seconds:g}{skipped}; {shown}")
        else:
            print(f"{c.label}: last PSNR {fmt(c.last.psnr, '.3f')} dB at step {c.last.step} "
                  f"({c.last.train_seconds / 60:.2f} min, {c.last.count:,} {c.last.count_label}){skipped}; {shown}")  # fmt: skip
    write_json(cfg.json, r.to_json())
    if cfg.png is not None:
        from .curve_plot import Series, save_curves

        series = [Series(c.label, [p.train_seconds / 60 for p in c.points], [p.psnr for p in c.points]) for c in r.runs]
        title = ("Test PSNR" if all(c.split == "test" for c in r.runs) else "PSNR") + " vs training time"
        if cfg.every > 1:
            title += f" (every {_ordinal(cfg.every)}view)"
        save_curves(cfg.png, series, size=cfg.png_size, title=title)
        print(f"wrote {cfg.png}")
    return 0
