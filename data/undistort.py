"""Lens distortion models and image undistortion (no OpenCV).

Conventions: pixel centres at integer + 0.5; normalised coordinates ``x = (u - cx) / fx``,
``y = (v - cy) / fy``. ``opencv`` coefficients are k1 k2 p1 p2 [k3] (OpenCV's order);
``fisheye`` coefficients are k1 k2 k3 k4 (OpenCV's equidistant fisheye model).

Undistortion keeps K and the image size: every pixel of the output pinhole image is pushed
through the *forward* distortion to find where it lies in the distorted input, which is
then sampled bilinearly. Pixels whose source falls outside the input come out black.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor


def distort(x: Tensor, y: Tensor, model: str, coeffs: Tensor) -> tuple[Tensor, Tensor]:
    """Forward distortion of normalised coordinates ``x``, ``y`` (any equal shapes).

    ``coeffs`` [D]: opencv k1 k2 p1 p2 [k3]; fisheye k1 k2 k3 k4. Returns distorted (x, y).
    """
    c = coeffs.to(dtype=x.dtype, device=x.device)
    if model == "pinhole":
        return x, y
    if model == "opencv":
        k1, k2, p1, p2 = c[0], c[1], c[2], c[3]
        k3 = c[4] if c.numel() > 4 else torch.zeros((), dtype=x.dtype, device=x.device)
        r2 = x * x + y * y
        radial = 1 + r2 * (k1 + r2 * (k2 + r2 * k3))
        xd = x * radial + 2 * p1 * x * y + p2 * (r2 + 2 * x * x)
        yd = y * radial + p1 * (r2 + 2 * y * y) + 2 * p2 * x * y
        return xd, yd
    if model == "fisheye":
        r = torch.sqrt(x * x + y * y)
        theta = torch.atan(r)
        t2 = theta * theta
        theta_d = theta * (1 + t2 * (c[0] + t2 * (c[1] + t2 * (c[2] + t2 * c[3]))))
        scale = torch.where(r > 1e-12, theta_d / r.clamp_min(1e-12), torch.ones_like(r))
        return x * scale, y * scale
    raise ValueError(f"unknown camera model {model!r}")


def is_identity(model: str, coeffs: Tensor | None) -> bool:
    """True when the model does not move any pixel (pinhole, or all coefficients zero)."""
    return model == "pinhole" or coeffs is None or bool((coeffs == 0).all())


def undistort_image(
    image: Tensor,  # [H, W, C] float
    fx: float,
    fy: float,
    cx: float,
    cy: float,
    model: str,
    coeffs: Tensor,  # [D]
) -> Tensor:  # [H, W, C], same K and size, pinhole
    """Resamples a distorted image into the pinhole image with the same intrinsics."""
    H, W, _ = image.shape
    dt = torch.float64
    v, u = torch.meshgrid(torch.arange(H, dtype=dt) + 0.5, torch.arange(W, dtype=dt) + 0.5, indexing="ij")
    xd, yd = distort((u - cx) / fx, (v - cy) / fy, model, coeffs.to(dt))
    ud, vd = xd * fx + cx, yd * fy + cy  # source location, pixel units (centres at +0.5)
    # grid_sample with align_corners=False: -1 and +1 are the outer edges of the image.
    grid = torch.stack([2 * ud / W - 1, 2 * vd / H - 1], dim=-1)[None].to(image.dtype)  # [1, H, W, 2]
    src = image.permute(2, 0, 1)[None]  # [1, C, H, W]
    out = F.grid_sample(src, grid, mode="bilinear", padding_mode="zeros", align_corners=False)
    return out[0].permute(1, 2, 0)


def undistort_points(xd: Tensor, yd: Tensor, model: str, coeffs: Tensor, iterations: int = 50) -> tuple[Tensor, Tensor]:
    """Inverse of :func:`distort` by Gauss-Newton with a numerical Jacobian (vectorised)."""
    x, y = xd.clone(), yd.clone()
    eps = 1e-7
    for _ in range(iterations):
        fx_, fy_ = distort(x, y, model, coeffs)
        ex, ey = fx_ - xd, fy_ - yd
        ax, ay = distort(x + eps, y, model, coeffs)
        bx, by = distort(x, y + eps, model, coeffs)
        j11, j21 = (ax - fx_) / eps, (ay - fy_) / eps
        j12, j22 = (bx - fx_) / eps, (by - fy_) / eps
        det = j11 * j22 - j12 * j21
        x = x - (j22 * ex - j12 * ey) / det
        y = y - (-j21 * ex + j11 * ey) / det
    return x, y
