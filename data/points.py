"""Where a scene starts: SfM points when the dataset has them, else random points in a
cube derived from the cameras."""

from __future__ import annotations

import torch
from torch import Tensor

from splatfield.render.camera import Cameras


def look_at_centre(cameras: Cameras) -> Tensor:  # [3] float64
    """The point closest (least squares) to every camera's optical axis; the mean of the
    camera centres when the axes are (nearly) parallel. A single camera has no such point:
    the point of its axis nearest the world origin stands in (the object's centre in the
    Blender convention and in lift's one-view datasets), or its centre if it looks away."""
    c2w = cameras.camera_to_world.to(torch.float64)
    origins = c2w[:, :3, 3]
    dirs = torch.nn.functional.normalize(c2w[:, :3, 2], dim=-1)  # OpenCV: +z looks forward
    eye = torch.eye(3, dtype=torch.float64)
    proj = eye - dirs[:, :, None] * dirs[:, None, :]  # [B, 3, 3] projects out the axis
    A = proj.sum(dim=0)
    b = (proj @ origins[:, :, None]).sum(dim=0)[:, 0]
    if len(cameras) == 1:
        along = float(-(origins[0] @ dirs[0]))
        return origins[0] + max(along, 0.0) * dirs[0]
    if torch.linalg.cond(A) > 1e6:
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


def visual_hull_points(
    cameras: Cameras, silhouettes: Tensor, extent: float, n: int, generator: torch.Generator,
    half_size: float | None = None, *, resolution: int = 80,
) -> tuple[Tensor, Tensor] | None:  # [n, 3] float32 points, [n, 3] grey colours; None: the hull is empty
    """``n`` grey points of an object capture's visual hull, in the cube of
    :func:`random_initial_points`: the cube's ``resolution``^3 cells are carved by the
    masks (``silhouettes`` [B, H, W] uint8, >= 128 inside): a cell stays when at least half
    the views see its centre (in front of the camera, inside the image: an object capture
    keeps its object in view) and every view that sees it has it inside the mask; the points
    are uniform in the cells that stay. None when no cell stays (the cube is the start then)."""
    centre = look_at_centre(cameras)
    half = extent / 3.0 if half_size is None else half_size
    cell = 2.0 * half / resolution
    axis = (torch.arange(resolution, dtype=torch.float64) + 0.5) * cell - half
    grid = torch.stack(torch.meshgrid(axis, axis, axis, indexing="ij"), dim=-1).reshape(-1, 3) + centre
    w2c = cameras.world_to_camera.to(torch.float64)
    inside_masks = silhouettes >= 128
    H, W = inside_masks.shape[1:]
    ok = torch.ones(grid.shape[0], dtype=torch.bool)
    views = torch.zeros(grid.shape[0], dtype=torch.int32)
    for b in range(len(cameras)):
        cam = grid @ w2c[b, :3, :3].T + w2c[b, :3, 3]
        z = cam[:, 2].clamp_min(1e-9)
        u = torch.floor(cameras.fx[b] * cam[:, 0] / z + cameras.cx[b]).long()
        v = torch.floor(cameras.fy[b] * cam[:, 1] / z + cameras.cy[b]).long()
        seen = (cam[:, 2] > 1e-6) & (u >= 0) & (u < W) & (v >= 0) & (v < H)
        hit = torch.zeros_like(seen)
        hit[seen] = inside_masks[b, v[seen], u[seen]]
        ok &= ~seen | hit
        views += seen
    cells = grid[ok & (2 * views >= len(cameras))]
    if cells.shape[0] == 0:
        return None
    pick = torch.randint(0, cells.shape[0], (n,), generator=generator)
    jitter = (torch.rand(n, 3, generator=generator, dtype=torch.float64) - 0.5) * cell
    return (cells[pick] + jitter).float(), torch.full((n, 3), 0.5)
