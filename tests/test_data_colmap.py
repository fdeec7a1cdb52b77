"""COLMAP text/binary models: write the fox cameras, read them back; camera models."""

from __future__ import annotations

import warnings
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from splatfield.data.colmap import load_colmap, model_from_cameras, read_model, write_model
from splatfield.data.transforms_json import load_transforms_json

DATASETS = Path(__file__).resolve().parents[2] / "shared" / "datasets"
FOX = DATASETS / "ingp_fox"
needs_fox = pytest.mark.shared_data(FOX)


def fox_cameras(tmp_path: Path):
    """The 50 fox cameras as on disk (OPENCV), rotations made exactly orthonormal (COLMAP
    stores unit quaternions; the JSON's matrices are orthonormal only to ~1e-6)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ds = load_transforms_json(FOX, test_every=0, cache_dir=tmp_path / "cache")
    cams = ds.train.source_cameras
    U, _, Vh = torch.linalg.svd(cams.world_to_camera[:, :3, :3])
    w2c = cams.world_to_camera.clone()
    w2c[:, :3, :3] = U @ Vh
    return replace(cams, world_to_camera=w2c), [p.name for p in ds.train.image_paths]


def _by_name(split):
    return {p.name: i for i, p in enumerate(split.image_paths)}


@needs_fox
@pytest.mark.parametrize("binary", [True, False], ids=["bin", "txt"])
@pytest.mark.parametrize("distorted", [False, True], ids=["pinhole", "opencv"])
def test_fox_round_trip(tmp_path, binary, distorted):
    cams, names = fox_cameras(tmp_path)
    if distorted:
        cams = replace(cams, distortion=cams.distortion.clone())
        cams.distortion[:, 4] = 0.0  # OPENCV has no k3
    else:
        cams = replace(cams, model="pinhole", distortion=None)
    rng = np.random.default_rng(0)
    pts, rgb = rng.normal(size=(40, 3)) * 3, rng.integers(0, 256, size=(40, 3), dtype=np.uint8)
    root = tmp_path / "scene"
    root.mkdir()
    (root / "images").symlink_to(FOX / "images", target_is_directory=True)
    write_model(model_from_cameras(cams, names, pts, rgb), root / "sparse" / "0", binary=binary)
    assert (root / "sparse" / "0" / ("cameras.bin" if binary else "cameras.txt")).is_file()

    ds = load_colmap(root, test_every=8, cache_dir=tmp_path / "cache2")
    assert ds.format == "colmap" and (len(ds.train), len(ds.test)) == (43, 7)
    sorted_names = sorted(names)
    assert [p.name for p in ds.test.image_paths] == sorted_names[::8]
    for split in (ds.train, ds.test):
        src = split.source_cameras
        assert split.cameras.model == "pinhole" and split.cameras.distortion is None
        assert src.model == ("opencv" if distorted else "pinhole")
        for name, i in _by_name(split).items():
            j = names.index(name)
            torch.testing.assert_close(split.cameras.world_to_camera[i], cams.world_to_camera[j], rtol=0, atol=1e-6)
            torch.testing.assert_close(split.cameras.Ks[i], cams.Ks[j], rtol=0, atol=1e-6)
            if distorted:
                torch.testing.assert_close(src.distortion[i], cams.distortion[j], rtol=0, atol=1e-12)
    assert (ds.train.cameras.width, ds.train.cameras.height) == (1080, 1920)
    np.testing.assert_allclose(ds.points.numpy(), pts, rtol=1e-6, atol=1e-6)
    np.testing.assert_array_equal(ds.point_colors.numpy(), rgb)


def _write_images(folder: Path, names, size=(8, 6)):
    folder.mkdir(parents=True, exist_ok=True)
    for n in names:
        Image.new("RGB", size, (50, 60, 70)).save(folder / n)


def test_camera_models_and_layout_next_to_images(tmp_path):
    _write_images(tmp_path / "images", ["a.png", "b.png", "c.png"])
    (tmp_path / "cameras.txt").write_text(
        "# comment\n1 SIMPLE_PINHOLE 8 6 5 4 3\n2 SIMPLE_RADIAL 8 6 5 4 3 0.1\n3 RADIAL 8 6 5 4 3 0.1 -0.2\n"
    )
    (tmp_path / "images.txt").write_text(
        "1 1 0 0 0 0 0 0 1 a.png\n\n2 0 1 0 0 1 2 3 2 b.png\n1.0 2.0 -1\n3 1 0 0 0 0 0 1 3 c.png\n\n"
    )
    (tmp_path / "points3D.txt").write_text("1 0.5 0.25 2 255 0 10 0.1 1 0\n")
    ds = load_colmap(tmp_path, test_every=0, cache_dir=tmp_path / "cache")
    src = ds.train.source_cameras
    assert [p.name for p in ds.train.image_paths] == ["a.png", "b.png", "c.png"]
    assert src.model == "opencv"
    torch.testing.assert_close(src.distortion, torch.tensor(
        [[0, 0, 0, 0, 0], [0.1, 0, 0, 0, 0], [0.1, -0.2, 0, 0, 0]], dtype=torch.float64))
    torch.testing.assert_close(ds.train.cameras.fy, torch.full((3,), 5.0, dtype=torch.float64))
    # qvec (0, 1, 0, 0) is a half turn about x: y and z flip.
    torch.testing.assert_close(ds.train.cameras.world_to_camera[1], torch.tensor(
        [[1, 0, 0, 1], [0, -1, 0, 2], [0, 0, -1, 3], [0, 0, 0, 1]], dtype=torch.float64))
    np.testing.assert_allclose(ds.points.numpy(), [[0.5, 0.25, 2]])
    np.testing.assert_array_equal(ds.point_colors.numpy(), [[255, 0, 10]])
    img = ds.train.image(1)  # undistorted on load: centre pixel unchanged
    assert img.shape == (6, 8, 3) and img[3, 4].tolist() == [50, 60, 70]


def test_sparse_folder_detection_and_binary_tracks(tmp_path):
    from splatfield.render.camera import Cameras

    _write_images(tmp_path / "images", ["x.png"])
    cams = Cameras.from_intrinsics(torch.eye(4, dtype=torch.float64), 7.0, 7.5, 4.0, 3.0, 8, 6)
    write_model(model_from_cameras(cams, ["x.png"]), tmp_path / "sparse", binary=True)
    model = read_model(tmp_path / "sparse")
    assert model.cameras[1].model == "PINHOLE" and model.cameras[1].params == [7.0, 7.5, 4.0, 3.0]
    ds = load_colmap(tmp_path, cache_dir=tmp_path / "cache")
    assert len(ds.train) == 0 and len(ds.test) == 1 and ds.points.shape == (0, 3)


def test_masks_folder(tmp_path):
    from splatfield.data import DatasetError

    _write_images(tmp_path / "images", ["a.png", "b.png"])
    (tmp_path / "cameras.txt").write_text("1 PINHOLE 8 6 5 5 4 3\n")
    (tmp_path / "images.txt").write_text("1 1 0 0 0 0 0 0 1 a.png\n\n2 1 0 0 0 0 0 1 1 b.png\n\n")
    (tmp_path / "points3D.txt").write_text("")
    (tmp_path / "masks").mkdir()
    left = np.zeros((6, 8), np.uint8)
    left[:, :4] = 255
    Image.fromarray(left).save(tmp_path / "masks" / "a.png")
    Image.fromarray(255 - left).save(tmp_path / "masks" / "b.png.png")  # the x.jpg.png convention
    ds = load_colmap(tmp_path, test_every=0, cache_dir=tmp_path / "cache")
    assert ds.train.mask(0).tolist() == (left >= 128).tolist()
    assert ds.train.mask(1).tolist() == (left < 128).tolist()
    assert ds.train.mask(0).dtype == torch.bool
    (tmp_path / "masks" / "b.png.png").unlink()
    with pytest.raises(DatasetError, match=r"masks: no mask for image b\.png"):
        load_colmap(tmp_path, test_every=0, cache_dir=tmp_path / "cache")
