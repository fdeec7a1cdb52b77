"""The depth-ranking loss (NeuralLift-360's, scenes.losses.depth_ranking) and the depth_rank
strategy that teaches a depth map's order to one training view (lift --depth)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from splatfield.apps.lift import Lift
from splatfield.apps.lift_run import run_lift
from splatfield.data import arrangements as A
from splatfield.scenes.config import ConfigError
from splatfield.scenes.losses import depth_ranking
from splatfield.scenes.run import Run
from splatfield.scenes.strategies.depth_rank import read_depth_map


def ramp(h=16, w=16) -> torch.Tensor:
    return torch.linspace(1.0, 2.0, w, dtype=torch.float64).expand(h, w).clone()


def loss_of(depth, prior, mask=None, seed=0) -> float:
    return float(depth_ranking(depth, prior, mask, 2048, torch.Generator().manual_seed(seed)))


def test_the_loss_sees_only_orders_and_is_zero_when_the_render_agrees():
    truth = ramp()
    assert loss_of(truth, truth) == 0.0
    reversed_ = loss_of(3.0 - truth, truth)
    assert reversed_ > 0.01
    # a monotone change of the prior (scale, shift, exp) and a scaled render give the same value
    assert loss_of(3.0 - truth, 5 * truth + 2) == pytest.approx(reversed_, rel=1e-12)
    assert loss_of(3.0 - truth, torch.exp(truth)) == pytest.approx(reversed_, rel=1e-12)
    assert loss_of(10 * (3.0 - truth), truth) == pytest.approx(reversed_, rel=1e-12)


def test_the_loss_ignores_pixels_outside_the_mask_and_its_gradient_restores_the_order():
    truth = ramp()
    render = truth.clone()
    render[:, 8:] = 3.0 - truth[:, 8:]  # the right half reversed
    left = torch.zeros(16, 16, dtype=torch.bool)
    left[:, :8] = True
    assert loss_of(render, truth, left) == 0.0
    d = render.clone().requires_grad_(True)
    before = loss_of(render, truth)
    depth_ranking(d, truth, None, 4096, torch.Generator().manual_seed(1)).backward()
    after = loss_of((d - 5.0 * d.grad).detach(), truth)
    assert before > 0.0 and after < before


def test_empty_or_tied_inputs_give_zero_with_a_gradient_path():
    d = ramp().requires_grad_(True)
    assert float(depth_ranking(d, torch.ones(16, 16), None, 64, torch.Generator()).detach()) == 0.0  # all tied
    none = torch.zeros(16, 16, dtype=torch.bool)
    out = depth_ranking(d, ramp(), none, 64, torch.Generator())
    out.backward()
    assert float(out.detach()) == 0.0 and torch.equal(d.grad, torch.zeros_like(d))


def test_depth_maps_are_read_or_refused_in_one_line(tmp_path):
    arr = np.arange(12, dtype=np.float32).reshape(3, 4)
    np.save(tmp_path / "d.npy", arr)
    Image.fromarray(np.arange(12, dtype=np.uint8).reshape(3, 4) * 20).save(tmp_path / "d.png")
    np.testing.assert_array_equal(read_depth_map(tmp_path / "d.npy"), arr)
    np.testing.assert_array_equal(read_depth_map(tmp_path / "d.png"), arr * 20)
    (tmp_path / "bad.png").write_bytes(b"not an image")
    np.save(tmp_path / "nan.npy", np.array([[1.0, np.nan]]))
    for name, words in (("missing.png", "no such file"), ("bad.png", "not a depth map"), ("nan.npy", "finite")):
        with pytest.raises(ConfigError, match=words) as e:
            read_depth_map(tmp_path / name)
        assert "\n" not in str(e.value) and name in str(e.value)


def order_agreement(a: np.ndarray, b: np.ndarray, rng: np.random.Generator, n: int = 20000) -> float:
    """The fraction of random pixel pairs two depth maps order alike (over pairs b does not tie)."""
    i, j = rng.integers(0, a.size, (2, n))
    a, b = a.reshape(-1), b.reshape(-1)
    keep = np.abs(b[i] - b[j]) > 1e-3
    return float(np.mean(np.sign(a[i] - a[j])[keep] == np.sign(b[i] - b[j])[keep]))


def test_lift_with_a_depth_map_learns_its_order(tmp_path, native):
    """A held-out arrangement lifted from one view with its true depth (kind depth) renders a
    reference depth whose near-far order agrees with the truth more than without it."""
    seed, c2w = 2, A.camera(15.0, 0.0)
    image = tmp_path / "ref.png"
    Image.fromarray((A.render(seed, c2w, 32) * 255 + 0.5).astype(np.uint8), "RGBA").save(image)
    truth = A.depth(seed, c2w, 32)
    inside = np.isfinite(truth)
    np.save(tmp_path / "depth.npy", np.where(inside, truth, truth[inside].max()))
    agreement = {}
    for name, depth in (("without", None), ("with", tmp_path / "depth.npy")):
        res = run_lift(Lift(image=image, guidance="none", depth=depth, depth_kind="depth", out=tmp_path / name, steps=300,
                            frames=1, elevation=15.0), log=lambda m: None)  # fmt: skip
        scene = Run.open(res.run).scene()
        with torch.no_grad():
            got = scene.render(A.as_cameras([(15.0, 0.0)], 32)).depth[0, ..., 0].numpy()
        agreement[name] = order_agreement(got[inside], truth[inside], np.random.default_rng(0))
    print(f"pairs ordered as the true depth: {agreement['with']:.3f} with the depth map, {agreement['without']:.3f} without")
    assert agreement["with"] > agreement["without"] + MARGIN


MARGIN = 0.1  # measured: 0.799 with the map, 0.649 without (weight 1, 300 steps)


def test_lift_names_a_bad_depth_map_by_its_own_flag(tmp_path):
    from splatfield.apps.lift import Lift
    from splatfield.apps.lift_run import run_lift

    image = tmp_path / "object.png"
    Image.fromarray(np.full((8, 8, 4), 255, np.uint8), "RGBA").save(image)
    (tmp_path / "bad.png").write_bytes(b"not an image")
    with pytest.raises(ConfigError, match="not a depth map") as e:
        run_lift(Lift(image=image, depth=tmp_path / "bad.png", guidance="none", out=tmp_path / "lift"), log=lambda m: None)
    assert e.value.option == "--depth" and not (tmp_path / "lift").exists()  # refused before anything was written
