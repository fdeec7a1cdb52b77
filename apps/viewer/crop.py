"""The viewer's "Crop" panel, for Gaussian scenes: a box the user moves and rotates with viser's
transform controls (its size typed in the panel; the centre can be typed too), drawn as a
wireframe; while "Crop to box" is on, the scene shown is the Gaussians whose mean is inside
the box (:func:`splatfield.scenes.cleaning.cropped`, the test ``splatfield export
--crop-box`` uses). A read-only text field shows the ``splatfield export`` command line that
writes the same crop (``--crop-box``, ``--crop-rotation``; and ``--ratio`` when the "Model
size" slider is below 1), and "Export" writes it (:func:`splatfield.apps.exporting.write_cropped`:
the export's own code, into the run's ``exports/`` as ``scene-crop.spz``, never over a file).

Exactness: every number of the box is kept to six significant digits when it arrives
(:func:`~splatfield.scenes.crop.tidy`), the crop uses those numbers, and the text writes them
exactly (:func:`~splatfield.scenes.crop.number_text`), so the printed options reproduce the
crop shown Gaussian for Gaussian.

Threads: the GUI callbacks only record the box and tell the viewer the scene changed; the
cropped scene is made by whoever next asks the viewer for its scene (the render thread), once
per box and underlying scene. "Export" runs on a thread of its own.
"""

from __future__ import annotations

import math
import shlex
import threading
from pathlib import Path
from typing import Callable

import numpy as np
import torch

from splatfield.scenes.cleaning import cropped
from splatfield.scenes.crop import IDENTITY, CleanOptions, CropBox, CropRegion, number_text, tidy
from splatfield.scenes.gaussian_scene import FixedGaussians
from splatfield.scenes.scene import Renderable

from ..console import PROG
from .server import Viewer

BOX_COLOUR = (255, 170, 0)
LIMIT = 1e6  # centres and sizes beyond this (world units) are refused
START_DIGITS = 4  # the first box's numbers, kept short


def initial_box(points: torch.Tensor) -> CropBox:
    """A box around the bulk of the scene: the 1st to 99th percentile of the points, 10% larger
    (a first crop drops the floaters far out); axis-aligned."""
    p = points.detach().to(device="cpu", dtype=torch.float64).numpy()
    if len(p) == 0:
        return CropBox((0.0, 0.0, 0.0), (1.0, 1.0, 1.0))
    lo, hi = np.quantile(p, 0.01, axis=0), np.quantile(p, 0.99, axis=0)  # (torch.quantile stops at 16M values)
    size = ((hi - lo) * 1.1).tolist()
    floor = max(max(size), 1e-3) * 1e-3
    return CropBox(tuple(tidy(c, START_DIGITS) for c in ((lo + hi) / 2).tolist()),  # type: ignore[arg-type]
                   tuple(tidy(max(s, floor), START_DIGITS) for s in size))  # type: ignore[arg-type]  # fmt: skip


class CropPanel:
    """Made before the :class:`Viewer` (its :meth:`scene` wraps the scene callable the viewer
    gets), then :meth:`add_controls` adds the panel, the transform controls and the box.

    ``base`` gives the scene before the crop (the "Model size" scene, or the run's scene);
    ``ratio`` the size ratio of that scene (1: the whole scene); ``source`` is the run or file
    the command line names; ``export`` writes the crop (options, ratio) and returns what it
    wrote (see :func:`~splatfield.apps.exporting.write_cropped`)."""

    def __init__(self, base: Callable[[], Renderable], full: Renderable, source: Path, *,
                 ratio: Callable[[], float] = lambda: 1.0,
                 export: Callable[[CleanOptions, float], object] | None = None,
                 log: Callable[[str], None] = print) -> None:  # fmt: skip
        self._base = base
        self._ratio = ratio
        self._source = source
        self._export = export
        self._log = log
        self._lock = threading.Lock()  # the box and the switch
        self._making = threading.Lock()  # one cropped scene made at a time; guards the cache
        self._box = initial_box(full.points())
        self._enabled = False
        self._cache: tuple[object, CropBox, Renderable] | None = None  # (base scene, box, cropped scene)
        self._shown: tuple[int, int] | None = None  # (kept, of) of the scene shown
        self._shown_key: tuple | None = None
        self._last_export: str | None = None  # what the last "Export" did
        self._exporting = threading.Lock()
        self._writing = threading.Lock()  # the panel's texts
        self.viewer: Viewer | None = None
        self.gizmo = None
        self.box_node = None
        self.enabled = self.centre = self.size = self.options = self.export_button = self.status = None

    # ------------------------------------------------------------------------- state

    @property
    def box(self) -> CropBox:
        with self._lock:
            return self._box

    @property
    def region(self) -> CropRegion:
        """The region cropped to (empty while the crop is off)."""
        with self._lock:
            return CropRegion(box=self._box) if self._enabled else CropRegion()

    def command(self) -> str:
        """The ``splatfield export`` command line that writes the crop shown."""
        ratio = self._ratio()
        words = [PROG, "export", shlex.quote(str(self._source))]
        if ratio < 1.0:
            words += ["--ratio", number_text(ratio)]
        return " ".join(words + CropRegion(box=self.box).options())

    def set_enabled(self, on: bool) -> None:
        with self._lock:
            self._enabled = bool(on)
        for node in (self.gizmo, self.box_node):
            if node is not None:
                node.visible = bool(on)
        self._changed()

    def set_box(self, centre=None, size=None, rotation=None) -> CropBox:
        """Moves, resizes or turns the box (each number kept to six significant digits); a bad
        value raises a ``ConfigError`` and changes nothing."""
        def tidied(values, current):
            return current if values is None else tuple(tidy(v) for v in values)

        with self._lock:
            old = self._box
            box = CropBox(tidied(centre, old.centre), tidied(size, old.size), tidied(rotation, old.rotation))
            changed = box != old
            self._box = box
        if changed:
            self._changed()
        return box

    def _changed(self) -> None:
        self._show_text()
        if self.viewer is not None:
            self.viewer.scene_changed()

    # ------------------------------------------------------------------------- the scene

    def scene(self) -> Renderable:
        """The scene shown: the base scene, cropped to the box while the crop is on."""
        base = self._base()
        with self._lock:
            enabled, box = self._enabled, self._box
        if not enabled:
            self._count(None)
            return base
        with self._making:
            if self._cache is None or self._cache[0] is not base or self._cache[1] != box:
                g = base.gaussians.detach()  # type: ignore[attr-defined]
                self._cache = (base, box, FixedGaussians(cropped(g, CropRegion(box=box))))
            scene = self._cache[2]
        self._count((len(scene), len(base)))
        return scene

    # ------------------------------------------------------------------------- the panel

    def _count(self, shown: tuple[int, int] | None) -> None:
        key = (shown, self._ratio())
        if key != self._shown_key:  # a new count, or a new model size for the command line
            self._shown, self._shown_key = shown, key
            self._show_text()

    def _show_text(self, note: str | None = None) -> None:
        # one writer at a time, each reading the state as it writes (the GUI, render and export
        # threads all call this): the last text written is the newest state's
        with self._writing:
            if self.options is not None:
                self.options.value = self.command()
            if self.status is not None and note is None:
                shown = self._shown
                note = "Crop off: the whole scene is shown" if shown is None else \
                    f"Inside the box: **{shown[0]:,}** of {shown[1]:,} Gaussians"  # fmt: skip
                if self._last_export is not None:
                    note += f"  \n{self._last_export}"
            if self.status is not None:
                self.status.content = note

    def add_controls(self, viewer: Viewer) -> None:
        self.viewer = viewer
        gui, scene = viewer.server.gui, viewer.server.scene
        box = self.box
        step = 10 ** math.floor(math.log10(max(box.size))) / 100
        with gui.add_folder("Crop", expand_by_default=False):
            self.enabled = gui.add_checkbox("Crop to box", False, hint="Show only the Gaussians whose centre is inside "
                                            "the box (drag the arrows and rings to move and turn it)")  # fmt: skip
            self.centre = gui.add_vector3("Centre", box.centre, step=step, hint="Centre of the box (world units)")
            self.size = gui.add_vector3("Size", box.size, min=(0.0, 0.0, 0.0), step=step,
                                        hint="Edge lengths of the box along its axes (world units, > 0)")  # fmt: skip
            reset = gui.add_button("Reset rotation", hint="Align the box with the world's axes")
            self.options = gui.add_text("Export options", self.command(), multiline=True, disabled=True,
                                        hint="The splatfield export command that writes this crop")  # fmt: skip
            self.export_button = gui.add_button("Export", hint="Write the cropped scene (spz) into the run's exports/")
            self.status = gui.add_markdown("")
        self._show_text()
        viewer.controls.update({"crop": self.enabled, "crop_centre": self.centre, "crop_size": self.size,
                                "crop_reset_rotation": reset, "crop_options": self.options,
                                "crop_export": self.export_button, "crop_status": self.status})  # fmt: skip
        self.gizmo = scene.add_transform_controls("/crop", scale=0.6 * max(box.size), position=box.centre,
                                                  wxyz=box.rotation, visible=False,
                                                  translation_limits=((-LIMIT, LIMIT),) * 3)  # fmt: skip
        self.box_node = scene.add_box("/crop/box", color=BOX_COLOUR, dimensions=box.size, wireframe=True, visible=False)
        viewer.controls.update({"crop_transform": self.gizmo, "crop_box": self.box_node})
        enabled, centre, size, gizmo = self.enabled, self.centre, self.size, self.gizmo

        @enabled.on_update
        def _(event) -> None:
            self.set_enabled(bool(enabled.value))

        @gizmo.on_update
        def _(event) -> None:
            pose = self._checked(event, tuple(gizmo.position), "crop box position", 3)
            wxyz = self._checked(event, tuple(gizmo.wxyz), "crop box rotation", 4)
            if pose is not None and wxyz is not None and not math.hypot(*(tidy(v) for v in wxyz)) > 1e-9:
                viewer._reject(event.client_id, "crop box rotation is a zero quaternion")
                wxyz = None
            if pose is None or wxyz is None:  # put the controls back (viser echoed the pose to the other browsers)
                box = self.box
                gizmo.position, gizmo.wxyz = box.centre, box.rotation
                return
            box = self.set_box(centre=pose, rotation=wxyz)
            centre.value = box.centre  # the panel follows (its callback sees no change)

        @centre.on_update
        def _(event) -> None:
            value = self._checked(event, centre.value, "crop box centre", 3)
            if value is None:
                centre.value = self.box.centre  # put back for every browser
                return
            box = self.set_box(centre=value)
            if tuple(float(v) for v in gizmo.position) != box.centre:
                gizmo.position = box.centre

        @size.on_update
        def _(event) -> None:
            value = self._checked(event, size.value, "crop box size", 3, positive=True)
            if value is None:
                size.value = self.box.size
                return
            box = self.set_box(size=value)
            self.box_node.dimensions = box.size

        @reset.on_click
        def _(event) -> None:
            self.set_box(rotation=IDENTITY)
            gizmo.wxyz = IDENTITY

        @self.export_button.on_click
        def _(event) -> None:
            self.start_export()

    def _checked(self, event, value, what: str, count: int, positive: bool = False) -> tuple[float, ...] | None:
        """A client's numbers if they are ``count`` finite values within :data:`LIMIT` (and > 0
        for ``positive``); else the request is rejected (one log line per kind) and None."""
        try:
            vals = tuple(float(v) for v in value)
        except (TypeError, ValueError):
            vals = ()
        ok = len(vals) == count and all(abs(v) <= LIMIT for v in vals)  # also false for NaN
        if ok and positive:
            ok = all(tidy(v) > 0 for v in vals)
        if not ok:
            assert self.viewer is not None
            self.viewer._reject(event.client_id, f"{what} {str(value)[:60]} is not {count} finite numbers"
                                                 f"{' > 0' if positive else ''} within {LIMIT:g}")  # fmt: skip
            return None
        return vals

    # ------------------------------------------------------------------------- export

    def start_export(self) -> threading.Thread | None:
        """Writes the crop on a thread of its own (one at a time); the status line says where."""
        if self._export is None:
            self._show_text("Export is not available here")
            return None
        with self._lock:
            enabled, options = self._enabled, CleanOptions(CropRegion(box=self._box))
        if not enabled:
            self._show_text("Tick \"Crop to box\" first: Export writes the crop shown")
            return None
        if not self._exporting.acquire(blocking=False):
            return None
        ratio = self._ratio()
        self._last_export = "Exporting…"
        self._show_text()
        # not a daemon: an export is seconds, and a thread cut off inside torch at exit aborts Python
        thread = threading.Thread(target=self._write, args=(options, ratio), name="viewer-crop-export")
        thread.start()
        return thread

    def _write(self, options: CleanOptions, ratio: float) -> None:
        try:
            done = self._export(options, ratio)  # type: ignore[misc]
            row = done.row  # type: ignore[attr-defined]
            kept = f"{done.kept:,} of {done.total:,} Gaussians"  # type: ignore[attr-defined]
            self._last_export = f"Wrote `{row.path}` ({kept}, {row.bytes:,} bytes)"
            self._log(f"viewer: wrote {row.path}")
        except Exception as exc:  # reported in the panel; the viewer keeps running
            self._last_export = f"Export failed: {type(exc).__name__}: {str(exc)[:200]}"
            self._log(f"viewer: crop export failed ({type(exc).__name__}: {exc})")
        finally:
            self._exporting.release()
        self._show_text()


def crop_export(path: Path, device: torch.device | None = None) -> Callable[[CleanOptions, float], object]:
    """The "Export" of a viewer of ``path``: the export command's own code."""

    def write(options: CleanOptions, ratio: float):
        from ..exporting import write_cropped

        return write_cropped(path, options, ratio=ratio, device=device if device is not None else torch.device("cpu"))

    return write

