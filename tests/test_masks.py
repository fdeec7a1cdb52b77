"""Masks (data/masks.py): the naming conventions, the two meanings, the size check, and an
object capture's start (the visual hull) and alpha supervision."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from splatfield.data import DatasetError, visual_hull_points
from splatfield.data.colmap import load_colmap
from splatfield.data.masks import CONVENTIONS, find_masks

W, H = 8, 6


def _colmap_capture(root: Path, names=("a.jpg", "b.jpg"), colour=(200, 40, 10)) -> None:
    (root / "images").mkdir(parents=True)
    for n in names:
        Image.new("RGB", (W, H), colour).save(root / "images" / n, quality=100)
    (root / "cameras.txt").write_text(f"1 PINHOLE {W} {H} 5 5 4 3\n")
    (root / "images.txt").write_text("".join(f"{i + 1} 1 0 0 0 0 0 {i} 1 {n}\n\n" for i, n in enumerate(names)))
    (root / "points3D.txt").write_text("")


def _left_half() -> np.ndarray:
    m = np.zeros((H, W), np.uint8)
    m[:, : W // 2] = 255
    return m


@pytest.mark.parametrize("convention, file_of", [
    ("<name>", lambda n: n),  # a mask stored under the image's own name
    ("<name>.png", lambda n: n + ".png"),
    ("<stem>.png", lambda n: Path(n).stem + ".png"),
    ("<stem>_mask.*", lambda n: Path(n).stem + "_mask.png"),
    ("<stem>_mask.*", lambda n: Path(n).stem + "_mask.jpg"),
])  # fmt: skip
def test_each_naming_convention_is_found(tmp_path, convention, file_of):
    _colmap_capture(tmp_path)
    (tmp_path / "masks").mkdir()
    for n in ("a.jpg", "b.jpg"):
        name = file_of(n)
        Image.fromarray(_left_half()).save(tmp_path / "masks" / name, **({"quality": 100} if name.endswith("jpg") else {}))
    ds = load_colmap(tmp_path, test_every=0, cache_dir=tmp_path / "cache", mask_mode="ignore")
    assert f"as {convention}" in ds.masks_note and "pixels to ignore" in ds.masks_note
    assert ds.train.mask(0).tolist() == (_left_half() >= 128).tolist()


def test_conventions_are_tried_in_order_for_each_image(tmp_path):
    imgs = [Path("x/IMG_1.JPG"), Path("x/IMG_2.JPG")]
    (tmp_path / "IMG_1.png").touch()
    (tmp_path / "IMG_1_mask.png").touch()
    (tmp_path / "IMG_2_mask.PNG").touch()
    files = find_masks(tmp_path, imgs)  # <stem>.png comes before <stem>_mask.*
    assert files.convention == "<stem>.png and <stem>_mask.*"
    assert [p.name for p in files.paths] == ["IMG_1.png", "IMG_2_mask.PNG"]
    (tmp_path / "IMG_2_mask.PNG").unlink()
    with pytest.raises(DatasetError) as e:
        find_masks(tmp_path, imgs)
    msg = str(e.value)
    assert "\n" not in msg and msg.startswith(str(tmp_path)) and "no mask for image IMG_2.JPG" in msg
    assert all(name in msg for name, _ in CONVENTIONS)


def test_object_masks_composite_the_image_and_supervise_alpha(tmp_path):
    """NeRD's naming picks the object meaning: the image becomes image * m + white * (1 - m),
    every pixel counts, and the silhouette is what the alpha trains towards."""
    _colmap_capture(tmp_path)
    (tmp_path / "masks").mkdir()
    m = _left_half()
    m[0, 0] = 128  # a soft edge pixel: half coverage
    for n in ("a", "b"):
        Image.fromarray(m).save(tmp_path / "masks" / f"{n}_mask.png")
    ds = load_colmap(tmp_path, test_every=0, cache_dir=tmp_path / "cache")
    assert ds.train.mask_mode == "object" and ds.background == (1.0, 1.0, 1.0)
    assert "object's silhouette" in ds.masks_note and "auto:" in ds.masks_note
    assert ds.train.mask(0) is None  # the whole image counts
    img = ds.train.image(0).numpy().astype(int)
    raw = np.asarray(Image.open(tmp_path / "images" / "a.jpg")).astype(int)
    assert (img[:, W // 2 :] == 255).all()  # background: white
    assert np.abs(img[1:, : W // 2] - raw[1:, : W // 2]).max() == 0  # object: the photo
    want = np.rint(raw[0, 0] * (128 / 255) + 255 * (127 / 255))
    assert np.array_equal(img[0, 0], want)
    assert ds.train.silhouette(0).numpy().tolist() == m.tolist()
    # ignore instead: the photo as it is, the mask leaves pixels out
    ds = load_colmap(tmp_path, test_every=0, cache_dir=tmp_path / "cache", mask_mode="ignore")
    assert ds.background is None and ds.train.silhouette(0) is None
    assert np.array_equal(ds.train.image(0).numpy(), raw) and ds.train.mask(0).sum() == H * W // 2
    # none: no masks at all
    ds = load_colmap(tmp_path, test_every=0, cache_dir=tmp_path / "cache", masks="none")
    assert ds.train.mask(0) is None and ds.masks_note is None


def test_masks_from_another_folder_and_a_missing_folder(tmp_path):
    _colmap_capture(tmp_path)
    elsewhere = tmp_path / "seg"
    elsewhere.mkdir()
    for n in ("a", "b"):
        Image.fromarray(_left_half()).save(elsewhere / f"{n}.png")
    ds = load_colmap(tmp_path, test_every=0, cache_dir=tmp_path / "cache", masks=elsewhere)
    assert str(elsewhere) in ds.masks_note and ds.train.mask(1).sum() == H * W // 2
    with pytest.raises(DatasetError, match="no such folder of masks"):
        load_colmap(tmp_path, test_every=0, cache_dir=tmp_path / "cache", masks=tmp_path / "nope")


def test_a_mask_of_the_wrong_size_is_one_line_naming_both(tmp_path):
    _colmap_capture(tmp_path)
    (tmp_path / "masks").mkdir()
    Image.fromarray(_left_half()).save(tmp_path / "masks" / "a.png")
    Image.new("L", (W + 2, H)).save(tmp_path / "masks" / "b.png")
    ds = load_colmap(tmp_path, test_every=0, cache_dir=tmp_path / "cache")
    with pytest.raises(DatasetError) as e:
        ds.train.mask(1)
    assert str(e.value) == f"{tmp_path / 'masks' / 'b.png'}: mask is {W + 2}x{H} but its image b.jpg is {W}x{H}"


def test_visual_hull_of_a_sphere(tmp_path):
    """Masks of a sphere seen from a ring of cameras: the hull's points lie in the sphere's
    cone-carved hull (within a few cells of the sphere), none far outside."""
    from splatfield.data.procedural import look_at_c2w
    from splatfield.render import Cameras

    n, size, f = 12, 48, 60.0
    eyes = [(4 * math.cos(a), 4 * math.sin(a), 0.8 * (-1) ** k) for k, a in enumerate(np.linspace(0, 2 * math.pi, n, endpoint=False))]
    c2w = np.stack([look_at_c2w(np.array(e, float)) for e in eyes])  # OpenGL camera-to-world
    c2w_cv = c2w @ np.diag([1.0, -1.0, -1.0, 1.0])
    w2c = torch.linalg.inv(torch.from_numpy(c2w_cv))
    full = lambda v: torch.full((n,), float(v), dtype=torch.float64)  # noqa: E731
    cams = Cameras(w2c, full(f), full(f), full(size / 2), full(size / 2), size, size)
    yy, xx = np.mgrid[0:size, 0:size] + 0.5
    sil = []
    for b in range(n):  # the sphere of radius 0.5 at the origin, projected exactly
        o = c2w_cv[b, :3, 3]
        d = (np.stack([(xx - size / 2) / f, (yy - size / 2) / f, np.ones_like(xx)], -1) @ c2w_cv[b, :3, :3].T)
        d /= np.linalg.norm(d, axis=-1, keepdims=True)
        tca = -(d @ o)
        dist2 = o @ o - tca**2
        sil.append(np.where(dist2 <= 0.25, 255, 0).astype(np.uint8))
    sil = torch.from_numpy(np.stack(sil))
    pts, cols = visual_hull_points(cams, sil, extent=4.0, n=5000, generator=torch.Generator().manual_seed(0))
    r = pts.norm(dim=1)
    assert pts.shape == (5000, 3) and torch.equal(cols, torch.full((5000, 3), 0.5))
    assert r.max() < 0.5 + 0.25 and (r < 0.5).float().mean() > 0.6
    empty = torch.zeros_like(sil)
    assert visual_hull_points(cams, empty, extent=4.0, n=100, generator=torch.Generator()) is None


def test_one_camera_centres_its_start_on_its_axis_nearest_the_origin():
    """A one-view dataset (lift's) has no meeting point of optical axes: the start must be
    around the object at the origin, not around the camera (which left lift's Gaussians as a
    screen in front of the lens, fitting the reference view and nothing else)."""
    from splatfield.data import look_at_centre
    from splatfield.data.procedural import look_at_c2w
    from splatfield.render import Cameras

    c2w_cv = torch.from_numpy(look_at_c2w(np.array([2.0, -1.5, 0.7])) @ np.diag([1.0, -1.0, -1.0, 1.0]))
    cams = Cameras.from_intrinsics(torch.linalg.inv(c2w_cv)[None], 40.0, 40.0, 16.0, 16.0, 32, 32)
    torch.testing.assert_close(look_at_centre(cams), torch.zeros(3, dtype=torch.float64), rtol=0, atol=1e-9)
    yy, xx = np.mgrid[0:32, 0:32]
    sil = torch.from_numpy(np.where((xx - 16) ** 2 + (yy - 16) ** 2 < 36, 255, 0).astype(np.uint8))[None]
    pts, _ = visual_hull_points(cams, sil, extent=2.8, n=2000, generator=torch.Generator().manual_seed(0), half_size=0.5)
    assert pts.abs().max() <= 0.5 + 1e-5  # in the cube around the origin, none near the camera 2.6 away
    away = torch.from_numpy(look_at_c2w(np.array([0.0, 0.0, 3.0]), target=np.array([0.0, 3.0, 6.0])) @ np.diag([1.0, -1.0, -1.0, 1.0]))
    cams_away = Cameras.from_intrinsics(torch.linalg.inv(away)[None], 40.0, 40.0, 16.0, 16.0, 32, 32)
    torch.testing.assert_close(look_at_centre(cams_away), torch.tensor([0.0, 0.0, 3.0], dtype=torch.float64))


def test_alpha_loss_only_with_an_object_mask():
    """The L1 of the alpha to the silhouette is added only when the batch has one; its
    gradient raises the alpha inside and lowers it outside (no scene state is involved)."""
    from splatfield.render import RenderOutput
    from splatfield.scenes.gaussian_scene import GaussianScene
    from splatfield.scenes.views import Batch

    alpha = torch.full((1, 4, 4, 1), 0.5, requires_grad=True)
    out = RenderOutput(torch.zeros(1, 4, 4, 3), alpha, torch.zeros(1, 4, 4, 1), None)  # type: ignore[arg-type]
    target = torch.zeros(1, 4, 4, 3)
    sil = torch.zeros(1, 4, 4)
    sil[:, :, :2] = 1.0
    loss_plain, _ = GaussianScene.batch_loss(None, Batch([0], None, target), out, ssim_weight=0.0, alpha_weight=1.0)  # type: ignore[arg-type]
    loss_obj, _ = GaussianScene.batch_loss(None, Batch([0], None, target, silhouette=sil), out, ssim_weight=0.0,
                                           alpha_weight=1.0)  # type: ignore[arg-type]  # fmt: skip
    assert float(loss_plain.detach()) == 0.0 and abs(float(loss_obj.detach()) - 0.5) < 1e-7
    loss_obj.backward()
    assert (alpha.grad[0, :, :2, 0] < 0).all() and (alpha.grad[0, :, 2:, 0] > 0).all()  # inside up, outside down
