"""transforms.json loader (instant-ngp fox) and the undistortion it relies on."""

from __future__ import annotations

import json
import math
import warnings
from pathlib import Path

import pytest
import torch

from splatfield.data.transforms_json import load_transforms_json
from splatfield.data.undistort import distort, undistort_image, undistort_points

DATASETS = Path(__file__).resolve().parents[2] / "shared" / "datasets"
FOX = DATASETS / "ingp_fox"
needs_fox = pytest.mark.shared_data(FOX)


def _load_fox(**kw):
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        ds = load_transforms_json(FOX / "transforms.json", **kw)
    return ds, caught


@needs_fox
def test_fox_skips_missing_frames_with_one_warning(tmp_path):
    ds, caught = _load_fox(cache_dir=tmp_path)
    assert len(caught) == 1
    msg = str(caught[0].message)
    assert "17 of 67" in msg and "transforms.json" in msg
    # 50 remaining frames; index % 8 == 0 is test -> 0, 8, ..., 48: 7 test, 43 train.
    assert (len(ds.train), len(ds.test)) == (43, 7)
    listed = [FOX / f["file_path"] for f in json.loads((FOX / "transforms.json").read_text())["frames"]]
    existing = [p for p in listed if p.is_file()]
    assert ds.test.image_paths == existing[::8]  # every 8th *existing* frame, in the file's order
    assert ds.test.image_paths[1] != listed[8]  # (the 9th listed frame is a different one)
    cams = ds.train.cameras
    assert cams.model == "pinhole" and cams.distortion is None and (cams.width, cams.height) == (1080, 1920)
    torch.testing.assert_close(cams.fx[0], torch.tensor(1375.52, dtype=torch.float64))
    torch.testing.assert_close(cams.cy[0], torch.tensor(965.268, dtype=torch.float64))
    # Every camera is the one its own file's frame lists (no shifted indices).
    meta = json.loads((FOX / "transforms.json").read_text())
    by_name = {f["file_path"]: torch.tensor(f["transform_matrix"], dtype=torch.float64) for f in meta["frames"]}
    for split in (ds.train, ds.test):
        for i, p in enumerate(split.image_paths):
            c2w = by_name[f"images/{p.name}"]
            # (the stored rotations are not exactly orthonormal: compare through the inverse)
            c2w_cv = split.cameras.camera_to_world[i]
            torch.testing.assert_close(c2w_cv[:3, 3], c2w[:3, 3], rtol=0, atol=1e-9)
            torch.testing.assert_close(c2w_cv[:3, 1], -c2w[:3, 1], rtol=0, atol=1e-9)


@needs_fox
def test_fox_test_every_and_downscaled_undistorted_image(tmp_path):
    ds, _ = _load_fox(downscale=4, test_every=0, cache_dir=tmp_path)
    assert (len(ds.train), len(ds.test)) == (50, 0)
    cams = ds.train.cameras
    assert (cams.width, cams.height) == (270, 480)
    torch.testing.assert_close(cams.fx[0], torch.tensor(1375.52 / 4, dtype=torch.float64))
    src = ds.train.source_cameras
    assert src.model == "opencv" and src.distortion.shape == (50, 5)
    img = ds.train.image(3)
    assert img.dtype == torch.uint8 and img.shape == (480, 270, 3)
    assert 20 < img.float().mean() < 235
    assert len(list(tmp_path.rglob("0004.jpg.png"))) == 1
    assert torch.equal(ds.train.image(3), img)


@needs_fox
def test_fox_scene_extent_is_positive(tmp_path):
    ds, _ = _load_fox(cache_dir=tmp_path)
    assert ds.format == "transforms_json" and ds.scene_extent() > 0.5


# --- undistortion, on synthetic images ------------------------------------------------------

W, H = 120, 90
FX, FY, CX, CY = 80.0, 82.0, 61.3, 44.1
COEFFS = torch.tensor([-0.25, 0.06, 0.002, -0.003, 0.01], dtype=torch.float64)


def _pattern(x, y):  # smooth checkerboard in normalised coordinates, values in [0, 1]
    return 0.5 + 0.5 * torch.tanh(3 * torch.sin(14 * x) * torch.sin(14 * y))


def _pixels():
    v, u = torch.meshgrid(torch.arange(H, dtype=torch.float64) + 0.5, torch.arange(W, dtype=torch.float64) + 0.5,
                          indexing="ij")
    return u, v


def test_undistort_points_inverts_distort():
    x = torch.linspace(-0.7, 0.7, 15, dtype=torch.float64)[:, None].expand(15, 15)
    y = x.T
    xd, yd = distort(x, y, "opencv", COEFFS)
    assert (xd - x).abs().max() > 0.05  # the model really moves points
    xu, yu = undistort_points(xd, yd, "opencv", COEFFS)
    torch.testing.assert_close(xu, x, rtol=0, atol=1e-9)
    torch.testing.assert_close(yu, y, rtol=0, atol=1e-9)


def test_undistorting_a_distorted_checkerboard_recovers_it():
    u, v = _pixels()
    # The distorted photo: pixel (u, v) shows the scene point that distorts onto it.
    xu, yu = undistort_points((u - CX) / FX, (v - CY) / FY, "opencv", COEFFS)
    distorted = _pattern(xu, yu)[..., None].float()
    truth = _pattern((u - CX) / FX, (v - CY) / FY)[..., None].float()
    out = undistort_image(distorted, FX, FY, CX, CY, "opencv", COEFFS)
    inner = (slice(10, H - 10), slice(10, W - 10))
    mse = ((out - truth)[inner] ** 2).mean()
    psnr = -10 * math.log10(float(mse))
    assert psnr > 30
    # and doing nothing would have been far off
    assert -10 * math.log10(float(((distorted - truth)[inner] ** 2).mean())) < 20


def test_a_corner_pixel_moves_by_the_predicted_amount():
    p = torch.tensor([8.5, 7.5], dtype=torch.float64)  # pinhole location near the corner
    xd, yd = distort((p[0] - CX) / FX, (p[1] - CY) / FY, "opencv", COEFFS)
    q = torch.stack([xd * FX + CX, yd * FY + CY])  # where the distorted photo shows it
    assert (q - p).norm() > 5  # a big move, so the test can fail
    u, v = _pixels()
    blob = torch.exp(-((u - q[0]) ** 2 + (v - q[1]) ** 2) / (2 * 1.5**2))[..., None].float()
    out = undistort_image(blob, FX, FY, CX, CY, "opencv", COEFFS)[..., 0].double()
    win = ((u - p[0]).abs() < 6) & ((v - p[1]).abs() < 6)
    w = out * win
    centroid = torch.stack([(w * u).sum() / w.sum(), (w * v).sum() / w.sum()])
    torch.testing.assert_close(centroid, p, rtol=0, atol=0.35)


def test_nerfstudio_split_and_per_frame_intrinsics(tmp_path):
    from PIL import Image

    (tmp_path / "im").mkdir()
    frames = []
    for k in range(4):
        Image.new("RGB", (16, 12), (10 * k, 0, 0)).save(tmp_path / "im" / f"{k}.png")
        c2w = torch.eye(4, dtype=torch.float64)
        c2w[0, 3] = k
        frames.append({"file_path": f"./im/{k}", "transform_matrix": c2w.tolist(), "fl_x": 20.0 + k})
    meta = {"fl_y": 21.0, "w": 16, "h": 12, "frames": frames,
            "train_filenames": ["im/0", "im/2", "im/3"], "test_filenames": ["im/1"]}
    (tmp_path / "transforms.json").write_text(json.dumps(meta))
    ds = load_transforms_json(tmp_path, cache_dir=tmp_path / "cache")
    assert [p.name for p in ds.train.image_paths] == ["0.png", "2.png", "3.png"]
    assert [p.name for p in ds.test.image_paths] == ["1.png"]
    torch.testing.assert_close(ds.train.cameras.fx, torch.tensor([20.0, 22.0, 23.0], dtype=torch.float64))
    torch.testing.assert_close(ds.test.cameras.cx, torch.tensor([8.0], dtype=torch.float64))
    assert int(ds.test.image(0)[0, 0, 0]) == 10


def test_cache_goes_to_splatfield_cache_and_is_atomic(tmp_path, monkeypatch):
    from PIL import Image

    monkeypatch.setenv("SPLATFIELD_CACHE", str(tmp_path / "envcache"))
    Image.new("RGBA", (16, 12), (200, 100, 0, 0)).save(tmp_path / "a.png")
    meta = {"fl_x": 20.0, "frames": [{"file_path": "a.png", "transform_matrix": torch.eye(4).tolist()}]}
    (tmp_path / "transforms.json").write_text(json.dumps(meta))
    ds = load_transforms_json(tmp_path, downscale=2, test_every=0)
    assert ds.train.image(0).shape == (6, 8, 3)
    m = ds.train.mask(0)  # no background: alpha becomes the mask
    assert m.dtype == torch.bool and m.shape == (6, 8) and not m.any()
    files = list((tmp_path / "envcache" / "images").rglob("*"))
    assert [f.name for f in files if f.is_file()] == ["a.png.png"]  # no temp files left behind


def test_opencv_distortion_is_colmaps():
    """The convention anchored outside this project: pycolmap's OPENCV camera projects the
    same normalised points to the same pixels (fox's calibration)."""
    pycolmap = pytest.importorskip("pycolmap")  # a dependency (SfM): installed by `make setup`
    params = [1375.52, 1374.49, 554.558, 965.268, 0.0578421, -0.0805099, -0.000980296, 0.00015575]
    camera = pycolmap.Camera(model="OPENCV", width=1080, height=1920, params=params)
    xy = torch.tensor([[0.3, 0.5], [-0.35, -0.6], [0.1, 0.0], [-0.2, 0.45]], dtype=torch.float64)
    rays = torch.cat([xy, torch.ones(len(xy), 1, dtype=torch.float64)], 1).numpy()  # points at depth 1
    expected = torch.as_tensor(camera.img_from_cam(rays), dtype=torch.float64)
    xd, yd = distort(xy[:, 0], xy[:, 1], "opencv", torch.tensor(params[4:], dtype=torch.float64))
    got = torch.stack([xd * params[0] + params[2], yd * params[1] + params[3]], 1)
    torch.testing.assert_close(got, expected, rtol=0, atol=1e-5)  # pixels; pycolmap works in float64 too


@needs_fox
def test_lens_distortion_ignore_takes_the_photos_as_they_are(tmp_path):
    from splatfield.data import load

    lines: list[str] = []
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        given = load(FOX, downscale=8, test_every=0, cache_dir=tmp_path)
        plain = load(FOX, downscale=8, test_every=0, cache_dir=tmp_path, lens_distortion="ignore", log=lines.append)
    assert plain.train.source_cameras.model == "pinhole" and plain.train.source_cameras.distortion is None
    torch.testing.assert_close(plain.train.cameras.Ks, given.train.cameras.Ks)  # same K, same poses
    torch.testing.assert_close(plain.train.cameras.world_to_camera, given.train.cameras.world_to_camera)
    a, b = given.train.image(3).float(), plain.train.image(3).float()
    assert (a - b).abs().mean() > 1.0  # undistortion moved the pixels; ignoring it did not
    assert len(lines) == 1 and "opencv coefficients (0.05784 -0.08051" in lines[0], lines
