"""Camera refinement and per-image appearance through `train`, `eval` and `export`: the run
keeps both cameras, evaluates as given and aligned, exports a transforms.json that loads
back, resumes exactly, and refuses what it cannot do in one line."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from splatfield.apps import training
from splatfield.apps.run_data import load_dataset, with_refined_cameras
from splatfield.data import load, procedural
from splatfield.scenes import checkpoint as ckpt
from splatfield.scenes.options import run_config
from splatfield.scenes.run import Run


def _config(data: Path, out: Path, steps: int, **kw):
    base = dict(steps=steps, init_points=2000, init_half_size=1.0, sh_degree=1, save_renders=False,
                train_pose_noise=(0.5, 0.005), camera_opt="pose+intrinsics", appearance="affine", align_steps=3)  # fmt: skip
    base.update(kw)
    return run_config(str(data), str(out), **base)


@pytest.fixture(scope="module")
def demo_data(tmp_path_factory) -> Path:
    return procedural.write_demo_dataset(tmp_path_factory.mktemp("corr") / "data", size=32, train_views=8, test_views=2)


@pytest.fixture(scope="module")
def refined_run(demo_data, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("corr_run") / "run"
    training.train(_config(demo_data, out, 60, checkpoint_every=30), log=lambda m: None)
    return out


def test_the_run_keeps_given_and_refined_cameras(refined_run, native):
    doc = json.loads((refined_run / "cameras.json").read_text())
    train, test = doc["train"], doc["test"]
    assert len(train) == 8 and len(test) == 2
    assert all("refined" in r for r in train) and all("refined" in r and "aligned" in r for r in test)
    moved = [torch.tensor(r["refined"]["world_to_camera"]) - torch.tensor(r["world_to_camera"]) for r in train]
    assert max(float(m.abs().max()) for m in moved) > 0  # the corrections trained
    assert set(doc["refinement"]) >= {"rotation_deg_mean", "principal_px_max"}
    # render/eval/export/view open the run with the refined cameras
    run_ds = with_refined_cameras(load_dataset(Run.open(refined_run).config), refined_run)
    torch.testing.assert_close(run_ds.train.cameras.world_to_camera[0].double(),
                               torch.tensor(train[0]["refined"]["world_to_camera"], dtype=torch.float64))  # fmt: skip


def test_metrics_report_as_given_and_aligned(refined_run, native):
    m = json.loads((refined_run / "metrics.json").read_text())
    assert m["headline"] == "aligned" and m["align_steps"] == 3
    assert m["psnr"] == m["aligned"]["psnr"] and "psnr" in m["as_given"]
    assert all("psnr_as_given" in row for row in m["per_view"])


def test_export_transforms_loads_back_with_the_refined_cameras(refined_run, tmp_path, native):
    r = subprocess.run([sys.executable, "-m", "splatfield.apps.cli", "export", str(refined_run), "--format", "transforms",
                        "--out", str(tmp_path)], capture_output=True, text=True)  # fmt: skip
    assert r.returncode == 0, r.stderr
    assert "refined cameras" in r.stdout
    back = load(tmp_path / "transforms.json")
    doc = json.loads((refined_run / "cameras.json").read_text())
    assert len(back.train) == 8 and len(back.test) == 2
    for i in (0, 7):
        ref = doc["train"][i]["refined"]
        torch.testing.assert_close(back.train.cameras.world_to_camera[i], torch.tensor(ref["world_to_camera"],
                                   dtype=torch.float64), rtol=0, atol=1e-6)  # fmt: skip
        assert float(back.train.cameras.cx[i]) == pytest.approx(ref["cx"], abs=1e-4)


def test_resume_continues_the_corrections_exactly(demo_data, tmp_path, native):
    whole = tmp_path / "whole"
    training.train(_config(demo_data, whole, 40, checkpoint_every=20, eval=False), log=lambda m: None)
    part = tmp_path / "part"
    training.train(_config(demo_data, part, 40, checkpoint_every=20, eval=False), log=lambda m: None)
    # the second run again from its step-20 checkpoint
    training.train(_config(demo_data, part, 40, checkpoint_every=20, eval=False), run_path=part, resume_from=20,
                   log=lambda m: None)  # fmt: skip
    a = ckpt.load_checkpoint(ckpt.latest_checkpoint(whole / "checkpoints"))
    b = ckpt.load_checkpoint(ckpt.latest_checkpoint(part / "checkpoints"))
    for name in ("pose", "focal", "principal"):
        assert torch.equal(a["corrections"]["cameras"][name], b["corrections"]["cameras"][name])
    assert a["corrections"]["appearance"] is not None


@pytest.mark.parametrize("flag", [["--camera-opt", "pose"], ["--appearance", "affine"]])
def test_a_field_refuses_corrections_in_one_line(flag, demo_data, tmp_path):
    r = subprocess.run([sys.executable, "-m", "splatfield.apps.cli", "train", str(demo_data), "--model", "field",
                        *flag, "--out", str(tmp_path / "r"), "--no-viewer"], capture_output=True, text=True)  # fmt: skip
    assert r.returncode != 0
    assert "Gaussians only" in r.stderr and "Traceback" not in r.stderr
    assert len(r.stderr.strip().splitlines()) == 1, r.stderr


def test_cameras_of_another_dataset_are_refused_in_one_line(refined_run, tmp_path, native):
    import shutil

    from splatfield.data import DatasetError

    copy = tmp_path / "run"
    shutil.copytree(refined_run, copy, ignore=shutil.ignore_patterns("checkpoints", "renders"))
    doc = json.loads((copy / "cameras.json").read_text())
    doc["train"][0]["image"] = "someone_else.png"
    (copy / "cameras.json").write_text(json.dumps(doc))
    with pytest.raises(DatasetError, match="cameras.json: its train views are not the dataset's"):
        with_refined_cameras(load_dataset(Run.open(copy).config), copy)
