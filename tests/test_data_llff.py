"""LLFF poses_bounds.npy: write the fox cameras, read them back."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from splatfield.data.llff import load_llff, read_poses_bounds, write_poses_bounds
from splatfield.render.camera import Cameras

from .test_data_colmap import FOX, fox_cameras, needs_fox


@needs_fox
def test_fox_round_trip(tmp_path):
    cams, names = fox_cameras(tmp_path)
    order = np.argsort(names)  # LLFF pairs rows with the sorted image files
    cams = cams[torch.from_numpy(order)]
    # LLFF keeps one focal and a centred principal point.
    n = len(cams)
    cams = replace(cams, model="pinhole", distortion=None, fy=cams.fx.clone(),
                   cx=torch.full((n,), 540.0, dtype=torch.float64), cy=torch.full((n,), 960.0, dtype=torch.float64))
    root = tmp_path / "scene"
    root.mkdir()
    (root / "images").symlink_to(FOX / "images", target_is_directory=True)
    write_poses_bounds(root / "poses_bounds.npy", cams, (0.5, 12.0))
    ds = load_llff(root, test_every=0, cache_dir=tmp_path / "cache")
    assert ds.format == "llff" and len(ds.train) == 50
    got = ds.train.cameras
    torch.testing.assert_close(got.world_to_camera, cams.world_to_camera, rtol=0, atol=1e-6)
    torch.testing.assert_close(got.Ks, cams.Ks, rtol=0, atol=1e-6)
    assert [p.name for p in ds.train.image_paths] == sorted(names)
    _, _, bounds = read_poses_bounds(root / "poses_bounds.npy")
    np.testing.assert_array_equal(bounds, np.tile([0.5, 12.0], (50, 1)))


def test_llff_axes_and_rescaled_focal(tmp_path):
    # One camera at (1, 2, 3) looking along world -z with image-down = world -y:
    # LLFF columns (down, right, back) = (-y, +x, +z).
    row = np.zeros((3, 5))
    row[:, 0], row[:, 1], row[:, 2], row[:, 3] = [0, -1, 0], [1, 0, 0], [0, 0, 1], [1, 2, 3]
    row[:, 4] = [12, 16, 20.0]  # hwf of the original images
    np.save(tmp_path / "poses_bounds.npy", np.concatenate([row.reshape(15), [1, 9]])[None])
    (tmp_path / "images").mkdir()
    Image.new("RGB", (8, 6)).save(tmp_path / "images" / "0.png")  # half size on disk
    ds = load_llff(tmp_path, test_every=0, cache_dir=tmp_path / "cache")
    cams = ds.train.cameras
    torch.testing.assert_close(cams.centers[0], torch.tensor([1.0, 2, 3], dtype=torch.float64))
    torch.testing.assert_close(cams.fx, torch.tensor([10.0], dtype=torch.float64))
    p = cams.world_to_camera[0] @ torch.tensor([1.0, 2, -2, 1], dtype=torch.float64)  # 5 in front
    torch.testing.assert_close(p[:3], torch.tensor([0.0, 0, 5], dtype=torch.float64))
    q = cams.world_to_camera[0] @ torch.tensor([1.0, 3, 3, 1], dtype=torch.float64)  # world +y is image up
    assert q[1] < 0


def test_writer_refuses_what_llff_cannot_hold():
    cams = Cameras.from_intrinsics(torch.eye(4, dtype=torch.float64), 7.0, 7.5, 4.0, 3.0, 8, 6)
    with pytest.raises(ValueError, match="one focal"):
        write_poses_bounds("/nonexistent/x.npy", cams, (1, 2))
