"""``adc``: the adaptive density control of 3D Gaussian splatting (METHODS.md §1).

Every ``refine_every`` steps in [``refine_start``, ``refine_stop``), Gaussians whose mean
view-space positional gradient exceeds ``grad_threshold`` are cloned when small (largest
scale ≤ ``clone_scale`` × extent) or split in two when large (offspring drawn from the
parent's distribution, scales ÷ ``split_scale_divisor``); Gaussians with opacity below
``prune_opacity`` are removed, and after the first opacity reset also those larger than
``prune_world`` × extent in the world (and, when ``prune_screen_px`` is set, those wider
than that many pixels on screen). With ``max_gaussians`` set, a densification adds only as
many Gaussians as fit under it (each clone or split adds one): the candidates with the largest
mean gradient. Every ``reset_every`` steps opacities are clamped to ``reset_opacity``; with
``reset_at_refine_start`` also once at ``refine_start`` (what 3DGS does for captures on a
white background, where Gaussians left in empty space from a random start show as
floaters in front of the white).

The gradient is measured in normalised device coordinates as in 3DGS: the renderer's
``grad2d`` (|∂L/∂mean2d| in pixels) times half the image size (the larger side when the
image is not square).
"""

from __future__ import annotations

import math
import torch
from torch import Tensor

from splatfield.render import RenderOutput, Statistic
from splatfield.render.reference import quat_to_rotmat

from .. import ops
from ..gaussian_scene import GaussianScene
from .options import AdcConfig


class ADC:
    name = "adc"
    scene_kinds = frozenset({"gaussians"})
    statistics: tuple[Statistic, ...] = ("grad2d",)

    def __init__(self, config: AdcConfig = AdcConfig(), *, steps: int | None = None, white_background: bool = False) -> None:
        """``steps`` (the run's length) and ``white_background`` fill in the config's automatic values."""
        self.config = config.resolved(steps, white_background)
        self.grad_sum: Tensor | None = None  # [N] sum over views of the NDC gradient norm
        self.count: Tensor | None = None  # [N] views in which the Gaussian was visible
        self.max_radius: Tensor | None = None  # [N] largest screen radius seen, pixels

    # ------------------------------------------------------------------ hooks

    def extra_loss(self, step: int, scene: GaussianScene, batch, out: RenderOutput) -> Tensor | None:
        return None

    def after_backward(self, step: int, scene: GaussianScene, out: RenderOutput) -> None:
        if step >= self.config.refine_stop:
            return
        n = len(scene)
        if self.grad_sum is None or self.grad_sum.shape[0] != n:
            self._reset_statistics(n, scene.device)
        H, W = out.image.shape[1:3]
        B = out.meta.radii.shape[0]  # the step's views (with several processes, all of theirs)
        # the loss of a batch is the mean over its B views, so each view's gradient comes in
        # divided by B: times B, a view counts the same at any batch size (as gsplat counts)
        grad = out.stats.grad2d.detach() * (0.5 * max(W, H) * B)  # [B, N]
        visible = out.meta.visible  # [B, N]
        self.grad_sum += torch.where(visible, grad, torch.zeros_like(grad)).sum(dim=0)
        self.count += visible.sum(dim=0).to(self.count.dtype)
        radius = out.meta.radii.detach().amax(dim=-1).to(self.max_radius.dtype)  # [B, N]
        self.max_radius = torch.maximum(self.max_radius, torch.where(visible, radius, 0.0).amax(dim=0))

    def after_step(self, step: int, scene: GaussianScene, generator: torch.Generator) -> dict[str, float]:
        plan = self.schedule_at(step)
        changes: dict[str, float] = {}
        if plan["refine"] and self.grad_sum is not None:
            changes = self._refine(step, scene, generator)
        if plan["opacity_reset"]:
            self._reset_opacities(scene)
            changes["opacity_reset"] = 1
        return changes

    def schedule_at(self, step: int) -> dict[str, float]:
        """What the schedule does after ``step``: densify (clone/split/prune), reset opacities."""
        c = self.config
        window = step < c.refine_stop
        refine = window and step >= c.refine_start and step % c.refine_every == 0
        reset = window and (step % c.reset_every == 0 or (bool(c.reset_at_refine_start) and step == c.refine_start))
        return {"refine": refine, "opacity_reset": reset}

    # ------------------------------------------------------------------ state

    def state_dict(self) -> dict:
        return {
            "grad_sum": None if self.grad_sum is None else self.grad_sum.clone(),
            "count": None if self.count is None else self.count.clone(),
            "max_radius": None if self.max_radius is None else self.max_radius.clone(),
        }

    def load_state_dict(self, state: dict) -> None:
        self.grad_sum = state["grad_sum"]
        self.count = state["count"]
        self.max_radius = state["max_radius"]

    # ------------------------------------------------------------------ edits

    def _reset_statistics(self, n: int, device: torch.device) -> None:
        self.grad_sum = torch.zeros(n, device=device)
        self.count = torch.zeros(n, dtype=torch.int32, device=device)
        self.max_radius = torch.zeros(n, device=device)

    def _refine(self, step: int, scene: GaussianScene, generator: torch.Generator) -> dict[str, float]:
        changes, max_radius = self._densify(step, scene, generator)
        changes["pruned"] = self._prune(step, scene, max_radius)
        self._reset_statistics(len(scene), scene.device)
        return changes

    def _average_grad(self) -> Tensor:  # [N] mean NDC gradient norm over the views that saw it
        return self.grad_sum / self.count.clamp(min=1)

    def _densify(self, step: int, scene: GaussianScene, generator: torch.Generator) -> tuple[dict[str, float], Tensor]:
        """Clones and splits; returns what it did and ``max_radius`` re-indexed like the new rows."""
        c = self.config
        grad = self._average_grad()
        high = grad >= c.grad_threshold
        room = self._room(scene)
        capped = 0
        if room is not None:  # a clone or a split adds one Gaussian: the strongest that fit
            capped = max(0, int(high.sum()) - room)
            if capped:
                high = strongest(high, grad, room)
        small = scene.scales.amax(dim=-1) <= c.clone_scale * scene.extent
        clone, split = high & small, high & ~small
        n_clone, n_split = int(clone.sum()), int(split.sum())
        max_radius = self.max_radius

        if n_clone:
            ops.append(scene.params, scene.optimizer, {k: p.detach()[clone] for k, p in scene.params.items()})
            split = torch.cat([split, split.new_zeros(n_clone)])
            max_radius = torch.cat([max_radius, max_radius[clone]])
        if n_split:
            offspring = _split_offspring(scene, split, c.split_scale_divisor, generator)
            max_radius = replace_by_offspring(scene, split, offspring, max_radius)
        changes: dict[str, float] = {"cloned": n_clone, "split": n_split}
        if room is not None:
            changes["capped"] = capped
        return changes, max_radius

    def _room(self, scene: GaussianScene) -> int | None:
        """How many Gaussians densification may still add under ``max_gaussians`` (None: no cap);
        0 when the scene is already at or above it (it is not pruned down to it)."""
        cap = self.config.max_gaussians
        return None if cap is None else max(0, cap - len(scene))

    def _prune(self, step: int, scene: GaussianScene, max_radius: Tensor) -> int:
        c = self.config
        prune = scene.opacities < c.prune_opacity
        if step > c.reset_every:
            if c.prune_screen_px is not None:
                prune |= max_radius > c.prune_screen_px
            prune |= scene.scales.amax(dim=-1) > c.prune_world * scene.extent
        n_prune = int(prune.sum())
        if n_prune:
            ops.remove(scene.params, scene.optimizer, prune)
        return n_prune

    def _reset_opacities(self, scene: GaussianScene) -> None:
        logits = scene.params["opacity_logits"].detach()
        cap = math.log(self.config.reset_opacity / (1 - self.config.reset_opacity))
        everything = torch.arange(logits.shape[0], device=logits.device)
        ops.replace_rows(scene.params, scene.optimizer, "opacity_logits", everything, logits.clamp(max=cap))


def strongest(candidates: Tensor, score: Tensor, k: int) -> Tensor:  # [N] bool, [N], -> [N] bool
    """The ``k`` candidates with the largest ``score`` (ties: the lower index first)."""
    ranked = torch.where(candidates, score, torch.full_like(score, -math.inf))
    order = torch.argsort(ranked, descending=True, stable=True)
    chosen = torch.zeros_like(candidates)
    chosen[order[:k]] = True
    return chosen & candidates


def replace_by_offspring(scene: GaussianScene, parents: Tensor, offspring: dict[str, Tensor], max_radius: Tensor) -> Tensor:
    """Appends two offspring per parent (``parents`` [N] bool; rows: all first offspring,
    then all second ones) and removes the parents; returns ``max_radius`` re-indexed alike."""
    n = int(parents.sum())
    ops.append(scene.params, scene.optimizer, offspring)
    ops.remove(scene.params, scene.optimizer, torch.cat([parents, parents.new_zeros(2 * n)]))
    return torch.cat([max_radius[~parents], max_radius[parents].repeat(2)])


def _split_offspring(
    scene: GaussianScene, mask: Tensor, divisor: float, generator: torch.Generator
) -> dict[str, Tensor]:
    """Two offspring per masked Gaussian: means drawn from the parent's distribution,
    scales divided by ``divisor``, everything else copied."""
    p = {k: v.detach()[mask] for k, v in scene.params.items()}
    n = p["means"].shape[0]
    scales = torch.exp(p["log_scales"])
    rot = quat_to_rotmat(torch.nn.functional.normalize(p["quats"], dim=-1))  # [n, 3, 3]
    noise = torch.randn(2, n, 3, generator=generator, dtype=scales.dtype).to(scales.device) * scales
    means = (p["means"] + torch.einsum("nij,bnj->bni", rot, noise)).reshape(2 * n, 3)
    out = {k: v.repeat(2, *([1] * (v.dim() - 1))) for k, v in p.items()}
    out["means"] = means
    out["log_scales"] = out["log_scales"] - math.log(divisor)
    return out
