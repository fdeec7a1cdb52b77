"""``splatfield demo``: shows the rasterizer working on a procedural scene.

Until the trainer exists the demo builds a colourful, recognisable scene directly out of
Gaussians (a torus knot with a rainbow along its length, a striped sphere inside it, a
ring around it and a checkered ground), renders an orbit around it with the native
rasterizer, writes the frames and a contact sheet, and checks one small view against the
float64 PyTorch reference.

Nothing here prints; :mod:`splatfield.apps.cli` does (progress goes through a callback).
"""

from __future__ import annotations

import math
import statistics
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np
import torch
from torch import Tensor

from splatfield.render import Cameras, Gaussians, rasterize, resolve_backend

from .scene_io import random_uniform_quats

BACKGROUND = (0.06, 0.06, 0.09)
CHECK_SIZE = 64
CHECK_GAUSSIANS = 3000
# Native (float32) vs reference (float64) on the same view: float32 rounding, plus the odd
# pixel where a contribution sits exactly at the alpha >= 1/255 cut-off in one but not
# the other (a step of at most ~1/255 of a colour).
CHECK_TOLERANCE = 1e-2


# ----------------------------------------------------------------------------- scene


def _hsv_to_rgb(h: Tensor, s: Tensor | float, v: Tensor | float) -> Tensor:  # [...] -> [..., 3]
    h = torch.remainder(h, 1.0)
    s = torch.as_tensor(s, dtype=h.dtype).expand_as(h)
    v = torch.as_tensor(v, dtype=h.dtype).expand_as(h)
    k = torch.stack([torch.remainder(n + h * 6, 6) for n in (5.0, 3.0, 1.0)], -1)
    return v[..., None] - v[..., None] * s[..., None] * torch.clamp(torch.minimum(k, 4 - k), 0, 1)


def _unit(v: Tensor) -> Tensor:
    return torch.nn.functional.normalize(v, dim=-1)


def _torus_knot(n: int, gen: torch.Generator) -> tuple[Tensor, Tensor, float]:
    """(2, 3) torus knot, a tube around it, rainbow hue along its length."""
    p, q, R, r, tube = 2, 3, 1.0, 0.42, 0.14
    t = 2 * math.pi * torch.rand(n, generator=gen, dtype=torch.float64)

    def curve(t: Tensor) -> Tensor:
        rho = R + r * torch.cos(q * t)
        return torch.stack([rho * torch.cos(p * t), 0.15 + r * torch.sin(q * t), rho * torch.sin(p * t)], -1)

    c = curve(t)
    tangent = _unit(curve(t + 1e-4) - curve(t - 1e-4))
    v = torch.randn(n, 3, generator=gen, dtype=torch.float64)
    normal = _unit(v - (v * tangent).sum(-1, keepdim=True) * tangent)
    pos = c + tube * normal
    theta = torch.atan2(normal[:, 1], (normal[:, 0] ** 2 + normal[:, 2] ** 2).sqrt())
    shade = 0.75 + 0.25 * torch.sin(theta)  # lit from above
    rgb = _hsv_to_rgb(t / (2 * math.pi), 0.8, 1.0) * shade[:, None]
    area = 2 * math.pi * tube * 14.0
    return pos, rgb, area


def _sphere_shell(n: int, gen: torch.Generator) -> tuple[Tensor, Tensor, float]:
    """Sphere shell in the knot's hole, white and blue latitude stripes."""
    radius, centre = 0.38, torch.tensor([0.0, 0.15, 0.0], dtype=torch.float64)
    d = _unit(torch.randn(n, 3, generator=gen, dtype=torch.float64))
    lat = torch.asin(d[:, 1].clamp(-1, 1))
    stripe = (torch.floor(lat / (math.pi / 8)).remainder(2) == 0)[:, None]
    blue = torch.tensor([0.15, 0.35, 0.95], dtype=torch.float64)
    white = torch.tensor([0.95, 0.95, 0.92], dtype=torch.float64)
    rgb = torch.where(stripe, blue, white) * (0.8 + 0.2 * d[:, 1:2])
    return centre + radius * d, rgb, 4 * math.pi * radius**2


def _ring(n: int, gen: torch.Generator) -> tuple[Tensor, Tensor, float]:
    """A thin horizontal ring around everything, gold to magenta."""
    big, tube, height = 2.0, 0.06, -0.35
    phi = 2 * math.pi * torch.rand(n, generator=gen, dtype=torch.float64)
    psi = 2 * math.pi * torch.rand(n, generator=gen, dtype=torch.float64)
    rho = big + tube * torch.cos(psi)
    pos = torch.stack([rho * torch.cos(phi), height + tube * torch.sin(psi), rho * torch.sin(phi)], -1)
    w = (0.5 + 0.5 * torch.cos(phi))[:, None]
    gold = torch.tensor([1.0, 0.78, 0.2], dtype=torch.float64)
    magenta = torch.tensor([0.9, 0.2, 0.7], dtype=torch.float64)
    return pos, w * gold + (1 - w) * magenta, 4 * math.pi**2 * big * tube


def _ground(n: int, gen: torch.Generator) -> tuple[Tensor, Tensor, float]:
    """Checkered ground plane, its hue drifting across x, fading towards the edges."""
    half, height, tile = 3.0, -1.1, 0.5
    xz = (2 * torch.rand(n, 2, generator=gen, dtype=torch.float64) - 1) * half
    pos = torch.stack([xz[:, 0], torch.full((n,), height, dtype=torch.float64), xz[:, 1]], -1)
    check = (torch.floor(xz[:, 0] / tile) + torch.floor(xz[:, 1] / tile)).remainder(2)
    hue = 0.45 + 0.1 * xz[:, 0] / half
    rgb = _hsv_to_rgb(hue, 0.5, 0.35 + 0.45 * check)
    fade = (1 - 0.6 * (xz.norm(dim=-1) / (half * math.sqrt(2))) ** 2)[:, None]
    return pos, rgb * fade, (2 * half) ** 2


def demo_scene(n: int = 20000, seed: int = 0) -> Gaussians:
    """A seeded procedural scene of ``n`` Gaussians (float32, y up, centred on the origin)."""
    if n < 4:
        raise ValueError(f"the demo scene needs at least 4 Gaussians, got {n}")
    gen = torch.Generator().manual_seed(int(seed))
    parts = [(_torus_knot, 0.40), (_sphere_shell, 0.15), (_ring, 0.15), (_ground, 0.30)]
    counts = [max(1, int(n * f)) for _, f in parts]
    counts[0] += n - sum(counts)
    means, scales, rgbs, flat = [], [], [], []
    for (make, _), k in zip(parts, counts):
        pos, rgb, area = make(k, gen)
        s = 0.8 * math.sqrt(area / k)  # about the spacing of the points: a closed surface
        jitter = torch.exp(0.25 * torch.randn(k, 3, generator=gen, dtype=torch.float64))
        sc = s * jitter
        if make is _ground:
            sc[:, 1] = 0.004  # flat tiles; rotations are identity below
        means.append(pos)
        scales.append(sc)
        rgbs.append(rgb.clamp(0, 1))
        flat.append(torch.full((k,), make is _ground))
    means_t, scales_t, rgb_t, flat_t = (torch.cat(x) for x in (means, scales, rgbs, flat))
    quats = random_uniform_quats(n, gen, torch.float64)
    quats[flat_t] = torch.tensor([1.0, 0.0, 0.0, 0.0], dtype=torch.float64)
    opac = 0.75 + 0.2 * torch.rand(n, generator=gen, dtype=torch.float64)
    g = Gaussians.from_rgb(means_t, scales_t, quats, opac, rgb_t)
    return g.to(dtype=torch.float32)


def orbit_cameras(frames: int, size: int, radius: float = 5.2, height: float = 2.1, fov_y: float = 45.0) -> Cameras:
    """``frames`` pinhole cameras evenly around the y axis, looking at the scene's centre."""
    phi = torch.arange(frames, dtype=torch.float64) * (2 * math.pi / frames)
    eyes = torch.stack([radius * torch.sin(phi), torch.full_like(phi, height), radius * torch.cos(phi)], -1)
    targets = torch.tensor([0.0, -0.15, 0.0], dtype=torch.float64).expand_as(eyes)
    return Cameras.look_at(eyes, targets, (0.0, 1.0, 0.0), fov_y, size, size).to(dtype=torch.float32)


# ----------------------------------------------------------------------------- images


def to_uint8(image: Tensor) -> np.ndarray:  # [H, W, 3] in [0, 1] -> uint8
    return (image.detach().clamp(0, 1) * 255 + 0.5).to(torch.uint8).cpu().numpy()


def contact_sheet(images: list[np.ndarray], tile: int = 256, gap: int = 4) -> "PIL.Image.Image":  # noqa: F821
    from PIL import Image

    cols = max(1, math.ceil(math.sqrt(len(images))))
    rows = max(1, math.ceil(len(images) / cols))
    h, w = images[0].shape[:2]
    tw = min(tile, w)
    th = max(1, round(h * tw / w))
    sheet = Image.new("RGB", (gap + cols * (tw + gap), gap + rows * (th + gap)), (20, 20, 24))
    for i, arr in enumerate(images):
        im = Image.fromarray(arr)
        if (tw, th) != (w, h):
            im = im.resize((tw, th), Image.Resampling.LANCZOS)
        r, c = divmod(i, cols)
        sheet.paste(im, (gap + c * (tw + gap), gap + r * (th + gap)))
    return sheet


# ----------------------------------------------------------------------------- run


@dataclass
class DemoResult:
    backend: str
    gaussians: int
    frames: int
    size: int
    frame_ms_median: float
    frames_dir: Path
    contact_sheet: Path
    check_max_abs_diff: float | None  # native float32 vs reference float64; None if native is unavailable
    check_size: int
    check_gaussians: int

    @property
    def check_ok(self) -> bool:
        return self.check_max_abs_diff is None or self.check_max_abs_diff <= CHECK_TOLERANCE


def check_against_reference(scene: Gaussians, camera: Cameras, *, seed: int = 0) -> tuple[float, int]:
    """Renders a ``CHECK_SIZE`` view of a subset with the native backend (float32) and the reference
    (float64); returns the max abs image difference and the subset's size."""
    k = min(CHECK_GAUSSIANS, len(scene))
    gen = torch.Generator().manual_seed(int(seed) + 1)
    sub = scene.select(torch.randperm(len(scene), generator=gen)[:k])
    cam = camera.scale(CHECK_SIZE / camera.width)
    with torch.no_grad():
        native = rasterize(sub, cam, background=BACKGROUND, backend="native").image
        ref = rasterize(
            sub.to(dtype=torch.float64), cam.to(dtype=torch.float64), background=BACKGROUND, backend="reference"
        ).image
    return float((native.double() - ref).abs().max()), k


def run_demo(
    out: Path,
    *,
    frames: int = 24,
    size: int = 256,
    gaussians: int = 20000,
    seed: int = 0,
    on_frame: Callable[[int], None] | None = None,
) -> DemoResult:
    """Builds the scene, renders the orbit into ``out/frames/``, writes ``out/contact_sheet.png``
    and checks a small view against the reference. ``on_frame(i)`` is called after each frame."""
    from PIL import Image

    scene = demo_scene(gaussians, seed)
    cams = orbit_cameras(frames, size)
    backend = resolve_backend("auto", scene.device)  # native unless it cannot be built (warns once)
    frames_dir = out / "frames"
    frames_dir.mkdir(parents=True, exist_ok=True)
    for old in frames_dir.glob("frame_*.png"):  # a previous, longer orbit
        old.unlink()
    images, times = [], []
    digits = max(3, len(str(frames - 1)))
    for i in range(frames):
        t0 = time.perf_counter()
        with torch.no_grad():
            img = rasterize(scene, cams[i], background=BACKGROUND, antialiased=False, backend=backend).image[0]
        times.append((time.perf_counter() - t0) * 1e3)
        arr = to_uint8(img)
        Image.fromarray(arr).save(frames_dir / f"frame_{i:0{digits}d}.png")
        images.append(arr)
        if on_frame is not None:
            on_frame(i)
    sheet_path = out / "contact_sheet.png"
    tmp = sheet_path.with_name(f".{sheet_path.name}.tmp")
    contact_sheet(images).save(tmp, format="PNG")
    tmp.replace(sheet_path)
    diff, k = (None, 0)
    if backend == "native":
        diff, k = check_against_reference(scene, cams[0], seed=seed)
    return DemoResult(
        backend=backend,
        gaussians=len(scene),
        frames=frames,
        size=size,
        frame_ms_median=float(statistics.median(times)),
        frames_dir=frames_dir,
        contact_sheet=sheet_path,
        check_max_abs_diff=diff,
        check_size=CHECK_SIZE,
        check_gaussians=k,
    )
