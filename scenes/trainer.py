"""The training loop: one for every scene kind and strategy.

Each step asks the scene for a batch (:meth:`Scene.draw_batch`: a whole view for
Gaussians), renders it with the statistics the strategies ask for, takes the scene's loss
(plus the strategies' extra terms), back-propagates, lets the strategies read the
statistics, steps the optimizer, and lets the strategies edit the scene. Per-view corrections
(:mod:`.corrections`: refined cameras, per-image appearance) adjust the batch before it is
rendered and the image after, add their regulariser and step with the scene. Callbacks
(progress, checkpoints, viewer, eval) are called after every step with a :class:`StepInfo`.

Everything a resumed run needs is in :meth:`Trainer.state_dict`: the scene with its
optimizer state, each strategy's state, the RNG and the position in the view permutation,
so a run stopped at step k and resumed continues with exactly the same views and random
draws. The run's length and batch size drive the scene's schedules (:meth:`Scene.set_run_length`,
set on start and again after a checkpoint loads), so a resumed run given a new length
follows a fresh run of that length from there on.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Callable, Sequence

import torch

from splatfield.render._ext import flush_denormals

from .corrections import ViewCorrections
from .options import TrainerConfig
from .parallel import DataParallel
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
    count_label: str = "Gaussians"  # what num_gaussians counts (the scene kind's count_label)


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
        parallel: DataParallel | None = None,
        corrections: ViewCorrections | None = None,
    ) -> None:
        self.strategies = strategies if isinstance(strategies, Strategies) else Strategies(strategies)
        self.strategies.check_scene(scene.kind)
        self.strategies.bind_views(views)
        self.scene = scene
        self.views = views
        self.corrections = corrections if corrections is not None else ViewCorrections()
        self.config = config
        self.background = torch.tensor(list(background), dtype=torch.float32, device=scene.device)
        self.generator = torch.Generator().manual_seed(config.seed)
        self.sampler = ViewSampler(len(views), self.generator)
        self.step = 0
        self.train_seconds = 0.0
        self._stop_requested = False
        self.parallel = parallel
        if parallel is not None and config.batch_size % parallel.world:
            raise ValueError(f"--batch-size {config.batch_size} is not a multiple of the {parallel.world} processes")
        self._agreed_stop = False  # with several processes: a stop all of them agreed on, this step
        self._step_start: tuple | None = None  # the draws' state before the step in progress
        self._fit_scene()

    def _fit_scene(self) -> None:
        """The scene's schedules for this run's length and batch size (strategies are built for
        them; a checkpoint's scene comes with the lengths it was saved with)."""
        self.scene.set_run_length(self.config.steps)
        self.scene.set_batch_size(self.config.batch_size)

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
        par = self.parallel
        self._step_start = (self.generator.get_state(), list(self.sampler.order))
        share = None if par is None else par.share(self.config.batch_size)
        fix = self.corrections
        batch = fix.adjust_batch(scene.draw_batch(self.views, self.sampler, self.config.batch_size, share))
        out = fix.adjust_output(batch, scene.render_batch(batch, step=step, background=self.background,
                                                          stats=strategies.statistics))  # fmt: skip
        loss, mse = scene.batch_loss(batch, out, ssim_weight=self.config.ssim_weight,
                                     alpha_weight=self.config.mask_alpha_weight)  # fmt: skip
        weight = strategies.photometric_weight(step)
        if weight != 1.0:
            loss = loss * weight
        extras = [e for e in (strategies.extra_loss(step, scene, batch, out), fix.regularizer(batch)) if e is not None]
        total = loss + sum(extras) if extras else loss
        total.backward()
        loss_value = float(total.detach())
        if par is not None:  # every collective of the step comes before anything changes
            par.reduce_gradients([*(p for g in scene.optimizer.param_groups for p in g["params"]), *fix.parameters()])
            out = par.gather_output(out, batch.step_cameras)
            loss_value, sse, stops = par.sums(loss_value, mse * len(batch.views), float(self._stop_requested))
            mse = sse / self.config.batch_size
            self._agreed_stop = stops > 0
        strategies.after_backward(step, scene, out)
        scene.optimizer.step()
        scene.optimizer.zero_grad(set_to_none=True)
        fix.step(step)
        fix.zero_grad()
        changes = strategies.after_step(step, scene, self.generator)
        self.step = step
        dt = time.perf_counter() - t0
        self.train_seconds += dt
        psnr = float("inf") if mse <= 0 else -10.0 * torch.log10(torch.tensor(mse)).item()
        sh_degree = int(scene.schedule_at(step).get("sh_degree", 0))
        return StepInfo(step, batch.views[0], loss_value, psnr, len(scene), sh_degree, dt, changes, scene.count_label)

    def rewind_step(self) -> None:
        """Back to the end of the last completed step (after a step broke off before changing
        anything but the draws and the gradients: another process was lost)."""
        if self._step_start is not None:
            self.generator.set_state(self._step_start[0])
            self.sampler.order = list(self._step_start[1])
        self.scene.optimizer.zero_grad(set_to_none=True)
        self.corrections.zero_grad()

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
            if self._agreed_stop if self.parallel is not None else self._stop_requested:
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
            **({"corrections": self.corrections.state_dict()} if self.corrections.active else {}),
        }

    def load_state_dict(self, state: dict) -> None:
        """Restores a checkpoint (also one written before strategies could combine); the run's
        length stays this trainer's, so the schedules follow it."""
        device = self.scene.device
        self.strategies.load_state_dict(_to_device(strategy_states(state), device))
        self.scene = type(self.scene).from_state_dict(state["scene"], device=device)
        self._fit_scene()
        self.generator.set_state(state["generator"])
        self.sampler.order = list(state["view_order"])
        self.step = int(state["step"])
        self.train_seconds = float(state["train_seconds"])
        if self.corrections.active or "corrections" in state:
            self.corrections.load_state_dict(_to_device(state.get("corrections", {}), device))


def _to_device(obj, device: torch.device):
    """Tensors in nested dicts and lists moved to ``device`` (a checkpoint loads on the CPU)."""
    if isinstance(obj, torch.Tensor):
        return obj.to(device)
    if isinstance(obj, dict):
        return {k: _to_device(v, device) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return type(obj)(_to_device(v, device) for v in obj)
    return obj


def strategy_states(state: dict) -> list[dict]:
    """The per-strategy states of a checkpoint; the first layout held one ``strategy``."""
    if "strategies" in state:
        return list(state["strategies"])
    single = state["strategy"]
    return [] if single["name"] == "none" else [single]
