"""scenes.ops keeps parameters and Adam state in step; GaussianScene schedules and state."""

from __future__ import annotations

import math

import pytest
import torch

from splatfield.render import Gaussians
from splatfield.scenes import ops
from splatfield.scenes.gaussian_scene import GaussianScene, LearningRates, nearest_neighbour_distance


def make_scene(n: int = 6, degree: int = 1, seed: int = 0) -> GaussianScene:
    g = torch.Generator().manual_seed(seed)
    K = (degree + 1) ** 2
    gs = Gaussians(
        means=torch.randn(n, 3, generator=g), log_scales=torch.randn(n, 3, generator=g) - 3,
        quats=torch.randn(n, 4, generator=g), opacity_logits=torch.randn(n, generator=g),
        sh0=torch.randn(n, 1, 3, generator=g), shN=torch.randn(n, K - 1, 3, generator=g),
    )  # fmt: skip
    return GaussianScene(gs, extent=2.0)


def adam_step(scene: GaussianScene, seed: int = 1) -> None:
    g = torch.Generator().manual_seed(seed)
    for p in scene.params.values():
        p.grad = torch.randn(p.shape, generator=g)
    scene.optimizer.step()
    scene.optimizer.zero_grad(set_to_none=True)


def state_of(scene: GaussianScene, name: str, key: str) -> torch.Tensor:
    return scene.optimizer.state[scene.params[name]][key]


def test_append_keeps_old_state_and_zeroes_new():
    scene = make_scene()
    adam_step(scene)
    before = {n: state_of(scene, n, "exp_avg").clone() for n in scene.params}
    rows = {n: torch.full((2, *p.shape[1:]), 7.0) for n, p in scene.params.items()}
    ops.append(scene.params, scene.optimizer, rows)
    assert len(scene) == 8
    for n, p in scene.params.items():
        assert torch.equal(p.detach()[6:], rows[n])
        s = state_of(scene, n, "exp_avg")
        assert torch.equal(s[:6], before[n]) and torch.equal(s[6:], torch.zeros_like(s[6:]))
        assert state_of(scene, n, "exp_avg_sq").shape == p.shape
    # the optimizer holds the new parameters (and only them)
    held = [p for group in scene.optimizer.param_groups for p in group["params"]]
    assert len(held) == 6 and all(any(p is q for q in scene.params.values()) for p in held)
    adam_step(scene)  # still steps


def test_remove_takes_state_along():
    scene = make_scene()
    adam_step(scene)
    mask = torch.tensor([True, False, False, True, False, True])
    expect_p = {n: p.detach()[~mask].clone() for n, p in scene.params.items()}
    expect_s = {n: state_of(scene, n, "exp_avg_sq")[~mask].clone() for n in scene.params}
    ops.remove(scene.params, scene.optimizer, mask)
    assert len(scene) == 3
    for n in scene.params:
        assert torch.equal(scene.params[n].detach(), expect_p[n])
        assert torch.equal(state_of(scene, n, "exp_avg_sq"), expect_s[n])


def test_replace_rows_resets_their_state_only():
    scene = make_scene()
    adam_step(scene)
    old = state_of(scene, "opacity_logits", "exp_avg").clone()
    idx = torch.tensor([1, 4])
    ops.replace_rows(scene.params, scene.optimizer, "opacity_logits", idx, torch.tensor([-3.0, -4.0]))
    assert scene.params["opacity_logits"].detach()[idx].tolist() == [-3.0, -4.0]
    s = state_of(scene, "opacity_logits", "exp_avg")
    assert torch.equal(s[idx], torch.zeros(2))
    keep = torch.tensor([0, 2, 3, 5])
    assert torch.equal(s[keep], old[keep])


def test_append_rejects_mismatched_rows():
    scene = make_scene()
    rows = {n: torch.zeros(2, *p.shape[1:]) for n, p in scene.params.items()}
    rows["means"] = torch.zeros(3, 3)
    with pytest.raises(ValueError, match="disagree"):
        ops.append(scene.params, scene.optimizer, rows)
    with pytest.raises(ValueError, match="exactly"):
        ops.append(scene.params, scene.optimizer, {"means": torch.zeros(1, 3)})


def test_position_lr_schedule_and_sh_degree():
    scene = GaussianScene(make_scene(degree=3).gaussians.detach(), extent=5.0, lrs=LearningRates())
    assert math.isclose(scene.means_lr_at(0), 1.6e-4 * 5.0, rel_tol=1e-9)
    assert math.isclose(scene.means_lr_at(30_000), 1.6e-6 * 5.0, rel_tol=1e-9)
    assert math.isclose(scene.means_lr_at(15_000), math.sqrt(1.6e-4 * 1.6e-6) * 5.0, rel_tol=1e-9)
    scene.set_step(15_000)
    group = next(g for g in scene.optimizer.param_groups if g["name"] == "means")
    assert math.isclose(group["lr"], scene.means_lr_at(15_000))
    assert [scene.sh_degree_at(s) for s in (0, 999, 1000, 2500, 9999)] == [0, 0, 1, 2, 3]


def test_state_dict_round_trip_is_exact():
    scene = make_scene(degree=2)
    adam_step(scene)
    copy = GaussianScene.from_state_dict(scene.state_dict())
    for n in scene.params:
        assert torch.equal(copy.params[n], scene.params[n])
        for key in ("exp_avg", "exp_avg_sq"):
            assert torch.equal(state_of(copy, n, key), state_of(scene, n, key))
    adam_step(scene, 3)
    adam_step(copy, 3)
    for n in scene.params:
        assert torch.equal(copy.params[n], scene.params[n])


def test_nearest_neighbour_distance():
    pts = torch.tensor([[0.0, 0, 0], [1, 0, 0], [0, 2, 0], [0, 0, 3]])
    d = nearest_neighbour_distance(pts, k=1)
    assert torch.allclose(d, torch.tensor([1.0, 1.0, 2.0, 3.0]))
    d3 = nearest_neighbour_distance(pts, k=3)
    assert math.isclose(float(d3[0]), math.sqrt((1 + 4 + 9) / 3), rel_tol=1e-6)
    with pytest.raises(ValueError):
        GaussianScene.from_points(torch.zeros(0, 3), torch.zeros(0, 3), extent=1.0)
