"""Quality of a trained scene on held-out views: PSNR, SSIM and (when available) LPIPS."""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Callable, Sequence

import torch
from torch import Tensor

from splatfield.render import Cameras, rasterize

from . import metrics
from .camera_opt import align_pose, pivot_depths
from .options import CameraPivot
from .scene import Renderable


@dataclass
class EvalResult:
    psnr: float
    ssim: float
    lpips: float | None
    lpips_note: str  # why LPIPS is missing, or which weights were used
    per_view: list[dict[str, float | None]] = field(default_factory=list)
    alpha_outside: float | None = None  # mean rendered alpha outside the object masks (object captures)


@torch.no_grad()
def evaluate(
    scene: Renderable,
    cameras: Cameras,
    image_at: Callable[[int], Tensor],  # i -> [H, W, 3] uint8
    *,
    background: Sequence[float] = (0.0, 0.0, 0.0),
    mask_at: Callable[[int], Tensor | None] | None = None,  # i -> [H, W] bool
    silhouette_at: Callable[[int], Tensor | None] | None = None,  # i -> [H, W] uint8 object mask
    on_view: Callable[[int, Tensor], None] | None = None,  # (i, rendered [H, W, 3] in [0, 1])
    use_lpips: bool = True,
) -> EvalResult:
    """Renders every camera, compares it with its image; means over the views. With object
    masks (``silhouette_at``) also the mean rendered alpha outside them (floaters)."""
    have_lpips, note = metrics.lpips_available() if use_lpips else (False, "not requested")
    per_view: list[dict[str, float | None]] = []
    for i in range(len(cameras)):
        out = scene.render(cameras[i : i + 1], background=background)
        pred = out.image[0].clamp(0, 1)
        target = image_at(i).to(pred.device, torch.float32) / 255.0
        mask = None if mask_at is None else mask_at(i)
        row: dict[str, float | None] = {
            "psnr": float(metrics.psnr(pred, target, mask)),
            "ssim": float(metrics.ssim(pred, target, mask)),
            "lpips": float(metrics.lpips(pred, target)) if have_lpips else None,
        }
        sil = None if silhouette_at is None else silhouette_at(i)
        if sil is not None:
            outside = sil.to(out.alpha.device) < 128
            row["alpha_outside"] = float(out.alpha[0, ..., 0][outside].mean()) if outside.any() else 0.0
        per_view.append(row)
        if on_view is not None:
            on_view(i, pred)
    n = max(1, len(per_view))
    mean = lambda k: sum(float(r[k]) for r in per_view) / n  # noqa: E731
    objects = bool(per_view) and all("alpha_outside" in r for r in per_view)
    return EvalResult(
        psnr=mean("psnr"), ssim=mean("ssim"), lpips=mean("lpips") if have_lpips and per_view else None,
        lpips_note=note, per_view=per_view, alpha_outside=mean("alpha_outside") if objects else None,
    )  # fmt: skip


def align_cameras(
    scene: Renderable,  # Gaussians (a snapshot holds .gaussians)
    cameras: Cameras,
    image_at: Callable[[int], Tensor],  # i -> [H, W, 3] uint8
    *,
    extent: float,
    steps: int,
    background: Sequence[float] = (0.0, 0.0, 0.0),
    mask_at: Callable[[int], Tensor | None] | None = None,
    tick: Callable[[int], None] | None = None,
    pivot: CameraPivot = "scene",
) -> Cameras:
    """Test-time alignment: each camera's pose fitted to its image with the scene frozen
    (:func:`.camera_opt.align_pose`; turns about ``pivot`` as in training), for metrics that
    do not charge a reconstruction for the drift of its frame or the error of a held-out
    view's given pose."""
    frozen = scene.snapshot().gaussians  # detached: the scene gets no gradient
    cams = cameras.to(device=frozen.device, dtype=torch.float32)
    depths = pivot_depths(cams, frozen.means) if pivot == "scene" else None
    render = lambda c: rasterize(frozen, c, background=background).image  # noqa: E731
    poses = []
    for i in range(len(cams)):
        target = image_at(i).to(frozen.device, torch.float32) / 255.0
        mask = None if mask_at is None else mask_at(i)
        mask = None if mask is None else mask.to(frozen.device)
        depth = None if depths is None else float(depths[i])
        poses.append(align_pose(render, cams[i], target, extent=extent, steps=steps, mask=mask,
                                pivot_depth=depth).world_to_camera)  # fmt: skip
        if tick is not None:
            tick(1)
    return replace(cams, world_to_camera=torch.cat(poses)) if poses else cams
