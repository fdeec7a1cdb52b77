"""The distill strategy (issue 17, in part): score distillation from a diffusers checkpoint
on random views, inside the one training loop, with its state in the checkpoint. Guidance:
the tiny random UNet of test_distill_diffusers (plumbing, not quality)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import torch

from splatfield.apps import training
from splatfield.data import procedural
from splatfield.scenes import checkpoint as ckpt
from splatfield.scenes.config import ConfigError
from splatfield.scenes.options import run_config
from splatfield.scenes.run import Run
from splatfield.scenes.strategies.options import DistillConfig
from splatfield.scenes.strategies.registry import make_strategies

from .test_distill_diffusers import save_checkpoint

pytest.importorskip("diffusers")


@pytest.fixture(scope="module")
def demo_data(tmp_path_factory) -> Path:
    return procedural.write_demo_dataset(tmp_path_factory.mktemp("distill") / "data", size=32, train_views=6, test_views=2)


@pytest.fixture(scope="module")
def guidance(tmp_path_factory) -> Path:
    return save_checkpoint(tmp_path_factory.mktemp("tiny-sd"))


def _config(data: Path, out: Path, guidance: Path, steps: int, estimator: str = "sds", **kw):
    base = dict(steps=steps, init_points=1500, init_half_size=1.0, sh_degree=1, save_renders=False, eval=False,
                distill_guidance=str(guidance), distill_estimator=estimator)  # fmt: skip
    base.update(kw)
    return run_config(str(data), str(out), strategy=("adc", "distill"), **base)


@pytest.mark.parametrize("estimator", ["sds", "esd", "stein"])
def test_resume_continues_distillation_exactly(estimator, demo_data, guidance, tmp_path, native):
    whole = tmp_path / "whole"
    training.train(_config(demo_data, whole, guidance, 12, estimator, checkpoint_every=6), log=lambda m: None)
    part = tmp_path / "part"
    training.train(_config(demo_data, part, guidance, 12, estimator, checkpoint_every=6), log=lambda m: None)
    training.train(_config(demo_data, part, guidance, 12, estimator, checkpoint_every=6), run_path=part, resume_from=6,
                   log=lambda m: None)  # fmt: skip
    a = ckpt.load_checkpoint(ckpt.latest_checkpoint(whole / "checkpoints"))
    b = ckpt.load_checkpoint(ckpt.latest_checkpoint(part / "checkpoints"))
    for name, value in a["scene"]["params"].items():
        assert torch.equal(value, b["scene"]["params"][name]), name
    state_a, state_b = (next(s["state"] for s in c["strategies"] if s["name"] == "distill") for c in (a, b))
    assert torch.equal(state_a["generator"], state_b["generator"])
    if estimator == "esd":
        for p, q in zip(state_a["model"]["parameters"], state_b["model"]["parameters"]):
            assert torch.equal(p, q)
        assert any(p.abs().sum() > 0 for p in state_a["model"]["parameters"][1::2])  # the adapter trained
    if estimator == "stein":
        for k in ("cross", "power"):
            assert torch.equal(state_a["stein"][k], state_b["stein"][k]), k
        assert (state_a["stein"]["power"] > 0).any()  # the coefficient was being fitted


def test_distillation_moves_the_scene_beyond_the_photometric_loss(demo_data, guidance, tmp_path, native):
    """The same run with the distillation's weight 0 and 10: the random views' gradient
    changes the scene; and w(t) = 1 changes it otherwise than sigma_t^2."""
    scenes = []
    for weight, weighting in ((0.0, "sigma2"), (10.0, "sigma2"), (10.0, "one")):
        out = tmp_path / f"w{weight}{weighting}"
        training.train(_config(demo_data, out, guidance, 5, distill_weight=weight, distill_weighting=weighting), log=lambda m: None)
        scenes.append(ckpt.load_checkpoint(ckpt.latest_checkpoint(out / "checkpoints"))["scene"])
    means = [s["params"]["means"] for s in scenes]
    assert not torch.equal(means[0], means[1]) and not torch.equal(means[1], means[2])


def test_distill_without_a_guidance_folder_is_refused():
    with pytest.raises(ConfigError, match="--distill.guidance: distill needs a diffusers checkpoint folder"):
        make_strategies(("adc", "distill"), scene_kind="gaussians", steps=10)


def test_a_broken_guidance_folder_is_one_line_on_the_command_line(demo_data, tmp_path):
    r = subprocess.run([sys.executable, "-m", "splatfield.apps.cli", "train", str(demo_data), "--strategy", "adc", "distill",
                        "--distill.guidance", str(tmp_path / "nowhere"), "--out", str(tmp_path / "r"), "--no-viewer"],
                       capture_output=True, text=True)  # fmt: skip
    assert r.returncode != 0 and "Traceback" not in r.stderr
    assert "no such folder" in r.stderr and len(r.stderr.strip().splitlines()) == 1, r.stderr


def test_a_prompt_conditions_the_distillation_and_is_logged(demo_data, tmp_path, native):
    """--distill.prompt: the views are pushed by the prompt's embedding (another prompt moves
    the scene elsewhere), with "" as the unconditional side of the guidance."""
    sd = save_checkpoint(tmp_path / "sd", text=True)
    ends = {}
    for prompt in ("a red cube", "a blue ball"):
        res = training.train(_config(demo_data, tmp_path / prompt.replace(" ", "-"), sd, 4, distill_prompt=prompt), log=lambda m: None)
        assert res.finished
        ends[prompt] = Run.open(tmp_path / prompt.replace(" ", "-")).scene().gaussians.means
    assert not torch.allclose(ends["a red cube"], ends["a blue ball"])
    from splatfield.scenes.strategies.distill import Distill

    strategy = Distill(DistillConfig(guidance=str(sd), prompt="a red cube"), steps=4, background=(1.0, 1.0, 1.0))
    assert "prompt 'a red cube'" in strategy.describe()
    torch.testing.assert_close(strategy.negative, strategy.guidance.encode_prompt(""))


def test_without_the_reference_the_training_images_do_not_touch_the_scene(demo_data, guidance, tmp_path, native):
    """reference_probability 0 0 (text-to-3D): two datasets that differ only in their images
    give bit-identical scenes; with 1 1 they do not."""
    import shutil

    import numpy as np
    from PIL import Image

    other = tmp_path / "inverted"
    shutil.copytree(demo_data, other)
    for png in other.rglob("*.png"):
        with Image.open(png) as im:
            rgba = np.asarray(im.convert("RGBA")).copy()
        rgba[..., :3] = 255 - rgba[..., :3]
        Image.fromarray(rgba, "RGBA").save(png)
    for probability, same in (((0.0, 0.0), True), ((1.0, 1.0), False)):
        means = []
        for data in (demo_data, other):
            out = tmp_path / f"p{probability[0]}-{data.name}"
            training.train(_config(data, out, guidance, 4, distill_reference_probability=probability), log=lambda m: None)
            means.append(ckpt.load_checkpoint(ckpt.latest_checkpoint(out / "checkpoints"))["scene"]["params"]["means"])
        assert torch.equal(means[0], means[1]) == same, probability


def test_reference_probability_decays_and_draws_from_the_strategy_generator(guidance):
    from splatfield.scenes.strategies.distill import Distill

    config = DistillConfig(guidance=str(guidance), reference_probability=(0.9, 0.1))
    strategy = Distill(config, steps=2001, background=(1.0, 1.0, 1.0))
    assert strategy.reference_probability(1) == pytest.approx(0.9)
    assert strategy.reference_probability(2001) == pytest.approx(0.1)
    drawn = torch.tensor([strategy.photometric_weight(s) for s in range(1, 2002)])
    assert set(drawn.tolist()) == {0.0, 1.0}
    assert drawn[:500].mean() > 0.75 and drawn[-500:].mean() < 0.25  # expected 0.8 and 0.2
    assert abs(float(drawn.mean()) - 0.5) < 0.05  # 2001 draws: the standard error is 0.011
    always = Distill(DistillConfig(guidance=str(guidance)), steps=10, background=(1.0, 1.0, 1.0))
    state = always.generator.get_state()
    assert all(always.photometric_weight(s) == 1.0 for s in range(1, 11))
    assert torch.equal(always.generator.get_state(), state)  # probability 1 draws nothing: old runs repeat
    with pytest.raises(ConfigError, match="reference-probability"):
        DistillConfig(reference_probability=(1.2, 0.0))


def test_stein_with_a_depth_model_uses_its_agreement_as_baseline(demo_data, guidance, tmp_path, native):
    """--distill.stein-depth: the control variate is built from the depth model's agreement
    with the render (not the constant baseline's eps): the fitted statistics differ."""
    from .test_distill_stein import save_depth_model

    depth = save_depth_model(tmp_path / "dpt")
    states = []
    for name, folder in (("constant", ""), ("depth", str(depth))):
        out = tmp_path / name
        training.train(_config(demo_data, out, guidance, 4, "stein", distill_stein_depth=folder), log=lambda m: None)
        saved = ckpt.load_checkpoint(ckpt.latest_checkpoint(out / "checkpoints"))
        states.append(next(s["state"] for s in saved["strategies"] if s["name"] == "distill")["stein"])
    assert (states[1]["power"] > 0).any()
    assert not torch.equal(states[0]["power"], states[1]["power"])
    with pytest.raises(ConfigError, match="stein-depth"):
        DistillConfig(guidance=str(guidance), stein_depth=str(depth))  # the baseline of stein only
    with pytest.raises(ConfigError, match="stein-depth: .*no such folder"):
        make_strategies(["distill"], scene_kind="gaussians", distill=DistillConfig(guidance=str(guidance), estimator="stein",
                                                                                   stein_depth=str(tmp_path / "none")))  # fmt: skip


def test_the_reference_is_encoded_once_and_conditions_as_the_image_would():
    """The reference view does not change during a run: the guidance reads it once (for
    Zero123 a VAE and a CLIP pass), and the per-step condition equals the one built from
    the image itself."""
    from types import SimpleNamespace

    from splatfield.data import arrangements as A
    from splatfield.scenes.strategies.distill import Distill

    strategy = Distill(DistillConfig(guidance="procedural", up=(0.0, 0.0, 1.0)), steps=10, background=(1.0, 1.0, 1.0))
    image = torch.from_numpy((A.over_white(A.render(500, A.camera(15.0, 0.0), 64)) * 255 + 0.5).astype("uint8"))[None]
    strategy.bind_views(SimpleNamespace(images=image, cameras=A.as_cameras([(15.0, 0.0)], 64)))
    calls = []
    encode = strategy.guidance.encode_reference
    strategy.guidance.encode_reference = lambda ref: calls.append(1) or encode(ref)
    cameras = strategy.random_cameras(A.as_cameras([(15.0, 0.0)], 64))
    first, second = strategy.condition_for(cameras), strategy.condition_for(cameras)
    assert len(calls) == 1
    ref_el, ref_az = strategy.angles(strategy.reference_camera)
    el, az = strategy.angles(cameras)
    direct = strategy.guidance.reference_condition(image.float() / 255.0, ref_el, ref_az, el, az)
    for cond in (first, second):
        assert torch.equal(cond.reference, direct.reference) and torch.equal(cond.tokens, direct.tokens)
