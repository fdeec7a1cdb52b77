"""Seeded random scenes for the rasterizer tests: Gaussians in float32 (what the native
kernels take) and cameras looking at them, with the awkward cases on request."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

import torch

from splatfield.render import Cameras, Gaussians

Regime = Literal["normal", "tiny", "huge", "mixed"]


@dataclass(frozen=True)
class SceneSpec:
    seed: int
    n: int
    width: int
    height: int
    sh_degree: int = 0
    background: bool = True
    antialiased: bool = False
    regime: Regime = "normal"
    cameras: int = 1
    near_cases: bool = False  # Gaussians behind the camera or straddling its near plane

    @property
    def id(self) -> str:
        return (
            f"s{self.seed}-n{self.n}-{self.width}x{self.height}-sh{self.sh_degree}-{self.regime}"
            f"{'-bg' if self.background else ''}{'-aa' if self.antialiased else ''}"
            f"{'-near' if self.near_cases else ''}-b{self.cameras}"
        )


def make_cameras(spec: SceneSpec, gen: torch.Generator) -> Cameras:
    eyes, targets = [], []
    for _ in range(spec.cameras):
        theta = float(torch.rand((), generator=gen)) * 2 * math.pi
        phi = 0.3 + 0.8 * float(torch.rand((), generator=gen))
        r = 4.0
        eyes.append([r * math.cos(theta) * math.sin(phi), -r * math.cos(phi), r * math.sin(theta) * math.sin(phi)])
        targets.append((0.2 * (torch.rand(3, generator=gen) - 0.5)).tolist())
    fov = 40 + 40 * float(torch.rand((), generator=gen))
    cams = Cameras.look_at(
        torch.tensor(eyes, dtype=torch.float64),
        torch.tensor(targets, dtype=torch.float64),
        up=(0.0, -1.0, 0.0),
        fov_y_degrees=fov,
        width=spec.width,
        height=spec.height,
    )
    # non-square pixels and an off-centre principal point
    fx = cams.fx * (0.9 + 0.2 * torch.rand(len(cams), generator=gen, dtype=torch.float64))
    cx = cams.cx + 0.1 * spec.width * (torch.rand(len(cams), generator=gen, dtype=torch.float64) - 0.5)
    return Cameras(cams.world_to_camera, fx, cams.fy, cx, cams.cy, spec.width, spec.height).to(dtype=torch.float32)


def _log_scales(spec: SceneSpec, n: int, gen: torch.Generator) -> torch.Tensor:
    u = torch.rand(n, 3, generator=gen)
    if spec.regime == "normal":
        return math.log(0.01) + u * (math.log(0.25) - math.log(0.01))
    if spec.regime == "tiny":  # far below a pixel: the 0.3-pixel dilation dominates
        return -12.0 + 2 * u
    if spec.regime == "huge":  # many image widths across
        return u * 1.5
    choice = torch.randint(0, 3, (n, 1), generator=gen)
    return torch.where(
        choice == 0,
        -12.0 + 2 * u,
        torch.where(choice == 1, u * 1.5, math.log(0.01) + u * (math.log(0.25) - math.log(0.01))),
    )


def make_gaussians(spec: SceneSpec, gen: torch.Generator, cameras: Cameras) -> Gaussians:
    n = spec.n
    means = (torch.rand(n, 3, generator=gen) - 0.5) * 3.0
    if spec.near_cases and n >= 4:
        # a quarter of them near the first camera: behind it, straddling its near plane
        # (centre just in front, footprint reaching behind) and just in front of it
        k = n // 4
        c2w = torch.linalg.inv(cameras.world_to_camera[0].double()).float()
        z = torch.cat([
            -0.5 - torch.rand(k // 3, generator=gen),  # behind
            0.02 + 0.2 * torch.rand(k - k // 3, generator=gen),  # in front, close
        ])  # fmt: skip
        xy = (torch.rand(k, 2, generator=gen) - 0.5) * z.abs()[:, None] * 0.8
        pts_cam = torch.cat([xy, z[:, None], torch.ones(k, 1)], 1)
        means[:k] = (pts_cam @ c2w.T)[:, :3]
    log_scales = _log_scales(spec, n, gen)
    if spec.near_cases and n >= 4:
        # still straddling (extent >> distance), without the float32-degenerate conics of
        # several-metre Gaussians 2 cm from the camera
        log_scales[: n // 4] = log_scales[: n // 4].clamp(max=math.log(0.5))
    quats = torch.randn(n, 4, generator=gen)
    opacity_logits = torch.logit(0.05 + 0.94 * torch.rand(n, generator=gen))
    K = (spec.sh_degree + 1) ** 2
    sh0 = 0.6 * torch.randn(n, 1, 3, generator=gen)
    shN = 0.25 * torch.randn(n, K - 1, 3, generator=gen)
    return Gaussians(means, log_scales, quats, opacity_logits, sh0, shN)


def recentre(gaussians: Gaussians, cameras: Cameras) -> tuple[Gaussians, Cameras]:
    """The same scene in a world frame whose origin is the first camera's centre.

    Near-plane cases put Gaussians centimetres from a camera that sits metres from the
    origin; in float32, R mu + t then cancels catastrophically, an input-conditioning
    error that no kernel can avoid. Moving the origin keeps the geometry and removes it.
    """
    c = cameras.centers[0].double()
    w2c = cameras.world_to_camera.double().clone()
    w2c[:, :3, 3] += (w2c[:, :3, :3] @ c)
    means = (gaussians.means.double() - c).float()
    return gaussians.with_(means=means), Cameras(
        w2c.float(), cameras.fx, cameras.fy, cameras.cx, cameras.cy, cameras.width, cameras.height
    )


def make_scene(spec: SceneSpec) -> tuple[Gaussians, Cameras, torch.Tensor | None]:
    gen = torch.Generator().manual_seed(spec.seed)
    cameras = make_cameras(spec, gen)
    gaussians = make_gaussians(spec, gen, cameras)
    if spec.near_cases:
        gaussians, cameras = recentre(gaussians, cameras)
    background = torch.rand(spec.cameras, 3, generator=gen) if spec.background else None
    return gaussians, cameras, background


def suite(count: int = 56) -> list[SceneSpec]:
    """Deterministic mix of sizes, degrees and regimes for the native-vs-reference suite."""
    gen = torch.Generator().manual_seed(1234)
    sizes = [(1, 1), (3, 2), (16, 16), (17, 33), (40, 23), (64, 48), (97, 61), (128, 96)]
    ns = [1, 2, 5, 30, 200, 1000, 3000]
    regimes: list[Regime] = ["normal", "normal", "mixed", "tiny", "huge"]
    specs = []
    for i in range(count):
        w, h = sizes[i % len(sizes)]
        specs.append(
            SceneSpec(
                seed=1000 + i,
                n=ns[int(torch.randint(0, len(ns), (), generator=gen))],
                width=w,
                height=h,
                sh_degree=i % 4,
                background=bool(i % 3),
                antialiased=(i % 5 == 4),
                regime=regimes[i % len(regimes)],
                cameras=1 + (i % 7 == 3),
                near_cases=(i % 4 == 1),
            )
        )
    # the large corners of the range: many Gaussians, the largest image
    specs.append(SceneSpec(seed=77, n=20000, width=96, height=64, sh_degree=3, regime="normal"))
    specs.append(SceneSpec(seed=78, n=4000, width=256, height=192, sh_degree=1, regime="mixed", near_cases=True))
    return specs


def closed_form_image(means, scales, opacities, rgb, fx, fy, cx, cy, width, height, background=(0.0, 0.0, 0.0)):
    """An oracle independent of splatfield's code: isotropic Gaussians (scale per row) seen
    by a camera at the origin looking down +z, rendered pixel by pixel in float64 from the
    method's definition (EWA projection J s^2 J^T, 0.3-pixel dilation, pixel centres at
    +0.5, alpha = min(0.99, o exp(-d^T C d / 2)) skipped below 1/255, front to back, stop
    before T <= 1e-4). Returns [height, width, 3]."""
    import numpy as np

    means, rgb = np.asarray(means, np.float64), np.asarray(rgb, np.float64)
    image = np.zeros((height, width, 3))
    for py in range(height):
        for px in range(width):
            T, colour = 1.0, np.zeros(3)
            for i in np.argsort(means[:, 2], kind="stable"):
                x, y, z = means[i]
                J = np.array([[fx / z, 0.0, -fx * x / z**2], [0.0, fy / z, -fy * y / z**2]])
                conic = np.linalg.inv(float(scales[i]) ** 2 * J @ J.T + 0.3 * np.eye(2))
                d = np.array([px + 0.5 - (fx * x / z + cx), py + 0.5 - (fy * y / z + cy)])
                alpha = min(0.99, float(opacities[i]) * math.exp(-0.5 * d @ conic @ d))
                if alpha < 1.0 / 255.0:
                    continue
                if T * (1.0 - alpha) <= 1e-4:
                    break
                colour += T * alpha * rgb[i]
                T *= 1.0 - alpha
            image[py, px] = colour + T * np.asarray(background, np.float64)
    return image
