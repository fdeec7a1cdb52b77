"""``splatfield bench viewer``: the browser viewer's frame rates, time to first frame and the
training slowdown it causes (the measurement is :mod:`.viewer_timing`)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Optional

import tyro
from typing_extensions import Annotated

from splatfield.scenes.config import at_least

from ..console import PROG, progress, write_json
from ..errors import CLIError, check_output_file


@dataclass(frozen=True)
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

    def __post_init__(self) -> None:
        at_least(self.size, "size", 16)
        at_least(self.frames, "frames", 1)
        at_least(self.blocks, "blocks", 1)
        at_least(self.block_steps, "block_steps", 1)


def run(cfg: BenchViewer) -> int:
    if not (cfg.run / "config.yaml").is_file():
        raise CLIError(f"{cfg.run}: not a run directory (no config.yaml)")
    if cfg.json is not None:
        check_output_file(cfg.json)
    from . import viewer_timing as bench_viewer

    steps = 2 * cfg.blocks * cfg.block_steps if cfg.train_slowdown else 0
    with progress(steps, "training with and without the viewer", "step") as bar:
        r = bench_viewer.bench_viewer(cfg.run, size=cfg.size, frames=cfg.frames, train_slowdown=cfg.train_slowdown,
                                      blocks=cfg.blocks, block_steps=cfg.block_steps, progress=bar.update)  # fmt: skip
    print(f"{PROG} bench viewer: {r.run}, {r.gaussians:,} {r.count_label}, {r.threads} threads ({r.cpu['model']})")
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
    write_json(cfg.json, r.to_json())
    return 0
