"""The lifting prior of our own (issue 17, in part): trained by ``lift-prior train`` on the
procedural family, saved in diffusers' layout with its conditioning marker, loaded by the
same guidance path as any checkpoint, and given the reference view and the camera change by
the distill strategy."""

from __future__ import annotations

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
from splatfield.data import arrangements as A
from splatfield.render import Cameras
from splatfield.scenes.distill import DiffusersGuidance
from splatfield.scenes.distill.prior import (
    ReferenceCondition, camera_features, camera_tokens, new_scheduler, new_unet, read_marker, save_prior,
)  # fmt: skip
from splatfield.scenes.strategies.distill import Distill
from splatfield.scenes.strategies.options import DistillConfig

pytest.importorskip("diffusers")


@pytest.fixture(scope="module")
def tiny_prior(tmp_path_factory) -> Path:
    torch.manual_seed(0)
    folder = tmp_path_factory.mktemp("prior") / "prior"
    save_prior(folder, new_unet(16, (8, 16, 16)), new_scheduler(), {"steps": 0})
    return folder


def test_a_prior_loads_as_guidance_and_takes_a_reference_condition(tiny_prior):
    guidance = DiffusersGuidance(tiny_prior)
    assert guidance.conditioning == "reference+camera" and read_marker(tiny_prior)["steps"] == 0
    x_t, t = torch.randn(2, 3, 16, 16), torch.tensor([10, 500])
    feats = camera_features(torch.zeros(2), torch.zeros(2), torch.tensor([10.0, 30.0]), torch.tensor([90.0, 180.0]))
    cond = ReferenceCondition(torch.randn(1, 3, 16, 16), camera_tokens(feats))
    a, b = guidance.predict_noise(x_t, t, cond), guidance.predict_noise(x_t, t, None)
    assert a.shape == x_t.shape and not torch.allclose(a, b)  # the condition is used
    with pytest.raises(TypeError, match="takes a ReferenceCondition"):
        guidance.predict_noise(x_t, t, torch.zeros(2, 1, 32))


def test_camera_tokens_depend_on_the_azimuth_change_only():
    f1 = camera_features(torch.tensor([15.0]), torch.tensor([0.0]), torch.tensor([30.0]), torch.tensor([100.0]))
    f2 = camera_features(torch.tensor([15.0]), torch.tensor([70.0]), torch.tensor([30.0]), torch.tensor([170.0]))
    torch.testing.assert_close(camera_tokens(f1), camera_tokens(f2), rtol=0, atol=1e-6)
    assert camera_tokens(f1).shape == (1, 1, 32)


def test_the_strategy_measures_azimuths_as_the_arrangements_do(tiny_prior):
    """Camera changes the distill strategy hands the prior are those the prior was trained with."""
    c2w = np.stack([A.camera(e, az) for e, az in [(15.0, 0.0), (30.0, 100.0), (-5.0, 250.0)]])
    gl_to_cv = torch.diag(torch.tensor([1.0, -1.0, -1.0, 1.0], dtype=torch.float64))
    w2c = torch.linalg.inv(torch.tensor(c2w) @ gl_to_cv)
    cams = Cameras.from_intrinsics(w2c, 50.0, 50.0, 16.0, 16.0, 32, 32)
    strategy = Distill(DistillConfig(guidance=str(tiny_prior), up=(0.0, 0.0, 1.0)), steps=10, background=(1.0, 1.0, 1.0))
    elevation, azimuth = strategy.angles(cams)
    torch.testing.assert_close(elevation, torch.tensor([15.0, 30.0, -5.0], dtype=torch.float64), rtol=0, atol=1e-6)
    change = (azimuth - azimuth[0]) % 360
    torch.testing.assert_close(change, torch.tensor([0.0, 100.0, 250.0], dtype=torch.float64), rtol=0, atol=1e-6)


def test_lift_with_the_prior_runs(tiny_prior, tmp_path, native):
    image = tmp_path / "ref.png"
    Image.fromarray((A.render(0, A.camera(15.0, 0.0), 32) * 255 + 0.5).astype(np.uint8), "RGBA").save(image)
    res = run_lift(Lift(image=image, guidance=str(tiny_prior), out=tmp_path / "lift", steps=3, frames=2, elevation=15.0),
                   log=lambda m: None)  # fmt: skip
    assert res.finished and math.isfinite(res.metrics["psnr"])


def test_lift_prior_train_saves_resumes_and_shows(tmp_path):
    out = tmp_path / "p"
    base = [sys.executable, "-m", "splatfield.apps.cli", "lift-prior", "train", "--arrangements", "4", "--views", "3",
            "--size", "16", "--batch", "2", "--save-every", "5", "--threads", "1", "--out", str(out)]  # fmt: skip
    r = subprocess.run([*base, "--steps", "5"], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    assert read_marker(out / "prior")["steps"] == 5
    # the saved (averaged) weights follow the training from the start: nearer the trained
    # weights than the random start (a plain 0.999 average would still be 99.5% the start)
    from diffusers import UNet2DConditionModel

    ema = UNet2DConditionModel.from_pretrained(out / "prior", subfolder="unet").state_dict()
    raw = torch.load(out / "state.pt", weights_only=False)["unet"]
    torch.manual_seed(0)
    init = new_unet(16).state_dict()
    dist = lambda a, b: sum(float((a[k] - b[k]).square().sum()) for k in a)  # noqa: E731
    assert dist(ema, raw) < dist(ema, init)
    r = subprocess.run([*base, "--steps", "7"], capture_output=True, text=True)
    assert r.returncode == 0 and "resumed at step 5" in r.stdout + r.stderr, r.stdout + r.stderr
    assert read_marker(out / "prior")["steps"] == 7
    r = subprocess.run([sys.executable, "-m", "splatfield.apps.cli", "lift-prior", "show", str(out / "prior")],
                       capture_output=True, text=True)  # fmt: skip
    assert r.returncode == 0 and "reference+camera prior" in r.stdout and "7 steps" in r.stdout
    r = subprocess.run([sys.executable, "-m", "splatfield.apps.cli", "lift-prior", "show", str(tmp_path)],
                       capture_output=True, text=True)  # fmt: skip
    assert r.returncode == 2 and "not a prior folder" in r.stderr and len(r.stderr.strip().splitlines()) == 1


def test_procedural_names_the_shipped_prior_or_says_it_is_missing(tmp_path, monkeypatch):
    from splatfield.scenes.distill import GuidanceError
    from splatfield.scenes.distill import prior as prior_module

    shipped = DiffusersGuidance("procedural")
    assert shipped.conditioning == "reference+camera" and shipped.sample_size == A_SIZE and shipped.prediction == "sample"
    meta = read_marker(prior_module.SHIPPED)
    assert meta["command"].startswith("splatfield lift-prior train") and meta["steps"] > 0
    assert sum(f.stat().st_size for f in prior_module.SHIPPED.rglob("*") if f.is_file()) < 20e6
    r = subprocess.run([sys.executable, "-m", "splatfield.apps.cli", "lift-prior", "show", "procedural"],
                       capture_output=True, text=True)  # fmt: skip
    assert r.returncode == 0 and "reference+camera prior" in r.stdout and "made by: splatfield lift-prior train" in r.stdout
    monkeypatch.setattr(prior_module, "SHIPPED", tmp_path / "absent")
    with pytest.raises(GuidanceError, match="shipped procedural prior is missing") as e:
        DiffusersGuidance("procedural")
    assert "\n" not in str(e.value)


A_SIZE = 64  # the family's and the shipped prior's image size


def test_a_prompt_for_the_reference_conditioned_prior_is_one_line(tiny_prior):
    from splatfield.scenes.config import ConfigError
    from splatfield.scenes.strategies.registry import make_strategy

    with pytest.raises(ConfigError, match="conditioned on a reference view and a camera, not on a prompt") as e:
        make_strategy("distill", distill=DistillConfig(guidance=str(tiny_prior), prompt="a red cube"), steps=10)
    assert "\n" not in str(e.value)
