"""The procedural demo dataset: written as Blender format, read back by the loader, images
that show the scene where the cameras say it is, reuse and re-render."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from splatfield.data import load
from splatfield.data import procedural as P

SIZE, TRAIN, TEST, SEED = 64, 12, 4, 3


@pytest.fixture(scope="module")
def written(tmp_path_factory) -> Path:
    return P.write_demo_dataset(tmp_path_factory.mktemp("demo") / "scene", size=SIZE, train_views=TRAIN,
                                test_views=TEST, seed=SEED)


@pytest.fixture(scope="module")
def ds(written, tmp_path_factory):
    return load(written, cache_dir=tmp_path_factory.mktemp("cache"))


def _rgba(path: Path) -> np.ndarray:  # [H, W, 4] uint8
    with Image.open(path) as im:
        assert im.mode == "RGBA"
        return np.asarray(im)


def test_layout_matches_nerf_synthetic(written):
    meta = json.loads((written / "transforms_train.json").read_text())
    assert meta["camera_angle_x"] == pytest.approx(0.6911112070083618)
    assert [f["file_path"] for f in meta["frames"]] == [f"./train/r_{i}" for i in range(TRAIN)]
    test = json.loads((written / "transforms_test.json").read_text())
    assert [f["file_path"] for f in test["frames"]] == [f"./test/r_{i}" for i in range(TEST)]
    assert np.asarray(meta["frames"][0]["transform_matrix"]).shape == (4, 4)
    assert json.loads((written / "procedural.json").read_text()) == {
        "generator": "splatfield.data.procedural", "version": P.VERSION, "size": SIZE,
        "train_views": TRAIN, "test_views": TEST, "seed": SEED,
    }
    assert sorted(p.name for p in written.parent.iterdir()) == ["scene"]  # no temporary folder left


def test_loads_as_blender(ds):
    assert ds.format == "blender" and ds.background == (1.0, 1.0, 1.0)
    assert (len(ds.train), len(ds.test)) == (TRAIN, TEST)
    f = 0.5 * SIZE / math.tan(0.5 * P.CAMERA_ANGLE_X)
    for split in (ds.train, ds.test):
        cams = split.cameras
        assert (cams.width, cams.height, cams.model) == (SIZE, SIZE, "pinhole")
        torch.testing.assert_close(cams.fx, torch.full((len(split),), f, dtype=torch.float64))
        torch.testing.assert_close(cams.cx, torch.full((len(split),), SIZE / 2, dtype=torch.float64))
        img = split.image(0)
        assert img.dtype == torch.uint8 and img.shape == (SIZE, SIZE, 3)
        assert (img[0, 0] == 255).all() and (img[-1, -1] == 255).all()  # transparent corner -> white


def test_cameras_follow_the_written_c2w_and_look_at_the_origin(ds, written):
    train_c2w, test_c2w = P.camera_poses(TRAIN, TEST, SEED)
    flip = np.diag([1.0, -1.0, -1.0, 1.0])
    for split, name, c2w in ((ds.train, "train", train_c2w), (ds.test, "test", test_c2w)):
        stored = np.array([f["transform_matrix"] for f in json.loads((written / f"transforms_{name}.json").read_text())["frames"]])
        np.testing.assert_allclose(stored, c2w, atol=1e-12)
        w2c = split.cameras.world_to_camera.numpy()
        np.testing.assert_allclose(w2c, np.linalg.inv(c2w @ flip), atol=1e-12)  # OpenGL -> OpenCV
        np.testing.assert_allclose(split.cameras.centers.numpy(), c2w[:, :3, 3], atol=1e-12)
        np.testing.assert_allclose(np.linalg.norm(c2w[:, :3, 3], axis=1), P.RADIUS, atol=1e-12)
        # the origin is 4 units in front of every camera and projects onto the image centre
        o = w2c[:, :3, 3]
        assert np.allclose(o[:, 2], P.RADIUS, atol=1e-12)
        u = split.cameras.fx.numpy() * o[:, 0] / o[:, 2] + split.cameras.cx.numpy()
        v = split.cameras.fy.numpy() * o[:, 1] / o[:, 2] + split.cameras.cy.numpy()
        np.testing.assert_allclose(u, SIZE / 2, atol=1e-9)
        np.testing.assert_allclose(v, SIZE / 2, atol=1e-9)
        # image "up" (OpenCV -y) is towards world +z: the plate is below the object
        assert (-w2c[:, 1, 2] > 0).all()
    elev = np.degrees(np.arcsin(train_c2w[:, 2, 3] / P.RADIUS))
    assert elev.min() > 7.9 and elev.max() < 80.1 and len(np.unique(np.round(elev, 6))) == TRAIN
    np.testing.assert_allclose(test_c2w[:, 2, 3], P.RADIUS * math.sin(math.radians(P.TEST_ELEVATION_DEG)), atol=1e-12)


def test_every_view_shows_a_colourful_object_on_a_transparent_background(ds):
    for split in (ds.train, ds.test):
        for path in split.image_paths:
            a = _rgba(path)
            alpha = a[..., 3]
            coverage = alpha.mean() / 255.0
            assert 0.10 < coverage < 0.70, (path.name, coverage)
            assert alpha[0].max() == 0 and alpha[-1].max() == 0  # nothing touches the top/bottom rows
            assert ((alpha > 0) & (alpha < 255)).sum() > 0.01 * SIZE * SIZE  # anti-aliased edges
            solid = a[alpha == 255, :3].astype(np.float64) / 255.0
            assert solid.std(axis=0).min() > 0.12, (path.name, solid.std(axis=0))  # every channel varies
            assert len(np.unique(solid.round(1), axis=0)) > 40  # many distinct colours, not flat patches
            assert (a[alpha == 0, :3] == 0).all()


def test_files_hold_what_render_view_returns(written):
    c2w = np.array(json.loads((written / "transforms_test.json").read_text())["frames"][1]["transform_matrix"])
    out = P.render_view(c2w, SIZE, P.CAMERA_ANGLE_X)
    assert out.dtype == np.float32 and out.shape == (SIZE, SIZE, 4)
    assert out.min() >= 0.0 and out.max() <= 1.0
    stored = _rgba(written / "test" / "r_1.png").astype(np.float32) / 255.0
    assert np.abs(stored - out).max() <= 0.5 / 255 + 1e-6
    # looking away from the scene there is nothing at all
    away = P.look_at_c2w((0.0, 0.0, 4.0), target=(0.0, 0.0, 8.0))
    assert not P.render_view(away, 16).any()


def test_gradient_sphere_is_where_the_loaded_cameras_say(ds):
    """Ray cast the gradient sphere through the loaded (OpenCV) cameras independently: the
    pixel under its point nearest each test camera is fully covered and has the colour the
    texture and shading formulas give at the ray's hit."""
    centre, radius = (torch.tensor(v, dtype=torch.float64) for v in P.GRADIENT_SPHERE)
    light = torch.tensor(P.LIGHT_DIR, dtype=torch.float64)
    cams = ds.test.cameras
    origins, dirs = cams.generate_rays()  # [B, H, W, 3] through pixel centres
    for i in range(len(cams)):
        eye = cams.centers[i]
        near = centre + radius * torch.nn.functional.normalize(eye - centre, dim=0)
        x = cams.world_to_camera[i, :3, :3] @ near + cams.world_to_camera[i, :3, 3]
        col = int(math.floor(float(cams.fx[i] * x[0] / x[2] + cams.cx[i])))
        row = int(math.floor(float(cams.fy[i] * x[1] / x[2] + cams.cy[i])))
        o, d = origins[i, row, col], dirs[i, row, col]
        oc = o - centre
        b = torch.dot(oc, d)
        disc = b * b - (torch.dot(oc, oc) - radius**2)
        assert disc > 0, "the pixel's ray misses the sphere"
        n = torch.nn.functional.normalize(o + (-b - disc.sqrt()) * d - centre, dim=0)
        expected = (0.1 + 0.85 * (0.5 + 0.5 * n)) * (P.AMBIENT + (1 - P.AMBIENT) * torch.clamp(n @ light, min=0))
        a = _rgba(ds.test.image_paths[i])
        assert a[row, col, 3] == 255, (i, row, col)
        got = torch.from_numpy(a[row, col, :3].astype(np.float64) / 255.0)
        assert (got - expected).abs().max() < 0.02, (i, got, expected)
        assert torch.equal(ds.test.image(i)[row, col], torch.from_numpy(a[row, col, :3].copy()))


def test_reuse_and_rerender(tmp_path):
    folder = tmp_path / "demo"
    calls: list[int] = []
    P.write_demo_dataset(folder, size=32, train_views=3, test_views=2, on_view=calls.append)
    assert calls == [1, 2, 3, 4, 5]
    files = sorted(p for p in folder.rglob("*") if p.is_file())
    stamps = {p: p.stat().st_mtime_ns for p in files}
    calls.clear()
    assert P.write_demo_dataset(folder, size=32, train_views=3, test_views=2, on_view=calls.append) == folder
    assert calls == []  # reused, nothing rendered
    assert {p: p.stat().st_mtime_ns for p in sorted(p for p in folder.rglob("*") if p.is_file())} == stamps
    P.write_demo_dataset(folder, size=24, train_views=3, test_views=2, on_view=calls.append)
    assert calls == [1, 2, 3, 4, 5]  # another size: rendered again, in place
    with Image.open(folder / "train" / "r_0.png") as im:
        assert im.size == (24, 24)
    assert json.loads((folder / "procedural.json").read_text())["size"] == 24
    assert sorted(p.name for p in tmp_path.iterdir()) == ["demo"]
    # an incomplete dataset (an image gone) is rendered again too
    (folder / "test" / "r_1.png").unlink()
    calls.clear()
    P.write_demo_dataset(folder, size=24, train_views=3, test_views=2, on_view=calls.append)
    assert len(calls) == 5 and (folder / "test" / "r_1.png").is_file()


def test_refuses_to_replace_a_folder_it_did_not_write(tmp_path):
    folder = tmp_path / "mine"
    folder.mkdir()
    (folder / "notes.txt").write_text("keep me")
    with pytest.raises(FileExistsError):
        P.write_demo_dataset(folder, size=8, train_views=1, test_views=1)
    assert (folder / "notes.txt").read_text() == "keep me"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["mine"]
    with pytest.raises(ValueError):
        P.write_demo_dataset(tmp_path / "x", size=0)
