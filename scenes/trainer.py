"""The training loop: one for every scene kind and strategy.

Each step asks the scene for a batch (:meth:`Scene.draw_batch`: a whole view for
Gaussians), renders it with the statistics the strategies ask for, takes the scene's loss
(plus the strategies' extra terms), back-propagates, lets the strategies read the
statistics, steps the optimizer, and lets the strategies edit the scene. Callbacks
(progress, checkpoints, viewer, eval) are called after every step with a :class:`StepInfo`.

Everything a resumed run needs is in :meth:`Trainer.state_dict`: the scene with its
optimizer state, each strategy's state, the RNG and the position in the view permutation,
so a run stopped at step k and resumed continues with exactly the same views and random
draws. The run's length drives the schedules that span it (:meth:`Trainer.set_run_length`),
so a resumed run given a new length follows a fresh run of that length from there on.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field, replace
from typing import Callable, Sequence

import torch

from splatfield.render._ext import flush_denormals

from .options import TrainerConfig
from .scene import Scene
from .strategies.base import Strategies, Strategy
from .views import Views, ViewSampler


@dataclass
class StepInfo:
    step: int  # steps completed
    view: int  # the (first) training view of the batch
    loss: float
    psnr: float  # of this step's batch
    num_gaussians: int  # len(scene): Gaussians, or the scene kind's count
    sh_degree: int
    step_seconds: float
    changes: dict[str, float] = field(default_factory=dict)  # what the strategies did (counts, figures)


Callback = Callable[["Trainer", StepInfo], None]


class Trainer:
    def __init__(
        self,
        scene: Scene,
        strategies: Strategies | Sequence[Strategy],
        views: Views,
        *,
        config: TrainerConfig = TrainerConfig(),
        background: Sequence[float] = (0.0, 0.0, 0.0),
    ) -> None:
        self.strategies = strategies if isinstance(strategies, Strategies) else Strategies(strategies)
        self.strategies.check_scene(scene.kind)
        self.scene = scene
        self.views = views
        self.config = config
        self.background = torch.tensor(list(background), dtype=torch.float32, device=scene.device)
        self.generator = torch.Generator().manual_seed(config.seed)
        self.sampler = ViewSampler(len(views), self.generator)
        self.step = 0
        self.train_seconds = 0.0
        self._stop_requested = False
        scene.set_run_length(config.steps)

    def set_run_length(self, steps: int) -> None:
        """A new length for the run (a resume with another --steps): the scene's schedules follow
        it; strategies are built for a length (their schedules are options, rebuilt on resume)."""
        self.config = replace(self.config, steps=int(steps))
        self.scene.set_run_length(steps)

    def schedule_at(self, step: int) -> dict[str, float]:
        """Every schedule value at ``step``: the scene's (learning rates, SH degree) and the strategies'."""
        return {**self.scene.schedule_at(step), **self.strategies.schedule_at(step)}

    # ------------------------------------------------------------------ loop

    def train_step(self) -> StepInfo:
        t0 = time.perf_counter()
        # Tiny gradients and Adam's squared moments underflow into denormals, which x86
        # handles ~100x slower (steps were 6x slower); set each step, threads may change.
        flush_denormals(True)
        step = self.step + 1
        scene, strategies = self.scene, self.strategies
        scene.set_step(step)
        batch = scene.draw_batch(self.views, self.sampler)
        out = scene.render_batch(batch, step=step, background=self.background, stats=strategies.statistics)
        loss, mse = scene.batch_loss(batch, out, ssim_weight=self.config.ssim_weight)
        extra = strategies.extra_loss(step, scene, out)
        total = loss if extra is None else loss + extra
        total.backward()
        strategies.after_backward(step, scene, out)
        scene.optimizer.step()
        scene.optimizer.zero_grad(set_to_none=True)
        changes = strategies.after_step(step, scene, self.generator)
        self.step = step
        dt = time.perf_counter() - t0
        self.train_seconds += dt
        psnr = float("inf") if mse <= 0 else -10.0 * torch.log10(torch.tensor(mse)).item()
        sh_degree = int(scene.schedule_at(step).get("sh_degree", 0))
        return StepInfo(step, batch.views[0], float(total.detach()), psnr, len(scene), sh_degree, dt, changes)

    def request_stop(self) -> None:
        """Stops ``run`` after the step in progress (safe to call from a signal handler)."""
        self._stop_requested = True

    @property
    def stop_requested(self) -> bool:
        return self._stop_requested

    def run(self, until: int | None = None, callbacks: Sequence[Callback] = ()) -> bool:
        """Trains up to step ``until`` (default: config.steps); False when stopped early."""
        until = self.config.steps if until is None else until
        self._stop_requested = False
        while self.step < until:
            info = self.train_step()
            for cb in callbacks:
                cb(self, info)
            if self._stop_requested:
                return self.step >= until
        return True

    # ------------------------------------------------------------------ persistence

    def state_dict(self) -> dict:
        return {
            "step": self.step,
            "train_seconds": self.train_seconds,
            "scene": self.scene.state_dict(),
            "strategies": self.strategies.state_dict(),
            "generator": self.generator.get_state(),
            "view_order": list(self.sampler.order),
        }

    def load_state_dict(self, state: dict) -> None:
        """Restores a checkpoint (also one written before strategies could combine); the run's
        length stays this trainer's, so the schedules follow it."""
        self.strategies.load_state_dict(strategy_states(state))
        self.scene = type(self.scene).from_state_dict(state["scene"], device=self.scene.device)
        self.scene.set_run_length(self.config.steps)
        self.generator.set_state(state["generator"])
        self.sampler.order = list(state["view_order"])
        self.step = int(state["step"])
        self.train_seconds = float(state["train_seconds"])


def strategy_states(state: dict) -> list[dict]:
    """The per-strategy states of a checkpoint; the first layout held one ``strategy``."""
    if "strategies" in state:
        return list(state["strategies"])
    single = state["strategy"]
    return [] if single["name"] == "none" else [single]
