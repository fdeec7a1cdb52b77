"""`splatfield render` and camera paths: videos that decode to the expected frames, paths
through keyframes, nerfstudio camera-path files, split metrics equal to `eval`'s, and a run
directory that only gains outputs."""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from splatfield.apps import rendering as rd
from splatfield.apps import training as tr
from splatfield.apps.media import to_uint8
from splatfield.apps.sources import open_source
from splatfield.scenes.run import Run
from splatfield.render import Cameras, camera_paths


def cli(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "splatfield.apps.cli", *args], cwd=cwd, capture_output=True,
                          text=True, timeout=300)  # fmt: skip


def _snapshot(run: Path) -> dict[str, float]:
    return {str(p.relative_to(run)): p.stat().st_mtime_ns for p in run.rglob("*") if p.is_file()}


# ----------------------------------------------------------------------------- camera paths


def _keyframes(n: int = 4) -> Cameras:
    ang = torch.arange(n, dtype=torch.float64) * (2 * math.pi / n)
    eyes = torch.stack([3 * torch.cos(ang), 3 * torch.sin(ang), 0.5 + 0.2 * torch.arange(n)], -1)
    cams = Cameras.look_at(eyes, torch.zeros(n, 3, dtype=torch.float64), (0.0, 0.0, 1.0), 45.0, 64, 48)
    return Cameras(cams.world_to_camera, cams.fx + torch.arange(n), cams.fy, cams.cx, cams.cy, 64, 48)


def test_interpolation_passes_through_every_keyframe():
    keys = _keyframes(4)
    per_segment = 5
    path = camera_paths.interpolate(keys, 3 * per_segment + 1)
    for k in range(4):
        torch.testing.assert_close(path.world_to_camera[k * per_segment], keys.world_to_camera[k], atol=1e-9, rtol=0)
        assert float(path.fx[k * per_segment]) == pytest.approx(float(keys.fx[k]))
    # between keyframes the rotations stay rotations and the positions move smoothly
    R = path.world_to_camera[:, :3, :3]
    torch.testing.assert_close(R @ R.transpose(1, 2), torch.eye(3, dtype=torch.float64).expand_as(R), atol=1e-9, rtol=0)
    steps = (path.centers[1:] - path.centers[:-1]).norm(dim=-1)
    assert float(steps.max() / steps.min()) < 4.0


def test_loop_returns_to_the_start_and_slerp_takes_the_short_way():
    keys = _keyframes(3)
    path = camera_paths.interpolate(keys, 30, loop=True)
    torch.testing.assert_close(path.world_to_camera[0], keys.world_to_camera[0], atol=1e-9, rtol=0)
    gap_end = (path.centers[-1] - path.centers[0]).norm()
    assert float(gap_end) < 1.5 * float((path.centers[1] - path.centers[0]).norm())
    q0 = torch.tensor([1.0, 0.0, 0.0, 0.0], dtype=torch.float64)
    q1 = -torch.nn.functional.normalize(torch.tensor([0.9, 0.1, 0.0, 0.0], dtype=torch.float64), dim=0)
    mid = camera_paths.slerp(q0, q1, torch.tensor(0.5, dtype=torch.float64))
    assert float(mid[0].abs()) > 0.99  # not through the far side


def test_quaternions_round_trip():
    q = torch.nn.functional.normalize(torch.randn(50, 4, dtype=torch.float64, generator=torch.Generator().manual_seed(0)))
    q = q * torch.where(q[:, :1] < 0, -1.0, 1.0)
    back = camera_paths.rotmat_to_quat(camera_paths.quat_to_rotmat(q))
    torch.testing.assert_close(back, q, atol=1e-9, rtol=0)


def test_orbit_looks_at_the_centre_at_the_given_radius_and_height():
    centre = torch.tensor([0.5, -1.0, 2.0], dtype=torch.float64)
    up = torch.tensor([0.0, 0.0, 1.0], dtype=torch.float64)
    cams = camera_paths.orbit(centre, up, 3.0, 1.0, 12, fov_y=40.0, width=80, height_px=60)
    rel = cams.centers - centre
    torch.testing.assert_close(rel @ up, torch.ones(12, dtype=torch.float64), atol=1e-9, rtol=0)
    torch.testing.assert_close((rel - (rel @ up)[:, None] * up).norm(dim=-1), torch.full((12,), 3.0, dtype=torch.float64))
    forward = cams.camera_to_world[:, :3, 2]
    torch.testing.assert_close(forward, torch.nn.functional.normalize(-rel, dim=-1), atol=1e-9, rtol=0)


def test_camera_path_json_round_trip_and_errors(tmp_path):
    keys = _keyframes(4)
    f = tmp_path / "path.json"
    camera_paths.write_camera_path(f, keys, fps=24.0)
    doc = json.loads(f.read_text())
    assert doc["render_width"] == 64 and doc["render_height"] == 48 and len(doc["camera_path"]) == 4
    assert len(doc["camera_path"][0]["camera_to_world"]) == 16
    back, fps = camera_paths.read_camera_path(f)
    assert fps == 24.0
    torch.testing.assert_close(back.world_to_camera, keys.world_to_camera, atol=1e-9, rtol=0)
    torch.testing.assert_close(back.fy, keys.fy, atol=1e-9, rtol=0)
    for text, problem in [
        ("{", "not a JSON camera path"),
        ('{"camera_path": [], "render_width": 4, "render_height": 4}', "camera_path is empty"),
        ('{"render_width": 4, "render_height": 4}', "not a nerfstudio camera path"),
        ('{"camera_path": [{"camera_to_world": [1, 2], "fov": 50}], "render_width": 4, "render_height": 4}',
         "camera_to_world must hold 16 numbers"),
        ('{"camera_path": [{"camera_to_world": ' + json.dumps([float("nan")] * 16)
         + ', "fov": 50}], "render_width": 4, "render_height": 4}', "non-finite"),
    ]:  # fmt: skip
        bad = tmp_path / "bad.json"
        bad.write_text(text)
        with pytest.raises(camera_paths.CameraPathError) as e:
            camera_paths.read_camera_path(bad)
        assert str(e.value).startswith(f"{bad}: ") and problem in str(e.value) and "\n" not in str(e.value)


# ----------------------------------------------------------------------------- the command


def test_orbit_mp4_decodes_with_the_expected_frames_and_size(small_run, tmp_path, native):
    import imageio_ffmpeg

    before = _snapshot(small_run)
    proc = cli("render", str(small_run), "--frames", "9", "--size", "40", "30", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    video = small_run / "renders" / "orbit.mp4"
    assert video.is_file() and (small_run / "renders" / "orbit.camera_path.json").is_file()
    reader = imageio_ffmpeg.read_frames(str(video))
    meta = reader.__next__()
    frames = list(reader)
    assert meta["size"] == (40, 30) and len(frames) == 9
    # the run only gained outputs
    after = _snapshot(small_run)
    assert {k: v for k, v in after.items() if k in before} == before
    assert set(after) - set(before) == {"renders/orbit.mp4", "renders/orbit.camera_path.json"}
    # a second call does not overwrite: it picks the next name
    assert cli("render", str(small_run), "--frames", "2", cwd=tmp_path).returncode == 0
    assert (small_run / "renders" / "orbit-1.mp4").is_file()


def test_frames_folder_matches_direct_renders_of_the_path(small_run, tmp_path, native):
    out = tmp_path / "frames"
    proc = cli("render", str(small_run), "--path", "spiral", "--frames", "5", "--out", str(out), cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    pngs = sorted(out.glob("*.png"))
    assert len(pngs) == 5
    src = open_source(small_run)
    cams = rd.path_cameras(src, "spiral", 5, None)
    for i in (0, 3):
        expect = to_uint8(src.scene.render(cams[i : i + 1], background=src.background).image[0])
        assert np.array_equal(np.asarray(Image.open(pngs[i]).convert("RGB")), expect)
    # the saved camera path renders the same frames again
    again, fps = camera_paths.read_camera_path(out / "camera_path.json")
    assert fps == 30.0
    torch.testing.assert_close(again.world_to_camera.float(), cams.world_to_camera, atol=1e-5, rtol=0)


def test_split_test_metrics_equal_eval(small_run, tmp_path, native):
    ev = tr.eval_run(small_run, log=lambda m: None)
    out = tmp_path / "split"
    proc = cli("render", str(small_run), "--split", "test", "--out", str(out), cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    m = json.loads((out / "metrics.json").read_text())
    assert m["psnr"] == ev["psnr"] and m["ssim"] == ev["ssim"] and m["views"] == ev["views"] == 3
    assert [r["psnr"] for r in m["per_view"]] == [r["psnr"] for r in ev["per_view"]]
    assert len(list(out.glob("*.png"))) == 3
    assert f"PSNR {ev['psnr']:.3f} dB" in proc.stdout


def test_interp_path_starts_at_the_first_training_camera(small_run, native):
    src = open_source(small_run)
    cams = rd.path_cameras(src, "interp", 24, None)
    train = src.dataset.train.cameras
    assert (cams.width, cams.height) == (train.width, train.height)
    torch.testing.assert_close(cams.world_to_camera[0], train.world_to_camera[0].float(), atol=1e-5, rtol=0)


def test_bare_file_and_errors_are_one_line(small_run, tmp_path, native):
    ply = small_run / "scene.ply"
    ok = cli("render", str(ply), "--frames", "2", "--size", "24", "24", "--out", str(tmp_path / "o.mp4"), cwd=tmp_path)
    assert ok.returncode == 0, ok.stderr
    (tmp_path / "bad.json").write_text("{}")
    for args, message in [
        ([str(ply), "--path", "interp"], "--path interp follows the training cameras"),
        ([str(ply), "--split", "test"], "--split needs a run directory"),
        ([str(small_run), "--out", str(tmp_path / "o.mp4")], "exists already"),
        ([str(small_run), "--path", str(tmp_path / "bad.json")], "bad.json: not a nerfstudio camera path"),
        ([str(small_run), "--frames", "0"], "--frames: must be >= 1"),
        ([str(small_run), "--size", "0", "10"], "--size: width and height must be in 1..8192"),
        ([str(tmp_path / "nothing")], "no such file or directory"),
    ]:  # fmt: skip
        proc = cli("render", *args, cwd=tmp_path)
        assert proc.returncode == 2, (args, proc.stderr)
        lines = proc.stderr.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("splatfield: error: ") and message in lines[0], proc.stderr


@pytest.mark.parametrize("fmt", ["splat", "compressed-ply", "spz", "sog"])
def test_every_splat_format_renders(small_run, tmp_path, native, fmt):
    from splatfield.scenes import formats

    g = Run.open(small_run).scene().gaussians
    path = tmp_path / f"scene{formats.FORMAT_SUFFIX[fmt]}"
    formats.write_splats(path, g, fmt)
    src = open_source(path)
    assert len(src.scene) == len(g) and src.dataset is None
    cams = rd.path_cameras(src, "orbit", 2, (24, 16))
    assert rd.render_path(src, cams, tmp_path / "frames", 30.0) == 2
    frames = sorted((tmp_path / "frames").glob("*.png"))
    assert len(frames) == 2 and Image.open(frames[0]).size == (24, 16)
