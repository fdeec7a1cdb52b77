"""SteepGS (`steepest`): the splitting matrix against float64 autograd Hessians, a toy where
one Gaussian fits two lobes, the offspring rule, and the strategy's decisions."""

from __future__ import annotations

import math

import pytest
import torch

from splatfield.render import Cameras, Gaussians, RenderStats, rasterize, reference
from splatfield.scenes import ops
from splatfield.scenes.gaussian_scene import GaussianScene
from splatfield.scenes.strategies.options import AdcConfig, SteepestConfig
from splatfield.scenes.strategies.steepest import Steepest
from splatfield.scenes.strategies.steepest import lift_splitting_matrix, steepest_offspring

from .scenes import SceneSpec, make_scene

# float32 kernels against float64 autograd: || native - hessian ||_inf <= RTOL * || hessian ||_inf
# per Gaussian, over the Gaussians whose 2x2 term is not negligible in the scene
SPLIT2D_RTOL = 1e-4
LIFT_RTOL = 1e-9  # float64 closed form vs float64 autograd


def _hessian_2d(means2d, conics, opacities, colors, depths, radii, bg, w, W, H, i):
    def loss_of_mean(mu: torch.Tensor) -> torch.Tensor:
        m = means2d.clone()
        m[0, i] = mu
        img, *_ = reference.rasterize(m, conics, opacities, colors, depths, radii, bg, W, H)
        return (img * w).sum()

    return torch.autograd.functional.hessian(loss_of_mean, means2d[0, i].clone())


@pytest.mark.parametrize("seed", [1, 2, 3, 4])
def test_native_split2d_is_the_float64_hessian_wrt_the_2d_mean(seed):
    """A loss linear in the image makes the render multilinear in the alphas, so the Hessian
    of the loss w.r.t. one Gaussian's 2D mean is exactly the splitting term (METHODS.md §2)."""
    W, H = 24, 18
    g, cams, bg = make_scene(SceneSpec(seed=seed, n=12, width=W, height=H, regime="normal"))
    bg = torch.rand(1, 3) if bg is None else bg
    w = torch.randn(1, H, W, 3, generator=torch.Generator().manual_seed(seed))
    out = rasterize(g.requires_grad_(), cams, background=bg, stats=("split2d",), backend="native")
    (out.image * w).sum().backward()
    native = out.stats.split2d[0].double()

    g64 = g.detach().to(dtype=torch.float64)
    P = reference.project(g64.means, g64.quats, g64.log_scales, g64.opacity_logits, g64.sh,
                          cams.world_to_camera.double(), cams.Ks.double(), W, H, 0, 0.01, 1e10, 0.3, False)  # fmt: skip
    means2d, conics, opacities, colors, depths, radii = (t.detach() for t in P)
    visible = (radii[0] > 0).all(-1).nonzero()[:, 0].tolist()
    assert len(visible) >= 4
    hess = torch.stack([_hessian_2d(means2d, conics, opacities, colors, depths, radii, bg.double(), w.double(), W, H, i)
                        for i in visible])  # fmt: skip
    closed = native[visible][:, [0, 1, 1, 2]].view(-1, 2, 2)
    scale = hess.abs().amax()
    assert scale > 0
    err = (closed - hess).abs().amax(dim=(1, 2))
    big = hess.abs().amax(dim=(1, 2)) > 1e-3 * scale
    assert big.sum() >= 3
    rel = (err[big] / hess.abs().amax(dim=(1, 2))[big]).max().item()
    assert rel <= SPLIT2D_RTOL, f"native split2d vs float64 Hessian: {rel:.2e}"
    assert (err / scale).max().item() <= SPLIT2D_RTOL


@pytest.mark.parametrize("curvature", [True, False])
def test_lifted_matrix_is_the_hessian_wrt_the_3d_mean(curvature):
    """S = Jᵀ split2d J + Σ_k ∂L/∂μ₂,k ∇²π_k is the Hessian of the loss w.r.t. a Gaussian's 3D
    mean through the projection of the mean (shape and colour held at their values); without
    the curvature term it differs from that Hessian."""
    W, H = 20, 16
    g, cams, bg = make_scene(SceneSpec(seed=7, n=8, width=W, height=H, regime="normal"))
    g = g.detach().to(dtype=torch.float64)
    cams64 = cams.to(dtype=torch.float64)
    bg = torch.rand(1, 3, dtype=torch.float64)
    w = torch.randn(1, H, W, 3, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    viewmats, Ks = cams64.world_to_camera, cams64.Ks

    def project(means: torch.Tensor):
        return reference.project(means, g.quats, g.log_scales, g.opacity_logits, g.sh, viewmats, Ks, W, H, 0, 0.01,
                                 1e10, 0.3, False)  # fmt: skip

    means2d, conics, opacities, colors, depths, radii = (t.detach() for t in project(g.means))
    stats = RenderStats(requested=("split2d", "mean2d_grad"))
    m2 = means2d.clone().requires_grad_()
    image, *_ = reference.rasterize(m2, conics, opacities, colors, depths, radii, bg, W, H, stats=stats)
    (image * w).sum().backward()
    visible = (radii[0] > 0).all(-1).nonzero()[:, 0]
    S = lift_splitting_matrix(g.means[visible], cams64, stats.split2d[0, visible],
                              stats.mean2d_grad[0, visible] if curvature else None)  # fmt: skip

    worst_with, worst_without = 0.0, 0.0
    for k, i in enumerate(visible.tolist()):
        def loss_of_mean(mu: torch.Tensor) -> torch.Tensor:
            means = g.means.clone()
            means[i] = mu
            m = means2d.clone()
            m[0, i] = project(means)[0][0, i]
            img, *_ = reference.rasterize(m, conics, opacities, colors, depths, radii, bg, W, H)
            return (img * w).sum()

        hess = torch.autograd.functional.hessian(loss_of_mean, g.means[i].clone())
        rel = ((S[k] - hess).abs().max() / hess.abs().max()).item()
        worst_with = max(worst_with, rel)
    if curvature:
        assert worst_with <= LIFT_RTOL
    else:
        assert worst_with > 1e-6  # the curvature term is not negligible on these scenes


# ----------------------------------------------------------------------------- toy: two lobes

TOY_W = TOY_H = 48
LOBE_X, LOBE_SCALE, LOBE_OPACITY = 0.2, 0.06, 0.6


def _toy_camera() -> Cameras:
    # pixel centres symmetric about x = 0, so the centre of the two lobes is a stationary point
    return Cameras.from_intrinsics(torch.eye(4), fx=60.0, fy=60.0, cx=24.0, cy=24.0, width=TOY_W, height=TOY_H)


def _blobs(xs: list[float], opacity: float) -> Gaussians:
    n = len(xs)
    return Gaussians.from_rgb(
        means=torch.tensor([[x, 0.0, 2.0] for x in xs]),
        scales=torch.full((n, 3), LOBE_SCALE),
        quats=torch.tensor([[1.0, 0.0, 0.0, 0.0]] * n),
        opacities=torch.full((n,), opacity),
        rgb=torch.ones(n, 3),
    )


def _toy_loss(gaussians: Gaussians, target: torch.Tensor, stats=()):
    out = rasterize(gaussians, _toy_camera(), background=[0.0, 0.0, 0.0], stats=stats)
    return (out.image - target).square().mean(), out


@pytest.fixture(scope="module")
def fitted_single():
    """One Gaussian of the lobes' shape fitted (its opacity) to two lobes side by side along x.
    It sits at their centre, which symmetry makes a stationary point of its position: a
    saddle, since moving mass towards either lobe helps. (With its scales free as well, the
    splitting matrix's diagonal in the Gaussian's frame is a combination of the scale and
    opacity gradients, which vanish at the optimum: splitting pays where shape alone can't fit.)"""
    target = rasterize(_blobs([-LOBE_X, LOBE_X], LOBE_OPACITY), _toy_camera(), background=[0.0] * 3).image.detach()
    params = [t.detach().clone().requires_grad_() for t in _blobs([0.0], 0.5).tensors()]
    opt = torch.optim.Adam([params[3]], lr=3e-2)
    for _ in range(300):
        opt.zero_grad()
        loss, _ = _toy_loss(Gaussians(*params), target)
        loss.backward()
        opt.step()
    return Gaussians(*(p.detach() for p in params)), target


def _splitting_matrix(g: Gaussians, target: torch.Tensor) -> torch.Tensor:
    loss, out = _toy_loss(g.requires_grad_(), target, stats=("split2d", "mean2d_grad"))
    loss.backward()
    return lift_splitting_matrix(g.means.detach(), _toy_camera(), out.stats.split2d[0], out.stats.mean2d_grad[0])[0]


def _split_loss(g: Gaussians, direction: torch.Tensor, target: torch.Tensor) -> float:
    """Loss after the steepest split along ``direction`` (offspring of the parent's shape)."""
    parent = dict(zip(("means", "log_scales", "quats", "opacity_logits", "sh0", "shN"), g.detach().tensors()))
    kids = steepest_offspring(parent, direction[None].float(), displacement=1.0, scale_divisor=1.0)
    pair = Gaussians(kids["means"], kids["log_scales"], kids["quats"], kids["opacity_logits"], kids["sh0"], kids["shN"])
    return float(_toy_loss(pair, target)[0])


def test_toy_two_lobes_negative_eigenvalue_and_the_split_along_it_lowers_the_loss(fitted_single):
    g, target = fitted_single
    parent_loss = float(_toy_loss(g, target)[0])
    S = _splitting_matrix(g, target)
    evals, evecs = torch.linalg.eigh(S)
    assert evals[0] < -1e-3, f"lambda_min {evals[0]:.3e} should be negative at a two-lobed target"
    assert evals[-1] > 0
    v_min, v_max = evecs[:, 0], evecs[:, -1]
    assert abs(float(v_min[0])) > 0.99, f"v_min {v_min.tolist()} should point along the lobes (x)"
    down = _split_loss(g, v_min, target)
    across = _split_loss(g, v_max, target)
    assert down < 0.99 * parent_loss, f"split along v_min: {down:.4e} vs parent {parent_loss:.4e}"
    assert across >= parent_loss, f"split along v_max: {across:.4e} vs parent {parent_loss:.4e}"


def test_offspring_positions_opacity_and_shape_are_as_specified():
    gen = torch.Generator().manual_seed(0)
    n = 5
    parent = {
        "means": torch.randn(n, 3, generator=gen),
        "log_scales": torch.randn(n, 3, generator=gen) - 2,
        "quats": torch.randn(n, 4, generator=gen),
        "opacity_logits": torch.randn(n, generator=gen),
        "sh0": torch.randn(n, 1, 3, generator=gen),
        "shN": torch.randn(n, 3, 3, generator=gen),
    }
    v = torch.nn.functional.normalize(torch.randn(n, 3, generator=gen, dtype=torch.float64), dim=-1)
    kids = steepest_offspring({k: t.double() for k, t in parent.items()}, v.double(), displacement=0.7, scale_divisor=1.6)
    # the parent's standard deviation along v: sqrt(v^T Sigma v)
    R = reference.quat_to_rotmat(torch.nn.functional.normalize(parent["quats"].double(), dim=-1))
    Sigma = R @ torch.diag_embed(torch.exp(2 * parent["log_scales"].double())) @ R.transpose(-1, -2)
    std = torch.sqrt(torch.einsum("ni,nij,nj->n", v.double(), Sigma, v.double()))
    delta = 0.7 * std[:, None] * v.double()
    torch.testing.assert_close(kids["means"][:n], parent["means"].double() + delta, rtol=0, atol=1e-12)
    torch.testing.assert_close(kids["means"][n:], parent["means"].double() - delta, rtol=0, atol=1e-12)
    half = torch.sigmoid(parent["opacity_logits"].double()) / 2
    torch.testing.assert_close(torch.sigmoid(kids["opacity_logits"]), half.repeat(2), rtol=0, atol=1e-12)
    torch.testing.assert_close(kids["log_scales"], parent["log_scales"].double().repeat(2, 1) - math.log(1.6))
    for k in ("quats", "sh0", "shN"):
        assert torch.equal(kids[k], parent[k].double().repeat(2, *([1] * (parent[k].dim() - 1))))


# ----------------------------------------------------------------------------- the strategy's decisions


def _scene(n: int) -> GaussianScene:
    g = Gaussians.from_rgb(
        means=torch.arange(n, dtype=torch.float32)[:, None].repeat(1, 3),
        scales=torch.full((n, 3), 0.05),
        quats=torch.tensor([[1.0, 0.0, 0.0, 0.0]]).repeat(n, 1),
        opacities=torch.full((n,), 0.6),
        rgb=torch.full((n, 3), 0.5),
    )
    return GaussianScene(g, extent=1.0)


def _strategy_with(cfg: SteepestConfig, lam: list[float], grad: list[float]) -> Steepest:
    """A strategy whose accumulated statistics give these λ_min (eigenvector x) and gradients."""
    n = len(lam)
    s = Steepest(split=cfg)
    S = torch.zeros(n, 3, 3, dtype=torch.float64)
    S[:, 0, 0] = torch.tensor(lam, dtype=torch.float64)
    S[:, 1, 1] = S[:, 2, 2] = 1.0
    s.load_state_dict({"grad_sum": torch.tensor(grad), "count": torch.ones(n, dtype=torch.int32),
                       "max_radius": torch.ones(n), "split_sum": S})  # fmt: skip
    return s


@pytest.mark.parametrize(
    "cfg, expect_split",
    [
        (SteepestConfig(split_threshold=1e-3, split_grad_gate=False), [0, 1, 3]),  # λ < -1e-3
        (SteepestConfig(split_threshold=1e-3, split_grad_gate=False, max_splits=2), [1, 3]),  # the two most negative
        (SteepestConfig(split_threshold=1e-3, split_grad_gate=True), [1, 3]),  # and a gradient >= 2e-4
        # predicted loss change ½·δ²·λ with δ = 0.05: < -1.2e-6 means λ < -9.6e-4 (-5e-4 fails)
        (SteepestConfig(split_threshold=1.2e-6, split_grad_gate=False, split_criterion="loss-change"), [0, 1, 3]),
    ],
)
def test_candidates_budget_and_gradient_gate(cfg, expect_split):
    lam = [-0.002, -0.5, -0.0005, -0.1, 0.3]
    grad = [1e-5, 5e-4, 5e-4, 3e-4, 5e-4]
    scene = _scene(5)
    # one Adam step on the means, so that every row has optimizer state (shapes unchanged)
    scene.params["means"].grad = torch.randn(5, 3, generator=torch.Generator().manual_seed(1))
    scene.optimizer.step()
    before = scene.params["means"].detach().clone()
    adam_before = scene.optimizer.state[scene.params["means"]]["exp_avg"].clone()
    s = _strategy_with(cfg, lam, grad)
    changes = s.after_step(AdcConfig().refine_start, scene, torch.Generator())
    assert changes["split"] == len(expect_split)
    assert changes["candidates"] == (3 if not cfg.split_grad_gate else 2)
    kept = [i for i in range(5) if i not in expect_split]
    means = scene.params["means"].detach()
    assert len(scene) == 5 + len(expect_split)
    torch.testing.assert_close(means[: len(kept)], before[kept])
    # offspring move along x (the eigenvector), by the parent's std (0.05) each way
    kids = means[len(kept):].view(2, len(expect_split), 3)
    torch.testing.assert_close(kids[0] - before[expect_split], torch.tensor([[0.05, 0.0, 0.0]]).expand(len(expect_split), 3))
    torch.testing.assert_close(kids[1] - before[expect_split], torch.tensor([[-0.05, 0.0, 0.0]]).expand(len(expect_split), 3))
    # Adam state follows the rows: the others keep theirs, offspring start from zero
    state = scene.optimizer.state[scene.params["means"]]["exp_avg"]
    torch.testing.assert_close(state[: len(kept)], adam_before[kept])
    assert float(state[len(kept):].abs().sum()) == 0.0


def test_statistics_accumulate_from_a_real_render_and_survive_state_dict():
    g, cams, bg = make_scene(SceneSpec(seed=5, n=40, width=32, height=24, regime="normal"))
    scene = GaussianScene(g.detach(), extent=2.0)
    s = Steepest()
    out = scene.render(cams, background=bg, stats=s.statistics)
    out.image.square().mean().backward()
    s.after_backward(1, scene, out)
    visible = out.meta.visible[0]
    assert torch.equal(s.count > 0, visible)
    assert s.split_sum[visible].abs().amax(dim=(1, 2)).gt(0).all()
    assert s.split_sum[~visible].abs().sum() == 0
    torch.testing.assert_close(s.split_sum, s.split_sum.transpose(1, 2))
    clone = Steepest()
    clone.load_state_dict(s.state_dict())
    assert torch.equal(clone.split_sum, s.split_sum) and torch.equal(clone.count, s.count)


def test_edits_keep_statistics_aligned_with_the_scene():
    """After a refinement the statistics are reset to the new size; ops edits between two
    backward passes (another strategy's, say) resize them instead of mixing rows."""
    g, cams, bg = make_scene(SceneSpec(seed=6, n=30, width=32, height=24, regime="normal"))
    scene = GaussianScene(g.detach(), extent=2.0)
    s = Steepest(split=SteepestConfig(split_threshold=0.0))
    out = scene.render(cams, background=bg, stats=s.statistics)
    ((out.image - 0.3).abs().mean()).backward()
    s.after_backward(500, scene, out)
    changes = s.after_step(500, scene, torch.Generator())
    assert len(scene) == 30 + changes["split"] - changes["pruned"]
    assert s.split_sum.shape[0] == len(scene) and float(s.split_sum.abs().sum()) == 0.0
    ops.remove(scene.params, scene.optimizer, torch.arange(len(scene)) < 3)
    scene.optimizer.zero_grad(set_to_none=True)
    out = scene.render(cams, background=bg, stats=s.statistics)
    out.image.mean().backward()
    s.after_backward(501, scene, out)
    assert s.split_sum.shape[0] == len(scene)
