"""COLMAP sparse models (text and binary): reader, writer and dataset loader.

A model is ``cameras``, ``images`` and ``points3D`` (``.txt`` or ``.bin``). Images store
the world-to-camera rotation as a quaternion ``qvec`` (w, x, y, z) and translation
``tvec``, already in OpenCV axes. Supported camera models and their params:

  SIMPLE_PINHOLE f cx cy | PINHOLE fx fy cx cy | SIMPLE_RADIAL f cx cy k (k -> k1) |
  RADIAL f cx cy k1 k2 | OPENCV fx fy cx cy k1 k2 p1 p2 | OPENCV_FISHEYE fx fy cx cy k1..k4

Folder layout: ``<root>/sparse/0/``, ``<root>/sparse/`` or the model files next to
``<root>/images/``; images are ``<root>/images/<name>``. Images are sorted by name; every
``test_every``-th is test. Distorted models are undistorted at load time (pinhole output).
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from splatfield.render.camera import Cameras

from .dataset import Dataset, DatasetError, check_sizes, drop_missing, every_nth_split, make_split
from .masks import MaskMode, MaskSource, with_masks

# name -> (model id, number of params)
MODELS = {
    "SIMPLE_PINHOLE": (0, 3), "PINHOLE": (1, 4), "SIMPLE_RADIAL": (2, 4), "RADIAL": (3, 5),
    "OPENCV": (4, 8), "OPENCV_FISHEYE": (5, 8), "FULL_OPENCV": (6, 12), "FOV": (7, 5),
    "SIMPLE_RADIAL_FISHEYE": (8, 4), "RADIAL_FISHEYE": (9, 5), "THIN_PRISM_FISHEYE": (10, 12),
}
_BY_ID = {i: (name, n) for name, (i, n) in MODELS.items()}
SUPPORTED = ("SIMPLE_PINHOLE", "PINHOLE", "SIMPLE_RADIAL", "RADIAL", "OPENCV", "OPENCV_FISHEYE")


@dataclass
class ColmapCamera:
    id: int
    model: str
    width: int
    height: int
    params: list[float]


@dataclass
class ColmapImage:
    id: int
    qvec: np.ndarray  # [4] w x y z, world-to-camera
    tvec: np.ndarray  # [3]
    camera_id: int
    name: str


@dataclass
class ColmapModel:
    cameras: dict[int, ColmapCamera]
    images: dict[int, ColmapImage]
    points: np.ndarray  # [P, 3] float64
    colors: np.ndarray  # [P, 3] uint8


# --- rotations --------------------------------------------------------------------------------

def qvec_to_rotmat(q: np.ndarray) -> np.ndarray:  # [..., 4] w x y z -> [..., 3, 3]
    q = q / np.linalg.norm(q, axis=-1, keepdims=True)
    w, x, y, z = np.moveaxis(q, -1, 0)
    return np.stack([
        np.stack([1 - 2 * (y * y + z * z), 2 * (x * y - w * z), 2 * (x * z + w * y)], -1),
        np.stack([2 * (x * y + w * z), 1 - 2 * (x * x + z * z), 2 * (y * z - w * x)], -1),
        np.stack([2 * (x * z - w * y), 2 * (y * z + w * x), 1 - 2 * (x * x + y * y)], -1),
    ], -2)


def rotmat_to_qvec(R: np.ndarray) -> np.ndarray:  # [3, 3] -> [4] w x y z, w >= 0
    """Nearest unit quaternion (eigenvector method, as COLMAP's scripts)."""
    Rxx, Ryx, Rzx, Rxy, Ryy, Rzy, Rxz, Ryz, Rzz = R.flat
    K = np.array([
        [Rxx - Ryy - Rzz, 0, 0, 0],
        [Ryx + Rxy, Ryy - Rxx - Rzz, 0, 0],
        [Rzx + Rxz, Rzy + Ryz, Rzz - Rxx - Ryy, 0],
        [Ryz - Rzy, Rzx - Rxz, Rxy - Ryx, Rxx + Ryy + Rzz],
    ]) / 3.0
    vals, vecs = np.linalg.eigh(K)
    q = vecs[[3, 0, 1, 2], np.argmax(vals)]
    return -q if q[0] < 0 else q


# --- intrinsics -------------------------------------------------------------------------------

def camera_intrinsics(cam: ColmapCamera, where: Path) -> tuple[float, float, float, float, str, list[float]]:
    """(fx, fy, cx, cy, model, coeffs) with model pinhole | opencv | fisheye."""
    p = cam.params
    if cam.model == "SIMPLE_PINHOLE":
        return p[0], p[0], p[1], p[2], "pinhole", []
    if cam.model == "PINHOLE":
        return p[0], p[1], p[2], p[3], "pinhole", []
    if cam.model == "SIMPLE_RADIAL":
        return p[0], p[0], p[1], p[2], "opencv", [p[3], 0.0, 0.0, 0.0, 0.0]
    if cam.model == "RADIAL":
        return p[0], p[0], p[1], p[2], "opencv", [p[3], p[4], 0.0, 0.0, 0.0]
    if cam.model == "OPENCV":
        return p[0], p[1], p[2], p[3], "opencv", [*p[4:8], 0.0]
    if cam.model == "OPENCV_FISHEYE":
        return p[0], p[1], p[2], p[3], "fisheye", list(p[4:8])
    raise DatasetError(where, f"camera {cam.id}: unsupported camera model {cam.model} (supported: {', '.join(SUPPORTED)})")


# --- text -------------------------------------------------------------------------------------

def _lines(path: Path) -> list[str]:
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise DatasetError(path, "file not found") from None
    return [ln.strip() for ln in text.splitlines() if ln.strip() and not ln.lstrip().startswith("#")]


def read_cameras_text(path: Path) -> dict[int, ColmapCamera]:
    cams = {}
    for ln in _lines(path):
        parts = ln.split()
        try:
            cid, model, w, h = int(parts[0]), parts[1], int(parts[2]), int(parts[3])
            params = [float(v) for v in parts[4:]]
        except (IndexError, ValueError):
            raise DatasetError(path, f"malformed camera line {ln[:60]!r}") from None
        if model not in MODELS:
            raise DatasetError(path, f"camera {cid}: unknown camera model {model!r}")
        if len(params) != MODELS[model][1]:
            raise DatasetError(path, f"camera {cid}: {model} needs {MODELS[model][1]} params, got {len(params)}")
        cams[cid] = ColmapCamera(cid, model, w, h, params)
    return cams


def read_images_text(path: Path) -> dict[int, ColmapImage]:
    # Two lines per image; the second (2D points) may be empty, so read raw lines.
    try:
        raw = path.read_text(encoding="utf-8").splitlines()
    except FileNotFoundError:
        raise DatasetError(path, "file not found") from None
    raw = [ln for ln in raw if not ln.lstrip().startswith("#")]
    while raw and not raw[-1].strip():
        raw.pop()
    images = {}
    for k in range(0, len(raw), 2):
        parts = raw[k].split()
        if not parts:
            continue
        try:
            iid = int(parts[0])
            q, t = np.array(parts[1:5], dtype=np.float64), np.array(parts[5:8], dtype=np.float64)
            cid, name = int(parts[8]), " ".join(parts[9:])
        except (IndexError, ValueError):
            raise DatasetError(path, f"malformed image line {raw[k][:60]!r}") from None
        if not name or q.shape != (4,) or t.shape != (3,):
            raise DatasetError(path, f"malformed image line {raw[k][:60]!r}")
        images[iid] = ColmapImage(iid, q, t, cid, name)
    return images


def read_points_text(path: Path) -> tuple[np.ndarray, np.ndarray]:
    rows = [ln.split()[1:7] for ln in _lines(path)]
    try:
        a = np.array(rows, dtype=np.float64).reshape(-1, 6)
    except ValueError:
        raise DatasetError(path, "malformed point line") from None
    return a[:, :3], a[:, 3:6].astype(np.uint8)


# --- binary -----------------------------------------------------------------------------------

class _Reader:
    def __init__(self, path: Path) -> None:
        self.path = path
        try:
            self.data = path.read_bytes()
        except FileNotFoundError:
            raise DatasetError(path, "file not found") from None
        self.pos = 0

    def read(self, fmt: str) -> tuple:
        size = struct.calcsize("<" + fmt)
        if self.pos + size > len(self.data):
            raise DatasetError(self.path, "file ends early (truncated binary model)")
        out = struct.unpack_from("<" + fmt, self.data, self.pos)
        self.pos += size
        return out

    def string(self) -> str:
        end = self.data.find(b"\0", self.pos)
        if end < 0:
            raise DatasetError(self.path, "file ends early (unterminated image name)")
        s = self.data[self.pos:end].decode("utf-8")
        self.pos = end + 1
        return s


def read_cameras_binary(path: Path) -> dict[int, ColmapCamera]:
    r, cams = _Reader(path), {}
    (n,) = r.read("Q")
    for _ in range(n):
        cid, mid, w, h = r.read("iiQQ")
        if mid not in _BY_ID:
            raise DatasetError(path, f"camera {cid}: unknown camera model id {mid}")
        name, npar = _BY_ID[mid]
        cams[cid] = ColmapCamera(cid, name, w, h, list(r.read(f"{npar}d")))
    return cams


def read_images_binary(path: Path) -> dict[int, ColmapImage]:
    r, images = _Reader(path), {}
    (n,) = r.read("Q")
    for _ in range(n):
        iid, *qt, cid = r.read("i7di")
        name = r.string()
        (npts,) = r.read("Q")
        r.pos += 24 * npts  # x, y (double), point3D id (int64)
        images[iid] = ColmapImage(iid, np.array(qt[:4]), np.array(qt[4:]), cid, name)
    if r.pos > len(r.data):
        raise DatasetError(path, "file ends early (truncated binary model)")
    return images


def read_points_binary(path: Path) -> tuple[np.ndarray, np.ndarray]:
    r = _Reader(path)
    (n,) = r.read("Q")
    xyz, rgb = np.empty((n, 3)), np.empty((n, 3), dtype=np.uint8)
    for k in range(n):
        _, x, y, z, cr, cg, cb, _, track = r.read("Q3d3BdQ")
        xyz[k], rgb[k] = (x, y, z), (cr, cg, cb)
        r.pos += 8 * track  # (image id, point2D idx) int32 pairs
    return xyz, rgb


# --- model I/O --------------------------------------------------------------------------------

def find_model(root: Path) -> Path | None:
    """The folder holding cameras/images/points3D: sparse/0, sparse, or root itself."""
    for d in (root / "sparse" / "0", root / "sparse", root):
        if all((d / f"{n}.bin").is_file() for n in ("cameras", "images")) or all(
            (d / f"{n}.txt").is_file() for n in ("cameras", "images")
        ):
            return d
    return None


def read_model(folder: Path) -> ColmapModel:
    """Reads a model folder; binary when ``cameras.bin`` exists, else text."""
    if (folder / "cameras.bin").is_file():
        cams, imgs = read_cameras_binary(folder / "cameras.bin"), read_images_binary(folder / "images.bin")
        pts = folder / "points3D.bin"
        xyz, rgb = read_points_binary(pts) if pts.is_file() else (np.zeros((0, 3)), np.zeros((0, 3), np.uint8))
    else:
        cams, imgs = read_cameras_text(folder / "cameras.txt"), read_images_text(folder / "images.txt")
        pts = folder / "points3D.txt"
        xyz, rgb = read_points_text(pts) if pts.is_file() else (np.zeros((0, 3)), np.zeros((0, 3), np.uint8))
    return ColmapModel(cams, imgs, xyz, rgb)


def model_from_cameras(
    cameras: Cameras,
    names: list[str],
    points: np.ndarray | Tensor | None = None,  # [P, 3]
    colors: np.ndarray | Tensor | None = None,  # [P, 3] uint8
) -> ColmapModel:
    """A COLMAP model from batched cameras (pinhole -> PINHOLE, opencv -> OPENCV with k3 = 0,
    fisheye -> OPENCV_FISHEYE); identical intrinsics share one COLMAP camera."""
    if len(names) != len(cameras):
        raise ValueError(f"{len(names)} names for {len(cameras)} cameras")
    w2c = cameras.world_to_camera.detach().cpu().double().numpy()
    K = cameras.Ks.detach().cpu().double().numpy()
    dist = None if cameras.distortion is None else cameras.distortion.detach().cpu().double().numpy()
    model = {"pinhole": "PINHOLE", "opencv": "OPENCV", "fisheye": "OPENCV_FISHEYE"}[cameras.model]
    cams: dict[int, ColmapCamera] = {}
    seen: dict[tuple, int] = {}
    images = {}
    for i, name in enumerate(names):
        params = list(map(float, K[i]))
        if model != "PINHOLE":
            d = list(map(float, dist[i])) if dist is not None else [0.0] * 4
            if model == "OPENCV" and len(d) > 4 and d[4] != 0:
                raise ValueError("COLMAP's OPENCV model has no k3")
            params += d[:4]
        key = tuple(params)
        if key not in seen:
            seen[key] = len(cams) + 1
            cams[seen[key]] = ColmapCamera(seen[key], model, cameras.width, cameras.height, params)
        images[i + 1] = ColmapImage(i + 1, rotmat_to_qvec(w2c[i, :3, :3]), w2c[i, :3, 3].copy(), seen[key], name)
    xyz = np.zeros((0, 3)) if points is None else np.asarray(points, dtype=np.float64)
    rgb = np.full((len(xyz), 3), 128, np.uint8) if colors is None else np.asarray(colors, dtype=np.uint8)
    return ColmapModel(cams, images, xyz, rgb)


def write_model(model: ColmapModel, folder: str | Path, *, binary: bool = True) -> None:
    """Writes cameras, images (no 2D points) and points3D (empty tracks, error 0)."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    if binary:
        with open(folder / "cameras.bin", "wb") as f:
            f.write(struct.pack("<Q", len(model.cameras)))
            for c in model.cameras.values():
                f.write(struct.pack(f"<iiQQ{len(c.params)}d", c.id, MODELS[c.model][0], c.width, c.height, *c.params))
        with open(folder / "images.bin", "wb") as f:
            f.write(struct.pack("<Q", len(model.images)))
            for im in model.images.values():
                f.write(struct.pack("<i7di", im.id, *im.qvec, *im.tvec, im.camera_id))
                f.write(im.name.encode("utf-8") + b"\0" + struct.pack("<Q", 0))
        with open(folder / "points3D.bin", "wb") as f:
            f.write(struct.pack("<Q", len(model.points)))
            for k, (p, c) in enumerate(zip(model.points, model.colors)):
                f.write(struct.pack("<Q3d3BdQ", k + 1, *map(float, p), *map(int, c), 0.0, 0))
        return
    with open(folder / "cameras.txt", "w", encoding="utf-8") as f:
        f.write("# CAMERA_ID, MODEL, WIDTH, HEIGHT, PARAMS[]\n")
        for c in model.cameras.values():
            f.write(f"{c.id} {c.model} {c.width} {c.height} " + " ".join(repr(float(v)) for v in c.params) + "\n")
    with open(folder / "images.txt", "w", encoding="utf-8") as f:
        f.write("# IMAGE_ID, QW, QX, QY, QZ, TX, TY, TZ, CAMERA_ID, NAME\n# POINTS2D[] as (X, Y, POINT3D_ID)\n")
        for im in model.images.values():
            vals = " ".join(repr(float(v)) for v in (*im.qvec, *im.tvec))
            f.write(f"{im.id} {vals} {im.camera_id} {im.name}\n\n")
    with open(folder / "points3D.txt", "w", encoding="utf-8") as f:
        f.write("# POINT3D_ID, X, Y, Z, R, G, B, ERROR, TRACK[] as (IMAGE_ID, POINT2D_IDX)\n")
        for k, (p, c) in enumerate(zip(model.points, model.colors)):
            f.write(f"{k + 1} {float(p[0])!r} {float(p[1])!r} {float(p[2])!r} {int(c[0])} {int(c[1])} {int(c[2])} 0\n")


# --- dataset ----------------------------------------------------------------------------------

def load_colmap(
    root: str | Path,
    *,
    downscale: float = 1.0,
    test_every: int = 8,
    cache_dir: str | Path | None = None,
    images_dir: str = "images",
    masks: MaskSource = "auto",
    mask_mode: MaskMode = "auto",
) -> Dataset:
    """Loads a COLMAP capture: ``root/images`` plus a model found by :func:`find_model`
    (+ masks: :func:`.masks.with_masks`)."""
    root = Path(root)
    folder = find_model(root)
    if folder is None:
        raise DatasetError(root, "no COLMAP model (cameras + images .bin/.txt in sparse/0, sparse or here)")
    model = read_model(folder)
    cam_file = folder / ("cameras.bin" if (folder / "cameras.bin").is_file() else "cameras.txt")
    img_file = cam_file.with_name("images" + cam_file.suffix)
    images = sorted(model.images.values(), key=lambda im: im.name)
    if not images:
        raise DatasetError(img_file, "no images")
    paths = [root / images_dir / im.name for im in images]
    keep = drop_missing(paths, img_file, what="images")
    if not keep:
        raise DatasetError(img_file, f"none of the {len(images)} images exist in {root / images_dir}")
    images, paths = [images[i] for i in keep], [paths[i] for i in keep]

    rows, sizes, kinds = [], set(), set()
    for im in images:
        if im.camera_id not in model.cameras:
            raise DatasetError(img_file, f"image {im.name} uses camera {im.camera_id}, which is not in {cam_file.name}")
        cam = model.cameras[im.camera_id]
        fx, fy, cx, cy, kind, coeffs = camera_intrinsics(cam, cam_file)
        rows.append((fx, fy, cx, cy, coeffs))
        sizes.add((cam.width, cam.height))
        kinds.add(kind)
    if len(sizes) > 1:
        raise DatasetError(cam_file, f"cameras have different image sizes {sorted(sizes)}; one size is supported")
    kind = "opencv" if kinds == {"pinhole", "opencv"} else kinds.pop() if len(kinds) == 1 else None
    if kind is None:
        raise DatasetError(cam_file, "cameras mix fisheye and perspective models")
    D = 4 if kind == "fisheye" else 5
    dist = torch.tensor([(r[4] + [0.0] * D)[:D] for r in rows], dtype=torch.float64)
    W, H = sizes.pop()
    check_sizes(paths, W, H, f"{cam_file.name}'s camera")

    n = len(images)
    w2c = torch.eye(4, dtype=torch.float64).repeat(n, 1, 1)
    w2c[:, :3, :3] = torch.from_numpy(qvec_to_rotmat(np.stack([im.qvec for im in images])))
    w2c[:, :3, 3] = torch.from_numpy(np.stack([im.tvec for im in images]))
    col = lambda j: torch.tensor([r[j] for r in rows], dtype=torch.float64)  # noqa: E731
    train, test = every_nth_split(n, test_every)
    common = dict(downscale=downscale, cache_dir=None if cache_dir is None else Path(cache_dir))
    args = (w2c, col(0), col(1), col(2), col(3), W, H, kind, dist, paths)
    ds = Dataset(
        name=root.name,
        root=root,
        format="colmap",
        train=make_split(*args, train, **common),
        test=make_split(*args, test, **common),
        points=torch.from_numpy(model.points.astype(np.float32)),
        point_colors=torch.from_numpy(model.colors.copy()),
    )
    return with_masks(ds, masks, mask_mode)
