"""Score distillation as a strategy (METHODS.md §4): each step, ``views`` random cameras on a
sphere around the world origin render the scene, the guidance's estimator (SDS, VSD or ESD)
gives the gradient on those renders (stein: SDS's, plus the control variate of
:mod:`~splatfield.scenes.distill.stein`), and :func:`~splatfield.scenes.distill.distillation_loss`
hands it to the scene beside the photometric loss of the training views. With vsd/esd, the
second model (:class:`~splatfield.scenes.distill.RenderModel`) then takes one training step
on the same renders.

The random cameras share the training cameras' frame: the world's up is their mean up
direction (or ``--distill.up``), the distance their mean distance from the origin and the field of view the first
one's, unless given (``--distill.radius``, ``--distill.fov``); their images are the guidance's
size. A reference-conditioned prior (:mod:`splatfield.scenes.distill.prior`) is given the
first training view as its reference and the camera change from it to each random view. Timesteps are drawn uniformly in ``t_range`` (fractions of the schedule), its upper end
moved linearly to ``t_max_end`` over the run. Randomness comes from the strategy's own
generator, saved with it, so a resumed run draws what the uninterrupted one would have. With
``reference_probability`` below 1 the training views' own loss counts only on the steps it
draws (:meth:`Distill.photometric_weight`).
"""

from __future__ import annotations

import math
from typing import Callable

import torch
from torch import Tensor

from splatfield.render import Cameras, RenderOutput, Statistic, rasterize
from splatfield.render.camera_paths import horizontal_axes, scene_frame

from ..distill import DiffusersGuidance, RenderModel, distillation_loss, sds_gradient, variational_gradient
from ..distill.diffusers_guidance import EncodedReference
from ..distill.depth_agreement import DepthEstimator, depth_agreement, render_disparity
from ..distill.prior import ReferenceCondition
from ..distill.stein import FittedControlVariate, constant_baseline
from ..field_scene import FieldScene
from ..gaussian_scene import GaussianScene
from .options import DistillConfig


class Distill:
    name = "distill"
    scene_kinds = frozenset({"gaussians", "field"})

    def __init__(self, config: DistillConfig, *, steps: int, background: tuple[float, float, float],
                 load_guidance: Callable[[str], DiffusersGuidance] = DiffusersGuidance) -> None:  # fmt: skip
        self.config = config
        self.steps = int(steps)
        self.background = tuple(background)
        self.guidance = load_guidance(config.guidance)
        self.generator = torch.Generator().manual_seed(config.seed)
        self.model: RenderModel | None = None
        self.stein: FittedControlVariate | None = None
        self.depth: DepthEstimator | None = None  # stein's depth-agreement baseline
        if config.estimator == "stein":
            self.stein = FittedControlVariate(self.guidance.schedule.steps, config.stein_bands, config.stein_decay)
            if config.stein_depth:
                self.depth = DepthEstimator(config.stein_depth, device=self.guidance.device, dtype=self.guidance.dtype)
        elif config.estimator != "sds":
            self.model = RenderModel(self.guidance, adapter=config.adapter, rank=config.lora_rank, lr=config.model_lr,
                                     generator=self.generator, seed=config.seed)  # fmt: skip
        self.prompt: Tensor | None = None  # [1, L, C] embeddings of the prompt and the negative one
        self.negative: Tensor | None = None
        if config.prompt or config.negative_prompt:
            self.prompt = self.guidance.encode_prompt(config.prompt)
            self.negative = self.guidance.encode_prompt(config.negative_prompt)
        self.reference: Tensor | None = None  # [1, H, W, 3] uint8: the first training view (lift's reference)
        self.reference_camera: Cameras | None = None  # and its camera
        self._encoded: EncodedReference | None = None  # the guidance's reading of it, made on first use
        self.frame: tuple[Tensor, float, float] | None = None  # up, radius, fov (degrees): from the first batch
        self._last: tuple[Tensor, Cameras] | None = None  # the step's renders (model space) for the second model

    def describe(self) -> str:
        """One line for the run's log."""
        c, g = self.config, self.guidance
        unet = sum(p.numel() for p in g.unet.parameters() if not p.requires_grad)  # the frozen base, not the adapter
        second = "" if self.model is None else f", second model: {c.adapter}" + (f" rank {c.lora_rank}" if c.adapter == "lora" else "")
        detail = {"esd": f" (lambda {c.entropy_weight:g})",
                  "stein": f" (sds + a Stein control variate, baseline {'depth agreement with ' + c.stein_depth if c.stein_depth else 'constant'}, "
                           f"fitted in {c.stein_bands} timestep bands)"}.get(c.estimator, "")  # fmt: skip
        prompt = f", prompt {c.prompt!r}" + (f" (negative {c.negative_prompt!r})" if c.negative_prompt else "") if self.prompt is not None else ""
        return (f"distillation: {c.estimator}{detail} from {c.guidance} ({unet:,}-parameter UNet, {g.prediction}, "
                f"{'latent' if g.vae is not None else 'pixel'} space, {g.sample_size} px), {c.views} random view(s) per step, "
                f"guidance scale {c.guidance_scale:g}, w(t) {c.weighting}, weight {c.weight:g}{second}{prompt}{self._reference_note()}")  # fmt: skip

    def _reference_note(self) -> str:
        start, end = self.config.reference_probability
        if start == end == 1.0:
            return ""
        if start == end == 0.0:
            return "; the training views are not fitted (distillation alone)"
        return f"; the training views are fitted with probability {start:g} -> {end:g}"

    @property
    def statistics(self) -> tuple[Statistic, ...]:
        return ()

    # ------------------------------------------------------------------ views and timesteps

    def _fit_frame(self, cameras: Cameras) -> tuple[Tensor, float, float]:
        if self.frame is None:
            centres = cameras.centers.detach().to(device="cpu", dtype=torch.float64)
            if self.config.up is None:
                up, _, _ = scene_frame(cameras.to(device="cpu", dtype=torch.float64), torch.zeros(3, dtype=torch.float64))
            else:
                up = torch.nn.functional.normalize(torch.tensor(self.config.up, dtype=torch.float64), dim=0)
            distance = self.config.radius or float(centres.norm(dim=-1).mean())
            fov = self.config.fov or math.degrees(2 * math.atan(0.5 * cameras.height / float(cameras.fy[0])))
            self.frame = (up, float(distance), float(fov))
        return self.frame

    def angles(self, cameras: Cameras) -> tuple[Tensor, Tensor]:
        """Elevation and azimuth (degrees, [B] float64) of the camera centres around the origin."""
        up, _, _ = self._fit_frame(cameras)
        a, b = horizontal_axes(up)
        c = cameras.centers.detach().to(device="cpu", dtype=torch.float64)
        elevation = torch.rad2deg(torch.asin((c @ up / c.norm(dim=-1)).clamp(-1.0, 1.0)))
        return elevation, torch.rad2deg(torch.atan2(c @ b, c @ a))

    def bind_views(self, views) -> None:
        self.reference = views.images[:1]
        self.reference_camera = views.cameras[:1]
        self._encoded = None

    def condition_for(self, cameras: Cameras) -> ReferenceCondition | Tensor | None:
        """A reference-conditioned prior's condition for the random ``cameras``: the first
        training view (``lift``'s reference) and the camera change from it; for a
        text-to-image checkpoint, the prompt's embedding (None without a prompt)."""
        if not self.guidance.takes_reference:
            return self.prompt
        if self.reference is None:
            raise RuntimeError("the distill strategy was not shown the training views (Strategies.bind_views)")
        ref_el, ref_az = self.angles(self.reference_camera)
        el, az = self.angles(cameras)
        if self._encoded is None:
            image = self.reference.to(device=cameras.device, dtype=torch.float32) / 255.0
            self._encoded = self.guidance.encode_reference(image)
        return self.guidance.reference_condition(self._encoded, ref_el, ref_az, el, az)

    def random_cameras(self, cameras: Cameras) -> Cameras:
        """``views`` cameras on the sphere, looking at the origin, at the guidance's size."""
        up, distance, fov = self._fit_frame(cameras)
        n, g = self.config.views, self.generator
        lo, hi = (math.radians(v) for v in self.config.elevation)
        elevation = lo + (hi - lo) * torch.rand(n, generator=g, dtype=torch.float64)
        azimuth = 2 * math.pi * torch.rand(n, generator=g, dtype=torch.float64)
        a, b = horizontal_axes(up)
        around = torch.cos(azimuth)[:, None] * a + torch.sin(azimuth)[:, None] * b
        eyes = distance * (torch.cos(elevation)[:, None] * around + torch.sin(elevation)[:, None] * up)
        size = self.guidance.sample_size
        out = Cameras.look_at(eyes, torch.zeros_like(eyes), tuple(float(v) for v in up), fov, size, size)
        return out.to(device=cameras.device, dtype=cameras.fx.dtype)

    def reference_probability(self, step: int) -> float:
        start, end = self.config.reference_probability
        return start + self._progress(step) * (end - start)

    def photometric_weight(self, step: int) -> float:
        """1 when this step fits the training views, else 0, drawn with :meth:`reference_probability`
        (no draw when it is 0 or 1: runs that always fit them repeat bit for bit)."""
        p = self.reference_probability(step)
        if p >= 1.0 or p <= 0.0:
            return float(p >= 1.0)
        return float(torch.rand((), generator=self.generator) < p)

    def _progress(self, step: int) -> float:
        return min(max((step - 1) / max(1, self.steps - 1), 0.0), 1.0)

    def t_max(self, step: int) -> float:
        hi = self.config.t_range[1]
        return hi + self._progress(step) * (self.config.t_max_end - hi)

    def timesteps(self, step: int, n: int) -> Tensor:
        T = self.guidance.schedule.steps
        lo = int(round(self.config.t_range[0] * (T - 1)))
        hi = max(lo + 1, int(round(self.t_max(step) * (T - 1))))
        return torch.randint(lo, hi + 1, (n,), generator=self.generator)

    def render(self, step: int, scene: GaussianScene | FieldScene, cameras: Cameras) -> RenderOutput:
        """Views of either kind of scene, with gradients."""
        if scene.kind == "field":
            return scene.render_trainable(cameras, background=torch.tensor(self.background), generator=self.generator)
        return rasterize(scene.gaussians, cameras, sh_degree=scene.sh_degree_at(step - 1), background=self.background)

    def baseline(self, render: RenderOutput, t: Tensor) -> Callable[[Tensor], Tensor]:
        """stein's phi: the depth agreement with ``--distill.stein-depth``, else the constant 1."""
        if self.depth is None:
            return constant_baseline
        alpha = self.guidance.schedule.alpha(t).to(render.image).view(-1, 1, 1, 1)
        return depth_agreement(self.depth, lambda y: self.guidance.decode(y / alpha), render_disparity(render.alpha, render.depth))

    # ------------------------------------------------------------------ hooks

    def extra_loss(self, step: int, scene: GaussianScene, batch, out: RenderOutput) -> Tensor | None:
        c = self.config
        cameras = self.random_cameras(batch.cameras)
        render = self.render(step, scene, cameras)
        x = self.guidance.encode(render.image)
        t = self.timesteps(step, x.shape[0]).to(x.device)
        eps = torch.randn(x.shape, generator=self.generator, dtype=x.dtype).to(x.device)
        condition = self.condition_for(cameras)
        if self.model is None:
            grad = sds_gradient(self.guidance, x, t, eps, condition, weighting=c.weighting, guidance_scale=c.guidance_scale,
                                negative=self.negative)  # fmt: skip
            if self.stein is not None:
                x_t = self.guidance.schedule.add_noise(x.detach(), t, eps)
                grad = self.stein.apply(grad, x_t, eps, self.guidance.schedule.sigma(t).to(x), t, self.baseline(render, t))
        else:
            c2w = cameras.camera_to_world.to(x.dtype)
            grad = variational_gradient(self.guidance, self.model, x, t, eps, condition, camera=c2w,
                                        weighting=c.weighting, guidance_scale=c.guidance_scale, negative=self.negative,
                                        entropy_weight=c.entropy_weight if c.estimator == "esd" else 0.0)  # fmt: skip
            self._last = (x.detach(), c2w)
        loss = distillation_loss(x, grad) / x.shape[0]
        return c.weight * loss

    def after_backward(self, step: int, scene: GaussianScene, out: RenderOutput) -> None:
        if self.model is not None and self._last is not None:
            renders, c2w = self._last
            self.model.train_step(renders, c2w)
            self._last = None

    def after_step(self, step: int, scene: GaussianScene, generator: torch.Generator) -> dict[str, float]:
        return {}

    def schedule_at(self, step: int) -> dict[str, float]:
        out = {"distill_t_max": self.t_max(step), "reference_probability": self.reference_probability(step)}
        if self.stein is not None:  # > 1: the control variate lowers the gradient's second moment
            out["stein_ratio"] = self.stein.second_moment_ratio()
        return out

    # ------------------------------------------------------------------ persistence

    def state_dict(self) -> dict:
        return {
            "generator": self.generator.get_state(),
            "frame": None if self.frame is None else (self.frame[0].clone(), self.frame[1], self.frame[2]),
            "model": None if self.model is None else self.model.state_dict(),
            "stein": None if self.stein is None else self.stein.state_dict(),
        }

    def load_state_dict(self, state: dict) -> None:
        self.generator.set_state(state["generator"])
        self.frame = None if state["frame"] is None else (state["frame"][0].clone(), state["frame"][1], state["frame"][2])
        if (state["model"] is None) != (self.model is None):
            raise ValueError("the checkpoint's distillation used another estimator")
        if self.model is not None:
            self.model.load_state_dict(state["model"])
        if (state.get("stein") is None) != (self.stein is None):
            raise ValueError("the checkpoint's distillation used another estimator")
        if self.stein is not None:
            self.stein.load_state_dict(state["stein"])
