"""Meshes and point clouds from a scene of any kind, through its renders.

A scene is rendered from cameras (the run's training cameras): colour, alpha and expected
depth per pixel. Pixels whose alpha is below :data:`ALPHA_MIN` are left out, so that the
background never becomes geometry; the others are fused into a truncated signed distance
field (open3d's voxel-block TSDF, sparse, on the CPU), from which a coloured triangle mesh
(marching cubes on the zero crossing) or a point cloud (the zero crossing's points) is
extracted. A mesh can be decimated (quadric error) to at most a number of triangles and cut
to a region (a test on its vertices). The colour fused is the scene's own, the composited
background taken out (``(image - (1 - alpha) background) / alpha``).

Also here: the distance between two sampled surfaces (chamfer distance, precision, recall
and F-score at a threshold), which measures a mesh against a known surface.

open3d is imported inside the functions that use it, so the rest of the package does not
need it. Nothing here prints; ``on_view`` reports progress.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np
import torch
from torch import Tensor

from splatfield.render import Cameras

from .scene import Renderable

ALPHA_MIN = 0.8  # pixels fused: alpha at least this (below it, background mixes into the depth)
VOXELS_ACROSS = 512  # default voxel size: at least the scene's extent / VOXELS_ACROSS...
VOXEL_PIXELS = 1.5  # ... and at least this many pixels' width at the scene's centre
TRUNCATION_VOXELS = 4.0  # the signed distance is truncated at this many voxels
MIN_VIEWS = 2.0  # a surface is extracted where at least this many views observed it (TSDF weight)
EXTENT_PERCENTILES = (1.0, 99.0)  # the scene's extent: these percentiles of its points per axis
BLOCK_RESOLUTION = 8  # voxels along a block's side (the TSDF's allocation unit)
RAY_DISTANCE_DEPTH = ("field",)  # scene kinds whose render depth is the distance along the ray, not camera z


class MeshError(ValueError):
    """A mesh or point cloud that cannot be made or written (one line)."""


# ----------------------------------------------------------------------------- fusion


@dataclass(frozen=True)
class Extent:
    """An axis-aligned box holding most of the scene (robust to floaters)."""

    lo: tuple[float, float, float]
    hi: tuple[float, float, float]

    @property
    def centre(self) -> tuple[float, float, float]:
        return tuple(0.5 * (l + h) for l, h in zip(self.lo, self.hi))  # type: ignore[return-value]

    @property
    def longest(self) -> float:
        return max(h - l for l, h in zip(self.lo, self.hi))

    def corners(self) -> np.ndarray:  # [8, 3]
        return np.array([[(self.lo, self.hi)[(c >> k) & 1][k] for k in range(3)] for c in range(8)])


def scene_extent(scene: Renderable) -> Extent:
    """The box between the 1st and 99th percentiles of the scene's points along each axis."""
    pts = scene.points().detach().to(device="cpu", dtype=torch.float64)
    pts = pts[torch.isfinite(pts).all(dim=1)]
    if pts.shape[0] == 0:
        raise MeshError("the scene has no points to size it by")
    if pts.shape[0] > 1_000_000:  # percentiles of a stride are as good and much faster
        pts = pts[:: pts.shape[0] // 1_000_000 + 1]
    q = torch.tensor([p / 100 for p in EXTENT_PERCENTILES], dtype=torch.float64)
    lo, hi = torch.quantile(pts, q, dim=0)
    return Extent(tuple(lo.tolist()), tuple(hi.tolist()))  # type: ignore[arg-type]


def pixel_footprint(cameras: Cameras, extent: Extent) -> float:
    """The width of a pixel at the scene's centre: the cameras' median distance to the centre
    of ``extent`` over their median focal length."""
    centre = torch.tensor(extent.centre, dtype=torch.float64)
    dist = torch.linalg.norm(cameras.centers.double().cpu() - centre, dim=1).median()
    focal = torch.cat([cameras.fx, cameras.fy]).double().cpu().median()
    return float(dist / focal)


def default_voxel_size(extent: Extent, cameras: Cameras) -> float:
    """The larger of the scene's extent (its longest side) / :data:`VOXELS_ACROSS` and
    :data:`VOXEL_PIXELS` times the width of a pixel at the scene's centre: voxels finer than
    the pixels that fill them leave holes between the pixels' points (on the demo scene and
    lego, 1.5 pixels left fewer holes than 1 and scored the same F-score; 0.5 scored lower)."""
    return max(extent.longest / VOXELS_ACROSS, VOXEL_PIXELS * pixel_footprint(cameras, extent), 1e-6)


@dataclass
class Fusion:
    """Views fused into a TSDF (open3d's ``VoxelBlockGrid``); extract with :func:`mesh_of` /
    :func:`points_of`."""

    voxel_size: float
    depth_max: float
    views: int
    pixels: int  # pixels fused, over all views
    alpha_min: float = ALPHA_MIN
    seconds_render: float = 0.0
    seconds_fuse: float = 0.0
    grid: Any = field(default=None, repr=False)


def _open3d():
    try:
        import open3d
    except ImportError as exc:  # e.g. libusb-1.0-0 missing (Debian)
        raise MeshError(f"open3d cannot be imported ({exc}); `make setup` installs it") from exc
    return open3d


def _z_depth(scene: Renderable, depth: Tensor, cams: Cameras) -> Tensor:
    """[H, W] camera-space z of one view from a render's [H, W] depth."""
    if scene.kind not in RAY_DISTANCE_DEPTH:
        return depth
    H, W = depth.shape
    dev, dt = depth.device, depth.dtype
    ys = (torch.arange(H, device=dev, dtype=dt) + 0.5 - float(cams.cy[0])) / float(cams.fy[0])
    xs = (torch.arange(W, device=dev, dtype=dt) + 0.5 - float(cams.cx[0])) / float(cams.fx[0])
    return depth / torch.sqrt(1.0 + ys[:, None] ** 2 + xs[None, :] ** 2)  # the unit ray's z is 1 / |(x, y, 1)|


@torch.no_grad()
def fuse(
    scene: Renderable,
    cameras: Cameras,
    *,
    background: Sequence[float],
    voxel_size: float,
    extent: Extent,
    sh_degree: int | None = None,
    alpha_min: float = ALPHA_MIN,
    on_view: Callable[[int], None] | None = None,
) -> Fusion:
    """Renders ``scene`` from each camera and fuses the pixels with alpha >= ``alpha_min``
    (depth: the render's expected depth; colour: the scene's, background taken out) into a
    TSDF of ``voxel_size``; depths beyond the farthest corner of ``extent`` seen from the
    cameras are left out. ``on_view(1)`` after each view."""
    import time

    o3d = _open3d()
    o3c = o3d.core
    if not voxel_size > 0 or not math.isfinite(voxel_size):
        raise MeshError(f"the voxel size must be positive (got {voxel_size})")
    cams = cameras.to(device=scene.device, dtype=torch.float32)
    centres = cams.centers.double().cpu().numpy()
    depth_max = float(np.linalg.norm(extent.corners()[None] - centres[:, None], axis=-1).max())
    grid = o3d.t.geometry.VoxelBlockGrid(
        attr_names=("tsdf", "weight", "color"), attr_dtypes=(o3c.float32, o3c.float32, o3c.float32),
        attr_channels=((1), (1), (3)), voxel_size=float(voxel_size), block_resolution=BLOCK_RESOLUTION,
        block_count=50_000, device=o3c.Device("CPU:0"),
    )  # fmt: skip
    bg = torch.as_tensor(background, dtype=torch.float32, device=scene.device).reshape(3)
    pixels = 0
    t_render = t_fuse = 0.0
    for i in range(len(cams)):
        t0 = time.perf_counter()
        view = cams[i : i + 1]
        out = scene.render(view, background=bg, sh_degree=sh_degree)
        alpha = out.alpha[0, ..., 0].float()
        keep = alpha >= alpha_min
        z = torch.where(keep, _z_depth(scene, out.depth[0, ..., 0].float(), view), torch.zeros_like(alpha))
        keep &= (z > 0) & (z < depth_max)
        z = torch.where(keep, z, torch.zeros_like(z))
        rgb = ((out.image[0].float() - (1 - alpha[..., None]) * bg) / alpha[..., None].clamp_min(alpha_min)).clamp(0, 1)
        z_np = np.ascontiguousarray(z.cpu().numpy(), dtype=np.float32)
        rgb_np = np.ascontiguousarray(rgb.cpu().numpy(), dtype=np.float32)
        n = int(keep.sum())
        t1 = time.perf_counter()
        t_render += t1 - t0
        if n:
            pixels += n
            # open3d's pixel (u, v) is centred at (u, v); ours at (u + 0.5, v + 0.5)
            K = np.array([[float(view.fx[0]), 0.0, float(view.cx[0]) - 0.5],
                          [0.0, float(view.fy[0]), float(view.cy[0]) - 0.5], [0.0, 0.0, 1.0]])  # fmt: skip
            K_t = o3c.Tensor(K)
            E_t = o3c.Tensor(view.world_to_camera[0].double().cpu().numpy())
            depth_im = o3d.t.geometry.Image(o3c.Tensor(z_np))
            color_im = o3d.t.geometry.Image(o3c.Tensor(rgb_np))
            blocks = grid.compute_unique_block_coordinates(depth_im, K_t, E_t, 1.0, depth_max, TRUNCATION_VOXELS)
            grid.integrate(blocks, depth_im, color_im, K_t, K_t, E_t, 1.0, depth_max, TRUNCATION_VOXELS)
        t_fuse += time.perf_counter() - t1
        if on_view is not None:
            on_view(1)
    if pixels == 0:
        raise MeshError(f"no pixel of the {len(cams)} views reached alpha {alpha_min:g}: nothing to fuse")
    return Fusion(float(voxel_size), depth_max, len(cams), pixels, alpha_min, t_render, t_fuse, grid)


def mesh_of(fusion: Fusion):
    """The fused surface as a coloured open3d ``TriangleMesh`` (legacy), vertex colours in [0, 1]."""
    o3d = _open3d()
    mesh = fusion.grid.extract_triangle_mesh(weight_threshold=MIN_VIEWS).to_legacy()
    mesh.remove_unreferenced_vertices()
    if mesh.has_vertex_colors():  # interpolation can step a little past [0, 1]
        mesh.vertex_colors = o3d.utility.Vector3dVector(np.clip(np.asarray(mesh.vertex_colors), 0.0, 1.0))
    if len(mesh.triangles) == 0:
        raise MeshError("the fused views hold no surface (no zero crossing seen by enough views)")
    return mesh


def points_of(fusion: Fusion):
    """The fused surface's points with colours, as an open3d ``PointCloud`` (legacy)."""
    o3d = _open3d()
    cloud = fusion.grid.extract_point_cloud(weight_threshold=MIN_VIEWS).to_legacy()
    if cloud.has_colors():
        cloud.colors = o3d.utility.Vector3dVector(np.clip(np.asarray(cloud.colors), 0.0, 1.0))
    if len(cloud.points) == 0:
        raise MeshError("the fused views hold no surface (no zero crossing seen by enough views)")
    return cloud


# ----------------------------------------------------------------------------- edits


def decimate(mesh, max_triangles: int):
    """``mesh`` with at most ``max_triangles`` triangles (quadric error decimation; vertex
    colours follow), or ``mesh`` itself when it has no more than that."""
    if max_triangles < 1:
        raise MeshError(f"max_triangles must be at least 1 (got {max_triangles})")
    target = max_triangles
    while len(mesh.triangles) > max_triangles:
        mesh = mesh.simplify_quadric_decimation(target_number_of_triangles=target)
        target = max(1, int(target * 0.95))  # decimation can stop a little above its target
    mesh.remove_degenerate_triangles()
    mesh.remove_unreferenced_vertices()
    return mesh


def keep_inside(geometry, inside: Callable[[np.ndarray], np.ndarray]):
    """A mesh without the vertices (and their triangles) for which ``inside(points [N, 3])``
    is False, or a point cloud without those points."""
    pts = np.asarray(geometry.vertices if hasattr(geometry, "triangles") else geometry.points)
    mask = np.asarray(inside(pts), dtype=bool).reshape(-1)
    if hasattr(geometry, "triangles"):
        geometry.remove_vertices_by_mask(~mask)
        return geometry
    return geometry.select_by_index(np.nonzero(mask)[0].tolist())


def count(geometry) -> tuple[int, int]:
    """(vertices or points, triangles) of a mesh or a point cloud."""
    if hasattr(geometry, "triangles"):
        return len(geometry.vertices), len(geometry.triangles)
    return len(geometry.points), 0


MESH_SUFFIXES = (".ply", ".obj", ".glb")


def write_mesh(path: Path, mesh, up: Sequence[float] | None = None) -> None:
    """Writes a coloured mesh as .ply (binary), .obj (vertex colours after the positions) or
    .glb (binary glTF 2.0, :func:`write_glb`; ``up``: the scene's up direction, which the glb
    turns to glTF's +y), by the suffix; normals included."""
    o3d = _open3d()
    suffix = path.suffix.lower()
    if suffix not in MESH_SUFFIXES:
        raise MeshError(f"{path}: a mesh is written as {', '.join(MESH_SUFFIXES)}")
    mesh.compute_vertex_normals()
    path.parent.mkdir(parents=True, exist_ok=True)
    if suffix == ".glb":  # open3d 0.20 writes glb that misaligns its buffers (its own reader refuses them)
        write_glb(path, np.asarray(mesh.vertices), np.asarray(mesh.triangles), np.asarray(mesh.vertex_normals),
                  np.asarray(mesh.vertex_colors) if mesh.has_vertex_colors() else None, up=up)  # fmt: skip
        return
    if suffix == ".obj":  # an OBJ holds vertex normals only (open3d warns of the triangles')
        mesh.triangle_normals = o3d.utility.Vector3dVector(np.zeros((0, 3)))
    if not o3d.io.write_triangle_mesh(str(path), mesh, write_ascii=False, write_vertex_normals=True,
                                      write_vertex_colors=True, print_progress=False):  # fmt: skip
        raise MeshError(f"{path}: open3d could not write the mesh")


def _quaternion_to_y(up: Sequence[float]) -> list[float]:
    """The rotation (x y z w, glTF's order) taking the unit vector ``up`` to +y; an ``up``
    within 25 degrees of a world axis counts as that axis (scenes are usually made upright)."""
    u = np.asarray(up, dtype=np.float64)
    u = u / np.linalg.norm(u)
    k = int(np.abs(u).argmax())
    if abs(u[k]) >= math.cos(math.radians(25.0)):
        u = np.eye(3)[k] * np.sign(u[k])
    y = np.array([0.0, 1.0, 0.0])
    c = float(u @ y)
    if c < -1 + 1e-9:  # upside down: half a turn about x
        return [1.0, 0.0, 0.0, 0.0]
    axis = np.cross(u, y)
    q = np.array([*axis, 1.0 + c])
    return (q / np.linalg.norm(q)).tolist()


def write_glb(path: Path, vertices: np.ndarray, triangles: np.ndarray, normals: np.ndarray | None = None,
              colours: np.ndarray | None = None, up: Sequence[float] | None = None) -> None:  # fmt: skip
    """A triangle mesh as binary glTF 2.0: float positions, normals and vertex colours
    (COLOR_0, given in sRGB [0, 1], stored linear as glTF wants), uint32 indices, an unlit
    material (the colours already hold the scene's light); the vertices stay in the scene's
    axes, the node turns ``up`` to glTF's +y."""
    import json
    import struct

    blobs: list[bytes] = []
    views: list[dict] = []
    accessors: list[dict] = []
    offset = 0

    def add(data: np.ndarray, kind: str, component: int, target: int, bounds: bool = False) -> int:
        nonlocal offset
        raw = np.ascontiguousarray(data).tobytes()
        views.append({"buffer": 0, "byteOffset": offset, "byteLength": len(raw), "target": target})
        acc = {"bufferView": len(views) - 1, "componentType": component, "count": int(data.shape[0]), "type": kind}
        if bounds:
            acc["min"], acc["max"] = data.min(axis=0).tolist(), data.max(axis=0).tolist()
        accessors.append(acc)
        pad = (-len(raw)) % 4
        blobs.append(raw + b"\0" * pad)
        offset += len(raw) + pad
        return len(accessors) - 1

    FLOAT, UINT, ARRAY, ELEMENTS = 5126, 5125, 34962, 34963
    attributes = {"POSITION": add(np.asarray(vertices, dtype=np.float32), "VEC3", FLOAT, ARRAY, bounds=True)}
    if normals is not None and len(normals) == len(vertices):
        n = np.asarray(normals, dtype=np.float64)
        length = np.linalg.norm(n, axis=1, keepdims=True)
        n = np.where(length > 1e-12, n / np.maximum(length, 1e-12), [0.0, 0.0, 1.0])  # glTF wants unit normals
        attributes["NORMAL"] = add(n.astype(np.float32), "VEC3", FLOAT, ARRAY)
    if colours is not None and len(colours) == len(vertices):
        c = np.clip(np.asarray(colours, dtype=np.float64), 0.0, 1.0)
        linear = np.where(c <= 0.04045, c / 12.92, ((c + 0.055) / 1.055) ** 2.4)
        attributes["COLOR_0"] = add(linear.astype(np.float32), "VEC3", FLOAT, ARRAY)
    indices = add(np.asarray(triangles, dtype=np.uint32).reshape(-1), "SCALAR", UINT, ELEMENTS)
    node: dict = {"mesh": 0}
    if up is not None:
        node["rotation"] = _quaternion_to_y(up)
    doc = {
        "asset": {"version": "2.0", "generator": "splatfield"},
        "extensionsUsed": ["KHR_materials_unlit"],
        "scene": 0, "scenes": [{"nodes": [0]}], "nodes": [node],
        "meshes": [{"primitives": [{"attributes": attributes, "indices": indices, "material": 0, "mode": 4}]}],
        "materials": [{"pbrMetallicRoughness": {"baseColorFactor": [1.0, 1.0, 1.0, 1.0], "metallicFactor": 0.0,
                                                "roughnessFactor": 1.0},
                       "doubleSided": True, "extensions": {"KHR_materials_unlit": {}}}],
        "buffers": [{"byteLength": offset}], "bufferViews": views, "accessors": accessors,
    }  # fmt: skip
    text = json.dumps(doc, separators=(",", ":")).encode()
    text += b" " * ((-len(text)) % 4)
    binary = b"".join(blobs)
    total = 12 + 8 + len(text) + 8 + len(binary)
    with open(path, "wb") as f:
        f.write(struct.pack("<4sII", b"glTF", 2, total))
        f.write(struct.pack("<I4s", len(text), b"JSON") + text)
        f.write(struct.pack("<I4s", len(binary), b"BIN\0") + binary)


def write_points(path: Path, cloud) -> None:
    """Writes a coloured point cloud as a binary .ply."""
    o3d = _open3d()
    if path.suffix.lower() != ".ply":
        raise MeshError(f"{path}: a point cloud is written as .ply")
    path.parent.mkdir(parents=True, exist_ok=True)
    if not o3d.io.write_point_cloud(str(path), cloud, write_ascii=False, print_progress=False):
        raise MeshError(f"{path}: open3d could not write the point cloud")


def picture(mesh, camera: Cameras, background: Sequence[float] = (1.0, 1.0, 1.0), shading: float = 0.5) -> np.ndarray:
    """[H, W, 3] uint8: ``mesh`` ray cast (open3d's ``RaycastingScene``, on the CPU) from the first
    of ``camera``: the vertex colours interpolated over each triangle hit, darkened by
    ``shading`` times (1 - |cos|) of the angle between the ray and the triangle's normal, so
    that the shape shows; ``background`` where no triangle is hit."""
    o3d = _open3d()
    cam = camera[0:1].to(device="cpu", dtype=torch.float64)
    H, W = cam.height, cam.width
    origins, dirs = cam.generate_rays()
    rays = np.concatenate([origins[0].numpy(), dirs[0].numpy()], axis=-1).reshape(-1, 6).astype(np.float32)
    scene = o3d.t.geometry.RaycastingScene()
    scene.add_triangles(o3d.t.geometry.TriangleMesh.from_legacy(mesh))
    hit = scene.cast_rays(o3d.core.Tensor(rays))
    tri = hit["primitive_ids"].numpy().astype(np.int64)
    ok = tri != np.iinfo(np.uint32).max
    out = np.tile(np.asarray(background, dtype=np.float64), (H * W, 1))
    if ok.any():
        faces = np.asarray(mesh.triangles)[tri[ok]]
        uv = hit["primitive_uvs"].numpy()[ok].astype(np.float64)
        w = np.stack([1 - uv[:, 0] - uv[:, 1], uv[:, 0], uv[:, 1]], axis=1)  # barycentric weights of the 3 corners
        colours = np.asarray(mesh.vertex_colors) if mesh.has_vertex_colors() else np.full((len(mesh.vertices), 3), 0.8)
        rgb = np.einsum("nk,nkc->nc", w, colours[faces])
        cos = np.abs(np.einsum("nc,nc->n", hit["primitive_normals"].numpy()[ok], rays[ok, 3:]))
        out[ok] = rgb * (1 - shading * (1 - cos))[:, None]
    return (np.clip(out, 0, 1).reshape(H, W, 3) * 255 + 0.5).astype(np.uint8)


# ----------------------------------------------------------------------------- surface distance


@dataclass(frozen=True)
class SurfaceDistance:
    """Two surfaces compared through point samples of each (distances in scene units)."""

    threshold: float  # of precision, recall and F-score
    accuracy: float  # mean distance from a predicted sample to the truth
    completeness: float  # mean distance from a true sample to the prediction
    precision: float  # predicted samples within the threshold of the truth
    recall: float  # true samples within the threshold of the prediction
    predicted: int  # samples
    truth: int

    @property
    def chamfer(self) -> float:
        """The symmetric chamfer distance: the mean of accuracy and completeness."""
        return 0.5 * (self.accuracy + self.completeness)

    @property
    def fscore(self) -> float:
        p, r = self.precision, self.recall
        return 2 * p * r / (p + r) if p + r > 0 else 0.0


def surface_distance(predicted: np.ndarray, truth: np.ndarray, threshold: float) -> SurfaceDistance:
    """Nearest-neighbour distances both ways between point samples [N, 3] and [M, 3]."""
    from scipy.spatial import cKDTree

    # copies of their own (arrays of open3d geometry are views of its memory), one thread
    predicted = np.array(predicted, dtype=np.float64, copy=True).reshape(-1, 3)
    truth = np.array(truth, dtype=np.float64, copy=True).reshape(-1, 3)
    if len(predicted) == 0 or len(truth) == 0:
        raise MeshError("surface distance needs samples of both surfaces")
    to_truth = cKDTree(truth).query(predicted)[0]
    to_pred = cKDTree(predicted).query(truth)[0]
    return SurfaceDistance(float(threshold), float(to_truth.mean()), float(to_pred.mean()),
                           float((to_truth <= threshold).mean()), float((to_pred <= threshold).mean()),
                           len(predicted), len(truth))  # fmt: skip


def sample_surface(mesh, count: int, seed: int = 0) -> np.ndarray:
    """[count, 3] points drawn uniformly over a mesh's area."""
    o3d = _open3d()
    o3d.utility.random.seed(seed)
    cloud = mesh.sample_points_uniformly(number_of_points=int(count))
    return np.array(cloud.points, dtype=np.float64, copy=True)
