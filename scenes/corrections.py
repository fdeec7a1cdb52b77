"""Per-view corrections learned with a Gaussian scene: the training cameras
(:mod:`.camera_opt`) and each training image's appearance (:mod:`.appearance`).

The trainer calls them around its step: ``adjust_batch`` before rendering (refined cameras),
``adjust_output`` after it (the rendered image through the view's colour correction),
``regularizer`` into the loss, ``step``/``zero_grad`` with the scene's optimizer. With both
off they change nothing and cost nothing.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Sequence

import torch
from torch import Tensor

from splatfield.render import Cameras, RenderOutput

from .appearance import Appearance
from .camera_opt import CameraOptSettings, CameraRefinement
from .options import AppearanceMode, CameraOptMode
from .views import Batch


class ViewCorrections:
    def __init__(self, cameras: CameraRefinement | None = None, appearance: Appearance | None = None) -> None:
        self.cameras = cameras
        self.appearance = appearance

    @classmethod
    def build(cls, train_cameras: Cameras, *, camera_opt: CameraOptMode, camera_settings: CameraOptSettings,
              appearance: AppearanceMode, appearance_lr: float | None, extent: float, steps: int,
              device: torch.device, points: Tensor | None = None) -> ViewCorrections:  # fmt: skip
        cams = None
        if camera_opt != "off":
            cams = CameraRefinement(train_cameras.to(device=device), replace(camera_settings, mode=camera_opt),
                                    extent=extent, steps=steps, points=points)  # fmt: skip
        app = None
        if appearance != "none":
            extra = {} if appearance_lr is None else {"lr": appearance_lr}
            app = Appearance(appearance, len(train_cameras), device=device, max_steps=steps, **extra)
        return cls(cams, app)

    @property
    def active(self) -> bool:
        return self.cameras is not None or self.appearance is not None

    def parameters(self) -> list[Tensor]:
        out: list[Tensor] = []
        if self.cameras is not None:
            out += self.cameras.parameters()
        if self.appearance is not None:
            out += list(self.appearance.parameters())
        return out

    # ------------------------------------------------------------------ the step

    def adjust_batch(self, batch: Batch) -> Batch:
        if self.cameras is None:
            return batch
        cams = self.cameras.apply(batch.cameras, batch.views)
        step_cameras = batch.step_cameras
        if step_cameras is not None and batch.step_views is not None:  # one process's share: the whole step's
            with torch.no_grad():
                step_cameras = self.cameras.apply(step_cameras, batch.step_views)
        return replace(batch, cameras=cams, step_cameras=step_cameras)

    def adjust_output(self, batch: Batch, out: RenderOutput) -> RenderOutput:
        if self.appearance is None:
            return out
        return replace(out, image=self.appearance.apply(out.image, batch.views))

    def regularizer(self, batch: Batch) -> Tensor | None:
        terms: list[Tensor] = []
        if self.cameras is not None:
            terms.append(self.cameras.regularizer(batch.views))
        if self.appearance is not None:
            reg = self.appearance.regularizer()
            if isinstance(reg, Tensor):
                terms.append(reg)
        return None if not terms else torch.stack([t.reshape(()) for t in terms]).sum()

    def step(self, step: int) -> None:
        if self.cameras is not None:
            self.cameras.step(step)
        if self.appearance is not None:
            self.appearance.step()

    def zero_grad(self) -> None:
        if self.cameras is not None:
            self.cameras.zero_grad()
        if self.appearance is not None:
            self.appearance.zero_grad()

    # ------------------------------------------------------------------ persistence

    def state_dict(self) -> dict:
        return {
            "cameras": None if self.cameras is None else self.cameras.state_dict(),
            "appearance": None if self.appearance is None else self.appearance.state_dict(),
        }

    def load_state_dict(self, state: dict) -> None:
        for name in ("cameras", "appearance"):
            mine, saved = getattr(self, name), state.get(name)
            if (mine is None) != (saved is None):
                raise ValueError(f"the checkpoint's {name} corrections do not match this run's options")
        if self.cameras is not None:
            self.cameras.load_state_dict(state["cameras"])
        if self.appearance is not None:
            self.appearance = type(self.appearance).from_state_dict(state["appearance"], device=self.device)

    @property
    def device(self) -> torch.device:
        params = self.parameters()
        return params[0].device if params else torch.device("cpu")

    def describe_result(self) -> Sequence[str]:
        """What the corrections learned, for the log."""
        if self.cameras is None:
            return []
        s = self.cameras.summary()
        line = (f"camera refinement: rotations {s['rotation_deg_mean']:.3f}° mean / {s['rotation_deg_max']:.3f}° max, "
                f"translations {s['translation_extent_mean']:.4f} / {s['translation_extent_max']:.4f} scene extents")  # fmt: skip
        if "focal_factor_max" in s:
            line += f"; focal x{s['focal_factor_max']:.4f} at most, principal point moved {s['principal_px_max']:.2f} px at most"
        return [line]

    def describe(self) -> Sequence[str]:
        out = []
        if self.cameras is not None:
            s = self.cameras.settings
            d = self.cameras.pivot_depth
            pivot = ("about the camera centres" if d is None else
                     f"about the scene's median depth on each optical axis ({float(d.min()):.3g}–{float(d.max()):.3g})")  # fmt: skip
            out.append(f"camera refinement: {s.mode} ({len(self.cameras.pose)} cameras, "
                       f"{len(self.cameras.group_intrinsics)} intrinsics group(s)), lr {s.pose_lr:g}, turns {pivot}")  # fmt: skip
        if self.appearance is not None:
            out.append(f"appearance: {self.appearance.mode} per training image")
        return out
