"""The 3DGS adaptive density control: which Gaussians are cloned, split, pruned, reset."""

from __future__ import annotations

import math

import torch

from splatfield.render import Gaussians, RenderMeta, RenderOutput, RenderStats
from splatfield.scenes.gaussian_scene import GaussianScene
from splatfield.scenes.strategies.adc import ADC
from splatfield.scenes.strategies.options import AdcConfig

EXTENT = 2.0
W = H = 100


def scene_of(scales: list[float], opacities: list[float]) -> GaussianScene:
    n = len(scales)
    g = Gaussians.from_rgb(
        means=torch.arange(n, dtype=torch.float32)[:, None].repeat(1, 3),
        scales=torch.tensor(scales)[:, None].repeat(1, 3) * torch.tensor([1.0, 0.5, 0.25]),
        quats=torch.tensor([[0.9, 0.1, -0.3, 0.2]]).repeat(n, 1),
        opacities=torch.tensor(opacities),
        rgb=torch.linspace(0.1, 0.9, n)[:, None].repeat(1, 3),
        sh_degree=1,
    )
    return GaussianScene(g, extent=EXTENT)


def fake_render(grad2d: list[float], visible: list[bool], radius: list[int]) -> RenderOutput:
    n = len(grad2d)
    vis = torch.tensor(visible)
    radii = torch.tensor(radius, dtype=torch.int32)[None, :, None].repeat(1, 1, 2) * vis[None, :, None]
    stats = RenderStats(requested=("grad2d",), values={"grad2d": torch.tensor([grad2d])})
    meta = RenderMeta(means2d=torch.zeros(1, n, 2), depths=torch.ones(1, n), radii=radii, stats=stats)
    return RenderOutput(torch.zeros(1, H, W, 3), torch.zeros(1, H, W, 1), torch.zeros(1, H, W, 1), meta)


def test_statistics_accumulate_visible_views_in_ndc_units():
    scene = scene_of([0.001] * 3, [0.5] * 3)
    adc = ADC()
    adc.after_backward(1, scene, fake_render([1e-5, 2e-5, 3e-5], [True, False, True], [3, 4, 5]))
    adc.after_backward(2, scene, fake_render([3e-5, 2e-5, 1e-5], [True, True, False], [7, 4, 2]))
    half = 0.5 * max(W, H)
    assert torch.allclose(adc.grad_sum, torch.tensor([4e-5, 2e-5, 3e-5]) * half)
    assert adc.count.tolist() == [2, 1, 1]
    assert adc.max_radius.tolist() == [7.0, 4.0, 5.0]


def test_refine_clones_small_splits_large_prunes_transparent():
    cfg = AdcConfig()
    small, large = 0.5 * cfg.clone_scale * EXTENT, 4 * cfg.clone_scale * EXTENT
    # 0: high gradient, small -> clone; 1: high gradient, large -> split; 2: low gradient -> kept;
    # 3: transparent -> pruned
    scene = scene_of([small, large, small, small], [0.5, 0.5, 0.5, 0.001])
    before = {k: v.detach().clone() for k, v in scene.params.items()}
    adc = ADC(cfg)
    high = 3 * cfg.grad_threshold / (0.5 * max(W, H))
    low = 0.2 * cfg.grad_threshold / (0.5 * max(W, H))
    adc.after_backward(500, scene, fake_render([high, high, low, low], [True] * 4, [2] * 4))
    changes = adc.after_step(500, scene, torch.Generator().manual_seed(0))
    assert changes == {"cloned": 1, "split": 1, "pruned": 1}
    assert len(scene) == 5  # 4 + 1 clone + 2 offspring - 1 parent - 1 pruned
    means = scene.params["means"].detach()
    # survivors in order: 0, 2, the clone of 0, the two offspring of 1
    assert torch.equal(means[0], before["means"][0]) and torch.equal(means[1], before["means"][2])
    assert torch.equal(means[2], before["means"][0])
    for name in ("quats", "sh0", "shN", "opacity_logits"):
        assert torch.equal(scene.params[name].detach()[3], before[name][1])
        assert torch.equal(scene.params[name].detach()[4], before[name][1])
    ls = scene.params["log_scales"].detach()
    assert torch.allclose(ls[3:], (before["log_scales"][1] - math.log(cfg.split_scale_divisor)).expand(2, 3))
    # offspring drawn around the parent, within a few of its (largest) standard deviations
    offsets = (means[3:] - before["means"][1]).norm(dim=-1)
    assert (offsets > 0).all() and (offsets < 5 * large).all()
    # statistics restart after a refinement
    assert adc.grad_sum.shape == (5,) and float(adc.grad_sum.abs().sum()) == 0.0


def test_refine_only_on_schedule_and_size_pruning_after_first_reset():
    cfg = AdcConfig(prune_screen_px=20.0)
    scene = scene_of([0.001, 0.001], [0.5, 0.5])
    adc = ADC(cfg)
    adc.after_backward(499, scene, fake_render([0.0, 0.0], [True, True], [2, 40]))
    assert adc.after_step(499, scene, torch.Generator()) == {}  # before refine_start
    adc.after_backward(550, scene, fake_render([0.0, 0.0], [True, True], [2, 40]))
    assert adc.after_step(550, scene, torch.Generator()) == {}  # not a multiple of refine_every
    assert len(scene) == 2
    # big on screen (radius 40 > 20 px) survives before the first reset ...
    adc.after_step(600, scene, torch.Generator())
    assert len(scene) == 2
    # ... and is pruned after it
    adc.after_backward(3100, scene, fake_render([0.0, 0.0], [True, True], [2, 40]))
    changes = adc.after_step(3100, scene, torch.Generator())
    assert changes["pruned"] == 1 and len(scene) == 1
    assert adc.after_step(adc.config.refine_stop + 100, scene, torch.Generator()) == {}


def test_opacity_reset_clamps_and_clears_adam_state():
    scene = scene_of([0.001] * 3, [0.9, 0.005, 0.5])
    for p in scene.params.values():
        p.grad = torch.ones_like(p)
    scene.optimizer.step()
    before = scene.opacities
    assert before[1] < 0.01
    adc = ADC()
    changes = adc.after_step(3000, scene, torch.Generator())
    assert changes.get("opacity_reset") == 1
    assert torch.allclose(scene.opacities, before.clamp(max=0.01), atol=1e-7)
    state = scene.optimizer.state[scene.params["opacity_logits"]]
    assert float(state["exp_avg"].abs().sum()) == 0.0


def test_state_dict_round_trip():
    scene = scene_of([0.001] * 2, [0.5] * 2)
    a = ADC()
    a.after_backward(1, scene, fake_render([1e-5, 2e-5], [True, True], [3, 4]))
    b = ADC()
    b.load_state_dict(a.state_dict())
    for k in ("grad_sum", "count", "max_radius"):
        assert torch.equal(getattr(a, k), getattr(b, k))


def test_white_background_reset_at_refine_start():
    for flag, expect in ((False, {}), (True, {"opacity_reset": 1})):
        scene = scene_of([0.001] * 2, [0.9, 0.5])
        adc = ADC(AdcConfig(reset_at_refine_start=flag))
        changes = adc.after_step(500, scene, torch.Generator())
        assert {k: v for k, v in changes.items() if k == "opacity_reset"} == expect
        assert (float(scene.opacities.max()) <= 0.01 + 1e-7) == flag


def test_screen_size_pruning_is_off_by_default():
    scene = scene_of([0.001, 0.001], [0.5, 0.5])
    adc = ADC()
    adc.after_backward(3100, scene, fake_render([0.0, 0.0], [True, True], [2, 400]))
    assert adc.after_step(3100, scene, torch.Generator())["pruned"] == 0 and len(scene) == 2
