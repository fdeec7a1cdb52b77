"""The oracle itself: float64 autograd gradients of the reference against central finite
differences (torch.autograd.gradcheck), and split2d against the autograd Hessian."""

from __future__ import annotations

import pytest
import torch

from splatfield.render import Cameras, Gaussians, RenderStats, reference

from .scenes import SceneSpec, closed_form_image, make_scene

W, H = 9, 7
# A scene checks the gradients of what it shows: some Gaussian must reach an alpha far above
# the 1/255 skip threshold, or finite differences agree with autograd on next to nothing.
MIN_VISIBLE_ALPHA = 0.1


def _projected_render(spec: SceneSpec):
    g, cams, bg = make_scene(spec)
    g = g.to(dtype=torch.float64)
    bg64 = (torch.zeros(1, 3) if bg is None else bg).double()
    viewmats, Ks = cams.world_to_camera.double(), cams.Ks.double()

    def render(means, log_scales, quats, opacity_logits, sh):
        P = reference.project(
            means, quats, log_scales, opacity_logits, sh, viewmats, Ks, W, H, spec.sh_degree, 0.01, 1e10, 0.3,
            spec.antialiased,
        )  # fmt: skip
        image, depth, alpha, _ = reference.rasterize(*P, bg64, W, H)
        return image, depth, alpha

    inputs = [t.detach().clone().requires_grad_() for t in (g.means, g.log_scales, g.quats, g.opacity_logits, g.sh)]
    return render, inputs, viewmats, Ks, bg64


def _clear_of_thresholds(spec: SceneSpec, inputs, viewmats, Ks, bg64) -> bool:
    """Finite differences straddle a discontinuity when a decision is near its threshold."""
    means, log_scales, quats, opacity_logits, sh = inputs
    P = reference.project(means, quats, log_scales, opacity_logits, sh, viewmats, Ks, W, H, spec.sh_degree,
                          0.01, 1e10, 0.3, spec.antialiased)  # fmt: skip
    amb: dict = {}
    reference.rasterize(*P, bg64, W, H, ambiguity=amb, alpha_margin=1e-2, transmittance_margin=1e-2)
    return not bool(amb["pixels"].any())


@pytest.mark.parametrize("sh_degree", [0, 1, 2, 3])
@pytest.mark.parametrize("antialiased", [False, True])
def test_reference_gradients_match_finite_differences(sh_degree, antialiased):
    for seed in range(40):
        spec = SceneSpec(seed=500 + seed, n=4, width=W, height=H, sh_degree=sh_degree, antialiased=antialiased)
        render, inputs, viewmats, Ks, bg64 = _projected_render(spec)
        visible = render(*inputs)[2].max().item() > MIN_VISIBLE_ALPHA
        if visible and _clear_of_thresholds(spec, inputs, viewmats, Ks, bg64):
            break
    else:
        pytest.fail(f"no random scene clear of the compositing thresholds with an alpha above {MIN_VISIBLE_ALPHA}")

    def f(*xs):
        image, depth, alpha = render(*xs)
        return image.sum(-1), depth[..., 0], alpha[..., 0]

    assert torch.autograd.gradcheck(f, tuple(inputs), eps=1e-6, atol=1e-5, rtol=1e-4)


def test_split2d_is_the_hessian_of_the_loss_wrt_the_2d_mean():
    """With a loss linear in the image, the rendered colour is multilinear in the alphas,
    so d2L/dmu2^2 of one Gaussian is exactly sum_p dL/dalpha * d2alpha/dmu2^2 (METHODS.md
    section 2): the reference's closed form must equal autograd's Hessian."""
    spec = SceneSpec(seed=9, n=6, width=12, height=10, regime="normal")
    g, cams, bg = make_scene(spec)
    g = g.to(dtype=torch.float64)
    P = reference.project(g.means, g.quats, g.log_scales, g.opacity_logits, g.sh, cams.world_to_camera.double(),
                          cams.Ks.double(), 12, 10, 0, 0.01, 1e10, 0.3, False)  # fmt: skip
    means2d, conics, opacities, colors, depths, radii = (t.detach() for t in P)
    bg64 = torch.rand(1, 3, dtype=torch.float64)
    w = torch.randn(1, 10, 12, 3, dtype=torch.float64)
    visible = (radii[0] > 0).all(-1).nonzero()[:, 0]
    assert visible.numel() >= 3
    assert reference.rasterize(*P, bg64, 12, 10)[2].max() > MIN_VISIBLE_ALPHA

    stats = RenderStats(requested=("split2d",))
    m2 = means2d.clone().requires_grad_()
    image, *_ = reference.rasterize(m2, conics, opacities, colors, depths, radii, bg64, 12, 10, stats=stats)
    (image * w).sum().backward()

    for i in visible.tolist():
        def loss_of_mean(mu: torch.Tensor) -> torch.Tensor:
            m = means2d.clone()
            m[0, i] = mu
            img, *_ = reference.rasterize(m, conics, opacities, colors, depths, radii, bg64, 12, 10)
            return (img * w).sum()

        hess = torch.autograd.functional.hessian(loss_of_mean, means2d[0, i].clone())
        xx, xy, yy = stats.split2d[0, i]
        closed = torch.stack([torch.stack([xx, xy]), torch.stack([xy, yy])])
        torch.testing.assert_close(closed, hess, rtol=1e-9, atol=1e-12)


def test_cull_and_dense_reference_agree():
    spec = SceneSpec(seed=3, n=150, width=41, height=29, sh_degree=2, regime="mixed")
    g, cams, bg = make_scene(spec)
    g = g.to(dtype=torch.float64)
    P = reference.project(g.means, g.quats, g.log_scales, g.opacity_logits, g.sh, cams.world_to_camera.double(),
                          cams.Ks.double(), 41, 29, 2, 0.01, 1e10, 0.3, False)  # fmt: skip
    bg64 = torch.rand(1, 3, dtype=torch.float64)
    a = reference.rasterize(*P, bg64, 41, 29, cull=True, block=8)
    b = reference.rasterize(*P, bg64, 41, 29, cull=False)
    for x, y in zip(a, b):
        torch.testing.assert_close(x, y, rtol=0, atol=1e-12)


def test_public_reference_backend_renders_float64_like_the_closed_form():
    """rasterize(backend="reference") keeps float64 and matches an oracle that shares no
    code with the reference (tests/scenes.py closed_form_image)."""
    from splatfield.render import rasterize

    means = [[0.0, 0.0, 3.0], [0.3, -0.2, 4.0], [-0.4, 0.1, 2.5]]
    scales, opacities = [0.15, 0.3, 0.1], [0.9, 0.7, 0.5]
    rgb, bg = [[1.0, 0.2, 0.0], [0.0, 1.0, 0.5], [0.3, 0.3, 1.0]], [0.2, 0.1, 0.3]
    f64 = dict(dtype=torch.float64)
    g = Gaussians.from_rgb(torch.tensor(means, **f64), torch.tensor(scales, **f64)[:, None].expand(3, 3).clone(),
                           torch.tensor([[1.0, 0, 0, 0]] * 3, **f64), torch.tensor(opacities, **f64),
                           torch.tensor(rgb, **f64))  # fmt: skip
    cams = Cameras.from_intrinsics(torch.eye(4, **f64), 24.0, 22.0, 10.5, 7.0, 20, 14)
    out = rasterize(g, cams, background=bg, backend="reference")
    assert out.image.dtype == torch.float64 and out.alpha.max() > 0.5
    expected = closed_form_image(means, scales, opacities, rgb, 24.0, 22.0, 10.5, 7.0, 20, 14, bg)
    torch.testing.assert_close(out.image[0], torch.from_numpy(expected), rtol=0, atol=1e-12)
