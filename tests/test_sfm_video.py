"""`splatfield train video.mp4`: an orbit of the procedural tabletop encoded as H.264, then
frames -> SfM (sequential matching) -> training, end to end through the CLI."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch

from splatfield.apps import cli
from splatfield.data import load
from splatfield.data import procedural as pr
from splatfield.data.pose_alignment import compare_poses
from splatfield.render.camera import opengl_to_opencv_c2w

pytest.importorskip("pycolmap")

FRAMES, SIZE = 48, 192  # 7.5 degrees apart: SfM registers all of them in a few seconds


def orbit_c2w(i: int) -> np.ndarray:
    """OpenGL camera-to-world of frame i: once around, the elevation weaving 25 +- 10 degrees."""
    az = 2 * math.pi * i / FRAMES
    return pr.look_at_c2w(pr._on_sphere(math.radians(25 + 10 * math.sin(2 * az)), az))


def write_orbit_video(path: Path) -> None:
    from splatfield.apps.media import write_video

    def produce(on_frame) -> None:
        for i in range(FRAMES):
            rgba = pr.render_view(orbit_c2w(i), SIZE, samples=2)
            rgb = rgba[..., :3] * rgba[..., 3:] + 0.5 * (1 - rgba[..., 3:])  # over grey
            on_frame(i, (rgb * 255 + 0.5).clip(0, 255).astype(np.uint8))

    assert write_video(path, (SIZE, SIZE), 24.0, produce) == FRAMES


def test_train_on_a_video(tmp_path, monkeypatch, capsys, native):
    # `native` has loaded the rasterizer from the usual cache; the SfM output goes to tmp_path
    monkeypatch.setenv("SPLATFIELD_CACHE", str(tmp_path / "cache"))
    video = tmp_path / "orbit.mp4"
    write_orbit_video(video)
    run = tmp_path / "run"
    code = cli.run(["train", str(video), "--steps", "300", "--sh-degree", "1", "--checkpoint-every", "0", "--threads", "1",
                    "--no-viewer", "--out", str(run)])  # fmt: skip
    out = capsys.readouterr().out
    assert code == 0, out
    assert f"sfm: frames: kept the sharpest of each window: {FRAMES} of {FRAMES} frames" in out
    assert "sfm: matching (sequential)" in out

    # the run trained on the SfM capture (recorded in config.yaml, so eval/render/resume work)
    data = Path(next(ln.split(": ", 1)[1] for ln in (run / "config.yaml").read_text().splitlines() if "data:" in ln))
    summary = json.loads((data / "sfm.json").read_text())
    assert summary["input_kind"] == "video" and summary["images_total"] == FRAMES
    # --threads 1 runs COLMAP on one thread too, which makes it reproducible: all register (with
    # two threads, thread timing split the orbit into 40 + 5 frames in one CI run)
    registered = summary["images_registered"]
    assert registered == FRAMES, summary["unregistered"]
    assert f"sfm: mapping: {registered} of {FRAMES} images registered" in out
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["split"] == "test" and metrics["views"] == math.ceil(registered / 8)
    assert metrics["psnr"] >= 17.0, metrics["psnr"]

    # the recovered cameras are the orbit's, up to a similarity
    ds = load(data, test_every=0, cache_dir=tmp_path / "cache")
    w2c_est = ds.train.cameras.world_to_camera.numpy()
    frame = [int(p.stem.split("_")[1]) for p in ds.train.image_paths]
    w2c_true = opengl_to_opencv_c2w(torch.from_numpy(np.stack([orbit_c2w(i) for i in frame])))  # (returns w2c)
    cmp = compare_poses(w2c_est, w2c_true.numpy())
    # Looser than on the fox photos (measured: 3.6 deg mean, 7% of the extent at most): a
    # narrow-field orbit around a small object barely constrains the focal length (SfM finds
    # ~217 px for the true 267), which bends the recovered path. Wrong poses are far off.
    assert cmp.rotation_error_deg_mean < 6.0 and cmp.position_error_rel_max < 0.15, cmp.per_camera
