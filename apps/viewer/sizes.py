"""The viewer's "Model size" control, for a run trained with an elastic model (``--strategy adc
elastic``): a slider for the kept fraction r in [0.01, 1] that switches the scene shown to the
run's scene at r (``SceneSource.at_ratio``: the top ceil(r N) Gaussians by the selector,
transformed), and the Gaussian count of the scene shown.

The slider's value is the fraction itself, on a linear scale with a step of 0.01: viser's
slider shows its own value in the box beside it and cannot show another number for its
position, so a slider over log10 r would show "-1.30" where the user thinks "5%". The box
takes typed values too (any r in [0.01, 1], kept to 4 decimals). A value outside that range,
NaN or not a number is rejected like the viewer's other controls, and the slider is put back
for every browser (viser echoes a client's value to the others before the server sees it).

Threads: a slider message only records the newest ratio and tells the viewer the scene
changed; the scene at that ratio is made by whoever next asks the viewer for its scene (the
render thread, before the frames it then draws), one at a time, so a dragged slider costs one
reduced scene per frame, never one per message (and nothing while no browser needs a frame).
The last :data:`CACHE_SIZE` reduced scenes are kept (moving back is instant); r = 1 is the
run's own scene and costs nothing.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from typing import Callable

from splatfield.scenes.scene import Renderable

from .server import Viewer

RATIO_MIN = 0.01
RATIO_STEP = 0.01
RATIO_DIGITS = 4  # a ratio is kept to this many decimals (the cache's key)
CACHE_SIZE = 4  # reduced scenes kept, newest first, and together at most twice the full scene's Gaussians


class ModelSizePanel:
    """Made before the :class:`Viewer` (its :meth:`scene` is the viewer's scene callable), then
    :meth:`add_controls` puts the slider and the count into the viewer's panel."""

    def __init__(self, at_ratio: Callable[[float], Renderable], full: Renderable,
                 log: Callable[[str], None] = print) -> None:  # fmt: skip
        self._at_ratio = at_ratio
        self._full = full
        self._log = log
        self._lock = threading.Lock()  # the requested ratio
        self._making = threading.Lock()  # one reduced scene made at a time; guards the cache and the current scene
        self._requested = 1.0
        self._current: tuple[float, Renderable] = (1.0, full)
        self._cache: OrderedDict[float, Renderable] = OrderedDict()
        self._failed: set[str] = set()
        self.viewer: Viewer | None = None
        self.slider = None
        self.count = None

    # ------------------------------------------------------------------------- the scene

    @property
    def ratio(self) -> float:
        """The ratio of the scene shown (the newest one made)."""
        return self._current[0]

    @property
    def requested(self) -> float:
        with self._lock:
            return self._requested

    def scene(self) -> Renderable:
        """The scene at the newest requested ratio (made here, on the calling thread, if it is
        not the current or a cached one)."""
        with self._making:
            with self._lock:
                r = self._requested
            if r != self._current[0]:
                try:
                    scene = self._scene_at(r)
                except (ValueError, RuntimeError) as exc:  # keep showing the scene we have
                    why = f"{type(exc).__name__}: {str(exc)[:200]}"
                    if why not in self._failed:
                        self._failed.add(why)
                        self._log(f"viewer: no scene at model size {r:g} ({why})")
                    with self._lock:
                        if self._requested == r:
                            self._requested = self._current[0]
                    if self.slider is not None:
                        self.slider.value = self._current[0]
                    self._show(f"model size {r:g} failed: {why}")
                    return self._current[1]
                self._current = (r, scene)
                self._show()
            return self._current[1]

    def _scene_at(self, r: float) -> Renderable:
        if r >= 1.0:
            return self._full
        if r in self._cache:
            self._cache.move_to_end(r)
            return self._cache[r]
        scene = self._at_ratio(r)
        self._cache[r] = scene
        budget = 2 * len(self._full)
        while len(self._cache) > CACHE_SIZE or (len(self._cache) > 1 and sum(map(len, self._cache.values())) > budget):
            self._cache.popitem(last=False)
        return scene

    def request(self, ratio: float) -> None:
        r = min(1.0, round(float(ratio), RATIO_DIGITS))
        with self._lock:
            if r == self._requested:
                return
            self._requested = r
        if self.viewer is not None:
            self.viewer.scene_changed()

    # ------------------------------------------------------------------------- the panel

    def count_text(self) -> str:
        return f"Gaussians: **{len(self._current[1]):,}** of {len(self._full):,}"

    def _show(self, problem: str | None = None) -> None:
        if self.count is not None:
            text = self.count_text()
            self.count.content = text if problem is None else f"{text}  \n{problem}"

    def add_controls(self, viewer: Viewer) -> None:
        self.viewer = viewer
        gui = viewer.server.gui
        with gui.add_folder("Elastic size"):
            self.slider = gui.add_slider("Model size", min=RATIO_MIN, max=1.0, step=RATIO_STEP, initial_value=1.0,
                                         hint="Fraction of the Gaussians kept (the elastic model's selection, "
                                              "transformed); 1 is the full scene")  # fmt: skip
            self.count = gui.add_markdown(self.count_text())
        viewer.controls["model_size"] = self.slider
        viewer.controls["gaussian_count"] = self.count
        slider = self.slider

        @slider.on_update
        def _(event) -> None:
            if not viewer.check_number(event, slider.value, RATIO_MIN, 1.0, self.request, "model size"):
                # the bad value was already echoed to the other browsers: put the slider back
                slider.value = self.requested
