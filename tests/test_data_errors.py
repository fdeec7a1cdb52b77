"""Bad input: every failure is a DatasetError with one line naming the file."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from splatfield.data import DatasetError, detect_format, load
from splatfield.data.colmap import model_from_cameras, write_model
from splatfield.render.camera import Cameras


def _raises(path: Path, fname: str, **kw) -> str:
    with pytest.raises(DatasetError) as info:
        load(path, cache_dir=path / "cache", **kw)
    msg = str(info.value)
    assert fname in msg and "\n" not in msg, msg
    assert isinstance(info.value, ValueError)
    return msg


def _frame(name: str) -> dict:
    return {"file_path": name, "transform_matrix": np.eye(4).tolist()}


def _blender(root: Path, sizes=((8, 8), (8, 8))) -> None:
    for split in ("train", "test"):
        (root / split).mkdir(parents=True)
        frames = []
        for k, s in enumerate(sizes):
            Image.new("RGBA", s).save(root / split / f"r_{k}.png")
            frames.append(_frame(f"./{split}/r_{k}"))
        (root / f"transforms_{split}.json").write_text(json.dumps({"camera_angle_x": 0.7, "frames": frames}))


def test_blender_fixture_loads(tmp_path):  # the good case the bad ones are made from
    _blender(tmp_path)
    ds = load(tmp_path, cache_dir=tmp_path / "cache")
    assert len(ds.train) == 2 and ds.train.image(1).shape == (8, 8, 3)


def test_missing_file(tmp_path):
    _blender(tmp_path)
    (tmp_path / "transforms_test.json").unlink()
    msg = _raises(tmp_path, "transforms_test.json")
    assert "not found" in msg


def test_missing_image(tmp_path):
    _blender(tmp_path)
    (tmp_path / "train" / "r_1.png").unlink()
    _raises(tmp_path, "r_1.png")


def test_malformed_json(tmp_path):
    (tmp_path / "transforms.json").write_text('{"frames": [\n  {"file_path": "a.png",\n')
    msg = _raises(tmp_path, "transforms.json")
    assert "malformed JSON" in msg


def test_unknown_camera_model(tmp_path):
    (tmp_path / "images").mkdir()
    Image.new("RGB", (8, 6)).save(tmp_path / "images" / "a.png")
    (tmp_path / "cameras.txt").write_text("1 WEIRD_LENS 8 6 5 4 3\n")
    (tmp_path / "images.txt").write_text("1 1 0 0 0 0 0 0 1 a.png\n\n")
    msg = _raises(tmp_path, "cameras.txt")
    assert "WEIRD_LENS" in msg


def test_unsupported_colmap_model_in_binary(tmp_path):
    (tmp_path / "images").mkdir()
    Image.new("RGB", (8, 6)).save(tmp_path / "images" / "a.png")
    cams = Cameras.from_intrinsics(torch.eye(4, dtype=torch.float64), 5.0, 5.0, 4.0, 3.0, 8, 6)
    model = model_from_cameras(cams, ["a.png"])
    model.cameras[1].model, model.cameras[1].params = "FOV", [5.0, 5.0, 4.0, 3.0, 0.1]
    write_model(model, tmp_path / "sparse" / "0", binary=True)
    msg = _raises(tmp_path, "cameras.bin")
    assert "FOV" in msg


def test_inconsistent_image_sizes_in_a_split(tmp_path):
    _blender(tmp_path, sizes=((8, 8), (8, 9)))
    msg = _raises(tmp_path, "r_1.png")
    assert "8x9" in msg


def test_inconsistent_image_sizes_in_transforms_json(tmp_path):
    for k, s in enumerate([(8, 6), (6, 8)]):
        Image.new("RGB", s).save(tmp_path / f"{k}.png")
    meta = {"fl_x": 5.0, "frames": [_frame("0.png"), _frame("1.png")]}
    (tmp_path / "transforms.json").write_text(json.dumps(meta))
    _raises(tmp_path, "1.png")


def test_zero_frames(tmp_path):
    (tmp_path / "transforms.json").write_text(json.dumps({"fl_x": 5.0, "frames": []}))
    msg = _raises(tmp_path, "transforms.json")
    assert "no frames" in msg


def test_every_frame_missing(tmp_path):
    (tmp_path / "transforms.json").write_text(json.dumps({"fl_x": 5.0, "frames": [_frame("gone.png")]}))
    with pytest.warns(UserWarning, match="1 of 1 frames"):
        _raises(tmp_path, "transforms.json")


def test_llff_pose_count_mismatch(tmp_path):
    np.save(tmp_path / "poses_bounds.npy", np.zeros((2, 17)))
    (tmp_path / "images").mkdir()
    Image.new("RGB", (8, 6)).save(tmp_path / "images" / "a.png")
    msg = _raises(tmp_path, "poses_bounds.npy")
    assert "2 poses but 1 images" in msg


def test_nothing_recognised(tmp_path):
    (tmp_path / "notes.txt").write_bytes(b"")  # (a folder of photos goes through SfM: tests/test_sfm_errors.py)
    msg = _raises(tmp_path, tmp_path.name)
    assert "no supported dataset found" in msg
    with pytest.raises(DatasetError, match="no such file"):
        detect_format(tmp_path / "missing")
