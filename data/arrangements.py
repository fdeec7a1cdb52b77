"""A family of procedural objects for lifting (issue 17): random arrangements of one to three
primitives (spheres, oriented boxes, capped cylinders) with random sizes, colours and
patterns around the origin, ray cast by :func:`splatfield.data.procedural.render_view` (exact
intersections, Lambertian shading with the demo's light and cast shadows, no ground: the
background is transparent, alpha is coverage).

Arrangement ``k`` is drawn from seed ``k`` alone, so a set of arrangements is a set of seeds.
:data:`HELD_OUT` are the seeds lifting is measured on; a prior trained on this family draws
its arrangements from seeds at or above :data:`TRAIN_SEED_START`, so it never sees them.

Views: cameras on a sphere of radius ``radius`` around the origin (world z up, OpenGL
camera-to-world as Blender), looking at it, with a vertical field of view ``fov`` degrees:
the reference camera of ``splatfield lift`` (elevation, azimuth 0) is one of them.
"""

from __future__ import annotations

import colorsys
import math
from typing import Callable

import numpy as np

from .procedural import _Box, _Cylinder, _Sphere, depth_view, render_view
from .single_view import object_camera

HELD_OUT = (0, 1, 2, 3, 4)
TRAIN_SEED_START = 1000
RADIUS = 2.5
FOV = 40.0  # degrees (square images: horizontal = vertical)


def _colour(rng: np.random.Generator) -> np.ndarray:
    return np.array(colorsys.hsv_to_rgb(rng.uniform(0, 1), rng.uniform(0.45, 0.9), rng.uniform(0.55, 0.95)))


def _striped(a: np.ndarray, b: np.ndarray, wedges: int) -> Callable[[np.ndarray], np.ndarray]:
    """A sphere's albedo of its unit normal: ``wedges`` alternating wedges in longitude."""

    def albedo(n: np.ndarray) -> np.ndarray:
        k = np.floor((np.arctan2(n[:, 1], n[:, 0]) + math.pi) / (2 * math.pi) * wedges).astype(np.int64) % 2
        return np.where(k[:, None] == 0, a, b)

    return albedo


def _cylinder_albedo(side: np.ndarray, cap: np.ndarray, bands: int, z0: float, z1: float) -> Callable:
    def albedo(local: np.ndarray, part: np.ndarray) -> np.ndarray:
        band = np.floor((local[:, 2] - z0) / max(z1 - z0, 1e-9) * bands).astype(np.int64) % 2
        on_side = np.where(band[:, None] == 0, side, 0.5 * side + 0.5)
        return np.where((part == 0)[:, None], on_side, cap)

    return albedo


def random_arrangement(seed: int) -> list:
    """The primitives of arrangement ``seed``: one to three, within about 0.8 of the origin."""
    rng = np.random.default_rng(seed)
    prims = []
    for _ in range(int(rng.integers(1, 4))):
        angle, dist = rng.uniform(0, 2 * math.pi), rng.uniform(0.0, 0.35)
        x, y, z = dist * math.cos(angle), dist * math.sin(angle), rng.uniform(-0.25, 0.25)
        kind = int(rng.integers(0, 3))
        a = _colour(rng)
        if kind == 0:
            prims.append(_Sphere((x, y, z), rng.uniform(0.2, 0.4), _striped(a, _colour(rng), 2 * int(rng.integers(1, 5)))))
        elif kind == 1:
            faces = np.stack([np.clip(a * rng.uniform(0.6, 1.2, 3), 0.05, 1.0) for _ in range(6)])
            prims.append(_Box((x, y, z), rng.uniform(0.15, 0.35, 3), rng.uniform(0, math.pi), faces))
        else:
            r, h = rng.uniform(0.15, 0.3), rng.uniform(0.2, 0.4)
            prims.append(_Cylinder((x, y), r, z - h, z + h, _cylinder_albedo(a, _colour(rng), int(rng.integers(2, 6)),
                                                                           z - h, z + h)))  # fmt: skip
    return prims


def camera(elevation: float, azimuth: float, radius: float = RADIUS) -> np.ndarray:
    """OpenGL camera-to-world [4, 4] at ``elevation``, ``azimuth`` (degrees), looking at the
    origin: ``lift``'s cameras (:func:`.single_view.object_camera`) at this family's distance."""
    return object_camera(elevation, azimuth, radius)


def render(seed_or_prims, c2w: np.ndarray, size: int = 64, fov: float = FOV, samples: int = 2) -> np.ndarray:
    """RGBA float32 [size, size, 4] of an arrangement (a seed or its primitives) through ``c2w``."""
    prims = random_arrangement(seed_or_prims) if isinstance(seed_or_prims, (int, np.integer)) else seed_or_prims
    return render_view(c2w, size, math.radians(fov), samples=samples, scene=prims)


def depth(seed_or_prims, c2w: np.ndarray, size: int = 64, fov: float = FOV) -> np.ndarray:
    """The true depth of :func:`render`'s view at each pixel centre, float32 [size, size] (inf: background)."""
    prims = random_arrangement(seed_or_prims) if isinstance(seed_or_prims, (int, np.integer)) else seed_or_prims
    return depth_view(c2w, size, math.radians(fov), scene=prims)


def training_views(seeds, views: int, size: int = 64, *, elevation: tuple[float, float] = (-10.0, 45.0),
                   rng: np.random.Generator | None = None,
                   on_seed: Callable[[int], None] | None = None) -> tuple[np.ndarray, np.ndarray]:  # fmt: skip
    """``views`` random views of each arrangement in ``seeds``: images over white, float32
    [S, V, size, size, 3] in [0, 1], and their cameras [S, V, 2] (elevation, azimuth in
    degrees; elevation uniform in ``elevation``, azimuth uniform)."""
    rng = rng or np.random.default_rng(0)
    seeds = list(seeds)
    images = np.zeros((len(seeds), views, size, size, 3), dtype=np.float32)
    cams = np.zeros((len(seeds), views, 2), dtype=np.float32)
    for i, seed in enumerate(seeds):
        prims = random_arrangement(int(seed))
        for v in range(views):
            e, a = rng.uniform(*elevation), rng.uniform(0.0, 360.0)
            images[i, v] = over_white(render(prims, camera(e, a), size))
            cams[i, v] = (e, a)
        if on_seed is not None:
            on_seed(i)
    return images, cams


def over_white(rgba: np.ndarray) -> np.ndarray:
    """RGB of an RGBA view composited over white (how the prior sees views and lift scores them)."""
    return rgba[..., :3] * rgba[..., 3:] + (1.0 - rgba[..., 3:])


def views_over_white(seed_or_prims, angles, size: int = 64) -> np.ndarray:
    """[V, size, size, 3] float32: the arrangement seen from each (elevation, azimuth) of
    ``angles`` (:func:`camera`), over white: the truth a lift's views are scored against."""
    prims = random_arrangement(seed_or_prims) if isinstance(seed_or_prims, (int, np.integer)) else seed_or_prims
    return np.stack([over_white(render(prims, camera(e, a), size)) for e, a in angles]).astype(np.float32)


def novel_view_angles(elevation: float, views: int) -> list[tuple[float, float]]:
    """The views a lift from (``elevation``, azimuth 0) is scored on: azimuths evenly around,
    half a step off the reference's, elevations alternating ``elevation`` and ``elevation + 20``."""
    return [(elevation + (20.0 if k % 2 else 0.0), 360.0 * (k + 0.5) / views) for k in range(views)]


def as_cameras(angles, size: int, fov: float = FOV, radius: float = RADIUS):
    """:class:`splatfield.render.Cameras` (float32) of (elevation, azimuth) pairs, as :func:`camera` places them."""
    import torch

    from splatfield.render import Cameras
    from splatfield.render.camera import opengl_to_opencv_c2w

    c2w = torch.tensor(np.stack([camera(e, a, radius) for e, a in angles]), dtype=torch.float64)
    f = 0.5 * size / math.tan(math.radians(fov) / 2)
    return Cameras.from_intrinsics(opengl_to_opencv_c2w(c2w), f, f, size / 2, size / 2, size, size).to(dtype=torch.float32)
