"""Batched cameras in OpenCV axes (x right, y down, z forward).

A camera is a world-to-camera matrix, pinhole intrinsics (fx, fy, cx, cy, in pixels, with
pixel centres at integer + 0.5), an image size and a camera model. Other conventions
(OpenGL / Blender / nerfstudio camera-to-world) are converted once, when a dataset is
loaded, with :func:`opengl_to_opencv_c2w`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace
from typing import Literal

import torch
from torch import Tensor

CameraModel = Literal["pinhole", "opencv", "fisheye"]

# Flips y and z: OpenGL (x right, y up, z back) <-> OpenCV (x right, y down, z forward).
_GL_TO_CV = torch.diag(torch.tensor([1.0, -1.0, -1.0, 1.0], dtype=torch.float64))


@dataclass(frozen=True)
class Cameras:
    """B cameras sharing one image size.

    ``distortion`` holds the model's coefficients ([B, 4] or [B, 5] for ``opencv``:
    k1 k2 p1 p2 [k3]; [B, 4] for ``fisheye``: k1..k4). The rasterizer renders pinhole
    images; distorted models are undistorted by the data loaders.
    """

    world_to_camera: Tensor  # [B, 4, 4]
    fx: Tensor  # [B]
    fy: Tensor  # [B]
    cx: Tensor  # [B]
    cy: Tensor  # [B]
    width: int
    height: int
    model: CameraModel = "pinhole"
    distortion: Tensor | None = None  # [B, D]

    def __post_init__(self) -> None:
        B = self.world_to_camera.shape[0]
        if self.world_to_camera.shape != (B, 4, 4):
            raise ValueError(f"world_to_camera must be [B, 4, 4], got {tuple(self.world_to_camera.shape)}")
        for name in ("fx", "fy", "cx", "cy"):
            if getattr(self, name).shape != (B,):
                raise ValueError(f"{name} must be [{B}], got {tuple(getattr(self, name).shape)}")
        if self.width <= 0 or self.height <= 0:
            raise ValueError(f"image size must be positive, got {self.width}x{self.height}")
        if self.model not in ("pinhole", "opencv", "fisheye"):
            raise ValueError(f"unknown camera model {self.model!r}")

    @classmethod
    def from_intrinsics(
        cls,
        world_to_camera: Tensor,  # [B, 4, 4] or [4, 4]
        fx: float | Tensor,
        fy: float | Tensor,
        cx: float | Tensor,
        cy: float | Tensor,
        width: int,
        height: int,
    ) -> Cameras:
        w2c = world_to_camera if world_to_camera.dim() == 3 else world_to_camera[None]
        B = w2c.shape[0]

        def batch(v: float | Tensor) -> Tensor:
            return torch.as_tensor(v, dtype=w2c.dtype, device=w2c.device).expand(B).clone()

        return cls(w2c, batch(fx), batch(fy), batch(cx), batch(cy), int(width), int(height))

    @classmethod
    def look_at(
        cls,
        eyes: Tensor,  # [B, 3]
        targets: Tensor,  # [B, 3]
        up: tuple[float, float, float],
        fov_y_degrees: float,
        width: int,
        height: int,
    ) -> Cameras:
        """Pinhole cameras at ``eyes`` looking at ``targets``; ``up`` is the world's up."""
        forward = torch.nn.functional.normalize(targets - eyes, dim=-1)
        up_t = torch.as_tensor(up, dtype=eyes.dtype, device=eyes.device).expand_as(forward)
        right = torch.nn.functional.normalize(torch.cross(forward, up_t, dim=-1), dim=-1)
        down = torch.cross(forward, right, dim=-1)
        R = torch.stack([right, down, forward], dim=1)  # rows: camera axes in world
        w2c = torch.eye(4, dtype=eyes.dtype, device=eyes.device).repeat(eyes.shape[0], 1, 1)
        w2c[:, :3, :3] = R
        w2c[:, :3, 3] = -(R @ eyes[..., None])[..., 0]
        f = 0.5 * height / math.tan(math.radians(fov_y_degrees) / 2)
        return cls.from_intrinsics(w2c, f, f, width / 2, height / 2, width, height)

    def __len__(self) -> int:
        return self.world_to_camera.shape[0]

    def __getitem__(self, index: int | slice | Tensor) -> Cameras:
        if isinstance(index, int):
            index = slice(index, index + 1 if index != -1 else None)
        return replace(
            self,
            world_to_camera=self.world_to_camera[index],
            fx=self.fx[index],
            fy=self.fy[index],
            cx=self.cx[index],
            cy=self.cy[index],
            distortion=None if self.distortion is None else self.distortion[index],
        )

    @property
    def device(self) -> torch.device:
        return self.world_to_camera.device

    @property
    def Ks(self) -> Tensor:  # [B, 4] fx fy cx cy
        return torch.stack([self.fx, self.fy, self.cx, self.cy], dim=-1)

    @property
    def camera_to_world(self) -> Tensor:  # [B, 4, 4]
        return torch.linalg.inv(self.world_to_camera)

    @property
    def centers(self) -> Tensor:  # [B, 3]
        R = self.world_to_camera[:, :3, :3]
        t = self.world_to_camera[:, :3, 3]
        return -(R.transpose(1, 2) @ t[..., None])[..., 0]

    def to(self, device: torch.device | str | None = None, dtype: torch.dtype | None = None) -> Cameras:
        def move(t: Tensor | None) -> Tensor | None:
            return None if t is None else t.to(device=device, dtype=dtype)

        return replace(
            self,
            world_to_camera=move(self.world_to_camera),
            fx=move(self.fx),
            fy=move(self.fy),
            cx=move(self.cx),
            cy=move(self.cy),
            distortion=move(self.distortion),
        )

    def scale(self, factor: float) -> Cameras:
        """Resizes the images by ``factor`` (0.5 halves them); intrinsics follow."""
        width = max(1, round(self.width * factor))
        height = max(1, round(self.height * factor))
        sx, sy = width / self.width, height / self.height
        return replace(
            self, fx=self.fx * sx, fy=self.fy * sy, cx=self.cx * sx, cy=self.cy * sy, width=width, height=height
        )

    def generate_rays(self) -> tuple[Tensor, Tensor]:
        """Rays through pixel centres: origins and unit directions in world, [B, H, W, 3]."""
        dt, dev = self.world_to_camera.dtype, self.device
        B, H, W = len(self), self.height, self.width
        ys, xs = torch.meshgrid(torch.arange(H, dtype=dt, device=dev) + 0.5, torch.arange(W, dtype=dt, device=dev) + 0.5,
                                indexing="ij")  # fmt: skip
        cams = torch.arange(B, device=dev)[:, None].expand(B, H * W).reshape(-1)
        origins, dirs = self.pixel_rays(cams, xs.reshape(-1).repeat(B), ys.reshape(-1).repeat(B))
        return origins.view(B, H, W, 3), dirs.view(B, H, W, 3)

    def pixel_rays(self, cams: Tensor, xs: Tensor, ys: Tensor) -> tuple[Tensor, Tensor]:
        """Rays of camera ``cams[i]`` through pixel position (``xs[i]``, ``ys[i]``) (pixel
        centres at integer + 0.5): origins and unit directions in world, [R, 3]."""
        dt = self.world_to_camera.dtype
        x = (xs.to(dt) - self.cx[cams]) / self.fx[cams]
        y = (ys.to(dt) - self.cy[cams]) / self.fy[cams]
        d_cam = torch.stack([x, y, torch.ones_like(x)], dim=-1)  # [R, 3]
        R = self.world_to_camera[cams, :3, :3]
        d_world = torch.nn.functional.normalize(torch.einsum("rji,rj->ri", R, d_cam), dim=-1)
        return self.centers[cams], d_world


def opengl_to_opencv_c2w(c2w: Tensor) -> Tensor:
    """Camera-to-world [.., 4, 4] in OpenGL/Blender axes -> world-to-camera in OpenCV axes."""
    flip = _GL_TO_CV.to(dtype=c2w.dtype, device=c2w.device)
    return torch.linalg.inv(c2w @ flip)


def opencv_w2c_to_opengl_c2w(w2c: Tensor) -> Tensor:
    """The inverse of :func:`opengl_to_opencv_c2w`: world-to-camera [.., 4, 4] in OpenCV axes ->
    camera-to-world in OpenGL/Blender axes (what transforms.json stores)."""
    flip = _GL_TO_CV.to(dtype=w2c.dtype, device=w2c.device)
    return torch.linalg.inv(w2c) @ flip


def similarity_fit(src: Tensor, dst: Tensor) -> tuple[float, Tensor, Tensor]:
    """(s, R, t) minimising sum |dst_i - (s R src_i + t)|^2 over point sets [N, 3] (N >= 3),
    det R = +1 (Umeyama's least squares): how a set of camera centres moved as a whole."""
    if src.shape != dst.shape or src.ndim != 2 or src.shape[1] != 3 or len(src) < 3:
        raise ValueError(f"need two [N, 3] point sets with N >= 3, got {tuple(src.shape)} and {tuple(dst.shape)}")
    src, dst = src.double(), dst.double()
    mu_s, mu_d = src.mean(0), dst.mean(0)
    xs, xd = src - mu_s, dst - mu_d
    U, D, Vt = torch.linalg.svd(xd.T @ xs / len(src))
    S = torch.eye(3, dtype=torch.float64, device=src.device)
    if torch.det(U) * torch.det(Vt) < 0:  # a reflection: flip the weakest axis
        S[2, 2] = -1
    R = U @ S @ Vt
    scale = float((D * S.diagonal()).sum() / (xs.square().sum() / len(src)))
    return scale, R, mu_d - scale * R @ mu_s
