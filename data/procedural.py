"""A procedural Blender-format (nerf_synthetic) dataset, rendered by a small ray caster.

``splatfield demo`` needs posed images of a scene that ships with nobody's download. This
module builds one: a few analytic primitives standing on a round plate, ray cast with numpy
and written as ``transforms_train.json`` / ``transforms_test.json`` (plus a
``transforms_val.json`` that repeats the test frames, as nerf_synthetic has one) with RGBA
PNGs under ``train/`` and ``test/``, which :func:`splatfield.data.load` reads like the real
lego scene.

Why a separate renderer: a reconstruction fitted to images that splatfield's own Gaussian
rasterizer produced would only show the rasterizer agreeing with itself. Here the images
come from exact ray-primitive intersections (spheres, a rotated box, capped cylinders)
with no Gaussians anywhere, so a model that fits them has learned the scene, and PSNR on
the held-out views measures something.

The scene (world z up, as Blender; everything inside [-1, 1]^3):

- a plate (cylinder, radius 0.95, top at z = -0.5): a cream / navy checkerboard of
  0.19-unit squares with an orange ring; a grey rim with light vertical stripes;
- a "beach ball" sphere (radius 0.42) on the plate: 8 coloured wedges in longitude,
  darker alternate bands in latitude, a white cap at the top;
- a box rotated 35 degrees about z: one colour per face, each face a 4 x 4 checkerboard of
  that colour and a pale tint of it;
- on top of the box, a gradient sphere (:data:`GRADIENT_SPHERE`) whose albedo is
  ``0.1 + 0.85 * (0.5 + 0.5 * normal)``: a smooth colour gradient over its surface;
- a pillar (capped cylinder) with helical magenta / white / teal stripes, a yellow top;
- a small lime sphere with dark green dots.

Shading is view independent, so Gaussians with low SH degree can fit it: Lambertian plus
ambient from one fixed directional light, ``albedo * (AMBIENT + (1 - AMBIENT) * lit *
max(0, n . LIGHT_DIR))`` where ``lit`` is 0 in a cast shadow. Each pixel averages a
``samples x samples`` grid of rays (2 x 2 by default): colour is the mean over the rays
that hit, alpha the fraction that hit (coverage), so the background is transparent.

Cameras are OpenGL / Blender camera-to-world (x right, y up, looking along -z) on a sphere
of radius :data:`RADIUS` looking at the origin, with lego's ``camera_angle_x``; train views
follow a Fibonacci spiral over the upper hemisphere, test views a ring at 30 degrees
elevation, both turned by a phase drawn from ``seed``.

Nothing here prints; ``on_view`` reports progress.
"""

from __future__ import annotations

import json
import math
import os
import shutil
import tempfile
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
from PIL import Image

__all__ = [
    "write_demo_dataset", "render_view", "camera_poses", "look_at_c2w", "visible_surface",
    "CAMERA_ANGLE_X", "RADIUS", "LIGHT_DIR", "AMBIENT", "GRADIENT_SPHERE", "TEST_ELEVATION_DEG",
]

VERSION = 1  # bump when the scene, shading or cameras change: stored datasets are re-rendered
CAMERA_ANGLE_X = 0.6911112070083618  # lego's horizontal field of view (radians)
RADIUS = 4.0  # camera distance from the origin
TRAIN_ELEVATION_DEG = (8.0, 80.0)  # the Fibonacci spiral's band of elevations
TEST_ELEVATION_DEG = 30.0
LIGHT_DIR = np.array([0.5, 0.3, 0.8]) / np.linalg.norm([0.5, 0.3, 0.8])  # towards the light
AMBIENT = 0.35
GRADIENT_SPHERE = ((0.38, -0.30, 0.36), 0.2)  # (centre, radius) of the gradient-albedo sphere

_EPS = 1e-6
_SHADOW_OFFSET = 1e-4
_PARAMS_FILE = "procedural.json"


# ----------------------------------------------------------------------------- primitives
# Each primitive: ``intersect(o, d) -> (t, part)`` for N rays (unit directions), t = inf on a
# miss, part an int id of the face hit; ``surface(p, part) -> (normal, albedo)`` at hit points.


def _rows_dot(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return np.einsum("ij,ij->i", a, b)


def _times(a: np.ndarray, m: np.ndarray) -> np.ndarray:
    """``a @ m`` for rows a [N, 3] and m [3, 3] (einsum: BLAS is slower at this shape)."""
    return np.einsum("ij,jk->ik", a, m)


def _normalized(a: np.ndarray) -> np.ndarray:
    return a / np.sqrt(_rows_dot(a, a))[:, None]


def _nearest_positive(t0: np.ndarray, t1: np.ndarray) -> np.ndarray:
    """Per ray, the smaller of two hit distances that lie in front of it (inf: neither)."""
    t0 = np.where(t0 > _EPS, t0, np.inf)
    t1 = np.where(t1 > _EPS, t1, np.inf)
    return np.minimum(t0, t1)


class _Sphere:
    def __init__(self, centre, radius: float, albedo: Callable[[np.ndarray], np.ndarray]) -> None:
        self.c = np.asarray(centre, dtype=np.float64)
        self.r = float(radius)
        self.albedo = albedo  # of the unit normal
        self.bound = (self.c, self.r)

    def intersect(self, o: np.ndarray, d: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        oc = o - self.c
        b = _rows_dot(oc, d)
        disc = b * b - (_rows_dot(oc, oc) - self.r * self.r)
        s = np.sqrt(np.maximum(disc, 0.0))
        t = np.where(disc >= 0.0, _nearest_positive(-b - s, -b + s), np.inf)
        return t, np.zeros(len(t), dtype=np.int8)

    def surface(self, p: np.ndarray, part: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        n = _normalized(p - self.c)
        return n, self.albedo(n)


class _Box:
    """Oriented box: centre, half extents, rotation by ``yaw`` radians about z."""

    def __init__(self, centre, half, yaw: float, face_colours: np.ndarray) -> None:
        self.c = np.asarray(centre, dtype=np.float64)
        self.h = np.asarray(half, dtype=np.float64)
        cy, sy = math.cos(yaw), math.sin(yaw)
        self.R = np.array([[cy, -sy, 0.0], [sy, cy, 0.0], [0.0, 0.0, 1.0]])  # local -> world
        self.face_colours = face_colours  # [6, 3]: -x +x -y +y -z +z
        self.bound = (self.c, float(np.linalg.norm(self.h)))

    def intersect(self, o: np.ndarray, d: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        ol = _times(o - self.c, self.R)
        dl = _times(d, self.R)
        with np.errstate(divide="ignore", invalid="ignore"):
            inv = 1.0 / dl
            ta = (-self.h - ol) * inv
            tb = (self.h - ol) * inv
        ta = np.nan_to_num(ta, nan=-np.inf)
        tb = np.nan_to_num(tb, nan=np.inf)
        tnear = np.minimum(ta, tb).max(axis=1)
        tfar = np.maximum(ta, tb).min(axis=1)
        t = np.where(tnear <= tfar, _nearest_positive(tnear, tfar), np.inf)
        return t, np.zeros(len(t), dtype=np.int8)

    def surface(self, p: np.ndarray, part: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        pl = _times(p - self.c, self.R)
        q = pl / self.h  # in [-1, 1]^3; the face is where |q| is largest
        axis = np.abs(q).argmax(axis=1)
        rows = np.arange(len(p))
        sign = np.sign(q[rows, axis])
        sign[sign == 0] = 1.0
        nl = np.zeros_like(pl)
        nl[rows, axis] = sign
        face = 2 * axis + (sign > 0)
        # 4 x 4 checkerboard over the face's two other axes
        u = q[rows, (axis + 1) % 3]
        v = q[rows, (axis + 2) % 3]
        odd = (np.floor((u + 1.0) * 2.0) + np.floor((v + 1.0) * 2.0)) % 2 == 1
        base = self.face_colours[face]
        albedo = np.where(odd[:, None], 0.45 * base + 0.55, base)
        return _times(nl, self.R.T), albedo


class _Cylinder:
    """Capped cylinder along z: centre (x, y), radius, z0 < z1. Parts: 0 side, 1 top, 2 bottom."""

    def __init__(self, xy, radius: float, z0: float, z1: float, albedo: Callable) -> None:
        self.xy = np.asarray(xy, dtype=np.float64)
        self.r = float(radius)
        self.z0, self.z1 = float(z0), float(z1)
        self.albedo = albedo  # (local point [N, 3] relative to (x, y, 0), part [N]) -> [N, 3]
        half = 0.5 * (self.z1 - self.z0)
        self.bound = (np.array([self.xy[0], self.xy[1], self.z0 + half]), math.hypot(self.r, half))

    def intersect(self, o: np.ndarray, d: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        ox, oy, oz = o[:, 0] - self.xy[0], o[:, 1] - self.xy[1], o[:, 2]
        dx, dy, dz = d[:, 0], d[:, 1], d[:, 2]
        a = dx * dx + dy * dy
        b = ox * dx + oy * dy
        disc = b * b - a * (ox * ox + oy * oy - self.r * self.r)
        s = np.sqrt(np.maximum(disc, 0.0))
        with np.errstate(divide="ignore", invalid="ignore"):
            t_side = [(-b - s) / a, (-b + s) / a]
            t_cap = [(self.z1 - oz) / dz, (self.z0 - oz) / dz]
        best = np.full(len(o), np.inf)
        part = np.zeros(len(o), dtype=np.int8)
        for t in t_side:
            z = oz + t * dz
            ok = (disc >= 0.0) & (a > 1e-12) & (t > _EPS) & (z >= self.z0) & (z <= self.z1) & (t < best)
            best = np.where(ok, t, best)
            part = np.where(ok, 0, part)
        for k, t in enumerate(t_cap, start=1):
            x, y = ox + t * dx, oy + t * dy
            ok = np.isfinite(t) & (t > _EPS) & (x * x + y * y <= self.r * self.r) & (t < best)
            best = np.where(ok, t, best)
            part = np.where(ok, k, part)
        return best, part.astype(np.int8)

    def surface(self, p: np.ndarray, part: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        local = p - np.array([self.xy[0], self.xy[1], 0.0])
        radial = local[:, :2] / np.maximum(np.linalg.norm(local[:, :2], axis=1, keepdims=True), 1e-12)
        n = np.zeros_like(p)
        n[:, :2] = np.where((part == 0)[:, None], radial, 0.0)
        n[:, 2] = np.where(part == 1, 1.0, np.where(part == 2, -1.0, 0.0))
        return n, self.albedo(local, part)


# ----------------------------------------------------------------------------- textures


def _rgb(*cs) -> np.ndarray:
    return np.array(cs, dtype=np.float64)


_WEDGES = _rgb((0.90, 0.12, 0.12), (0.98, 0.55, 0.08), (0.98, 0.88, 0.12), (0.20, 0.75, 0.20),
               (0.10, 0.75, 0.85), (0.15, 0.30, 0.90), (0.55, 0.20, 0.80), (0.95, 0.40, 0.70))


def _beach_ball(n: np.ndarray) -> np.ndarray:
    phi = np.arctan2(n[:, 1], n[:, 0])
    wedge = np.floor((phi + math.pi) / (2 * math.pi) * 8).astype(int) % 8
    theta = np.arccos(np.clip(n[:, 2], -1.0, 1.0))
    dark = np.floor(theta / (math.pi / 6)).astype(int) % 2 == 1
    c = _WEDGES[wedge] * np.where(dark, 0.6, 1.0)[:, None]
    return np.where((n[:, 2] > 0.92)[:, None], 0.95, c)


def _gradient(n: np.ndarray) -> np.ndarray:
    return 0.1 + 0.85 * (0.5 + 0.5 * n)


def _dotted(n: np.ndarray) -> np.ndarray:
    phi = np.arctan2(n[:, 1], n[:, 0])
    theta = np.arccos(np.clip(n[:, 2], -1.0, 1.0))
    dot = np.sin(6 * phi) * np.sin(6 * theta) > 0.55
    return np.where(dot[:, None], _rgb(0.10, 0.35, 0.12), _rgb(0.60, 0.85, 0.20))


def _plate(local: np.ndarray, part: np.ndarray) -> np.ndarray:
    x, y = local[:, 0], local[:, 1]
    checker = (np.floor(x / 0.19) + np.floor(y / 0.19)) % 2 == 1
    top = np.where(checker[:, None], _rgb(0.18, 0.26, 0.52), _rgb(0.94, 0.90, 0.80))
    r = np.hypot(x, y)
    top = np.where(((r > 0.78) & (r < 0.85))[:, None], _rgb(0.95, 0.50, 0.10), top)
    phi = np.arctan2(y, x)
    stripe = np.floor((phi + math.pi) / (2 * math.pi) * 36).astype(int) % 2 == 0
    side = np.where(stripe[:, None], _rgb(0.55, 0.55, 0.58), _rgb(0.30, 0.30, 0.33))
    return np.where((part == 1)[:, None], top, np.where((part == 0)[:, None], side, 0.25))


_HELIX = _rgb((0.85, 0.15, 0.55), (0.95, 0.95, 0.95), (0.10, 0.60, 0.60))


def _pillar(local: np.ndarray, part: np.ndarray) -> np.ndarray:
    phi = np.arctan2(local[:, 1], local[:, 0])
    k = np.floor((phi + math.pi) / (2 * math.pi) * 6 + local[:, 2] * 5).astype(int) % 3
    return np.where((part == 0)[:, None], _HELIX[k], np.where((part == 1)[:, None], _rgb(0.98, 0.80, 0.15), 0.3))


_PLATE_TOP = -0.5
_SCENE = (
    _Cylinder((0.0, 0.0), 0.95, _PLATE_TOP - 0.12, _PLATE_TOP, _plate),
    _Sphere((-0.32, -0.28, _PLATE_TOP + 0.42), 0.42, _beach_ball),
    _Box((0.38, -0.30, _PLATE_TOP + 0.33), (0.22, 0.22, 0.33), math.radians(35.0),
         _rgb((0.85, 0.15, 0.15), (0.10, 0.65, 0.65), (0.95, 0.80, 0.10),
              (0.20, 0.35, 0.90), (0.40, 0.40, 0.40), (0.25, 0.75, 0.25))),
    _Sphere(GRADIENT_SPHERE[0], GRADIENT_SPHERE[1], _gradient),
    _Cylinder((0.05, 0.50), 0.16, _PLATE_TOP, 0.25, _pillar),
    _Sphere((-0.58, 0.42, _PLATE_TOP + 0.14), 0.14, _dotted),
)
def _may_hit(o: np.ndarray, d: np.ndarray, centre: np.ndarray, radius: float) -> np.ndarray:
    """Rays that pass within ``radius`` of ``centre`` ahead of (or from inside) their origin.

    One of ``o`` and ``d`` may be a single [3] vector shared by every ray (camera rays share
    their origin, shadow rays their direction), which makes this cheap.
    """
    oc = o - centre
    if oc.ndim == 1:
        b = d @ oc
        c = float(oc @ oc) - radius * radius
    else:
        b = oc @ d if d.ndim == 1 else _rows_dot(oc, d)
        c = _rows_dot(oc, oc) - radius * radius
    return (b * b >= c) & ((b < 0.0) | (c < 0.0))


def _rows(a: np.ndarray, index: np.ndarray) -> np.ndarray:
    """Rows ``index`` of ``a`` [N, 3], or a shared [3] vector repeated for them."""
    return np.broadcast_to(a, (len(index), 3)) if a.ndim == 1 else a[index]


def _first_hit(o: np.ndarray, d: np.ndarray, n: int, scene: Sequence = ()) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(t, index of the primitive hit or -1, part) of the nearest hit of each of ``n`` rays
    among the primitives of ``scene`` (default: the demo scene)."""
    best = np.full(n, np.inf)
    which = np.full(n, -1, dtype=np.int64)
    part = np.zeros(n, dtype=np.int8)
    for k, prim in enumerate(scene or _SCENE):
        rays = np.nonzero(_may_hit(o, d, *prim.bound))[0]  # bounding-sphere cull
        if len(rays) == 0:
            continue
        t, pt = prim.intersect(_rows(o, rays), _rows(d, rays))
        closer = t < best[rays]
        sel = rays[closer]
        best[sel], which[sel], part[sel] = t[closer], k, pt[closer]
    return best, which, part


def _shade(eye: np.ndarray, d: np.ndarray, scene: Sequence = ()) -> tuple[np.ndarray, np.ndarray]:
    """Colour [N, 3] (0 on a miss) and hit mask [N] of rays from ``eye`` [3] along ``d`` [N, 3]."""
    scene = scene or _SCENE
    colour = np.zeros((len(d), 3))
    t, which, part = _first_hit(eye, d, len(d), scene)
    hit = which >= 0
    if not hit.any():
        return colour, hit
    idx = np.nonzero(hit)[0]
    t, which, part, d = t[idx], which[idx], part[idx], d[idx]
    p = eye + t[:, None] * d
    n = np.zeros_like(p)
    albedo = np.zeros_like(p)
    for k, prim in enumerate(scene):
        sel = which == k
        if sel.any():
            n[sel], albedo[sel] = prim.surface(p[sel], part[sel])
    n[_rows_dot(n, d) > 0.0] *= -1.0  # seen from behind (not for these closed solids): flip
    ndotl = n @ LIGHT_DIR
    lit = ndotl > 0.0
    if lit.any():
        li = np.nonzero(lit)[0]
        _, blocker, _ = _first_hit(p[li] + _SHADOW_OFFSET * n[li], LIGHT_DIR, len(li), scene)
        lit[li[blocker >= 0]] = False
    diffuse = np.where(lit, ndotl, 0.0)
    colour[idx] = albedo * (AMBIENT + (1.0 - AMBIENT) * diffuse)[:, None]
    return np.clip(colour, 0.0, 1.0), hit


# ----------------------------------------------------------------------------- rendering


def render_view(c2w_opengl: np.ndarray, size: int, camera_angle_x: float = CAMERA_ANGLE_X, *,
                samples: int = 2, scene: Sequence = ()) -> np.ndarray:
    """Renders the scene (default the demo's; ``scene``: other primitives, as
    :mod:`.arrangements` makes) through an OpenGL camera-to-world [4, 4] (or [3, 4]) pinhole camera.

    Square ``size`` x ``size`` image, focal ``0.5 size / tan(camera_angle_x / 2)``, principal
    point at the centre, pixel (i, j) covering [j, j+1) x [i, i+1) (centres at +0.5); each
    pixel averages a ``samples`` x ``samples`` grid of rays. Returns RGBA float32 [H, W, 4]
    in [0, 1], colour not premultiplied (0 where alpha is 0), alpha = coverage.
    """
    if size <= 0 or samples <= 0:
        raise ValueError(f"size and samples must be positive, got {size} and {samples}")
    eye, d = _camera_rays(c2w_opengl, size, camera_angle_x, samples)
    colour, hit = _shade(eye, d, scene)
    colour = colour.reshape(size, samples, size, samples, 3).sum(axis=(1, 3))
    hits = hit.reshape(size, samples, size, samples).sum(axis=(1, 3)).astype(np.float64)
    rgb = colour / np.maximum(hits, 1.0)[..., None]
    alpha = hits / (samples * samples)
    return np.concatenate([rgb, alpha[..., None]], axis=-1).astype(np.float32)


def depth_view(c2w_opengl: np.ndarray, size: int, camera_angle_x: float = CAMERA_ANGLE_X, *,
               scene: Sequence = ()) -> np.ndarray:  # fmt: skip
    """The true depth (distance along the camera's forward axis) at each pixel centre of
    :func:`render_view`'s image, float32 [size, size]; ``inf`` where the ray misses."""
    eye, d = _camera_rays(c2w_opengl, size, camera_angle_x, 1)
    t, which, _ = _first_hit(eye, d, len(d), scene or _SCENE)
    forward = -np.asarray(c2w_opengl, dtype=np.float64)[:3, 2]  # OpenGL cameras look down -z
    z = np.where(which >= 0, t * (d @ forward), np.inf)
    return z.reshape(size, size).astype(np.float32)


def _camera_rays(c2w_opengl: np.ndarray, size: int, camera_angle_x: float,
                 samples: int) -> tuple[np.ndarray, np.ndarray]:  # fmt: skip
    """(eye [3], unit directions [size * samples * size * samples, 3]) of a pixel grid, rays
    ordered [row, sub-row, column, sub-column] so each pixel's samples reshape together."""
    m = np.asarray(c2w_opengl, dtype=np.float64)
    if m.shape not in ((4, 4), (3, 4)):
        raise ValueError(f"c2w_opengl must be [4, 4] or [3, 4], got {m.shape}")
    R, eye = m[:3, :3], m[:3, 3]
    f = 0.5 * size / math.tan(0.5 * float(camera_angle_x))
    offs = (np.arange(samples) + 0.5) / samples
    coords = np.arange(size)[:, None] + offs[None, :]  # [size, samples]
    v = coords.reshape(size, samples, 1, 1)
    u = coords.reshape(1, 1, size, samples)
    x = np.broadcast_to((u - 0.5 * size) / f, (size, samples, size, samples))
    y = np.broadcast_to(-(v - 0.5 * size) / f, x.shape)  # OpenGL: y up, image rows go down
    d_cam = np.stack([x, y, -np.ones_like(x)], axis=-1).reshape(-1, 3)
    return eye, _normalized(_times(d_cam, R.T))


def visible_surface(folder: Path, *, split: str = "train", size: int = 256, spacing: float = 0.005) -> np.ndarray:
    """Points [M, 3] of the scene's surface that the cameras of a dataset written by
    :func:`write_demo_dataset` see: the exact first hit of the ray through each pixel centre
    of each of ``split``'s views, cast at ``size`` x ``size`` pixels whatever the images'
    size, one point kept per cell of a grid of ``spacing`` (so that the points spread evenly
    over the visible area, however many views see a part of it). The ground truth a mesh
    made from those views is measured against."""
    folder = Path(folder)
    with open(folder / f"transforms_{split}.json", encoding="utf-8") as f:
        meta = json.load(f)
    hits = []
    for frame in meta["frames"]:
        eye, d = _camera_rays(np.asarray(frame["transform_matrix"]), size, float(meta["camera_angle_x"]), 1)
        t, which, _ = _first_hit(eye, d, len(d))
        ok = which >= 0
        hits.append(eye + t[ok, None] * d[ok])
    pts = np.concatenate(hits)
    _, first = np.unique(np.floor(pts / spacing).astype(np.int64), axis=0, return_index=True)
    return pts[np.sort(first)]


def look_at_c2w(eye, target=(0.0, 0.0, 0.0), up=(0.0, 0.0, 1.0)) -> np.ndarray:
    """OpenGL camera-to-world [4, 4] at ``eye`` looking at ``target`` (x right, y up, -z forward)."""
    eye = np.asarray(eye, dtype=np.float64)
    back = eye - np.asarray(target, dtype=np.float64)
    back /= np.linalg.norm(back)
    right = np.cross(np.asarray(up, dtype=np.float64), back)
    if np.linalg.norm(right) < 1e-9:  # looking along ``up``: any right angle will do
        right = np.cross(np.array([0.0, 1.0, 0.0]) if abs(back[1]) < 0.9 else np.array([1.0, 0.0, 0.0]), back)
    right /= np.linalg.norm(right)
    m = np.eye(4)
    m[:3, 0], m[:3, 1], m[:3, 2], m[:3, 3] = right, np.cross(back, right), back, eye
    return m


def _on_sphere(elevation: float, azimuth: float) -> np.ndarray:
    ce = math.cos(elevation)
    return RADIUS * np.array([ce * math.cos(azimuth), ce * math.sin(azimuth), math.sin(elevation)])


def camera_poses(train_views: int, test_views: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """(train [N, 4, 4], test [M, 4, 4]) OpenGL camera-to-world matrices looking at the origin.

    Train: a Fibonacci spiral over the elevation band :data:`TRAIN_ELEVATION_DEG` (uniform in
    area); test: a ring at :data:`TEST_ELEVATION_DEG`. ``seed`` turns both by random phases.
    """
    rng = np.random.default_rng(seed)
    phase_train, phase_test = rng.uniform(0.0, 2 * math.pi, size=2)
    lo, hi = (math.sin(math.radians(e)) for e in TRAIN_ELEVATION_DEG)
    golden = math.pi * (3.0 - math.sqrt(5.0))
    train = [
        look_at_c2w(_on_sphere(math.asin(lo + (hi - lo) * (i + 0.5) / train_views), phase_train + i * golden))
        for i in range(train_views)
    ]
    el = math.radians(TEST_ELEVATION_DEG)
    test = [look_at_c2w(_on_sphere(el, phase_test + 2 * math.pi * i / test_views)) for i in range(test_views)]
    return np.stack(train), np.stack(test)


# ----------------------------------------------------------------------------- dataset


def _params(size: int, train_views: int, test_views: int, seed: int) -> dict:
    return {"generator": "splatfield.data.procedural", "version": VERSION, "size": size,
            "train_views": train_views, "test_views": test_views, "seed": seed}


def _complete(folder: Path, params: dict) -> bool:
    """Whether ``folder`` holds every file of the dataset ``params`` describe."""
    try:
        with open(folder / _PARAMS_FILE, encoding="utf-8") as f:
            if json.load(f) != params:
                return False
    except (OSError, ValueError):
        return False
    names = ["transforms_train.json", "transforms_test.json"]
    names += [f"train/r_{i}.png" for i in range(params["train_views"])]
    names += [f"test/r_{i}.png" for i in range(params["test_views"])]
    return all((folder / n).is_file() for n in names)


def _ours_or_empty(folder: Path) -> bool:
    """Whether replacing ``folder`` loses nothing: it is empty or an earlier procedural dataset."""
    return folder.is_dir() and (not any(folder.iterdir()) or (folder / _PARAMS_FILE).is_file())


def _write_json(path: Path, value: object) -> None:
    path.write_text(json.dumps(value, indent=2) + "\n", encoding="utf-8")


def write_demo_dataset(
    folder: Path,
    *,
    size: int = 128,
    train_views: int = 48,
    test_views: int = 8,
    seed: int = 0,
    on_view: Callable[[int], None] | None = None,
) -> Path:
    """Writes the procedural scene as a Blender-format dataset in ``folder``; returns ``folder``.

    ``size`` x ``size`` RGBA images, ``train_views`` + ``test_views`` of them. When ``folder``
    already holds a complete dataset with the same parameters (``procedural.json``) it is
    reused as is. Otherwise the dataset is rendered into a temporary folder beside it and
    renamed into place, replacing an earlier procedural dataset there; a non-empty folder
    that is not one raises FileExistsError. ``on_view(k)`` is called after each image is
    written with the number written so far (1 .. train_views + test_views).
    """
    if size <= 0 or train_views <= 0 or test_views <= 0:
        raise ValueError(f"size, train_views and test_views must be positive, got {size}, {train_views}, {test_views}")
    folder = Path(folder)
    params = _params(int(size), int(train_views), int(test_views), int(seed))
    if _complete(folder, params):
        return folder
    if folder.exists() and not _ours_or_empty(folder):
        raise FileExistsError(f"{folder}: exists and is not a procedural dataset; not overwriting it")
    folder.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{folder.name}.", suffix=".tmp", dir=folder.parent))
    try:
        train, test = camera_poses(params["train_views"], params["test_views"], params["seed"])
        done = 0
        val_frames: list[dict] = []
        for split, poses in (("train", train), ("test", test)):
            (tmp / split).mkdir()
            frames = []
            for i, c2w in enumerate(poses):
                rgba = render_view(c2w, params["size"], CAMERA_ANGLE_X)
                pixels = np.clip(np.rint(rgba * 255.0), 0, 255).astype(np.uint8)
                Image.fromarray(pixels).save(tmp / split / f"r_{i}.png")
                frames.append({"file_path": f"./{split}/r_{i}", "transform_matrix": c2w.tolist()})
                done += 1
                if on_view is not None:
                    on_view(done)
            _write_json(tmp / f"transforms_{split}.json", {"camera_angle_x": CAMERA_ANGLE_X, "frames": frames})
            val_frames = frames
        _write_json(tmp / "transforms_val.json", {"camera_angle_x": CAMERA_ANGLE_X, "frames": val_frames})
        _write_json(tmp / _PARAMS_FILE, params)  # last: its presence marks the dataset complete
        _install(tmp, folder, params)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return folder


def _install(tmp: Path, folder: Path, params: dict) -> None:
    """Renames ``tmp`` to ``folder``, moving aside (then deleting) what was there."""
    old = None
    if folder.exists():
        if _complete(folder, params):  # another process finished the same dataset meanwhile
            shutil.rmtree(tmp, ignore_errors=True)
            return
        if not _ours_or_empty(folder):
            raise FileExistsError(f"{folder}: exists and is not a procedural dataset; not overwriting it")
        old = Path(tempfile.mkdtemp(prefix=f".{folder.name}.", suffix=".old", dir=folder.parent))
        os.replace(folder, old / "dataset")
    try:
        os.replace(tmp, folder)
    except OSError:
        if old is not None and not folder.exists():
            os.replace(old / "dataset", folder)
            old.rmdir()
        raise
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)
