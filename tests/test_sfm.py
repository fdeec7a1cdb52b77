"""Structure from motion (issue 7): the pycolmap pipeline on real photos, its cache, the
preparation of a photo folder, camera scaling, pose alignment and video frames."""

from __future__ import annotations

import json
import math
import os
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from splatfield.data import load
from splatfield.data.colmap import qvec_to_rotmat
from splatfield.data import sfm as sfm_data
from splatfield.data.pose_alignment import compare_poses, compare_to_reference, umeyama
from splatfield.data.sfm_inputs import image_files, prepare_images
from splatfield.data.video_frames import extract_frames, sharpness

from .conftest import SHARED, require_shared

pycolmap = pytest.importorskip("pycolmap")

FOX = SHARED / "datasets" / "ingp_fox"
needs_fox = pytest.mark.shared_data(FOX / "images")
FOX_NAMES = 12  # the first 12 photos by name: enough overlap, a few seconds of SfM
FOX_FX = 1375.52  # transforms.json fl_x at 1080x1920


def fox_subset(folder: Path, count: int = FOX_NAMES, size: tuple[int, int] = (540, 960)) -> list[str]:
    """The first ``count`` fox photos, resized, as JPEGs in ``folder``; returns their names."""
    folder.mkdir(parents=True, exist_ok=True)
    names = sorted(p.name for p in (FOX / "images").iterdir())[:count]
    for n in names:
        with Image.open(FOX / "images" / n) as im:
            im.resize(size, Image.Resampling.BOX).save(folder / n, quality=95)
    return names


@pytest.fixture(scope="module")
def fox_sfm(tmp_path_factory):
    """SfM on 12 fox photos at 540x960 (SfM copies at 270x480) with a masks/ folder that
    hides the top 10% of every photo; made once for this module."""
    require_shared(FOX / "images")
    root = tmp_path_factory.mktemp("fox_sfm")
    photos = root / "capture" / "images"
    names = fox_subset(photos)
    (root / "capture" / "masks").mkdir()
    mask = np.full((960, 540), 255, np.uint8)
    mask[:96] = 0
    for n in names:
        Image.fromarray(mask).save(root / "capture" / "masks" / f"{Path(n).stem}.png")
    lines: list[str] = []
    phases: list[tuple[str, int, list[int]]] = []  # (phase, total, ticks)

    def on_phase(name: str, total: int):
        phases.append((name, total, []))
        return phases[-1][2].append

    opts = sfm_data.SfmOptions(max_size=480)
    res = sfm_data.cached_or_run(root / "capture", root / "out", opts, log=lines.append, on_phase=on_phase)
    return {"root": root, "capture": root / "capture", "names": names, "res": res, "log": lines, "opts": opts,
            "mask": mask, "phases": phases}  # fmt: skip


def test_fox_subset_registers_and_agrees_with_the_provided_poses(fox_sfm):
    s = fox_sfm["res"].summary
    assert s["images_total"] == FOX_NAMES
    assert s["images_registered"] >= FOX_NAMES - 1, s["unregistered"]
    assert s["mean_reprojection_error_px"] < 1.0
    assert s["points"] > 500
    on_disk = json.loads((fox_sfm["res"].out / "sfm.json").read_text())
    for key in ("images_total", "images_registered", "unregistered", "mean_reprojection_error_px", "points", "seconds"):
        assert on_disk[key] == s[key]
    assert set(on_disk["stage_seconds"]) == {"images", "features", "matching", "verification", "mapping", "write"}
    assert [ln.split(":")[0] for ln in fox_sfm["log"]] == ["images", "features", "matcher", "matching (exhaustive)",
                                                           "verification", "mapping"]  # fmt: skip
    assert fox_sfm["log"][2] == f"matcher: exhaustive (auto: {FOX_NAMES} images, every pair up to 100): 66 image pairs"
    assert s["matcher"] == "exhaustive" and s["image_pairs"] == 66
    cmp, missing = compare_to_reference(fox_sfm["res"].out, FOX / "transforms.json")
    assert cmp.cameras == s["images_registered"]
    assert len(missing) == 50 - s["images_registered"]  # the reference has all 50 photos
    assert cmp.rotation_error_deg_mean <= 2.0 and cmp.rotation_error_deg_max <= 3.0, cmp.per_camera
    assert cmp.position_error_rel_max <= 0.05, cmp.per_camera


def test_every_phase_reports_increasing_counts_up_to_its_total(fox_sfm):
    s = fox_sfm["res"].summary
    phases = {name: (total, ticks) for name, total, ticks in fox_sfm["phases"]}
    assert list(phases) == ["reading images", "preparing images", "features", "matching", "verification", "mapping",
                            "writing"]  # fmt: skip
    expected = {"reading images": FOX_NAMES, "preparing images": FOX_NAMES, "features": FOX_NAMES, "matching": 66,
                "verification": 66, "mapping": FOX_NAMES, "writing": 3}  # fmt: skip
    for name, (total, ticks) in phases.items():
        assert total == expected[name], name
        assert ticks and all(n > 0 for n in ticks), name  # each call adds to the count
        done = s["images_registered"] if name == "mapping" else total  # registrations, never past the total
        assert sum(ticks) == done, (name, ticks)
    assert len(phases["mapping"][1]) >= 2  # the initial pair, then image by image


def test_cameras_are_scaled_back_to_the_full_size_images(fox_sfm):
    out = fox_sfm["res"].out
    assert fox_sfm["res"].summary["sfm_size"] == [270, 480]
    ds = load(out, test_every=0, cache_dir=fox_sfm["root"] / "cache")
    src = ds.train.source_cameras
    assert (src.width, src.height) == (540, 960)
    assert src.model == "opencv"  # SIMPLE_RADIAL's k kept as k1, removed at load
    assert abs(float(src.fx[0]) / (FOX_FX / 2) - 1) < 0.05  # the provided focal length, at half size
    assert abs(float(src.cx[0]) - 270) < 1e-6 and abs(float(src.cy[0]) - 480) < 1e-6
    assert ds.train.image(0).shape == (960, 540, 3)
    # the photos are copied byte for byte (nothing had to change)
    name = ds.train.image_paths[0].name
    assert (out / "images" / name).read_bytes() == (fox_sfm["capture"] / "images" / name).read_bytes()


def test_masks_reach_the_capture_and_colmap(fox_sfm):
    out = fox_sfm["res"].out
    ds = load(out, test_every=0, cache_dir=fox_sfm["root"] / "cache")
    name = ds.train.image_paths[0].name
    assert np.array_equal(np.asarray(Image.open(out / "masks" / f"{name}.png")), fox_sfm["mask"])
    m = ds.train.mask(0)  # undistorted with its photo: the edge moves by a pixel or two
    assert m is not None and m.shape == (960, 540)
    assert (m.numpy() == (fox_sfm["mask"] >= 128)).mean() > 0.995
    assert not m[:90].any() and m[100:].all()
    with pycolmap.Database.open(str(out / "colmap" / "database.db")) as db:
        ys = np.concatenate([db.read_keypoints(im.image_id)[:, 1] for im in db.read_all_images()])
    assert len(ys) > 1000 and ys.min() >= 48 - 1  # no feature in the masked top 10% (48 rows at 270x480)


def test_a_second_run_reuses_the_output(fox_sfm, monkeypatch):
    def fail(*a, **k):
        raise AssertionError("SfM ran again")

    monkeypatch.setattr(sfm_data, "run_sfm", fail)
    again = sfm_data.cached_or_run(fox_sfm["capture"], fox_sfm["res"].out, fox_sfm["opts"])
    assert again.reused and again.summary == fox_sfm["res"].summary
    # other options are another SfM: the folder named is never cleared
    with pytest.raises(sfm_data.SfmError, match="exists and is not the SfM output of this input"):
        sfm_data.cached_or_run(fox_sfm["capture"], fox_sfm["res"].out, sfm_data.SfmOptions(max_size=400))


def test_training_reuses_the_cached_sfm_and_says_so(fox_sfm, tmp_path, monkeypatch):
    from splatfield.data.sfm import capture_for_training

    monkeypatch.setenv("SPLATFIELD_CACHE", str(tmp_path / "cache"))
    default = sfm_data.default_output(fox_sfm["capture"], sfm_data.SfmOptions())
    assert default.parent == tmp_path / "cache" / "sfm" and default.name.startswith("capture-")
    shutil.copytree(fox_sfm["res"].out, default)  # as if `splatfield sfm` had made it with the defaults
    summary = json.loads((default / "sfm.json").read_text())
    summary["key"] = sfm_data.cache_key(fox_sfm["capture"], sfm_data.SfmOptions())
    (default / "sfm.json").write_text(json.dumps(summary))
    lines: list[str] = []
    assert capture_for_training(fox_sfm["capture"], lines.append) == default
    assert any(ln.startswith(f"sfm: reusing {default}") for ln in lines), lines
    assert capture_for_training(default, lines.append) == default  # already a capture: used as it is


def test_cache_key_follows_the_files_and_the_options(tmp_path):
    for n in ("a.jpg", "b.jpg", "c.jpg"):
        Image.new("RGB", (8, 8)).save(tmp_path / n)
    opts = sfm_data.SfmOptions()
    k = sfm_data.cache_key(tmp_path, opts)
    (tmp_path / "notes.txt").write_text("not an image")
    assert sfm_data.cache_key(tmp_path, opts) == k
    assert sfm_data.cache_key(tmp_path, sfm_data.SfmOptions(matcher="sequential")) != k
    st = (tmp_path / "b.jpg").stat()
    os.utime(tmp_path / "b.jpg", ns=(st.st_atime_ns, st.st_mtime_ns + 10**9))
    assert sfm_data.cache_key(tmp_path, opts) != k


@pytest.mark.parametrize("model,size,expect", [
    ("SIMPLE_RADIAL", (200, 100), "SIMPLE_RADIAL"),  # one scale: the model is kept
    ("SIMPLE_RADIAL", (201, 100), "OPENCV"),  # two scales need two focal lengths
    ("SIMPLE_PINHOLE", (201, 100), "PINHOLE"),
    ("OPENCV", (201, 100), "OPENCV"),
    ("OPENCV_FISHEYE", (300, 150), "OPENCV_FISHEYE"),
])  # fmt: skip
def test_full_size_camera_projects_like_the_scaled_small_one(model, size, expect):
    params = {"SIMPLE_RADIAL": [80, 50, 25, 0.1], "SIMPLE_PINHOLE": [80, 50, 25],
              "OPENCV": [80, 82, 50, 25, 0.1, -0.05, 0.01, 0.02], "OPENCV_FISHEYE": [80, 82, 50, 25, 0.1, -0.05, 0.01, 0.02]}
    small = pycolmap.Camera.create_from_model_name(1, model, 80.0, 100, 50)  # fmt: skip
    small.params = params[model]
    big = pycolmap.Camera.create_from_model_name(1, model, 80.0, 100, 50)
    big.params = params[model]
    sfm_data._full_size_camera(big, *size)
    assert big.model.name == expect and (big.width, big.height) == size
    pts = np.array([[0.1, -0.2, 1.0], [-0.3, 0.15, 2.0], [0.0, 0.0, 1.0]])
    scale = np.array([size[0] / 100, size[1] / 50])
    for p in pts:
        assert np.allclose(big.img_from_cam(p), small.img_from_cam(p) * scale, atol=1e-9)


def test_umeyama_and_pose_comparison_recover_a_known_similarity():
    rng = np.random.default_rng(0)
    n = 10
    w2c_ref = np.tile(np.eye(4), (n, 1, 1))
    for i in range(n):
        q = rng.normal(size=4)
        w2c_ref[i, :3, :3] = qvec_to_rotmat(q / np.linalg.norm(q))
        w2c_ref[i, :3, 3] = rng.normal(size=3)
    # the same cameras in another world frame: x_ref = s R x_est + t
    s, R, t = 2.5, qvec_to_rotmat(np.array([0.9, 0.1, -0.3, 0.2])), np.array([1.0, -2.0, 0.5])
    T = np.eye(4)
    T[:3, :3], T[:3, 3] = s * R, t  # est -> ref (similarity)
    w2c_est = np.stack([w @ T for w in w2c_ref])  # world_est -> camera, up to the scale of t
    w2c_est[:, :3, :3] /= s  # keep rotations orthonormal: the camera frame is scaled uniformly
    w2c_est[:, :3, 3] /= s
    c = compare_poses(w2c_est, w2c_ref)
    assert abs(c.scale - s) < 1e-9 and c.rotation_error_deg_max < 1e-6 and c.position_error_max < 1e-9
    # perturb one camera by 3 degrees about its optical axis: exactly that camera shows it
    a = math.radians(3)
    Rz = np.array([[math.cos(a), -math.sin(a), 0], [math.sin(a), math.cos(a), 0], [0, 0, 1]])
    w2c_est[4, :3, :3] = Rz @ w2c_est[4, :3, :3]
    w2c_est[4, :3, 3] = Rz @ w2c_est[4, :3, 3]  # same centre
    c = compare_poses(w2c_est, w2c_ref)
    errs = [row["rotation_error_deg"] for row in c.per_camera]
    assert abs(errs[4] - 3.0) < 1e-6 and max(errs[:4] + errs[5:]) < 1e-6
    s2, R2, t2 = umeyama(np.eye(3) * 2, np.eye(3) * 2)
    assert abs(s2 - 1) < 1e-12 and np.allclose(R2, np.eye(3)) and np.allclose(t2, 0)


# ----------------------------------------------------------------------------- a photo folder


def _noise(seed: int, size: tuple[int, int]) -> Image.Image:
    return Image.fromarray(np.random.default_rng(seed).integers(0, 256, (size[1], size[0], 3), dtype=np.uint8))


def test_prepare_images_rotates_skips_resizes_and_masks(tmp_path):
    src = tmp_path / "photos"
    src.mkdir()
    _noise(0, (64, 48)).save(src / "a.jpg", quality=100)
    shutil.copyfile(src / "a.jpg", src / "a_copy.jpg")  # duplicate content
    y, x = np.mgrid[0:64, 0:48]  # smooth (JPEG keeps it), and no two turns of it look alike
    stored = Image.fromarray(np.stack([x * 5, y * 4, 128 + 0 * x], -1).astype(np.uint8))  # stored 48x64 + EXIF 6
    exif = Image.Exif()
    exif[0x0112] = 6
    stored.save(src / "b.jpg", quality=100, exif=exif)
    (src / "c.jpg").write_bytes((src / "a.jpg").read_bytes()[:-600] + b"x")  # truncated, not a duplicate
    _noise(2, (32, 24)).save(src / "d.png")  # half size, same aspect: resized
    _noise(3, (48, 48)).save(src / "e.png")  # another aspect ratio: skipped
    rgba = np.asarray(_noise(4, (64, 48)).convert("RGBA")).copy()
    rgba[:, :20, 3] = 0  # transparent left strip: masked out
    Image.fromarray(rgba).save(src / "f.png")
    (src / "notes.txt").write_text("not an image")
    files, other = image_files(src)
    assert [p.name for p in other] == ["notes.txt"]
    out = tmp_path / "out"
    prep = prepare_images(files, out / "images", out / "masks", out / "sfm", out / "sfm_masks", max_size=32)
    assert prep.names == ["a.jpg", "b.jpg", "d.png", "f.png"]
    assert prep.size == (64, 48) and prep.sfm_size == (32, 24)
    assert prep.skipped["duplicate"] == ["a_copy.jpg (= a.jpg)"]
    assert prep.skipped["unreadable"] == ["c.jpg"]
    assert prep.skipped["other aspect ratio"] == ["e.png (48x48)"]
    assert prep.rotated == ["b.jpg"] and prep.resized == ["d.png"]
    assert prep.groups == 2  # 64x48 and the 32x24 photo: a camera each in SfM
    assert prep.sfm_names["d.png"].startswith("32x24/") and prep.sfm_names["a.jpg"] == "64x48/a.jpg"
    with Image.open(out / "images" / "b.jpg") as im:
        assert im.size == (64, 48)
        upright = np.rot90(np.asarray(stored), k=-1)  # orientation 6: turn 90 degrees clockwise
        assert np.abs(np.asarray(im).astype(int) - upright).mean() < 3  # JPEG re-encoded
    with Image.open(out / "images" / "d.png") as im:
        assert im.size == (64, 48)
    assert (out / "images" / "a.jpg").read_bytes() == (src / "a.jpg").read_bytes()
    mask = np.asarray(Image.open(out / "masks" / "f.png.png")) >= 128
    assert mask.shape == (48, 64) and not mask[:, :20].any() and mask[:, 20:].all()
    assert np.asarray(Image.open(out / "masks" / "a.jpg.png")).min() == 255  # no alpha: all kept
    with Image.open(out / "sfm_masks" / "64x48" / "f.png.jpg.png") as m:
        assert m.size == (32, 24)


# ----------------------------------------------------------------------------- video frames


def _write_video(path: Path, frames: list[np.ndarray], fps: float = 24.0) -> None:
    import imageio_ffmpeg

    h, w = frames[0].shape[:2]
    writer = imageio_ffmpeg.write_frames(str(path), (w, h), fps=fps, codec="libx264", pix_fmt_out="yuv420p",
                                         quality=10, macro_block_size=1, ffmpeg_log_level="error")  # fmt: skip
    writer.send(None)
    for f in frames:
        writer.send(np.ascontiguousarray(f))
    writer.close()


def test_sharpness_ranks_blur_below_detail():
    from PIL import ImageFilter

    sharp = _noise(0, (96, 64))
    blurred = sharp.filter(ImageFilter.GaussianBlur(2))
    assert sharpness(np.asarray(sharp)) > 10 * sharpness(np.asarray(blurred))


def test_extract_frames_keeps_the_sharpest_of_each_window(tmp_path):
    from PIL import ImageFilter

    frames, sharp_at = [], [3, 14, 27]
    for i in range(30):  # three windows of 10 frames, one sharp frame in each
        im = _noise(i, (96, 64))
        frames.append(np.asarray(im if i in sharp_at else im.filter(ImageFilter.GaussianBlur(2))))
    _write_video(tmp_path / "clip.mp4", frames)
    got = extract_frames(tmp_path / "clip.mp4", tmp_path / "frames", 3)
    assert got.frames_decoded == 30
    assert [p.name for p in got.paths] == [f"frame_{i:05d}.jpg" for i in sharp_at]
    assert Image.open(got.paths[0]).size == (96, 64)


# ----------------------------------------------------------------------------- camera models


def test_a_fisheye_capture_is_undistorted_at_load(tmp_path):
    """OPENCV_FISHEYE end to end: a COLMAP capture whose photo was taken through a fisheye
    lens loads as the pinhole image of the same scene (same K, same size)."""
    from splatfield.data.colmap import model_from_cameras, write_model
    from splatfield.data.undistort import undistort_points
    from splatfield.render.camera import Cameras

    W, H, f, coeffs = 96, 80, 45.0, torch.tensor([0.05, -0.02, 0.0, 0.0], dtype=torch.float64)
    cams = Cameras.from_intrinsics(torch.eye(4, dtype=torch.float64)[None].repeat(3, 1, 1), f, f, W / 2, H / 2, W, H)
    cams = Cameras(cams.world_to_camera, cams.fx, cams.fy, cams.cx, cams.cy, W, H, model="fisheye",
                   distortion=coeffs[None].repeat(3, 1))  # fmt: skip
    v, u = torch.meshgrid(torch.arange(H, dtype=torch.float64) + 0.5, torch.arange(W, dtype=torch.float64) + 0.5,
                          indexing="ij")  # fmt: skip

    def scene(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:  # a smooth pattern on the image plane z = 1
        return 127.5 + 100 * torch.sin(7 * x) * torch.cos(5 * y)

    xu, yu = undistort_points((u - W / 2) / f, (v - H / 2) / f, "fisheye", coeffs)
    photo = scene(xu, yu)  # pixel (u, v) of the fisheye photo shows the point that distorts onto it
    truth = scene((u - W / 2) / f, (v - H / 2) / f)
    root = tmp_path / "capture"
    (root / "images").mkdir(parents=True)
    names = ["a.png", "b.png", "c.png"]
    for n in names:
        Image.fromarray(np.repeat(photo.round().clamp(0, 255).byte().numpy()[..., None], 3, -1)).save(root / "images" / n)
    write_model(model_from_cameras(cams, names), root / "sparse" / "0")
    ds = load(root, test_every=0, cache_dir=tmp_path / "cache")
    assert ds.train.source_cameras.model == "fisheye" and ds.train.cameras.model == "pinhole"
    got = ds.train.image(0)[..., 0].double()
    inner = (slice(12, H - 12), slice(12, W - 12))

    def psnr(a: torch.Tensor) -> float:
        return float(-10 * torch.log10(((a - truth)[inner] / 255).square().mean()))

    assert psnr(got) > 30  # undistorted
    assert psnr(photo) < 20  # and leaving the photo as it was would be far off


@needs_fox
def test_bench_sfm_prints_and_writes_the_comparison(tmp_path, capsys, monkeypatch):
    from splatfield.apps import cli

    monkeypatch.setenv("SPLATFIELD_CACHE", str(tmp_path / "cache"))
    fox_subset(tmp_path / "photos", size=(270, 480))
    code = cli.run(["bench", "sfm", str(tmp_path / "photos"), "--reference", str(FOX / "transforms.json"),
                    "--json", str(tmp_path / "sfm.json")])  # fmt: skip
    out = capsys.readouterr().out
    assert code == 0, out
    doc = json.loads((tmp_path / "sfm.json").read_text())
    a = doc["alignment"]
    assert doc["sfm"]["images_registered"] >= FOX_NAMES - 1 and doc["output"] is None
    assert a["cameras"] == doc["sfm"]["images_registered"] and a["rotation_error_deg_max"] <= 3.0
    assert f"rotation error mean {a['rotation_error_deg_mean']:.3f} deg" in out
    assert not (tmp_path / "cache" / "sfm").exists()  # a bench never reads or fills the cache
