"""nerfstudio / instant-ngp ``transforms.json``.

Intrinsics are top-level (shared) and may be overridden per frame: ``fl_x``, ``fl_y``
(else from ``camera_angle_x`` / ``camera_angle_y``), ``cx``, ``cy`` (default the image
centre), ``w``, ``h`` (default the first image's size), distortion ``k1 k2 [k3] p1 p2``
(``OPENCV``, the default ``camera_model``) or ``k1..k4`` (``OPENCV_FISHEYE``). Frames have a
``file_path`` relative to the JSON's folder (an extension-less path gets ``.png``), an
OpenGL camera-to-world ``transform_matrix``, an optional ``mask_path`` and an optional
``sharpness`` (used to find blurred frames: :func:`frame_sharpness`, :mod:`.sharpness`).

Frames whose image is missing are skipped with one warning counting them. The split is the
file's own (``train_filenames`` / ``test_filenames``) when it has one, else every
``test_every``-th remaining frame (index % test_every == 0) is test. Distorted images are
undistorted at load time; the returned cameras are pinhole.
"""

from __future__ import annotations

import math
import posixpath
from pathlib import Path

import torch

from splatfield.render.camera import Cameras, opencv_w2c_to_opengl_c2w, opengl_to_opencv_c2w

from .blender import parse_matrix
from .dataset import Dataset, DatasetError, check_sizes, drop_missing, every_nth_split, image_size, make_split, read_json
from .masks import MaskMode, MaskSource, with_masks

_MODELS = {"OPENCV": "opencv", "PINHOLE": "pinhole", "SIMPLE_PINHOLE": "pinhole", "OPENCV_FISHEYE": "fisheye"}
_KEYS = ("fl_x", "fl_y", "cx", "cy", "w", "h", "k1", "k2", "k3", "k4", "p1", "p2", "camera_model",
         "camera_angle_x", "camera_angle_y")


def _norm(p: str) -> str:
    return posixpath.normpath(p.replace("\\", "/"))


def _resolve(root: Path, file_path: str) -> Path:
    p = root / file_path
    return p if p.suffix else p.with_name(p.name + ".png")


def _intrinsics(meta: dict, frame: dict, size: tuple[int, int], where: Path, i: int) -> tuple:
    """(fx, fy, cx, cy, w, h, model, coeffs) for one frame: frame keys override shared ones."""
    g = {k: frame[k] if k in frame else meta.get(k) for k in _KEYS}
    try:
        w = int(g["w"]) if g["w"] is not None else size[0]
        h = int(g["h"]) if g["h"] is not None else size[1]
        fx = g["fl_x"]
        if fx is None and g["camera_angle_x"] is not None:
            fx = 0.5 * w / math.tan(0.5 * float(g["camera_angle_x"]))
        fy = g["fl_y"]
        if fy is None and g["camera_angle_y"] is not None:
            fy = 0.5 * h / math.tan(0.5 * float(g["camera_angle_y"]))
        if fx is None and fy is None:
            raise DatasetError(where, f"frame {i}: no focal length (fl_x / fl_y / camera_angle_x)")
        fx, fy = float(fx if fx is not None else fy), float(fy if fy is not None else fx)
        cx = float(g["cx"]) if g["cx"] is not None else w / 2
        cy = float(g["cy"]) if g["cy"] is not None else h / 2
        coef = {k: float(g[k] or 0.0) for k in ("k1", "k2", "k3", "k4", "p1", "p2")}
    except (TypeError, ValueError) as e:
        raise DatasetError(where, f"frame {i}: bad intrinsics ({e})") from None
    name = g["camera_model"] or ("OPENCV" if any(coef.values()) else "PINHOLE")
    if name not in _MODELS:
        raise DatasetError(where, f"unsupported camera_model {name!r} (expected one of {sorted(_MODELS)})")
    model = _MODELS[name]
    if model == "fisheye":
        coeffs = [coef["k1"], coef["k2"], coef["k3"], coef["k4"]]
    else:
        coeffs = [coef["k1"], coef["k2"], coef["p1"], coef["p2"], coef["k3"]]
    return fx, fy, cx, cy, w, h, model, coeffs


def load_transforms_json(
    path: str | Path,
    *,
    downscale: float = 1.0,
    test_every: int = 8,
    cache_dir: str | Path | None = None,
    masks: MaskSource = "auto",
    mask_mode: MaskMode = "auto",
) -> Dataset:
    """Loads ``transforms.json`` (``path`` is the file or its folder; masks: its frames'
    ``mask_path``, else :func:`.masks.with_masks`)."""
    path = Path(path)
    if path.is_dir():
        path = path / "transforms.json"
    root = path.parent
    meta = read_json(path)
    if not isinstance(meta, dict):
        raise DatasetError(path, "expected a JSON object")
    frames = meta.get("frames")
    if not isinstance(frames, list) or not frames:
        raise DatasetError(path, "no frames")
    try:
        names = [_norm(str(f["file_path"])) for f in frames]
    except (KeyError, TypeError):
        raise DatasetError(path, "every frame needs a 'file_path'") from None
    paths = [_resolve(root, n) for n in names]
    keep = drop_missing(paths, path)
    if not keep:
        raise DatasetError(path, f"none of the {len(frames)} frames' images exist")
    frames = [frames[i] for i in keep]
    names = [names[i] for i in keep]
    paths = [paths[i] for i in keep]
    has_masks = all("mask_path" in f for f in frames)
    mask_paths = [_resolve(root, _norm(str(f["mask_path"]))) for f in frames] if has_masks else None

    first_size = image_size(paths[0])
    intr = [_intrinsics(meta, f, first_size, path, i) for i, f in enumerate(frames)]
    sizes = {(t[4], t[5]) for t in intr}
    models = {t[6] for t in intr}
    if len(sizes) > 1:
        raise DatasetError(path, f"frames have different image sizes {sorted(sizes)}; one size is supported")
    if len(models) > 1:
        raise DatasetError(path, f"frames mix camera models {sorted(models)}")
    (W, H), model = sizes.pop(), models.pop()
    check_sizes(paths, W, H, "transforms.json's w x h" if "w" in meta else f"the first image ({paths[0].name})")

    c2w = torch.stack([parse_matrix(f.get("transform_matrix"), path, i) for i, f in enumerate(frames)])
    col = lambda j: torch.tensor([t[j] for t in intr], dtype=torch.float64)  # noqa: E731
    dist = torch.tensor([t[7] for t in intr], dtype=torch.float64)

    train, test = _split(meta, names, test_every, path)
    common = dict(mask_paths=mask_paths, downscale=downscale, cache_dir=None if cache_dir is None else Path(cache_dir))
    args = (opengl_to_opencv_c2w(c2w), col(0), col(1), col(2), col(3), W, H, model, dist, paths)
    ds = Dataset(
        name=root.name,
        root=root,
        format="transforms_json",
        train=make_split(*args, train, **common),
        test=make_split(*args, test, **common),
        bounds=_aabb(meta, path),
    )
    return with_masks(ds, masks, mask_mode)


def _aabb(meta: dict, where: Path) -> tuple[tuple[float, float, float], tuple[float, float, float]] | None:
    """instant-ngp's box, in the file's coordinates: its scene maps p to p * scale + offset
    (0.33 and 0.5 by default) and bounds it by the cube of side aabb_scale around 0.5."""
    if "aabb_scale" not in meta:
        return None
    try:
        side = float(meta["aabb_scale"])
        scale = float(meta.get("scale", 0.33))
        offset = [float(v) for v in meta.get("offset", [0.5, 0.5, 0.5])]
    except (TypeError, ValueError):
        raise DatasetError(where, "aabb_scale, scale and offset must be numbers") from None
    if not (side > 0 and scale > 0 and len(offset) == 3):
        raise DatasetError(where, f"aabb_scale {side} and scale {scale} must be positive, offset three numbers")
    lo = tuple((0.5 - side / 2 - o) / scale for o in offset)
    hi = tuple((0.5 + side / 2 - o) / scale for o in offset)
    return lo, hi  # type: ignore[return-value]


def _split(meta: dict, names: list[str], test_every: int, where: Path) -> tuple[list[int], list[int]]:
    """The file's own split (nerfstudio ``*_filenames``) when present, else every n-th."""
    tr, te = meta.get("train_filenames"), meta.get("test_filenames")
    if tr is None and te is None:
        return every_nth_split(len(names), test_every)
    te_set = {_norm(str(n)) for n in te or []}
    tr_set = {_norm(str(n)) for n in tr} if tr is not None else None
    test = [i for i, n in enumerate(names) if n in te_set]
    train = [i for i, n in enumerate(names) if (n in tr_set if tr_set is not None else n not in te_set)]
    if not train:
        raise DatasetError(where, "train_filenames matches none of the frames whose images exist")
    return train, test


def frame_sharpness(path: str | Path) -> dict[Path, float]:
    """The ``sharpness`` field of the frames that have one (instant-ngp's colmap2nerf writes
    it: the variance of the Laplacian at full size), by image path as :func:`load_transforms_json`
    resolves it; ``path`` is the file or its folder. Values that are not finite numbers are
    left out."""
    path = Path(path)
    if path.is_dir():
        path = path / "transforms.json"
    meta = read_json(path)
    frames = meta.get("frames") if isinstance(meta, dict) else None
    out: dict[Path, float] = {}
    for f in frames if isinstance(frames, list) else []:
        s = f.get("sharpness") if isinstance(f, dict) else None
        if isinstance(s, (int, float)) and not isinstance(s, bool) and math.isfinite(s) and "file_path" in f:
            out[_resolve(path.parent, _norm(str(f["file_path"])))] = float(s)
    return out


def transforms_document(splits: dict[str, tuple[Cameras, list[Path], Cameras | None]], relative_to: Path) -> dict:
    """A nerfstudio ``transforms.json`` of cameras (OpenCV world-to-camera, pinhole, at the
    images' loaded size) for their image files on disk: per frame its intrinsics scaled to
    the file's size (``source``: the files' own cameras, with their distortion, which the
    loader's undistortion keeps K for), an OpenGL camera-to-world ``transform_matrix`` and
    the file path relative to ``relative_to`` when it lies under it. ``splits`` maps a split
    name (train, test) to (cameras, image paths, source cameras or None); nerfstudio's
    ``<split>_filenames`` lists keep the split."""
    frames, lists = [], {}
    for name, (cams, paths, source) in splits.items():
        src = source if source is not None else cams
        sx, sy = src.width / cams.width, src.height / cams.height
        c2w_gl = opencv_w2c_to_opengl_c2w(cams.world_to_camera.to(torch.float64))
        names = []
        for i, p in enumerate(paths):
            p = Path(p).resolve()
            try:
                rel = p.relative_to(relative_to.resolve()).as_posix()
            except ValueError:
                rel = str(p)
            frame = {"file_path": rel, "w": src.width, "h": src.height,
                     "fl_x": float(cams.fx[i]) * sx, "fl_y": float(cams.fy[i]) * sy,
                     "cx": float(cams.cx[i]) * sx, "cy": float(cams.cy[i]) * sy,
                     "transform_matrix": c2w_gl[i].tolist()}  # fmt: skip
            frame.update(_distortion_fields(src, i))
            frames.append(frame)
            names.append(rel)
        lists[f"{name}_filenames"] = names
    return {"camera_model": _camera_model(next(iter(splits.values()))), "frames": frames, **lists}


def _camera_model(split: tuple[Cameras, list[Path], Cameras | None]) -> str:
    source = split[2]
    model = "pinhole" if source is None else source.model
    return {"pinhole": "OPENCV", "opencv": "OPENCV", "fisheye": "OPENCV_FISHEYE"}[model]


def _distortion_fields(cams: Cameras, i: int) -> dict[str, float]:
    if cams.distortion is None or cams.model == "pinhole":
        return {}
    d = [float(v) for v in cams.distortion[i]]
    names = ("k1", "k2", "p1", "p2", "k3") if cams.model == "opencv" else ("k1", "k2", "k3", "k4")
    return dict(zip(names, d))
