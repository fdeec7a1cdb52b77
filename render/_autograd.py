"""Autograd for the native ops: forward and backward are separate kernels, chained here.

Two functions, as in the kernels: the per-(camera, Gaussian) projection and the tile
rasterizer. The projection's backward also returns the cameras' gradients (world-to-camera
matrices and intrinsics) when they require them (camera refinement); otherwise the kernel
skips that work. Statistics requested by the caller are written into the ``RenderStats`` that
travels with the call (``grad2d`` and ``split2d`` during backward), never through a
tensor's ``.grad``.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from .types import RenderStats

ops = torch.ops.splatfield


@dataclass(frozen=True)
class ProjectSettings:
    width: int
    height: int
    sh_degree: int
    near_plane: float
    far_plane: float
    eps2d: float
    antialiased: bool

    def args(self) -> tuple:
        return (
            self.width,
            self.height,
            self.sh_degree,
            self.near_plane,
            self.far_plane,
            self.eps2d,
            self.antialiased,
        )


def _zeros_if_none(grads: tuple[Tensor | None, ...], like: tuple[Tensor, ...]) -> list[Tensor]:
    return [torch.zeros_like(x) if g is None else g.contiguous() for g, x in zip(grads, like)]


class Project(torch.autograd.Function):
    @staticmethod
    def forward(ctx, means, quats, log_scales, opacity_logits, sh, viewmats, Ks, settings: ProjectSettings):
        outs = ops.project_fwd(means, quats, log_scales, opacity_logits, sh, viewmats, Ks, *settings.args())
        ctx.settings = settings
        ctx.save_for_backward(means, quats, log_scales, opacity_logits, sh, viewmats, Ks, outs[5])
        ctx.mark_non_differentiable(outs[5])
        return outs

    @staticmethod
    def backward(ctx, v_means2d, v_conics, v_opacities, v_colors, v_depths, _v_radii):
        means, quats, log_scales, opacity_logits, sh, viewmats, Ks, radii = ctx.saved_tensors
        B, N = radii.shape[:2]
        like = (
            means.new_empty(B, N, 2),
            means.new_empty(B, N, 3),
            means.new_empty(B, N),
            means.new_empty(B, N, 3),
            means.new_empty(B, N),
        )
        v = _zeros_if_none((v_means2d, v_conics, v_opacities, v_colors, v_depths), like)
        want_camera = ctx.needs_input_grad[5] or ctx.needs_input_grad[6]  # a refined camera
        *grads, v_viewmats, v_Ks = ops.project_bwd(
            means, quats, log_scales, opacity_logits, sh, viewmats, Ks, *ctx.settings.args(), radii, *v, want_camera
        )
        if not want_camera:
            v_viewmats = v_Ks = None
        return (*grads, v_viewmats, v_Ks, None)


class Rasterize(torch.autograd.Function):
    @staticmethod
    def forward(ctx, means2d, conics, opacities, colors, depths, radii, background, width, height, stats: RenderStats):
        (image, depth, alpha, final_T, last, tile_offsets, flat_ids, gauss_offsets, gauss_entries, importance) = (
            ops.rasterize_fwd(means2d, conics, opacities, colors, depths, radii, background, width, height)
        )
        if "importance" in stats.requested:
            stats.values["importance"] = importance
        ctx.size = (width, height)
        ctx.stats = stats
        ctx.mark_non_differentiable(final_T)
        ctx.save_for_backward(
            means2d,
            conics,
            opacities,
            colors,
            depths,
            background,
            final_T,
            last,
            tile_offsets,
            flat_ids,
            gauss_offsets,
            gauss_entries,
        )
        return image, depth, alpha, final_T

    @staticmethod
    def backward(ctx, v_image, v_depth, v_alpha, _v_T):
        (means2d, conics, opacities, colors, depths, background, final_T, last, *bins) = ctx.saved_tensors
        width, height = ctx.size
        B = means2d.shape[0]
        like = (
            means2d.new_empty(B, height, width, 3),
            means2d.new_empty(B, height, width, 1),
            means2d.new_empty(B, height, width, 1),
        )
        v_image, v_depth, v_alpha = _zeros_if_none((v_image, v_depth, v_alpha), like)
        stats: RenderStats = ctx.stats
        want_split = "split2d" in stats.requested
        v_means2d, v_conics, v_opac, v_colors, v_depths, split2d = ops.rasterize_bwd(
            means2d,
            conics,
            opacities,
            colors,
            depths,
            background,
            width,
            height,
            final_T,
            last,
            *bins,
            v_image,
            v_depth,
            v_alpha,
            want_split,
        )
        if "grad2d" in stats.requested:
            stats.values["grad2d"] = v_means2d.norm(dim=-1)
        if "mean2d_grad" in stats.requested:
            stats.values["mean2d_grad"] = v_means2d.detach().clone()
        if want_split:
            stats.values["split2d"] = split2d
        v_background = None
        if ctx.needs_input_grad[6]:
            v_background = (final_T[..., None] * v_image).sum(dim=(1, 2))
        return v_means2d, v_conics, v_opac, v_colors, v_depths, None, v_background, None, None, None


class Composite(torch.autograd.Function):
    @staticmethod
    def forward(ctx, offsets, alphas, colors, ts, background):
        rgb, depth, alpha, final_T, last = ops.composite_fwd(offsets, alphas, colors, ts, background)
        ctx.save_for_backward(offsets, alphas, colors, ts, background, final_T, last)
        ctx.mark_non_differentiable(final_T)
        return rgb, depth, alpha, final_T

    @staticmethod
    def backward(ctx, v_rgb, v_depth, v_alpha, _v_T):
        offsets, alphas, colors, ts, background, final_T, last = ctx.saved_tensors
        R = offsets.numel() - 1
        like = (colors.new_empty(R, 3), colors.new_empty(R), colors.new_empty(R))
        v_rgb, v_depth, v_alpha = _zeros_if_none((v_rgb, v_depth, v_alpha), like)
        v_alphas, v_colors, v_ts = ops.composite_bwd(
            offsets, alphas, colors, ts, background, final_T, last, v_rgb, v_depth, v_alpha
        )
        v_background = final_T[:, None] * v_rgb if ctx.needs_input_grad[4] else None
        return None, v_alphas, v_colors, v_ts, v_background
