"""The browser viewer: a viser server that renders on the server with the native rasterizer
and streams JPEG frames to each connected browser.

- Each client's camera is rendered at a reduced size while it moves and at full size once it
  has been still for :data:`SETTLE_SECONDS`; only the newest camera of a client is rendered.
- ``splatfield view`` renders in a background thread. During ``splatfield train --viewer``
  the frames are rendered in the training thread between steps, within a time budget (by
  default at most 10% of the training time, or every N steps), so the viewer cannot slow
  training by more than that; "Pause" stops training and keeps the viewer responsive.
- Every client input (camera, GUI value) is validated; a bad one is skipped with a one-line
  warning and never reaches the renderer or the training.

The viewer never writes into a run directory except the outputs a user asks for (a camera
path JSON, a rendered MP4), and never overwrites a file.
"""

from __future__ import annotations

import contextlib
import io
import math
import threading
import time
from dataclasses import dataclass, replace
from typing import Callable

import numpy as np
import torch

from splatfield.data import look_at_centre
from splatfield.render import Cameras
from splatfield.scenes.scene import Renderable

from .frames import (
    MAX_SIDE, RENDER_MODES, FrameSettings, ViewRequestError, fov_y_of, frame_size, pose_of, render_frame, view_camera,
)  # fmt: skip

SETTLE_SECONDS = 0.25  # a camera still for this long gets a full-size frame
JPEG_QUALITY = 90


@dataclass
class _ClientState:
    camera: tuple | None = None  # (wxyz, position, fov_y, canvas width, canvas height)
    version: int = 0  # bumped by every camera message
    changed_at: float = 0.0
    sent: tuple = (-1, False, -1, -1)  # (camera version, full size, settings version, scene version)
    frames: int = 0
    last_frame: np.ndarray | None = None  # the newest frame sent (what the browser shows)
    last_camera: Cameras | None = None  # and its camera


@dataclass
class ViewerStats:
    frames: int = 0
    render_seconds: float = 0.0
    rejected: int = 0
    first_frame_at: float | None = None  # time.monotonic() of the first frame sent


class Viewer:
    """A running viewer. ``scene`` returns the scene to draw, any :class:`Renderable` (called on
    the render thread; during training, the live scene, copied by :meth:`hand_over_scene`)."""

    def __init__(
        self,
        scene: Callable[[], Renderable],
        *,
        host: str = "127.0.0.1",
        port: int = 8080,
        background: tuple[float, float, float] = (0.0, 0.0, 0.0),
        max_sh_degree: int = 3,
        training_cameras: Cameras | None = None,
        thumbnail: Callable[[int], np.ndarray] | None = None,
        title: str = "splatfield",
        live: bool = False,
        log: Callable[[str], None] = print,
    ) -> None:
        import viser

        self._scene = scene
        self._log = log
        self._lock = threading.Lock()
        self.wake = threading.Event()
        self._clients: dict[int, _ClientState] = {}
        self._handles: dict[int, object] = {}
        self._settings = FrameSettings(sh_degree=max_sh_degree, background=background)
        self._settings_version = 0
        self._scene_version = 0
        self._jpeg_quality = JPEG_QUALITY
        self._warned: set[str] = set()
        self._snapshot_requests: list[dict] = []
        self.stats = ViewerStats()
        self.max_sh_degree = max_sh_degree
        self.training_cameras = training_cameras
        self.live = live
        with contextlib.redirect_stdout(io.StringIO()):  # viser prints a banner; the caller prints the URL
            self.server = viser.ViserServer(host=host, port=port, label=title, verbose=False)
        self.server.gui.configure_theme(control_width="medium", show_share_button=False)
        self._frustums: list = []
        self._thread: threading.Thread | None = None
        self._thumbnailer: threading.Thread | None = None
        self._stopped = threading.Event()
        self._set_initial_camera(training_cameras)
        self._build_view_controls()
        if training_cameras is not None:
            self._add_frustums(training_cameras, thumbnail)
        self.server.on_client_connect(self._on_connect)
        self.server.on_client_disconnect(self._on_disconnect)

    # ------------------------------------------------------------------------- lifecycle

    @property
    def url(self) -> str:
        host = self.server.get_host()
        return f"http://{'localhost' if host in ('0.0.0.0', '127.0.0.1', '::') else host}:{self.server.get_port()}"

    def start_rendering_thread(self) -> None:
        """``splatfield view``: render in the background until :meth:`stop`."""
        self._thread = threading.Thread(target=self._render_loop, name="viewer-render", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stopped.set()
        self.wake.set()
        # joined, not abandoned: a daemon thread still inside torch when Python exits aborts it
        for t in (self._thread, self._thumbnailer):
            if t is not None:
                t.join(timeout=30)
        self.server.stop()

    def _render_loop(self) -> None:
        while not self._stopped.is_set():
            try:
                sent = self.serve()
            except Exception as exc:  # one bad frame must not end the viewer
                self._log(f"viewer: a frame failed ({type(exc).__name__}: {exc})")
                sent = 0
            if sent == 0:
                self.wait_for_work(0.02)

    # ------------------------------------------------------------------------- clients

    def _on_connect(self, client) -> None:
        with self._lock:
            self._clients[client.client_id] = _ClientState()
            self._handles[client.client_id] = client
        client.camera.on_update(lambda camera: self._record_camera(client.client_id, camera))
        # viser calls this after the client's first camera message, which reached no on_update
        # callback yet: take that camera as it stands
        self._record_camera(client.client_id, client.camera)

    def _record_camera(self, client_id: int, camera) -> None:
        try:
            state = (tuple(camera.wxyz), tuple(camera.position), float(camera.fov),
                     float(camera.image_width), float(camera.image_height))  # fmt: skip
        except (TypeError, ValueError):
            self._reject(client_id, "camera message with non-numeric values")
            return
        with self._lock:
            st = self._clients.get(client_id)
            if st is not None:
                st.camera, st.version, st.changed_at = state, st.version + 1, time.monotonic()
        self.wake.set()

    def _on_disconnect(self, client) -> None:
        with self._lock:
            self._clients.pop(client.client_id, None)
            self._handles.pop(client.client_id, None)

    def _reject(self, client_id: int, why: str) -> None:
        self.stats.rejected += 1
        if why not in self._warned:  # one line per kind of problem, not one per message
            self._warned.add(why)
            self._log(f"viewer: ignored a request from client {client_id}: {why}")

    def client_ids(self) -> list[int]:
        with self._lock:
            return list(self._clients)

    def last_frame(self, client_id: int) -> tuple[np.ndarray, Cameras, bool] | None:
        """The newest frame sent to a client, the camera it was rendered from, and whether it
        was a full-size frame (of a camera at rest)."""
        with self._lock:
            st = self._clients.get(client_id)
            if st is None or st.last_frame is None:
                return None
            return st.last_frame, st.last_camera, st.sent[1]

    # ------------------------------------------------------------------------- rendering

    def scene_snapshot(self, timeout: float = 60.0) -> Renderable:
        """A copy of the scene that later training steps do not change. During training the
        copy is made by the training thread between steps (see :meth:`hand_over_scene`)."""
        if not self.live:
            return self._scene()
        request: dict = {"done": threading.Event(), "scene": None}
        with self._lock:
            self._snapshot_requests.append(request)
        if not request["done"].wait(timeout):
            raise TimeoutError("training did not hand over the scene")
        return request["scene"]

    def hand_over_scene(self) -> None:
        """Training thread: fulfils pending :meth:`scene_snapshot` requests."""
        with self._lock:
            requests, self._snapshot_requests = self._snapshot_requests, []
        for r in requests:
            r["scene"] = self._scene().snapshot()
            r["done"].set()

    def scene_changed(self) -> None:
        with self._lock:
            self._scene_version += 1
        self.wake.set()

    @property
    def settings(self) -> FrameSettings:
        return self._settings

    def update_settings(self, **changes) -> None:
        with self._lock:
            self._settings = replace(self._settings, **changes)
            self._settings_version += 1
        self.wake.set()

    def pending(self) -> bool:
        now = time.monotonic()
        with self._lock:
            return any(self._needs(st, now) is not None for st in self._clients.values())

    def _needs(self, st: _ClientState, now: float) -> bool | None:
        """None if the client's frame is current, else whether the next frame is full size."""
        if st.camera is None:
            return None
        full = now - st.changed_at >= SETTLE_SECONDS
        # a full-size frame of this camera, scene and settings stays current; a reduced one only
        # until the camera has settled
        current = (st.version, full or st.sent[1], self._settings_version, self._scene_version)
        return None if st.sent == current else full

    def serve(self, scene: Renderable | None = None) -> int:
        """Renders and sends one frame to every client whose view is out of date; returns how
        many were sent. ``scene`` defaults to the ``scene`` callable's."""
        now = time.monotonic()
        with self._lock:
            jobs = []
            for cid, st in self._clients.items():
                full = self._needs(st, now)
                if full is not None:
                    jobs.append((cid, st.camera, full, (st.version, full, self._settings_version, self._scene_version)))
            settings = self._settings
        if not jobs:
            return 0
        g = scene if scene is not None else self._scene()
        sent = 0
        for cid, cam, full, stamp in jobs:
            t0 = time.perf_counter()
            try:
                wxyz, position, fov, cw, ch = cam
                side = settings.max_side if full else max(64, round(settings.max_side * settings.moving_scale))
                W, H = frame_size(cw, ch, side)
                camera = view_camera(wxyz, position, fov, W, H)
            except ViewRequestError as exc:
                self._skip(cid, stamp, str(exc))
                continue
            try:
                image = render_frame(g if full else g.preview(), camera, settings)
            except (ValueError, RuntimeError) as exc:  # e.g. a scene with NaN mid-training: skip, never raise
                self._skip(cid, stamp, f"frame not rendered ({type(exc).__name__}: {str(exc)[:200]})")
                continue
            client = self._handles.get(cid)
            if client is None:
                continue
            try:
                client.scene.set_background_image(image, format="jpeg", jpeg_quality=self._jpeg_quality)
            except Exception as exc:  # the client went away between the check and the send
                self._reject(cid, f"frame not delivered ({type(exc).__name__})")
                continue
            with self._lock:
                st = self._clients.get(cid)
                if st is not None:
                    st.sent, st.frames, st.last_frame, st.last_camera = stamp, st.frames + 1, image, camera
            self.stats.frames += 1
            self.stats.render_seconds += time.perf_counter() - t0
            if self.stats.first_frame_at is None:
                self.stats.first_frame_at = time.monotonic()
            sent += 1
        return sent

    def _skip(self, client_id: int, stamp: tuple, why: str) -> None:
        """Rejects a request and marks it handled, so the same bad camera is not retried."""
        self._reject(client_id, why)
        with self._lock:
            if client_id in self._clients:
                self._clients[client_id].sent = stamp

    def wait_for_work(self, timeout: float) -> None:
        """Sleeps until a camera, setting or scene changes (or ``timeout`` seconds pass)."""
        self.wake.wait(timeout)
        self.wake.clear()

    # ------------------------------------------------------------------------- scene and GUI

    def _set_initial_camera(self, cams: Cameras | None) -> None:
        from splatfield.render.camera_paths import ring_around, scene_frame

        ic = self.server.initial_camera
        if cams is not None and len(cams):
            c2w = cams.camera_to_world.to(torch.float64)
            centre = look_at_centre(cams).to(torch.float64)
            up, _, _ = scene_frame(cams, centre)
            ic.position = c2w[0, :3, 3].numpy()
            ic.look_at = centre.numpy()
            ic.up = up.numpy()
            ic.fov = fov_y_of(cams, 0)
            self.server.scene.set_up_direction(tuple(up.tolist()))
            self.extent = float((c2w[:, :3, 3] - centre).norm(dim=-1).median())
        else:
            g = self._scene()
            centre, radius = ring_around(g.points()) if len(g) else (torch.zeros(3, dtype=torch.float64), 3.0)
            ic.position = (centre + torch.tensor([radius, 0.0, 0.4 * radius], dtype=torch.float64)).numpy()
            ic.look_at = centre.numpy()
            ic.fov = math.radians(50.0)
            self.server.scene.set_up_direction("+z")
            self.extent = radius

    def _add_frustums(self, cams: Cameras, thumbnail: Callable[[int], np.ndarray] | None) -> None:
        fov = fov_y_of(cams, 0)
        scale = 0.06 * self.extent
        for i in range(len(cams)):
            wxyz, pos = pose_of(cams, i)
            h = self.server.scene.add_camera_frustum(f"/training_cameras/{i:04d}", fov=fov, aspect=cams.width / cams.height,
                                                     scale=scale, thickness=0.004 * self.extent, color=(80, 130, 220),
                                                     wxyz=wxyz, position=pos)  # fmt: skip
            h.on_click(self._jump_to(i))
            self._frustums.append(h)
        if thumbnail is not None:  # images arrive after the first frames, so they do not delay them
            self._thumbnailer = threading.Thread(target=self._load_thumbnails, args=(thumbnail,), daemon=True)
            self._thumbnailer.start()

    def _load_thumbnails(self, thumbnail: Callable[[int], np.ndarray]) -> None:
        for i, h in enumerate(list(self._frustums)):
            if self._stopped.is_set():
                return
            try:
                h.image = thumbnail(i)
            except Exception as exc:  # a missing image only loses its thumbnail
                self._log(f"viewer: no thumbnail for training view {i} ({type(exc).__name__}: {exc})")

    def _jump_to(self, i: int) -> Callable:
        def jump(event) -> None:
            cams = self.training_cameras
            wxyz, pos = pose_of(cams, i)
            with event.client.atomic():
                event.client.camera.wxyz = wxyz
                event.client.camera.position = pos
                event.client.camera.fov = fov_y_of(cams, i)

        return jump

    def _build_view_controls(self) -> None:
        gui = self.server.gui
        with gui.add_folder("View"):
            mode = gui.add_dropdown("Render mode", RENDER_MODES, initial_value="rgb",
                                    hint="RGB, depth (near yellow, far blue) or alpha")  # fmt: skip
            sh = gui.add_slider("SH degree", min=0, max=self.max_sh_degree, step=1, initial_value=self.max_sh_degree)
            bg = gui.add_rgb("Background", tuple(int(round(255 * c)) for c in self._settings.background))
            res = gui.add_slider("Resolution", min=64, max=2048, step=16, initial_value=self._settings.max_side,
                                 hint="Longer side of a still frame, in pixels")  # fmt: skip
            quality = gui.add_slider("JPEG quality", min=40, max=100, step=5, initial_value=JPEG_QUALITY)
            cams = gui.add_checkbox("Training cameras", True)
        self.controls = {"mode": mode, "sh_degree": sh, "background": bg, "resolution": res, "jpeg_quality": quality,
                         "training_cameras": cams}  # fmt: skip

        @mode.on_update
        def _(event) -> None:
            value = mode.value
            if value in RENDER_MODES:
                self.update_settings(mode=value)
            else:
                self._reject(event.client_id, f"unknown render mode {str(value)[:40]!r}")

        @sh.on_update
        def _(event) -> None:
            self.check_number(event, sh.value, 0, self.max_sh_degree, lambda v: self.update_settings(sh_degree=int(v)), "SH degree")

        @bg.on_update
        def _(event) -> None:
            try:
                rgb = tuple(float(c) / 255.0 for c in bg.value)
                if len(rgb) != 3 or not all(0.0 <= c <= 1.0 for c in rgb):
                    raise ValueError
            except (TypeError, ValueError):
                self._reject(event.client_id, "background colour is not three values in 0..255")
                return
            self.update_settings(background=rgb)

        @res.on_update
        def _(event) -> None:
            self.check_number(event, res.value, 16, MAX_SIDE, lambda v: self.update_settings(max_side=int(v)), "resolution")

        @quality.on_update
        def _(event) -> None:
            def set_quality(v: float) -> None:
                self._jpeg_quality = int(v)
                self.update_settings()

            self.check_number(event, quality.value, 1, 100, set_quality, "JPEG quality")

        @cams.on_update
        def _(event) -> None:
            self.show_training_cameras(bool(cams.value))

    def show_training_cameras(self, visible: bool) -> None:
        for h in self._frustums:
            h.visible = visible

    def check_number(self, event, value, lo: float, hi: float, apply: Callable[[float], None], what: str) -> bool:
        """Applies a client's number if it lies in lo..hi; else rejects it. Returns whether it was applied."""
        try:
            v = float(value)
        except (TypeError, ValueError):
            v = math.nan
        if not (lo <= v <= hi):  # also false for NaN
            self._reject(event.client_id, f"{what} {str(value)[:40]} outside {lo:g}..{hi:g}")
            return False
        apply(v)
        return True

