"""Front-to-back compositing of packed ray samples (the radiance-field path).

Same compositing step and VJP as the Gaussian rasterizer: contributions with alpha below
1/255 are skipped, alpha is clamped at 0.99, and a ray stops before its transmittance
would fall to 1e-4 or below.
"""

from __future__ import annotations

from typing import Sequence

import torch
from torch import Tensor

from .rasterize import Backend, resolve_backend


def alphas_from_densities(densities: Tensor, deltas: Tensor) -> Tensor:  # [M], [M] -> [M]
    """alpha = 1 - exp(-sigma * delta)."""
    return -torch.expm1(-densities * deltas)


def composite(
    ray_indices: Tensor,  # [M] int64, non-decreasing
    alphas: Tensor,  # [M]
    colors: Tensor,  # [M, 3]
    ts: Tensor,  # [M] sample distance along the ray, increasing within a ray
    n_rays: int,
    *,
    background: Tensor | Sequence[float] | None = None,  # [3] or [R, 3]
    backend: Backend = "auto",
) -> tuple[Tensor, Tensor, Tensor]:
    """Composites samples sorted by ray, then by depth. Returns colours [R,3], alphas
    [R,1] and expected depths [R,1] (0 where nothing was composited)."""
    M = alphas.shape[0]
    if ray_indices.shape != (M,) or colors.shape != (M, 3) or ts.shape != (M,):
        raise ValueError("composite needs ray_indices [M], alphas [M], colors [M, 3], ts [M]")
    ray_indices = ray_indices.long()
    if M and (int(ray_indices.min()) < 0 or int(ray_indices.max()) >= n_rays):
        raise ValueError(f"ray_indices must lie in [0, {n_rays})")
    if M > 1 and bool((ray_indices[1:] < ray_indices[:-1]).any()):
        raise ValueError("samples must be sorted by ray index")
    counts = torch.bincount(ray_indices, minlength=n_rays)
    offsets = torch.cat([counts.new_zeros(1), torch.cumsum(counts, 0)])
    if background is None:
        bg = colors.new_zeros(n_rays, 3)
    else:
        bg = torch.as_tensor(background, dtype=colors.dtype, device=colors.device).expand(n_rays, 3)
    which = resolve_backend(backend, alphas.device)
    if which == "native":
        from . import _autograd

        rgb, depth_acc, alpha, _ = _autograd.Composite.apply(
            offsets.contiguous(),
            alphas.float().contiguous(),
            colors.float().contiguous(),
            ts.float().contiguous(),
            bg.float().contiguous(),
        )
    else:
        from . import reference

        rgb, depth_acc, alpha, _ = reference.composite(offsets, alphas, colors, ts, bg)
    return rgb, alpha[:, None], expected_depth(depth_acc[:, None], alpha[:, None])


def expected_depth(depth_acc: Tensor, alpha: Tensor) -> Tensor:
    """The alpha-weighted sum of sample distances divided by alpha (0 where nothing was
    composited)."""
    return torch.where(alpha > 1e-6, depth_acc / alpha.clamp_min(1e-6), torch.zeros_like(depth_acc))
