"""``splatfield lift`` (issue 17, in part): one image to a run directory through a one-view
dataset; with --guidance none the reference view alone, with a diffusers folder the distill
strategy beside it. Bad images are one line."""

from __future__ import annotations

import dataclasses
import json
import math
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from splatfield.apps.lift import Lift
from splatfield.apps.lift_run import run_lift
from splatfield.data import DatasetError, load, procedural
from splatfield.data.single_view import write_single_view_dataset
from splatfield.scenes import checkpoint as ckpt
from splatfield.scenes.run import Run

from .test_distill_diffusers import save_checkpoint


@pytest.fixture(scope="module")
def image(tmp_path_factory) -> Path:
    """An RGBA render of the demo scene (ray cast, not Gaussians), 32 x 32."""
    data = procedural.write_demo_dataset(tmp_path_factory.mktemp("lift") / "data", size=32, train_views=2, test_views=1)
    return data / "test" / "r_0.png"


def test_the_reference_dataset_has_one_view_at_the_stated_camera(image, tmp_path):
    write_single_view_dataset(tmp_path / "ref", image, elevation=30.0, fov=40.0, radius=2.5)
    ds = load(tmp_path / "ref")
    assert (len(ds.train), len(ds.test)) == (1, 1) and ds.background == (1.0, 1.0, 1.0)
    centre = ds.train.cameras.centers[0].double()
    torch.testing.assert_close(centre, torch.tensor([2.5 * math.cos(math.radians(30)), 0.0, 2.5 * math.sin(math.radians(30))],
                                                    dtype=torch.float64), rtol=0, atol=1e-6)  # fmt: skip
    fy = float(ds.train.cameras.fy[0])
    assert math.isclose(2 * math.degrees(math.atan(16 / fy)), 40.0, rel_tol=1e-6)
    # the optical axis goes through the origin
    w2c = ds.train.cameras.world_to_camera[0].double()
    origin = w2c[:3, 3]
    assert abs(float(origin[0])) < 1e-6 and abs(float(origin[1])) < 1e-6 and float(origin[2]) > 0


def test_lift_without_a_prior_fits_the_reference_view(image, tmp_path, native):
    res = run_lift(Lift(image=image, guidance="none", out=tmp_path / "lift", steps=400, frames=3), log=lambda m: None)
    assert res.finished and res.video is not None and res.video.stat().st_size > 0
    assert len(list(res.frames_dir.glob("frame_*.png"))) == 3
    config = Run.open(res.run).config
    assert config.strategy == ("adc",) and config.scene.sh_degree == 0
    # the reference view after 400 steps: 20.29 dB (19.09 with a single camera's extent of 0,
    # which froze the positions before Dataset.scene_extent fell back to the camera's distance)
    assert res.metrics["views"] == 1 and res.metrics["psnr"] > 19.8


def test_lift_with_a_guidance_folder_runs_the_distill_strategy(image, tmp_path, native):
    guidance = save_checkpoint(tmp_path / "tiny-sd")
    res = run_lift(Lift(image=image, guidance=str(guidance), out=tmp_path / "lift", steps=4, frames=2), log=lambda m: None)
    assert res.finished
    config = Run.open(res.run).config
    assert config.strategy == ("adc", "distill") and config.distill.guidance == str(guidance)


def test_bad_images_are_one_line(image, tmp_path):
    rgb = tmp_path / "rgb.png"
    Image.open(image).convert("RGB").save(rgb)
    with pytest.raises(DatasetError, match="has no alpha channel: give the object's silhouette with --mask"):
        write_single_view_dataset(tmp_path / "a", rgb)
    wide = tmp_path / "wide.png"
    Image.new("RGBA", (40, 32), (255, 0, 0, 255)).save(wide)
    with pytest.raises(DatasetError, match="is 40x32: lifting takes a square image"):
        write_single_view_dataset(tmp_path / "b", wide)
    small_mask = tmp_path / "mask.png"
    Image.new("L", (16, 16), 255).save(small_mask)
    with pytest.raises(DatasetError, match="mask is 16x16 but the image rgb.png is 32x32"):
        write_single_view_dataset(tmp_path / "c", rgb, small_mask)
    empty = tmp_path / "empty.png"
    Image.new("L", (32, 32), 0).save(empty)
    with pytest.raises(DatasetError, match="the silhouette is empty"):
        write_single_view_dataset(tmp_path / "d", rgb, empty)
    r = subprocess.run([sys.executable, "-m", "splatfield.apps.cli", "lift", str(rgb), "--out", str(tmp_path / "r")],
                       capture_output=True, text=True)  # fmt: skip
    assert r.returncode == 2 and "Traceback" not in r.stderr and len(r.stderr.strip().splitlines()) == 1, r.stderr
    assert "has no alpha channel" in r.stderr


def test_a_mask_replaces_the_alpha(image, tmp_path):
    rgb = tmp_path / "rgb.png"
    Image.open(image).convert("RGB").save(rgb)
    alpha = np.asarray(Image.open(image))[..., 3]
    Image.fromarray(alpha).save(tmp_path / "mask.png")
    write_single_view_dataset(tmp_path / "ref", rgb, tmp_path / "mask.png")
    got = np.asarray(Image.open(tmp_path / "ref" / "reference.png"))
    assert np.array_equal(got[..., 3], alpha)
    doc = json.loads((tmp_path / "ref" / "transforms_train.json").read_text())
    assert len(doc["frames"]) == 1


def test_a_prompt_alone_is_lifted_through_a_text_to_image_checkpoint(tmp_path, native):
    """Text-to-3D: no image; the one view is a camera frame whose (empty) image is never
    fitted, so every change to the scene comes from the distillation of the prompt."""
    guidance = save_checkpoint(tmp_path / "tiny-sd", text=True)
    cfg = Lift(prompt="a red cube", guidance=str(guidance), out=tmp_path / "lift", steps=6, frames=2, size=16,
               init_points=300)  # fmt: skip
    res = run_lift(cfg, log=lambda m: None)
    assert res.finished and res.metrics is None and res.video is not None
    config = Run.open(res.run).config
    assert config.distill.reference_probability == (0.0, 0.0) and config.distill.prompt == "a red cube"
    assert config.strategy == ("adc", "distill")
    # the same lift with the distillation's weight 0 (nothing else can move its random start):
    # the prompt's distillation is what moved the scene
    still = run_lift(dataclasses.replace(cfg, out=tmp_path / "still", distill=dataclasses.replace(cfg.distill, weight=0.0)),
                     log=lambda m: None)  # fmt: skip
    moved, kept = (ckpt.load_checkpoint(ckpt.latest_checkpoint(r.run / "checkpoints"))["scene"]["params"] for r in (res, still))
    assert not torch.equal(moved["means"], kept["means"])


def test_a_prompt_alone_needs_a_text_to_image_checkpoint(tmp_path):
    from splatfield.scenes.config import ConfigError

    with pytest.raises(ConfigError, match="give an image of the object, or --prompt"):
        Lift(guidance="x")
    for guidance in ("procedural", "none"):
        with pytest.raises(ConfigError, match="cannot lift a prompt alone"):
            Lift(prompt="a cube", guidance=guidance)
    with pytest.raises(ConfigError, match="describe an image"):
        Lift(prompt="a cube", guidance="x", mask=tmp_path / "m.png")


def test_lift_field_distils_into_a_radiance_field(image, tmp_path, native):
    """--model field: the same lift into a radiance field (grid in the cube the reference
    camera sees); the reference-conditioned prior gets the reference through the views
    (a field's batches are rays), and its random views' gradient reaches the grid."""
    cfg = Lift(image=image, guidance="procedural", model="field", out=tmp_path / "lift", steps=3, frames=2)
    res = run_lift(cfg, log=lambda m: None)
    assert res.finished and res.video is not None and res.metrics["views"] == 1
    config = Run.open(res.run).config
    assert config.scene_kind == "field" and config.strategy == ("distill",)
    assert config.field.box_half_size == pytest.approx(2.5 * math.tan(math.radians(20.0)))
    still = run_lift(dataclasses.replace(cfg, out=tmp_path / "still", distill=dataclasses.replace(cfg.distill, weight=0.0)),
                     log=lambda m: None)  # fmt: skip
    moved, kept = (ckpt.load_checkpoint(ckpt.latest_checkpoint(r.run / "checkpoints"))["scene"] for r in (res, still))
    assert moved["density"].shape == kept["density"].shape and not torch.equal(moved["density"], kept["density"])
    with pytest.raises(Exception, match="depth ranking lifts Gaussians only"):
        Lift(image=image, model="field", depth=image)


def test_lift_shorthands_set_the_distillation(image, tmp_path):
    from splatfield.apps.lift_run import lift_config

    cfg = Lift(image=image, estimator="vsd", guidance_scale=3.0, prompt="a cube")
    distill = lift_config(cfg, tmp_path / "ref", tmp_path / "run").distill
    assert (distill.estimator, distill.guidance_scale, distill.prompt) == ("vsd", 3.0, "a cube")
    default = lift_config(Lift(image=image), tmp_path / "ref", tmp_path / "run").distill
    assert (default.estimator, default.guidance_scale) == ("sds", 1.0)
