"""Where a scene starts: SfM points when the dataset has them, else random points in a
cube derived from the cameras."""

from __future__ import annotations

import torch
from torch import Tensor

from splatfield.render.camera import Cameras


def look_at_centre(cameras: Cameras) -> Tensor:  # [3] float64
    """The point closest (least squares) to every camera's optical axis; the mean of the
    camera centres when the axes are (nearly) parallel."""
    c2w = cameras.camera_to_world.to(torch.float64)
    origins = c2w[:, :3, 3]
    dirs = torch.nn.functional.normalize(c2w[:, :3, 2], dim=-1)  # OpenCV: +z looks forward
    eye = torch.eye(3, dtype=torch.float64)
    proj = eye - dirs[:, :, None] * dirs[:, None, :]  # [B, 3, 3] projects out the axis
    A = proj.sum(dim=0)
    b = (proj @ origins[:, :, None]).sum(dim=0)[:, 0]
    if len(cameras) < 2 or torch.linalg.cond(A) > 1e6:
        return origins.mean(dim=0)
    return torch.linalg.solve(A, b)


def random_initial_points(
    cameras: Cameras, extent: float, n: int, generator: torch.Generator, half_size: float | None = None
) -> tuple[Tensor, Tensor]:  # [n, 3] float32 points, [n, 3] float32 colours in [0, 1]
    """``n`` grey points uniform in a cube around :func:`look_at_centre`; the cube's half
    size defaults to a third of the scene extent (1.1 x the camera spread).

    Grey, not random colours: Gaussians that start brightly coloured in empty space linger
    as coloured floaters in views that did not train them away (3DGS starts near-grey too).
    """
    centre = look_at_centre(cameras)
    half = extent / 3.0 if half_size is None else half_size
    pts = (torch.rand(n, 3, generator=generator, dtype=torch.float64) * 2 - 1) * half + centre
    return pts.float(), torch.full((n, 3), 0.5)
