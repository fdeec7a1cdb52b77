"""Seeded perturbation of camera poses: what a camera-refinement test starts from.

Each camera is rotated about a random axis through its centre by exactly ``degrees`` and
its centre moved in a random direction by exactly ``distance`` (world units), so the
perturbation has a known size and the recovered poses can be scored against the clean ones
(:mod:`.pose_alignment`).
"""

from __future__ import annotations

import math
from dataclasses import replace

import torch

from splatfield.render.camera import Cameras


def _unit_vectors(n: int, generator: torch.Generator) -> torch.Tensor:
    v = torch.randn(n, 3, generator=generator, dtype=torch.float64)
    return v / v.norm(dim=-1, keepdim=True)


def _rotation(axis: torch.Tensor, angle: float) -> torch.Tensor:  # [n, 3] unit -> [n, 3, 3] (Rodrigues)
    x, y, z = axis.unbind(-1)
    o = torch.zeros_like(x)
    K = torch.stack([torch.stack([o, -z, y], -1), torch.stack([z, o, -x], -1), torch.stack([-y, x, o], -1)], -2)
    eye = torch.eye(3, dtype=axis.dtype).expand_as(K)
    return eye + math.sin(angle) * K + (1 - math.cos(angle)) * K @ K


def perturb_poses(cameras: Cameras, degrees: float, distance: float, seed: int = 0) -> Cameras:
    """``cameras`` with every pose perturbed by a rotation of ``degrees`` and a shift of its
    centre by ``distance``, in random directions drawn from ``seed``."""
    if degrees == 0 and distance == 0:
        return cameras
    gen = torch.Generator().manual_seed(seed)
    n = len(cameras)
    w2c = cameras.world_to_camera.to(torch.float64)
    R, centre = w2c[:, :3, :3], cameras.centers.to(torch.float64)
    R_new = R @ _rotation(_unit_vectors(n, gen), math.radians(degrees))  # turned about the camera's own centre
    centre_new = centre + distance * _unit_vectors(n, gen)
    out = torch.eye(4, dtype=torch.float64).repeat(n, 1, 1)
    out[:, :3, :3] = R_new
    out[:, :3, 3] = -(R_new @ centre_new[..., None])[..., 0]
    return replace(cameras, world_to_camera=out.to(cameras.world_to_camera.dtype))
