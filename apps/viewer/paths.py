"""The viewer's camera-path panel: keyframes from the current view, a smooth path through
them (Catmull-Rom positions, slerped rotations), preview, save/load as a nerfstudio-layout
``camera_path.json`` and a button that renders the path to an MP4.

Files are written where ``output_for`` says (the run's ``renders/`` folder, numbered), never
over an existing file; a file to load is named in the panel's text box.
"""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Callable

import numpy as np
import torch

from splatfield.render import Cameras, camera_paths

from .server import Viewer
from .frames import ViewRequestError, fov_y_of, pose_of, render_frame, view_camera


class CameraPathPanel:
    def __init__(
        self,
        viewer: Viewer,
        output_for: Callable[[str, str], Path],  # (what, suffix) -> a fresh file name
        size: tuple[int, int],
        snapshot: Callable[[], object] | None = None,
    ) -> None:
        self.viewer = viewer
        self.output_for = output_for
        self.size = size
        self.snapshot = snapshot or viewer.scene_snapshot
        self.keys: list[tuple[np.ndarray, np.ndarray, float]] = []  # (wxyz, position, fov_y)
        self._rendering = threading.Lock()
        self._nodes: list = []  # scene nodes drawn for the path
        gui = viewer.server.gui
        with gui.add_folder("Camera path", expand_by_default=False):
            add = gui.add_button("Add keyframe", hint="Add the current view as the next keyframe")
            clear = gui.add_button("Clear keyframes")
            self.loop = gui.add_checkbox("Loop", False)
            self.fps = gui.add_number("FPS", 30, min=1, max=240, step=1)
            self.seconds = gui.add_number("Duration (s)", 4.0, min=0.1, max=600.0, step=0.1)
            self.preview = gui.add_slider("Preview", min=0.0, max=1.0, step=0.001, initial_value=0.0,
                                          hint="Moves your view along the path")  # fmt: skip
            self.file = gui.add_text("Path file", "", hint="A camera_path.json to load")
            load = gui.add_button("Load path")
            save = gui.add_button("Save path")
            render = gui.add_button("Render MP4")
            self.status = gui.add_markdown("no keyframes")

        add.on_click(self._guard(self._add))
        clear.on_click(self._guard(lambda event: self._set_keys([])))
        self.preview.on_update(self._guard(self._preview))
        load.on_click(self._guard(self._load))
        save.on_click(self._guard(self._save))
        render.on_click(self._guard(self._render))
        self.loop.on_update(self._guard(lambda event: self._draw()))

    # ------------------------------------------------------------------------- path

    def _guard(self, fn: Callable) -> Callable:
        """Panel actions report problems in the panel, never as a traceback in the server."""
        def run(event) -> None:
            try:
                fn(event)
            except (ValueError, OSError, camera_paths.CameraPathError) as exc:
                self.status.content = f"**{type(exc).__name__}**: {exc}"
        return run

    def keyframes(self) -> Cameras:
        W, H = self.size
        cams = [view_camera(q, p, fov, W, H) for q, p, fov in self.keys]
        return Cameras(torch.cat([c.world_to_camera for c in cams]), torch.cat([c.fx for c in cams]),
                       torch.cat([c.fy for c in cams]), torch.cat([c.cx for c in cams]), torch.cat([c.cy for c in cams]),
                       W, H)  # fmt: skip

    def frames(self) -> int:
        fps, seconds = float(self.fps.value), float(self.seconds.value)
        if not (0 < fps <= 240 and 0 < seconds <= 600):
            raise ValueError(f"FPS {fps:g} and duration {seconds:g} s must be in 1..240 and 0.1..600")
        return max(1, round(fps * seconds))

    def path(self) -> Cameras:
        if not self.keys:
            raise ValueError("add at least one keyframe first")
        return camera_paths.interpolate(self.keyframes(), self.frames(), loop=bool(self.loop.value))

    def _add(self, event) -> None:
        if event.client is None:
            return
        cam = event.client.camera
        wxyz, pos, fov = np.asarray(cam.wxyz, float), np.asarray(cam.position, float), float(cam.fov)
        view_camera(wxyz, pos, fov, *self.size)  # validates before it becomes a keyframe
        self._set_keys(self.keys + [(wxyz, pos, fov)])

    def _set_keys(self, keys: list) -> None:
        self.keys = keys
        self._draw()

    def _draw(self) -> None:
        """Keyframes as frustums and the interpolated path as a line, in the scene."""
        scene = self.viewer.server.scene
        for node in self._nodes:
            node.remove()
        self._nodes = []
        self.status.content = f"{len(self.keys)} keyframe(s)"
        if not self.keys:
            return
        scale = 0.05 * self.viewer.extent
        for i, (q, p, fov) in enumerate(self.keys):
            self._nodes.append(scene.add_camera_frustum(
                f"/camera_path/key_{i:03d}", fov=fov, aspect=self.size[0] / self.size[1], scale=scale,
                thickness=0.08 * scale, color=(230, 120, 30), wxyz=q, position=p))  # fmt: skip
        if len(self.keys) > 1:
            centres = self.path().centers.numpy()
            segments = np.stack([centres[:-1], centres[1:]], axis=1)
            self._nodes.append(scene.add_line_segments("/camera_path/line", points=segments, colors=(230, 120, 30),
                                                       thickness=2.0, thickness_units="screen"))  # fmt: skip
        self.status.content = f"{len(self.keys)} keyframe(s), {self.frames()} frames"

    def _preview(self, event) -> None:
        t = float(self.preview.value)
        if event.client is None or not (0.0 <= t <= 1.0) or not self.keys:  # no client: set by the server
            return
        path = self.path()
        i = min(len(path) - 1, int(round(t * (len(path) - 1))))
        wxyz, pos = pose_of(path, i)
        with event.client.atomic():
            event.client.camera.wxyz = wxyz
            event.client.camera.position = pos
            event.client.camera.fov = fov_y_of(path, i)

    # ------------------------------------------------------------------------- files

    def _save(self, event) -> Path:
        target = self.output_for("camera_path", ".json")
        if target.exists():
            raise ValueError(f"{target}: exists already")
        camera_paths.write_camera_path(target, self.path(), fps=float(self.fps.value), keyframes=self.keyframes(),
                                       loop=bool(self.loop.value))  # fmt: skip
        self.file.value = str(target)
        self.status.content = f"saved {target}"
        return target

    def _load(self, event) -> None:
        name = str(self.file.value).strip()
        if not name:
            raise ValueError("name a camera_path.json in 'Path file' first")
        found = camera_paths.read_keyframes(Path(name))
        if found is None:  # a path from elsewhere: its frames become the keyframes
            cams, _ = camera_paths.read_camera_path(Path(name))
            loop = False
        else:
            cams, loop = found
        if len(cams) > 500:
            raise ValueError(f"{name}: {len(cams)} cameras are too many keyframes (at most 500)")
        keys = []
        for i in range(len(cams)):
            q, p = pose_of(cams, i)
            keys.append((q, p, fov_y_of(cams, i)))
        self.loop.value = loop
        self._set_keys(keys)

    def _render(self, event) -> None:
        if not self._rendering.acquire(blocking=False):
            raise ValueError("a render is already running")
        try:
            path = self.path()
        except (ValueError, ViewRequestError):
            self._rendering.release()
            raise
        out = self.output_for("viewer-path", ".mp4")
        threading.Thread(target=self._render_video, args=(path, out), daemon=True).start()

    def _render_video(self, path: Cameras, out: Path) -> None:
        from ..media import write_video

        try:
            g = self.snapshot()
            settings = self.viewer.settings
            fps = float(self.fps.value)

            def produce(on_frame) -> None:
                for i in range(len(path)):
                    on_frame(i, render_frame(g, path[i : i + 1], settings))
                    if i % 5 == 0:
                        self.status.content = f"rendering {i + 1}/{len(path)} → {out.name}"

            n = write_video(out, (path.width, path.height), fps, produce)
            camera_paths.write_camera_path(out.with_suffix(".camera_path.json"), path, fps=fps,
                                           keyframes=self.keyframes(), loop=bool(self.loop.value))  # fmt: skip
            self.status.content = f"wrote {out} ({n} frames)"
        except Exception as exc:  # reported in the panel; the server carries on
            self.status.content = f"**render failed**: {type(exc).__name__}: {exc}"
        finally:
            self._rendering.release()
