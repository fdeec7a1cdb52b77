"""LLFF ``poses_bounds.npy``: reader, writer and dataset loader.

``poses_bounds.npy`` is [N, 17]: a row-major 3x5 matrix ``[R | t | hwf]`` per image, whose
rotation columns are the camera's (down, right, back) axes in world and ``t`` its centre
(camera-to-world), ``hwf`` = (height, width, focal) of the original images, then the near
and far depth bounds. Images are ``images/`` sorted by name, one per row. Converted to
OpenCV: c2w columns (right, down, forward) = (col1, col0, -col2). Intrinsics:
fx = fy = focal, cx = W/2, cy = H/2, rescaled when the images on disk are not hwf's size.
Every ``test_every``-th image is test (LLFF's "llffhold").
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from splatfield.render.camera import Cameras

from .dataset import Dataset, DatasetError, check_sizes, every_nth_split, image_size, make_split
from .masks import MaskMode, MaskSource, with_masks

IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".PNG", ".JPG", ".JPEG"}


def is_llff(root: Path) -> bool:
    return (root / "poses_bounds.npy").is_file()


def read_poses_bounds(path: Path) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(c2w OpenCV [N, 4, 4], hwf [N, 3], bounds [N, 2]) from ``poses_bounds.npy``."""
    try:
        a = np.load(path, allow_pickle=False)
    except FileNotFoundError:
        raise DatasetError(path, "file not found") from None
    except (ValueError, OSError) as e:
        raise DatasetError(path, f"not a numpy array file ({e})") from None
    if a.ndim != 2 or a.shape[1] != 17 or a.shape[0] == 0:
        raise DatasetError(path, f"expected an [N, 17] array with N > 0, got shape {list(a.shape)}")
    m = a[:, :15].reshape(-1, 3, 5).astype(np.float64)
    c2w = np.tile(np.eye(4), (len(a), 1, 1))
    c2w[:, :3, 0], c2w[:, :3, 1], c2w[:, :3, 2] = m[:, :, 1], m[:, :, 0], -m[:, :, 2]
    c2w[:, :3, 3] = m[:, :, 3]
    return c2w, m[:, :, 4], a[:, 15:17].astype(np.float64)


def write_poses_bounds(path: str | Path, cameras: Cameras, bounds: np.ndarray | tuple[float, float]) -> None:
    """Writes ``poses_bounds.npy``; LLFF can only hold fx == fy and a centred principal point."""
    K = cameras.Ks.detach().cpu().double().numpy()
    W, H = cameras.width, cameras.height
    if not (np.allclose(K[:, 0], K[:, 1], rtol=0, atol=1e-9) and np.allclose(K[:, 2], W / 2, rtol=0, atol=1e-9)
            and np.allclose(K[:, 3], H / 2, rtol=0, atol=1e-9)):
        raise ValueError("LLFF stores one focal length and a centred principal point (fx == fy, cx = W/2, cy = H/2)")
    if cameras.model != "pinhole":
        raise ValueError("LLFF stores pinhole cameras only")
    c2w = torch.linalg.inv(cameras.world_to_camera.detach().cpu().double()).numpy()
    n = len(cameras)
    m = np.empty((n, 3, 5))
    m[:, :, 0], m[:, :, 1], m[:, :, 2] = c2w[:, :3, 1], c2w[:, :3, 0], -c2w[:, :3, 2]
    m[:, :, 3] = c2w[:, :3, 3]
    m[:, :, 4] = np.stack([np.full(n, H), np.full(n, W), K[:, 0]], axis=-1)
    b = np.broadcast_to(np.asarray(bounds, dtype=np.float64), (n, 2))
    np.save(Path(path), np.concatenate([m.reshape(n, 15), b], axis=1))


def load_llff(
    root: str | Path, *, downscale: float = 1.0, test_every: int = 8, cache_dir: str | Path | None = None,
    masks: MaskSource = "auto", mask_mode: MaskMode = "auto",
) -> Dataset:
    """Loads an LLFF folder: ``poses_bounds.npy`` + ``images/`` (+ masks: :func:`.masks.with_masks`)."""
    root = Path(root)
    pb = root / "poses_bounds.npy"
    c2w, hwf, _bounds = read_poses_bounds(pb)
    folder = root / "images"
    paths = sorted(p for p in folder.iterdir() if p.suffix in IMAGE_SUFFIXES) if folder.is_dir() else []
    if len(paths) != len(c2w):
        raise DatasetError(pb, f"{len(c2w)} poses but {len(paths)} images in {folder}")
    W, H = image_size(paths[0])
    check_sizes(paths, W, H, f"the first image ({paths[0].name})")
    f = torch.from_numpy(hwf[:, 2] * (W / hwf[:, 1]))  # focal follows the images' actual width
    n = len(paths)
    w2c = torch.linalg.inv(torch.from_numpy(c2w))
    full = lambda v: torch.full((n,), float(v), dtype=torch.float64)  # noqa: E731
    train, test = every_nth_split(n, test_every)
    common = dict(downscale=downscale, cache_dir=None if cache_dir is None else Path(cache_dir))
    args = (w2c, f, f.clone(), full(W / 2), full(H / 2), W, H, "pinhole", None, paths)
    return with_masks(Dataset(name=root.name, root=root, format="llff", train=make_split(*args, train, **common),
                              test=make_split(*args, test, **common)), masks, mask_mode)  # fmt: skip
