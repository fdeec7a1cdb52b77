"""``splatfield bench viewer``: what the viewer costs and delivers on this machine.

- **Frame rate** at ``size``x``size`` of a run's scene, served to a websocket client over
  localhost: *still* frames (full size: render, JPEG, send; the scene is marked changed
  before each, as training does) and *moving* frames (the client's camera moves along an orbit
  and waits for each frame: the reduced size the viewer uses while a camera moves).
- **Time to first frame** of ``splatfield view RUN``: from starting the command (a fresh
  Python process) to the first rendered frame on a Chromium page that is already open and
  loads the URL as soon as it is printed. Needs playwright and Debian's chromium.
- **Training slowdown** with the viewer attached and a client that moves its camera all the
  time (the worst case): the same trainer runs blocks of steps with and without the viewer,
  alternating, and the wall time per step (callbacks included) is compared.
"""

from __future__ import annotations

import os
import statistics
import subprocess
import sys
import threading
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable

import torch

from ..machine import machine_info, peak_rss_mb
from ..viewer.frames import pose_of
from ..viewer.protocol import CHROMIUM_ARGS, RawClient, find_chromium


@dataclass
class ViewerBenchResult:
    run: str
    gaussians: int  # the scene's size, in count_label units
    size: int
    still_fps: float
    still_ms_median: float
    moving_fps: float
    moving_size: list[int]
    first_frame_seconds: float | None
    url_seconds: float | None
    first_frame_note: str
    train_size: list[int] | None
    train_step_ms_without: float | None
    train_step_ms_with: float | None
    train_slowdown: float | None
    train_viewer_frames: int | None
    train_viewer_share: float | None  # the viewer's render time / training time of the same steps
    train_block_ms_without: list[float] | None  # ms/step of each block, in order (they alternate)
    train_block_ms_with: list[float] | None
    threads: int
    cpu: dict
    peak_rss_mb: float = 0.0
    count_label: str = "Gaussians"  # what `gaussians` counts (a field: grid vertices)

    def to_json(self) -> dict:
        return asdict(self)


def _wait(condition: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out waiting for {what}")
        time.sleep(0.001)


def _orbit(viewer, frames: int):
    """A quarter turn around the scene, at the training cameras' distance (the viewer's start)."""
    from splatfield.render import camera_paths

    ic = viewer.server.initial_camera
    centre, eye = torch.as_tensor(ic.look_at, dtype=torch.float64), torch.as_tensor(ic.position, dtype=torch.float64)
    up = torch.as_tensor(ic.up if ic.up is not None else (0.0, 0.0, 1.0), dtype=torch.float64)
    rel = eye - centre
    height = float(rel @ up)
    radius = float((rel - height * up).norm())
    return camera_paths.orbit(centre, up, radius, height, frames, fov_y=50.0, width=8, height_px=8, turns=0.25)


def frame_rates(run: Path, size: int, frames: int) -> tuple[int, str, float, float, float, tuple[int, int]]:
    """(scene size, what it counts, still fps, still median ms, moving fps, moving frame size) over a websocket
    client."""
    from ..viewer.sessions import open_view

    viewer = open_view(run, host="127.0.0.1", port=0, log=lambda m: None)
    try:
        viewer.show_training_cameras(False)
        g = viewer.scene_snapshot()
        path = _orbit(viewer, frames + 1)
        client = RawClient(viewer.server.get_port())
        try:
            wxyz, pos = pose_of(path, 0)
            client.camera(wxyz, pos, width=size, height=size)
            _wait(lambda: viewer.client_ids(), 30, "the client")
            cid = viewer.client_ids()[-1]
            _wait(lambda: (f := viewer.last_frame(cid)) is not None and f[2], 60, "a full frame")
            still = []
            for _ in range(frames):  # full-size frames of a camera at rest
                n = viewer.stats.frames
                t0 = time.perf_counter()
                viewer.scene_changed()
                _wait(lambda: viewer.stats.frames > n, 60, "a still frame")
                still.append(time.perf_counter() - t0)
            t0 = time.perf_counter()
            shape = None
            for k in range(frames):  # a moving camera: each new pose waits for its frame
                n = viewer.stats.frames
                wxyz, pos = pose_of(path, k + 1)
                client.camera(wxyz, pos, width=size, height=size)
                _wait(lambda: viewer.stats.frames > n, 60, "a moving frame")
                shape = viewer.last_frame(cid)[0].shape
            moving_fps = frames / (time.perf_counter() - t0)
        finally:
            client.close()
        med = statistics.median(still)
        return len(g), g.count_label, 1.0 / med, 1e3 * med, moving_fps, (shape[1], shape[0])
    finally:
        viewer.stop()


def time_to_first_frame(run: Path) -> tuple[float | None, float | None, str]:
    """(seconds to the URL line, seconds to the first frame on the page, note)."""
    chromium = find_chromium()
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        return None, None, "not measured: playwright is not installed"
    if chromium is None:
        return None, None, "not measured: Debian's chromium is not installed"
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=chromium, args=CHROMIUM_ARGS)
        page = browser.new_page(viewport={"width": 800, "height": 800})
        page.goto("about:blank")
        t0 = time.perf_counter()
        proc = subprocess.Popen([sys.executable, "-m", "splatfield.apps.cli", "view", str(run), "--port", "0"],
                                stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                                env={**os.environ, "PYTHONUNBUFFERED": "1"})  # fmt: skip
        try:
            url = None
            while url is None:
                line = proc.stdout.readline()
                if not line:
                    return None, None, "not measured: `splatfield view` ended early"
                if "splatfield view:" in line:
                    url = line.split(" at ", 1)[1].split()[0]
            t_url = time.perf_counter() - t0
            page.goto(url)
            # the first frame is the moment the middle of the page stops being the empty scene
            blank = None
            while True:
                shot = page.screenshot(clip={"x": 300, "y": 300, "width": 200, "height": 200}, type="png")
                if blank is None:
                    blank = shot
                elif shot != blank:
                    return t_url, time.perf_counter() - t0, "fresh process; Chromium already open"
                if time.perf_counter() - t0 > 300:
                    return t_url, None, "not measured: no frame within 300 s"
        finally:
            proc.terminate()
            proc.wait(timeout=60)
            browser.close()


def training_slowdown(run: Path, blocks: int, block_steps: int, size: int,
                      progress: Callable[[], None] | None = None) -> tuple:  # fmt: skip
    """(ms/step of each block without, and with the viewer, frames served, image size, the
    viewer's time as a share of the attached steps' training time). The run's training is
    continued from its latest checkpoint (a late, steady stage: the Gaussian count and step
    time hold still) in alternating blocks without and with the viewer."""
    from splatfield.scenes.run import Run

    from ..run_data import background_of, load_dataset, load_views
    from ..training import new_trainer
    from ..viewer.sessions import training_viewer

    r = Run.open(run)
    dataset = load_dataset(r.config)
    trainer = new_trainer(r.config, dataset, load_views(dataset.train), r.load_state()[0])
    viewer, panel = training_viewer(trainer, dataset, run, 10**9, background_of(dataset), host="127.0.0.1", port=0,
                                    log=lambda m: None)  # fmt: skip
    stop = threading.Event()
    client = RawClient(viewer.server.get_port())
    cams = trainer.views.cameras

    def keep_moving() -> None:  # a user dragging the camera without pause
        path = _orbit(viewer, 240)
        k = 0
        while not stop.is_set():
            wxyz, pos = pose_of(path, k % len(path))
            client.camera(wxyz, pos, width=size, height=size)
            k += 1
            time.sleep(1 / 30)

    mover = threading.Thread(target=keep_moving, daemon=True)
    try:
        trainer.train_step()  # warm-up (the extension, the first allocations)
        mover.start()
        _wait(lambda: viewer.client_ids(), 30, "the client")
        without, with_viewer = [], []
        for b in range(2 * blocks):
            attach = b % 2 == 1
            t0 = time.perf_counter()
            for _ in range(block_steps):
                info = trainer.train_step()
                if attach:
                    panel(trainer, info)
                if progress:
                    progress()
            (with_viewer if attach else without).append(1e3 * (time.perf_counter() - t0) / block_steps)
        share = panel.view_seconds / max(panel.train_seconds, 1e-9)
        return without, with_viewer, viewer.stats.frames, [cams.width, cams.height], share
    finally:
        stop.set()
        if mover.is_alive():
            mover.join(timeout=30)
        client.close()
        viewer.stop()


def paired_slowdown(without: list[float], with_viewer: list[float]) -> float:
    """Median over blocks of (with) / (mean of the blocks without just before and after it):
    the neighbours cancel a drift of the step time."""
    ratios = []
    for i, w in enumerate(with_viewer):
        around = without[i : i + 2]
        ratios.append(w / (sum(around) / len(around)))
    return statistics.median(ratios)


def bench_viewer(run: Path, *, size: int, frames: int, train_slowdown: bool, blocks: int, block_steps: int,
                 progress: Callable[[], None] | None = None) -> ViewerBenchResult:  # fmt: skip
    n, label, still_fps, still_ms, moving_fps, moving_size = frame_rates(run, size, frames)
    t_url, t_first, note = time_to_first_frame(run)
    blocks_without = blocks_with = frames_served = train_size = share = None
    without = with_v = None
    if train_slowdown:
        blocks_without, blocks_with, frames_served, train_size, share = training_slowdown(
            run, blocks, block_steps, size, progress)  # fmt: skip
        without, with_v = statistics.median(blocks_without), statistics.median(blocks_with)
    return ViewerBenchResult(
        run=str(run), gaussians=n, size=size, still_fps=still_fps, still_ms_median=still_ms, moving_fps=moving_fps,
        moving_size=list(moving_size), first_frame_seconds=t_first, url_seconds=t_url, first_frame_note=note,
        train_size=train_size, train_step_ms_without=without, train_step_ms_with=with_v,
        train_slowdown=None if without is None else paired_slowdown(blocks_without, blocks_with), train_viewer_frames=frames_served,
        train_viewer_share=share, train_block_ms_without=blocks_without, train_block_ms_with=blocks_with,
        threads=torch.get_num_threads(), cpu=machine_info(), peak_rss_mb=peak_rss_mb(), count_label=label,
    )  # fmt: skip
