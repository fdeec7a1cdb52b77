"""Blender loader on the real nerf_synthetic lego scene."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch

from splatfield.data import load
from splatfield.data.blender import load_blender

DATASETS = Path(__file__).resolve().parents[2] / "shared" / "datasets"
LEGO = DATASETS / "nerf_synthetic_lego"
pytestmark = pytest.mark.shared_data(LEGO)


@pytest.fixture(scope="module")
def lego2(tmp_path_factory):
    return load_blender(LEGO, downscale=2, cache_dir=tmp_path_factory.mktemp("cache"))


def test_splits_sizes_and_intrinsics(lego2):
    ds = lego2
    assert ds.format == "blender" and ds.background == (1.0, 1.0, 1.0)
    assert len(ds.train) == 100 and len(ds.test) == 200
    cams = ds.train.cameras
    assert (cams.width, cams.height) == (400, 400) and cams.model == "pinhole" and cams.distortion is None
    f = 0.5 * 400 / math.tan(0.5 * 0.6911112070083618)
    torch.testing.assert_close(cams.fx, torch.full((100,), f, dtype=torch.float64), rtol=0, atol=1e-9)
    torch.testing.assert_close(cams.fy, cams.fx)
    torch.testing.assert_close(cams.cx, torch.full((100,), 200.0, dtype=torch.float64))
    torch.testing.assert_close(cams.cy, torch.full((100,), 200.0, dtype=torch.float64))


def test_camera_centre_and_axes_follow_the_transform_matrix(lego2):
    frames = json.loads((LEGO / "transforms_test.json").read_text())["frames"]
    k = 37
    c2w = torch.tensor(frames[k]["transform_matrix"], dtype=torch.float64)
    assert lego2.test.image_paths[k] == LEGO / (frames[k]["file_path"].lstrip("./") + ".png")
    # the stored rotations are float32-orthonormal, so the centre matches to ~1e-6
    torch.testing.assert_close(lego2.test.cameras.centers[k], c2w[:3, 3], rtol=0, atol=5e-6)
    # OpenCV forward (+z) is OpenGL's -z column; the scene origin is in front of the camera.
    w2c = lego2.test.cameras.world_to_camera[k]
    torch.testing.assert_close(w2c[2, :3], -c2w[:3, 2], rtol=0, atol=5e-6)
    assert (w2c @ torch.tensor([0.0, 0, 0, 1], dtype=torch.float64))[2] > 2.0


def test_image_is_composited_on_white_and_cached(lego2, tmp_path):
    img = lego2.train.image(0)
    assert img.dtype == torch.uint8 and img.shape == (400, 400, 3)
    assert (img[0, 0] == 255).all() and (img[-1, -1] == 255).all() and (img[0, -1] == 255).all()
    assert img.float().mean() < 250  # the lego is there, not a blank image
    assert lego2.train.mask(0) is None  # alpha went into the composite
    cached = list(Path(lego2.train.cache_dir).rglob("r_0.png.png"))
    assert len(cached) == 1
    assert torch.equal(lego2.train.image(0), img)  # from the cache now


def test_scene_extent_and_detection(tmp_path):
    ds = load(LEGO, cache_dir=tmp_path)
    assert ds.format == "blender" and ds.train.cameras.width == 800
    c = ds.train.cameras.centers
    expected = 1.1 * (c - c.mean(0)).norm(dim=-1).max()
    assert ds.scene_extent() == pytest.approx(float(expected))
    assert 4.0 < ds.scene_extent() < 6.0  # lego cameras sit on a sphere of radius ~4
