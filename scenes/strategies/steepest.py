"""``steepest``: steepest-descent density control (SteepGS, METHODS.md §2).

A Gaussian is split only where the loss has a saddle in its position: when its splitting
matrix

    S_i = (1 / views) Σ_views Σ_pixels ∂L/∂α_i(p) · ∇²_μ α_i(p)          (3×3, w.r.t. the 3D mean)

has a negative eigenvalue. Then the best split is into two offspring at μ ± δ·v_min (v_min
the eigenvector of the smallest eigenvalue), each with half the parent's opacity in alpha.

The renderer's backward accumulates, per view, the 2×2 term ``split2d`` = Σ_p g·α·(C d dᵀC − C)
(the Hessian of α w.r.t. the 2D mean, weighted by g = ∂L/∂α) and ``mean2d_grad`` = ∂L/∂μ₂.
This module lifts them to 3D by the chain rule through the projection π:

    S_view = Jᵀ · split2d · J  +  Σ_k (∂L/∂μ₂,k) · ∇²π_k(μ)

with J = ∂π/∂μ (2×3). The second term, the projection's own curvature, is exact and costs
nothing extra (``projection_curvature``). The conic's dependence on μ is not part of S, as
in the paper: the offspring keep the parent's shape.

Everything else (pruning, opacity resets, the schedule, the cap ``max_gaussians``: when the
splits would take the count above it, only the most negative candidates that fit split) is
``adc``'s. Unlike the public code (METHODS.md "pitfalls"): the estimator is the Hessian above,
not ∂L/∂G times the inverse covariance; offspring opacity is always halved; each pair of
offspring goes to opposite sides; the 3DGS gradient test is an option (``grad_gate``), on by
default.

Which number meets the threshold (``split_criterion``): ``curvature``, λ_min·extent² (the
paper's), or ``loss-change``, the split's predicted change of the loss ½·δ²·λ_min (second
order along v_min, δ the offspring's displacement). The second has no length unit (it does
not depend on the scene's size or the Gaussian's scale): on the gated candidates of lego and
fox at step 5000 its quantiles agree within 1.3-2x (docs/bench/candidate_lambdas.py). The
threshold that meets the 60%-at-0.3-dB bar still differs: 1e-8 on lego, 1e-7 on fox
(docs/BENCHMARKS.md).
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from splatfield.render import Cameras, RenderOutput, Statistic
from splatfield.render.reference import quat_to_rotmat

from ..gaussian_scene import GaussianScene
from .adc import ADC, replace_by_offspring
from .options import AdcConfig, SteepestConfig


class Steepest(ADC):
    name = "steepest"

    def __init__(self, config: AdcConfig = AdcConfig(), split: SteepestConfig = SteepestConfig(), *,
                 steps: int | None = None, white_background: bool = False) -> None:  # fmt: skip
        super().__init__(config, steps=steps, white_background=white_background)
        self.split = split
        self.split_sum: Tensor | None = None  # [N, 3, 3] float32, Σ over views of S_view

    @property
    def statistics(self) -> tuple[Statistic, ...]:  # type: ignore[override]
        return ("grad2d", "split2d") + (("mean2d_grad",) if self.split.projection_curvature else ())

    # ------------------------------------------------------------------ hooks

    def after_backward(self, step: int, scene: GaussianScene, out: RenderOutput) -> None:
        super().after_backward(step, scene, out)  # gradient, view count, radius; resizes on edits
        if step >= self.config.refine_stop:
            return
        cameras = out.meta.cameras
        if cameras is None:
            raise ValueError("steepest needs the cameras of the render (RenderOutput.meta.cameras)")
        means = scene.params["means"].detach()
        split2d = out.stats.split2d.detach()
        grad = out.stats.mean2d_grad.detach() if self.split.projection_curvature else None
        per_view = out.meta.radii.shape[0]  # a batch's loss is its views' mean: S of one view is B times its share
        for b, visible in enumerate(out.meta.visible):
            ids = visible.nonzero()[:, 0]
            if ids.numel() == 0:
                continue
            S = lift_splitting_matrix(means[ids], cameras[b : b + 1], split2d[b, ids],
                                      None if grad is None else grad[b, ids])  # fmt: skip
            self.split_sum.index_add_(0, ids, (S if per_view == 1 else S * per_view).to(self.split_sum.dtype))

    # ------------------------------------------------------------------ state

    def state_dict(self) -> dict:
        return {**super().state_dict(), "split_sum": None if self.split_sum is None else self.split_sum.clone()}

    def load_state_dict(self, state: dict) -> None:
        super().load_state_dict(state)
        self.split_sum = state["split_sum"]

    def _reset_statistics(self, n: int, device: torch.device) -> None:
        super()._reset_statistics(n, device)
        self.split_sum = torch.zeros(n, 3, 3, device=device)

    # ------------------------------------------------------------------ edits

    def splitting_eigen(self, extent: float = 1.0) -> tuple[Tensor, Tensor, Tensor]:
        """λ_min [N] (times ``extent``²), v_min [N, 3] of the view-averaged splitting matrices,
        and which Gaussians were seen [N] (non-finite matrices count as unseen)."""
        S = self.split_sum.double() * (extent * extent) / self.count.clamp(min=1).double()[:, None, None]
        seen = (self.count > 0) & torch.isfinite(S).flatten(1).all(dim=1)
        S = torch.where(seen[:, None, None], S, torch.zeros_like(S))
        evals, evecs = torch.linalg.eigh(S)  # ascending
        return evals[:, 0], evecs[:, :, 0], seen

    def _densify(self, step: int, scene: GaussianScene, generator: torch.Generator) -> tuple[dict[str, float], Tensor]:
        c, s = self.config, self.split
        lam, v, seen = self.splitting_eigen(scene.extent)
        score = lam
        if s.split_criterion == "loss-change":
            p = scene.params
            delta = s.split_displacement * std_along(p["quats"].detach(), p["log_scales"].detach(), v.to(p["means"].dtype))
            score = 0.5 * delta.double() ** 2 * lam / (scene.extent * scene.extent)
        cand = seen & (score < -s.split_threshold)
        if s.split_grad_gate:
            cand &= self._average_grad() >= c.grad_threshold
        n_cand = int(cand.sum())
        wanted = n_cand if s.max_splits is None else min(n_cand, s.max_splits)
        room = self._room(scene)  # a split adds one Gaussian (two offspring replace the parent)
        limit = wanted if room is None else min(wanted, room)
        chosen = cand
        if limit < n_cand:  # the most negative first
            order = torch.argsort(torch.where(cand, score, torch.full_like(score, math.inf)))[:limit]
            chosen = torch.zeros_like(cand)
            chosen[order] = True
        n_split = int(chosen.sum())
        report = {"candidates": n_cand, "split": n_split, **lambda_summary(lam[seen])}
        if room is not None:
            report["capped"] = wanted - limit
        max_radius = self.max_radius
        if n_split:
            parents = {k: p.detach()[chosen] for k, p in scene.params.items()}
            offspring = steepest_offspring(parents, v[chosen].to(parents["means"].dtype), s.split_displacement,
                                           c.split_scale_divisor)  # fmt: skip
            max_radius = replace_by_offspring(scene, chosen, offspring, max_radius)
        return report, max_radius


def lambda_summary(lam: Tensor) -> dict[str, float]:  # [M] λ_min of the Gaussians seen
    """The λ_min distribution for the training log: quantiles and the negative fraction."""
    if lam.numel() == 0:
        return {}
    q = torch.quantile(lam.double()[: 1 << 24], torch.tensor([0.01, 0.1, 0.5], dtype=torch.float64))
    return {"lambda_p01": float(q[0]), "lambda_p10": float(q[1]), "lambda_p50": float(q[2]),
            "negative_fraction": float((lam < 0).double().mean())}  # fmt: skip


def lift_splitting_matrix(
    means: Tensor,  # [M, 3] world positions
    camera: Cameras,  # one pinhole camera
    split2d: Tensor,  # [M, 3] xx, xy, yy: Σ_p g·∇²_{μ₂}α in pixels
    mean2d_grad: Tensor | None = None,  # [M, 2] ∂L/∂μ₂, for the projection-curvature term
) -> Tensor:  # [M, 3, 3] in the dtype of ``means``
    """Σ_p g·∇²_μ α for one view, by the chain rule through π(μ) = (fx·x/z + cx, fy·y/z + cy).

    With R's rows r0, r1, r2 the rows of J are (fx/z)·r0 − (fx·x/z²)·r2 and (fy/z)·r1 −
    (fy·y/z²)·r2, and ∇²π_k are combinations of r_i r_jᵀ too, so S is a combination of the six
    symmetric matrices r_i r_jᵀ + r_j r_iᵀ with per-Gaussian coefficients: one [M,6]×[6,9]
    product instead of batched 3×3 products (about 10× faster on a CPU).
    """
    dt = means.dtype
    w2c = camera.world_to_camera[0].to(device=means.device, dtype=dt)
    fx, fy = float(camera.fx[0]), float(camera.fy[0])
    R = w2c[:3, :3]
    x, y, z = (means @ R.T + w2c[:3, 3]).unbind(-1)
    iz = 1.0 / z
    a0, b1 = fx * iz, fy * iz  # J = [[a0, 0, c0], [0, b1, c1]] in camera coordinates
    c0, c1 = -a0 * x * iz, -b1 * y * iz
    sxx, sxy, syy = split2d.to(dt).unbind(-1)
    coef = [
        sxx * a0 * a0,  # r0 r0ᵀ
        syy * b1 * b1,  # r1 r1ᵀ
        sxx * c0 * c0 + 2.0 * sxy * c0 * c1 + syy * c1 * c1,  # r2 r2ᵀ
        sxy * a0 * b1,  # r0 r1ᵀ + r1 r0ᵀ
        sxx * a0 * c0 + sxy * a0 * c1,  # r0 r2ᵀ + r2 r0ᵀ
        syy * b1 * c1 + sxy * c0 * b1,  # r1 r2ᵀ + r2 r1ᵀ
    ]
    if mean2d_grad is not None:
        # ∇²u = fx·[[0,0,−1/z²],[0,0,0],[−1/z²,0,2x/z³]] in camera coordinates; v likewise with y
        gu, gv = fx * mean2d_grad[:, 0].to(dt), fy * mean2d_grad[:, 1].to(dt)
        coef[2] = coef[2] + 2.0 * (gu * x + gv * y) * iz * iz * iz
        coef[4] = coef[4] - gu * iz * iz
        coef[5] = coef[5] - gv * iz * iz
    P = R[:, :, None] * R[:, None, :]  # P[i] = r_i r_iᵀ
    basis = torch.stack([P[0], P[1], P[2],
                         R[0][:, None] * R[1][None] + R[1][:, None] * R[0][None],
                         R[0][:, None] * R[2][None] + R[2][:, None] * R[0][None],
                         R[1][:, None] * R[2][None] + R[2][:, None] * R[1][None]]).reshape(6, 9)  # fmt: skip
    return (torch.stack(coef, -1) @ basis).view(-1, 3, 3)


def std_along(quats: Tensor, log_scales: Tensor, v: Tensor) -> Tensor:  # [n, 4], [n, 3], [n, 3] -> [n]
    """Each Gaussian's standard deviation along the unit vector v: sqrt(vᵀΣv)."""
    rot = quat_to_rotmat(torch.nn.functional.normalize(quats, dim=-1))  # [n, 3, 3]
    local = (rot.transpose(-1, -2) @ v[..., None])[..., 0]  # v in the Gaussian's frame
    return torch.sqrt(((local * torch.exp(log_scales)) ** 2).sum(-1))


def steepest_offspring(
    parents: dict[str, Tensor], direction: Tensor, displacement: float, scale_divisor: float
) -> dict[str, Tensor]:
    """Two offspring per parent (rows: all first offspring, then all second ones).

    Means μ ± δ·v with δ = ``displacement`` × the parent's standard deviation along the unit
    vector v (sqrt(vᵀΣv)); opacity halved in alpha (logit(σ(o)/2)); scales divided by
    ``scale_divisor`` (as 3DGS's split, so the pair covers about the parent's footprint);
    rotation and colour copied.
    """
    v = torch.nn.functional.normalize(direction, dim=-1)  # [n, 3]
    step = (displacement * std_along(parents["quats"], parents["log_scales"], v))[:, None] * v
    out = {k: t.repeat(2, *([1] * (t.dim() - 1))) for k, t in parents.items()}
    out["means"] = torch.cat([parents["means"] + step, parents["means"] - step])
    half = torch.sigmoid(parents["opacity_logits"]) / 2
    out["opacity_logits"] = torch.logit(half).repeat(2)
    out["log_scales"] = out["log_scales"] - math.log(scale_divisor)
    return out
