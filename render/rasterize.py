"""Differentiable rendering of 3D Gaussians: ``rasterize(gaussians, cameras, ...)``."""

from __future__ import annotations

from typing import Literal, Sequence

import torch
from torch import Tensor

from . import _ext, reference
from .camera import Cameras
from .gaussians import Gaussians
from .types import STATISTICS, RenderMeta, RenderOutput, RenderStats, Statistic

Backend = Literal["auto", "native", "reference"]


def resolve_backend(backend: Backend, device: torch.device) -> Literal["native", "reference"]:
    """``auto`` picks the native kernels when they are built for ``device``."""
    if backend not in ("auto", "native", "reference"):
        raise ValueError(f"backend must be one of auto, native, reference; got {backend!r}")
    if backend == "reference":
        return "reference"
    reason = _ext.unavailable_reason(device)  # e.g. the CPU build's error, "CUDA extension not built: nvcc not found"
    if reason is None:
        return "native"
    if backend == "native":
        raise RuntimeError(f"native rasterizer unavailable: {reason}")
    _ext.warn_fallback_once(reason)
    return "reference"


def _background(background: Tensor | Sequence[float] | None, B: int, like: Tensor) -> Tensor:
    if background is None:
        return torch.zeros(B, 3, dtype=like.dtype, device=like.device)
    bg = torch.as_tensor(background, dtype=like.dtype, device=like.device)
    if bg.shape == (3,):
        bg = bg.expand(B, 3)
    if bg.shape != (B, 3):
        raise ValueError(f"background must be [3] or [{B}, 3], got {list(bg.shape)}")
    if not bool(torch.isfinite(bg).all()):
        raise ValueError("background contains NaN or Inf")
    return bg.contiguous()


def _check_cameras(cameras: Cameras) -> None:
    if cameras.model != "pinhole":
        raise ValueError(f"rasterize renders pinhole cameras; got model {cameras.model!r} (undistort first)")
    if not bool(torch.isfinite(cameras.world_to_camera).all()) or not bool(torch.isfinite(cameras.Ks).all()):
        raise ValueError("cameras contain NaN or Inf")
    if not bool((cameras.fx > 0).all() and (cameras.fy > 0).all()):
        raise ValueError("camera focal lengths must be positive")


def rasterize(
    gaussians: Gaussians,
    cameras: Cameras,
    *,
    sh_degree: int | None = None,
    background: Tensor | Sequence[float] | None = None,
    antialiased: bool = False,
    near_plane: float = 0.01,
    far_plane: float = 1e10,
    eps2d: float = 0.3,
    stats: Sequence[Statistic] = (),
    backend: Backend = "auto",
) -> RenderOutput:
    """Renders ``gaussians`` into every camera of ``cameras``.

    Differentiable w.r.t. every Gaussian parameter (and the background). ``sh_degree``
    defaults to the highest the Gaussians carry. ``antialiased`` enables the 2D
    filter with opacity compensation (Mip-Splatting); otherwise the 0.3-pixel dilation
    of 3DGS is used. Gaussians with non-finite parameters, behind the near plane or with
    a footprint off the image are not rendered (their radii are 0). ``stats`` requests
    per-(camera, Gaussian) statistics, returned in ``output.stats``.
    """
    _check_cameras(cameras)
    degree = gaussians.max_sh_degree if sh_degree is None else int(sh_degree)
    if not 0 <= degree <= gaussians.max_sh_degree:
        raise ValueError(f"sh_degree {degree} outside 0..{gaussians.max_sh_degree} (what the Gaussians carry)")
    unknown = set(stats) - set(STATISTICS)
    if unknown:
        raise ValueError(f"unknown statistics {sorted(unknown)}; choose from {STATISTICS}")
    if not (0 < near_plane < far_plane):
        raise ValueError(f"need 0 < near_plane < far_plane, got {near_plane}, {far_plane}")
    device = gaussians.device
    if cameras.device != device:
        raise ValueError(f"Gaussians are on {device} but cameras on {cameras.device}")
    which = resolve_backend(backend, device)
    out_stats = RenderStats(requested=tuple(dict.fromkeys(stats)))
    B, W, H = len(cameras), cameras.width, cameras.height
    n_sh = (degree + 1) ** 2
    sh = gaussians.sh[:, :n_sh]

    if which == "native":
        from . import _autograd

        f32 = [t.float().contiguous() for t in (gaussians.means, gaussians.quats, gaussians.log_scales,
                                                  gaussians.opacity_logits, sh)]
        viewmats = cameras.world_to_camera.float().contiguous()
        Ks = cameras.Ks.float().contiguous()
        settings = _autograd.ProjectSettings(W, H, degree, near_plane, far_plane, eps2d, antialiased)
        means2d, conics, opacities, colors, depths, radii = _autograd.Project.apply(*f32, viewmats, Ks, settings)
        bg = _background(background, B, means2d)
        image, depth_acc, alpha, _ = _autograd.Rasterize.apply(
            means2d, conics, opacities, colors, depths, radii, bg, W, H, out_stats
        )
    else:
        dt = gaussians.means.dtype
        means2d, conics, opacities, colors, depths, radii = reference.project(
            gaussians.means, gaussians.quats, gaussians.log_scales, gaussians.opacity_logits, sh,
            cameras.world_to_camera.to(dt), cameras.Ks.to(dt), W, H, degree, near_plane, far_plane, eps2d,
            antialiased,
        )  # fmt: skip
        bg = _background(background, B, means2d)
        image, depth_acc, alpha, _ = reference.rasterize(
            means2d, conics, opacities, colors, depths, radii, bg, W, H, stats=out_stats
        )
    depth = torch.where(alpha > 1e-6, depth_acc / alpha.clamp_min(1e-6), torch.zeros_like(depth_acc))
    meta = RenderMeta(means2d=means2d, depths=depths, radii=radii, stats=out_stats, cameras=cameras)
    return RenderOutput(image=image, alpha=alpha, depth=depth, meta=meta)
