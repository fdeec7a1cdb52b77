"""The viewer during training: live figures, pause/resume, and frames rendered between
steps within a budget, so that watching never slows training by more than ~10%.

:class:`TrainingPanel` is a trainer callback. After each step it updates the figures
(steps/s, loss, PSNR, Gaussians) at most a few times a second and, when a browser's view is
out of date, renders it in the training thread if the viewer's share of the time so far stays
within ``budget`` (or, with "render every N steps" > 0, every N steps). Rendering between
steps, rather than beside them, keeps the frames consistent and training deterministic: the
viewer only reads the scene, under ``torch.no_grad``, and never touches the random state.
"""

from __future__ import annotations

import threading
import time

from .server import Viewer

STATS_EVERY_SECONDS = 0.5


class TrainingPanel:
    def __init__(self, viewer: Viewer, total_steps: int, *, budget: float = 0.10) -> None:
        self.viewer = viewer
        self.total_steps = total_steps
        self.budget = budget
        self.render_every = 0  # 0: by the time budget
        self.train_seconds = 0.0
        self.view_seconds = 0.0
        self._paused = threading.Event()
        self._last_stats = 0.0
        self._window: list[tuple[float, int]] = []  # (time, step) for steps/s
        gui = viewer.server.gui
        with gui.add_folder("Training"):
            self.pause_button = gui.add_button("Pause", icon=None, hint="Pause training (the viewer stays live)")
            self.every = gui.add_number("Render every N steps", 0, min=0, max=100_000, step=1,
                                        hint="0: automatic, at most 10% of the training time")  # fmt: skip
            self.text = gui.add_markdown("starting…")

        @self.pause_button.on_click
        def _(event) -> None:
            self.set_paused(not self._paused.is_set())

        @self.every.on_update
        def _(event) -> None:
            viewer.check_number(event, self.every.value, 0, 100_000, lambda v: setattr(self, "render_every", int(v)),
                                "render every N steps")  # fmt: skip

    @property
    def paused(self) -> bool:
        return self._paused.is_set()

    def set_paused(self, paused: bool) -> None:
        if paused:
            self._paused.set()
        else:
            self._paused.clear()
        self.pause_button.label = "Resume" if paused else "Pause"
        self.viewer.wake.set()

    def __call__(self, trainer, info) -> None:
        now = time.monotonic()
        self.train_seconds += info.step_seconds
        self._window = [(t, s) for t, s in self._window if now - t <= 5.0] + [(now, info.step)]
        if now - self._last_stats >= STATS_EVERY_SECONDS or info.step == self.total_steps or self.paused:
            self._last_stats = now
            self._show(info)
        self.viewer.scene_changed()
        self.viewer.hand_over_scene()
        while self.paused and not trainer.stop_requested:  # paused: serve frames until resumed or Ctrl-C
            self.viewer.hand_over_scene()
            if self._serve() == 0:
                self.viewer.wait_for_work(0.05)
        if self.render_every > 0:
            due = info.step % self.render_every == 0
        else:
            due = self.view_seconds <= self.budget * self.train_seconds
        if due and self.viewer.pending():
            self._serve()

    def _serve(self) -> int:
        t0 = time.perf_counter()
        n = self.viewer.serve()  # the viewer's scene is the trainer's, read between steps
        if not self.paused:
            self.view_seconds += time.perf_counter() - t0
        return n

    def steps_per_second(self) -> float:
        if len(self._window) < 2:
            return 0.0
        (t0, s0), (t1, s1) = self._window[0], self._window[-1]
        return (s1 - s0) / max(t1 - t0, 1e-9)

    def _show(self, info) -> None:
        share = 100.0 * self.view_seconds / max(self.train_seconds, 1e-9)
        state = "**paused**" if self.paused else f"{self.steps_per_second():.2f} steps/s"
        self.text.content = (
            f"step **{info.step:,}** / {self.total_steps:,} — {state}  \n"
            f"loss {info.loss:.4f} · train-view PSNR {info.psnr:.2f} dB  \n"
            f"{info.count_label} **{info.num_gaussians:,}** · SH degree {info.sh_degree}  \n"
            f"viewer time {share:.1f}% of training"
        )
