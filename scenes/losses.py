"""Photometric training losses (differentiable): L1, D-SSIM and the 3DGS mix of the two.

Images are ``[H, W, C]`` or ``[B, H, W, C]`` floats; each loss returns a scalar averaged
over every selected pixel and channel of the batch. A ``mask`` (``[H, W]`` or ``[B, H, W]``,
bool) selects the pixels that count: unselected pixels contribute nothing, neither to the
value nor to the gradient (an all-False mask gives a loss of 0). For SSIM both images are
zeroed outside the mask before filtering (so unselected pixels cannot leak into their
neighbours' windows, they act like the border's zero padding) and the SSIM map is then
averaged over the selected pixels only.
"""

from __future__ import annotations

import torch
from torch import Tensor

from splatfield.scenes.metrics import ssim_map

__all__ = ["l1", "dssim", "photometric", "depth_ranking"]


def _check(pred: Tensor, target: Tensor, mask: Tensor | None) -> None:
    if pred.shape != target.shape:
        raise ValueError(f"pred and target must have the same shape, got {list(pred.shape)} and {list(target.shape)}")
    if pred.dim() not in (3, 4):
        raise ValueError(f"images must be [H, W, C] or [B, H, W, C], got {list(pred.shape)}")
    if mask is not None and tuple(mask.shape) != tuple(pred.shape[:-1]):
        raise ValueError(f"mask must be {list(pred.shape[:-1])}, got {list(mask.shape)}")


def _masked_mean(values: Tensor, mask: Tensor | None) -> Tensor:  # [..., H, W, C] -> []
    if mask is None:
        return values.mean()
    w = mask.to(dtype=values.dtype, device=values.device).unsqueeze(-1)
    count = w.sum() * values.shape[-1]
    return (values * w).sum() / count.clamp_min(1.0)


def l1(
    pred: Tensor,  # [B?, H, W, C]
    target: Tensor,  # [B?, H, W, C]
    mask: Tensor | None = None,  # [B?, H, W] bool
) -> Tensor:  # []
    """Mean absolute error over the selected pixels and channels."""
    _check(pred, target, mask)
    return _masked_mean((pred - target).abs(), mask)


def dssim(
    pred: Tensor,  # [B?, H, W, C]
    target: Tensor,  # [B?, H, W, C]
    mask: Tensor | None = None,  # [B?, H, W] bool
) -> Tensor:  # []
    """1 − SSIM (the 3DGS window: 11x11 Gaussian, sigma 1.5, 'same' zero padding)."""
    _check(pred, target, mask)
    return 1.0 - _masked_mean(ssim_map(pred, target, mask), mask)


def photometric(
    pred: Tensor,  # [B?, H, W, C]
    target: Tensor,  # [B?, H, W, C]
    mask: Tensor | None = None,  # [B?, H, W] bool
    ssim_weight: float = 0.2,
) -> Tensor:  # []
    """The 3DGS training loss ``(1 − w)·L1 + w·(1 − SSIM)`` with ``w = ssim_weight``."""
    _check(pred, target, mask)
    if not 0.0 <= ssim_weight <= 1.0:
        raise ValueError(f"ssim_weight must be in [0, 1], got {ssim_weight}")
    loss = l1(pred, target, mask)
    if ssim_weight == 0.0:
        return loss
    return (1.0 - ssim_weight) * loss + ssim_weight * dssim(pred, target, mask)


def depth_ranking(
    depth: Tensor,  # [H, W] rendered depth
    prior: Tensor,  # [H, W] a depth map's order (larger = farther); only its order counts
    mask: Tensor | None,  # [H, W] bool: where pairs are drawn (None: everywhere)
    pairs: int,
    generator,
    *,
    tie: float = 0.01,
    margin: float = 1e-3,
) -> Tensor:  # []
    """NeuralLift-360's scale-invariant depth ranking: ``pairs`` random pixel pairs (i, j)
    inside ``mask``, each ordered by the prior (``s = sign(prior_j - prior_i)``; pairs whose
    prior values differ by less than ``tie`` of the prior's range are dropped), and the hinge
    ``max(0, margin - s (d_j - d_i) / mean(d))`` on the rendered depths, averaged over the
    pairs kept. Only the prior's order enters (a monocular estimate's unknown scale and
    shift do not matter) and the render's depths are divided by their mean (nor does the
    scene's scale); sampled pairs instead of all O(N^2)."""
    flat_d, flat_p = depth.reshape(-1), prior.reshape(-1).to(depth)
    where = torch.arange(flat_d.numel(), device=depth.device)
    if mask is not None:
        where = where[mask.reshape(-1).to(device=depth.device)]
    if where.numel() < 2:
        return depth.sum() * 0.0
    pick = torch.randint(0, where.numel(), (2, pairs), generator=generator).to(depth.device)
    i, j = where[pick[0]], where[pick[1]]
    span = (flat_p[where].max() - flat_p[where].min()).clamp_min(1e-12)
    diff = flat_p[j] - flat_p[i]
    keep = diff.abs() > tie * span
    if not bool(keep.any()):
        return depth.sum() * 0.0
    i, j, s = i[keep], j[keep], torch.sign(diff[keep])
    scale = 0.5 * (flat_d[i] + flat_d[j]).mean().detach().clamp_min(1e-12)
    return torch.relu(margin - s * (flat_d[j] - flat_d[i]) / scale).mean()
