"""The shared benchmark scene: its file format, its camera, and a seeded generator.

File format (``../shared/bench/README.md``): float32 little-endian, row-major ``(N, 14)``::

    x y z | log_scale0 log_scale1 log_scale2 | qw qx qy qz | opacity | r g b

``opacity`` is a probability (not a logit) and ``r g b`` a plain colour in [0, 1] (no SH).
Camera: OpenCV axes, identity world-to-camera, a 60 degree field of view in both axes
(``fx = W/2 / tan 30°``, ``fy = H/2 / tan 30°``, ``cx = W/2``, ``cy = H/2``); at 400x400
that is the README's fx = fy = 346.41, cx = cy = 200.

Errors in a file are raised as :class:`InputError` (the file and one line saying what is
wrong), which the command line prints without a traceback.
"""

from __future__ import annotations

import math
import os
from pathlib import Path

import numpy as np
import torch

from splatfield.render import Cameras, Gaussians

ROW_FLOATS = 14
ROW_BYTES = ROW_FLOATS * 4
FOV_DEGREES = 60.0
COLUMNS = ("x", "y", "z", "log_scale0", "log_scale1", "log_scale2", "qw", "qx", "qy", "qz", "opacity", "r", "g", "b")


class InputError(Exception):
    """Bad input from the user: ``path`` (a file, or an option such as ``--width``) and the problem."""

    def __init__(self, path: str | os.PathLike[str], problem: str) -> None:
        super().__init__(f"{os.fspath(path)}: {problem}")
        self.path = os.fspath(path)
        self.problem = problem


def bench_camera(width: int = 400, height: int = 400, dtype: torch.dtype = torch.float32) -> Cameras:
    """The benchmark camera: identity world-to-camera, 60 degree field of view in x and in y."""
    t = math.tan(math.radians(FOV_DEGREES / 2))
    return Cameras.from_intrinsics(
        torch.eye(4, dtype=dtype), 0.5 * width / t, 0.5 * height / t, width / 2, height / 2, width, height
    )


def read_bench_rows(path: str | os.PathLike[str]) -> np.ndarray:
    """Reads and validates a benchmark scene file; returns float32 ``[N, 14]``."""
    p = Path(path)
    try:
        size = p.stat().st_size
        if p.is_dir():
            raise IsADirectoryError(21, "Is a directory")
        if size == 0:
            raise InputError(path, "empty file (expected float32 rows of 14 values)")
        if size % ROW_BYTES:
            raise InputError(
                path,
                f"size {size} bytes is not a multiple of {ROW_BYTES} "
                f"(float32 rows of {ROW_FLOATS}: x y z | log_scale0..2 | qw qx qy qz | opacity | r g b); "
                f"truncated or not a benchmark scene",
            )
        rows = np.fromfile(p, dtype="<f4").reshape(-1, ROW_FLOATS)
    except OSError as exc:
        raise InputError(path, (exc.strerror or str(exc)).lower()) from None
    if rows.shape[0] * ROW_BYTES != size:  # changed while being read
        raise InputError(path, f"read {rows.shape[0] * ROW_BYTES} of {size} bytes")
    bad = ~np.isfinite(rows)
    if bad.any():
        r, c = np.argwhere(bad)[0]
        raise InputError(path, f"row {r}: {COLUMNS[c]} is not finite ({rows[r, c]}); {int(bad.sum())} such values")
    op = rows[:, 10]
    out = (op < 0) | (op > 1)
    if out.any():
        r = int(np.argmax(out))
        raise InputError(path, f"row {r}: opacity {op[r]} is outside [0, 1] (stored as a probability, not a logit)")
    if not (np.square(rows[:, 6:10]).sum(1) > 0).all():
        r = int(np.argmax(~(np.square(rows[:, 6:10]).sum(1) > 0)))
        raise InputError(path, f"row {r}: the quaternion is zero")
    return rows.astype(np.float32, copy=False)


def gaussians_from_rows(rows: np.ndarray, sh_degree: int = 0) -> Gaussians:
    """``[N, 14]`` rows -> raw Gaussians (float32): opacity logit, sh0 = (rgb - 0.5) / C0, higher SH zero."""
    t = torch.from_numpy(np.ascontiguousarray(rows, dtype=np.float32))
    log_scales = t[:, 3:6].clone()
    # Probabilities of exactly 0 or 1 would give infinite logits.
    eps = 1e-6
    g = Gaussians.from_rgb(
        means=t[:, 0:3].clone(),
        scales=torch.exp(log_scales),
        quats=t[:, 6:10].clone(),
        opacities=t[:, 10].clamp(eps, 1 - eps),
        rgb=t[:, 11:14].clone(),
        sh_degree=sh_degree,
    )
    return g.with_(log_scales=log_scales)  # the file's log-scales bit for bit (no exp/log round trip)


def read_bench_scene(path: str | os.PathLike[str], sh_degree: int = 0) -> Gaussians:
    """Reads the shared benchmark scene format into float32 :class:`Gaussians`."""
    return gaussians_from_rows(read_bench_rows(path), sh_degree=sh_degree)


def random_uniform_quats(n: int, generator: torch.Generator, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """``[n, 4]`` unit quaternions (w, x, y, z) uniform over rotations (Shoemake's subgroup method)."""
    u1, u2, u3 = torch.rand(3, n, generator=generator, dtype=torch.float64)
    a, b = torch.sqrt(1 - u1), torch.sqrt(u1)
    q = torch.stack(
        [a * torch.cos(2 * math.pi * u2), a * torch.sin(2 * math.pi * u2),
         b * torch.cos(2 * math.pi * u3), b * torch.sin(2 * math.pi * u3)], -1,
    )  # fmt: skip
    return q.to(dtype)


def random_bench_gaussians(
    n: int,
    camera: Cameras,
    *,
    seed: int = 0,
    sh_degree: int = 0,
    z_range: tuple[float, float] = (2.0, 6.0),
    scale_range: tuple[float, float] = (0.005, 0.05),
    opacity_range: tuple[float, float] = (0.1, 0.9),
) -> Gaussians:
    """``n`` random Gaussians distributed like the shared benchmark scene, from a seeded generator.

    In the first camera's frame: depth ``z ~ U[z_range]``; ``x`` and ``y`` uniform across the
    frustum at that depth (every centre projects inside the image); log-scales
    ``~ U[ln s0, ln s1]`` per axis; uniformly random rotations; opacity ``~ U[opacity_range]``;
    rgb ``~ U[0, 1]``. Higher SH coefficients (``sh_degree > 0``) are zero. Float32, on the
    camera's device. Same ``seed`` -> same Gaussians.
    """
    if n < 0:
        raise ValueError(f"n must be >= 0, got {n}")
    gen = torch.Generator().manual_seed(int(seed))
    f64 = torch.float64
    cam = camera[0].to(dtype=f64, device="cpu")
    fx, fy, cx, cy = (float(v) for v in cam.Ks[0])
    W, H = cam.width, cam.height

    def uniform(lo: float, hi: float, *shape: int) -> torch.Tensor:
        return lo + (hi - lo) * torch.rand(*shape, generator=gen, dtype=f64)

    z = uniform(*z_range, n)
    x = z * uniform(-cx / fx, (W - cx) / fx, n)
    y = z * uniform(-cy / fy, (H - cy) / fy, n)
    log_scales = uniform(math.log(scale_range[0]), math.log(scale_range[1]), n, 3)
    quats = random_uniform_quats(n, gen, f64)
    opacities = uniform(*opacity_range, n)
    rgb = uniform(0.0, 1.0, n, 3)

    c2w = cam.camera_to_world[0]
    means = torch.stack([x, y, z], -1) @ c2w[:3, :3].T + c2w[:3, 3]
    g = Gaussians.from_rgb(means, torch.exp(log_scales), quats, opacities, rgb, sh_degree=sh_degree)
    g = g.with_(log_scales=log_scales)
    return g.to(device=camera.device, dtype=torch.float32)
