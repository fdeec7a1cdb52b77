"""The training loop: one for every scene and strategy.

Each step samples a training view (a fresh random permutation per epoch, as 3DGS), renders
it with the statistics the strategy asks for, takes the photometric loss (plus the
strategy's extra terms), back-propagates, lets the strategy read the statistics, steps
Adam, and lets the strategy edit the scene. Callbacks (progress, checkpoints, viewer, eval)
are called after every step with a :class:`StepInfo`.

Everything a resumed run needs is in :meth:`Trainer.state_dict`: parameters, Adam state,
strategy state, the RNG and the position in the view permutation, so a run stopped at
step k and resumed continues with exactly the same views and random draws.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Callable, Sequence

import torch
from torch import Tensor

from splatfield.render import Cameras
from splatfield.render._ext import flush_denormals

from .gaussian_scene import GaussianScene
from .losses import photometric
from .strategies import Strategy


@dataclass(frozen=True)
class TrainerConfig:
    steps: int = 7000
    seed: int = 0
    ssim_weight: float = 0.2


@dataclass
class Views:
    """The training views: cameras and their images (uint8, kept in memory)."""

    cameras: Cameras  # B cameras
    images: Tensor  # [B, H, W, 3] uint8
    masks: Tensor | None = None  # [B, H, W] bool; False = ignored by the loss

    def __post_init__(self) -> None:
        B = len(self.cameras)
        if B == 0:
            raise ValueError("no training views")
        expect = (B, self.cameras.height, self.cameras.width, 3)
        if tuple(self.images.shape) != expect:
            raise ValueError(f"images must be {list(expect)}, got {list(self.images.shape)}")
        if self.masks is not None and tuple(self.masks.shape) != expect[:3]:
            raise ValueError(f"masks must be {list(expect[:3])}, got {list(self.masks.shape)}")

    def __len__(self) -> int:
        return len(self.cameras)


@dataclass
class StepInfo:
    step: int  # steps completed
    view: int
    loss: float
    psnr: float  # of this step's training view
    num_gaussians: int
    sh_degree: int
    step_seconds: float
    changes: dict[str, float] = field(default_factory=dict)  # what the strategy did (counts, figures)


Callback = Callable[["Trainer", StepInfo], None]


class Trainer:
    def __init__(
        self,
        scene: GaussianScene,
        strategy: Strategy,
        views: Views,
        *,
        config: TrainerConfig = TrainerConfig(),
        background: Sequence[float] = (0.0, 0.0, 0.0),
    ) -> None:
        self.scene = scene
        self.strategy = strategy
        self.views = views
        self.config = config
        self.background = torch.tensor(list(background), dtype=torch.float32, device=scene.device)
        self.generator = torch.Generator().manual_seed(config.seed)
        self.step = 0
        self.train_seconds = 0.0
        self._order: list[int] = []
        self._stop_requested = False

    # ------------------------------------------------------------------ loop

    def next_view(self) -> int:
        if not self._order:
            self._order = torch.randperm(len(self.views), generator=self.generator).tolist()
        return self._order.pop()

    def train_step(self) -> StepInfo:
        t0 = time.perf_counter()
        # Tiny gradients and Adam's squared moments underflow into denormals, which x86
        # handles ~100x slower (steps were 6x slower); set each step, threads may change.
        flush_denormals(True)
        step = self.step + 1
        scene, strategy = self.scene, self.strategy
        scene.set_step(step)
        sh_degree = scene.sh_degree_at(step - 1)
        i = self.next_view()
        device = scene.device
        target = self.views.images[i].to(device=device, dtype=torch.float32) / 255.0
        mask = None if self.views.masks is None else self.views.masks[i].to(device)

        out = scene.render(self.views.cameras[i : i + 1], background=self.background, sh_degree=sh_degree,
                           stats=strategy.statistics)  # fmt: skip
        image = out.image[0]
        loss = photometric(image, target, mask, ssim_weight=self.config.ssim_weight)
        extra = strategy.extra_loss(step, scene, out)
        total = loss if extra is None else loss + extra
        total.backward()
        strategy.after_backward(step, scene, out)
        scene.optimizer.step()
        scene.optimizer.zero_grad(set_to_none=True)
        changes = strategy.after_step(step, scene, self.generator)
        self.step = step

        with torch.no_grad():
            err = (image.detach() - target) ** 2
            mse = float(err.mean() if mask is None else err[mask].mean())
        dt = time.perf_counter() - t0
        self.train_seconds += dt
        psnr = float("inf") if mse <= 0 else -10.0 * torch.log10(torch.tensor(mse)).item()
        return StepInfo(step, i, float(total.detach()), psnr, len(scene), sh_degree, dt, changes)

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
            "strategy": {"name": self.strategy.name, "state": self.strategy.state_dict()},
            "generator": self.generator.get_state(),
            "view_order": list(self._order),
        }

    def load_state_dict(self, state: dict) -> None:
        if state["strategy"]["name"] != self.strategy.name:
            raise ValueError(f"checkpoint was trained with strategy {state['strategy']['name']!r}, "
                             f"not {self.strategy.name!r}")  # fmt: skip
        self.scene = GaussianScene.from_state_dict(state["scene"], device=self.scene.device)
        self.strategy.load_state_dict(state["strategy"]["state"])
        self.generator.set_state(state["generator"])
        self._order = list(state["view_order"])
        self.step = int(state["step"])
        self.train_seconds = float(state["train_seconds"])
