"""``splatfield view``: serves a finished run or a splat file in the browser viewer."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import tyro
from typing_extensions import Annotated

from splatfield.scenes.config import check_device, check_port

from .console import PROG, say
from .errors import require_exists


@dataclass(frozen=True)
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
    device: str = "auto"
    """auto (CUDA when torch sees a GPU, else the CPU), cpu, cuda or cuda:N."""

    def __post_init__(self) -> None:
        check_device(self.device)
        check_port(self.port)


def run(cfg: View) -> int:
    require_exists(cfg.source)
    import time

    from splatfield.render.device import resolve_device

    from .viewer.sessions import open_view

    viewer = open_view(cfg.source, host=cfg.host, port=cfg.port, log=say, device=resolve_device(cfg.device))
    print(f"{PROG} view: {len(viewer.scene_snapshot()):,} Gaussians at {viewer.url} — open it in a browser; Ctrl-C stops",
          flush=True)  # fmt: skip
    try:
        while True:
            time.sleep(3600)
    finally:
        viewer.stop()
