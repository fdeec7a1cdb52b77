"""The rasterizer's gradient with respect to the cameras (camera refinement).

* native vs the float64 reference on every third scene of the native suite: the
  world-to-camera matrices' and the intrinsics' gradients, with the suite's GRAD_RTOL;
* the reference vs central finite differences (gradcheck) on small scenes, clear of the
  compositing thresholds, including a Gaussian whose x/z sits at the frustum clamp;
* asking for camera gradients leaves every Gaussian gradient bit-identical, and culled or
  poisoned Gaussians add nothing to a camera's gradient.
"""

from __future__ import annotations

import pytest
import torch

from splatfield.render import Cameras, Gaussians, rasterize, reference

from .scenes import SceneSpec, make_scene, suite
from .test_rasterize_native import GRAD_RTOL, _loss, _reference, _rel_inf

INTRINSICS = ("fx", "fy", "cx", "cy")


def _leaf_cameras(cams: Cameras, dtype: torch.dtype) -> Cameras:
    """The cameras with every parameter a leaf that requires its gradient."""
    w2c = cams.world_to_camera.to(dtype).clone().requires_grad_()
    k = [getattr(cams, name).to(dtype).clone().requires_grad_() for name in INTRINSICS]
    return Cameras(w2c, *k, cams.width, cams.height)


def _camera_grads(cams: Cameras) -> tuple[torch.Tensor, torch.Tensor]:
    ks = [getattr(cams, name).grad for name in INTRINSICS]
    ks = [torch.zeros(len(cams), dtype=torch.float64) if g is None else g for g in ks]
    w = cams.world_to_camera.grad
    return (torch.zeros(len(cams), 4, 4) if w is None else w), torch.stack(ks, -1)


SPECS = suite()[::3]


@pytest.mark.parametrize("spec", SPECS, ids=[s.id for s in SPECS])
def test_native_camera_gradients_match_reference(native, spec: SceneSpec):
    g32, cams, bg = make_scene(spec)
    c32, c64 = _leaf_cameras(cams, torch.float32), _leaf_cameras(cams, torch.float64)
    bg64 = torch.zeros(len(cams), 3, dtype=torch.float64) if bg is None else bg.double()
    gen = torch.Generator().manual_seed(spec.seed + 1)
    B, H, W = len(cams), spec.height, spec.width
    weights = [torch.randn(B, H, W, c, generator=gen, dtype=torch.float64) for c in (3, 1, 1)]
    ambiguity: dict = {}
    r_img, r_alpha, r_depth, _, _ = _reference(g32.to(dtype=torch.float64), c64, bg64, spec, ambiguity)
    keep = (~ambiguity["pixels"])[..., None].double()  # the measure-zero discontinuities, as the suite
    weights = [w * keep for w in weights]
    _loss(r_img, r_alpha, r_depth, weights).backward()
    out = rasterize(g32, c32, sh_degree=spec.sh_degree, background=bg, antialiased=spec.antialiased, backend="native")
    _loss(out.image, out.alpha, out.depth, weights).backward()

    (w_nat, k_nat), (w_ref, k_ref) = _camera_grads(c32), _camera_grads(c64)
    assert _rel_inf(w_nat, w_ref) <= GRAD_RTOL, (w_nat, w_ref)
    assert _rel_inf(k_nat, k_ref) <= GRAD_RTOL, (k_nat, k_ref)
    assert torch.count_nonzero(w_nat[:, 3]) == 0  # the constant last row


def test_camera_gradients_leave_the_gaussian_gradients_unchanged(native):
    spec = SceneSpec(seed=3, n=300, width=40, height=30, sh_degree=2, cameras=2)
    g, cams, bg = make_scene(spec)
    grads = []
    for refine in (False, True):
        gi = Gaussians(*(t.detach().clone() for t in g.tensors())).requires_grad_()
        ci = _leaf_cameras(cams, torch.float32) if refine else cams
        out = rasterize(gi, ci, sh_degree=2, background=bg, backend="native")
        (out.image.sum() + out.alpha.sum()).backward()
        grads.append([t.grad for t in gi.tensors()])
    for a, b in zip(*grads):
        assert torch.equal(a, b)


def _fd_scene(seed: int) -> tuple[Gaussians, Cameras, torch.Tensor]:
    spec = SceneSpec(seed=seed, n=4, width=9, height=7, sh_degree=1, antialiased=bool(seed % 2))
    g, cams, bg = make_scene(spec)
    return g.to(dtype=torch.float64), cams.to(dtype=torch.float64), bg.double()


def _render_fn(g: Gaussians, cams: Cameras, bg: torch.Tensor, antialiased: bool):
    W, H = cams.width, cams.height

    def render(w2c: torch.Tensor, ks: torch.Tensor):
        P = reference.project(g.means, g.quats, g.log_scales, g.opacity_logits, g.sh, w2c, ks, W, H, 1, 0.01,
                              1e10, 0.3, antialiased)  # fmt: skip
        image, depth, alpha, _ = reference.rasterize(*P, bg, W, H)
        return image.sum(-1), depth[..., 0], alpha[..., 0]

    return render


def _clear(g: Gaussians, cams: Cameras, bg: torch.Tensor, antialiased: bool) -> bool:
    P = reference.project(g.means, g.quats, g.log_scales, g.opacity_logits, g.sh, cams.world_to_camera, cams.Ks,
                          cams.width, cams.height, 1, 0.01, 1e10, 0.3, antialiased)  # fmt: skip
    amb: dict = {}
    _, _, alpha, _ = reference.rasterize(*P, bg, cams.width, cams.height, ambiguity=amb, alpha_margin=1e-2,
                                         transmittance_margin=1e-2)  # fmt: skip
    return not bool(amb["pixels"].any()) and alpha.max().item() > 0.1


def test_reference_camera_gradients_match_finite_differences():
    for seed in range(600, 680):
        g, cams, bg = _fd_scene(seed)
        if _clear(g, cams, bg, bool(seed % 2)):
            break
    else:
        pytest.fail("no random scene clear of the compositing thresholds")
    render = _render_fn(g, cams, bg, bool(seed % 2))
    inputs = (cams.world_to_camera.clone().requires_grad_(), cams.Ks.clone().requires_grad_())
    assert torch.autograd.gradcheck(render, inputs, eps=1e-6, atol=1e-5, rtol=1e-4)


def test_reference_gradient_through_the_frustum_clamp():
    """A Gaussian far outside the view has x/z clamped to 1.3x the frustum, a limit that
    moves with fx and cx: the gradient w.r.t. the intrinsics must include that."""
    w2c = torch.eye(4, dtype=torch.float64)[None]
    ks = torch.tensor([[12.0, 11.0, 4.6, 3.4]], dtype=torch.float64)
    means = torch.tensor([[0.2, 0.05, 2.0], [3.0, 0.1, 2.0]], dtype=torch.float64)  # the second clamps in x
    log_scales = torch.log(torch.tensor([[0.3, 0.2, 0.25], [2.5, 0.3, 0.4]], dtype=torch.float64))
    quats = torch.tensor([[0.9, 0.1, 0.3, 0.2], [0.8, 0.3, -0.2, 0.4]], dtype=torch.float64)
    g = Gaussians(means, log_scales, quats, torch.tensor([1.0, 2.0], dtype=torch.float64),
                  0.3 * torch.ones(2, 1, 3, dtype=torch.float64), 0.1 * torch.ones(2, 3, 3, dtype=torch.float64))  # fmt: skip
    cams = Cameras.from_intrinsics(w2c, *ks[0].tolist(), 9, 7)
    ux = means[1, 0] / means[1, 2]
    assert ux > 1.3 * (9 - 4.6) / 12.0  # clamped
    bg = torch.zeros(1, 3, dtype=torch.float64)
    assert _clear(g, cams, bg, False)
    render = _render_fn(g, cams, bg, False)
    inputs = (w2c.clone().requires_grad_(), ks.clone().requires_grad_())
    assert torch.autograd.gradcheck(render, inputs, eps=1e-6, atol=1e-5, rtol=1e-4)


def test_native_clamped_gaussian_matches_reference(native):
    """The clamp's intrinsics gradient in the native kernel, on a scene of wide Gaussians
    beyond the frustum that still cover the image."""
    gen = torch.Generator().manual_seed(5)
    n = 40
    means = torch.cat([torch.rand(n, 1, generator=gen) * 6 - 3, torch.rand(n, 1, generator=gen) * 4 - 2,
                       2 + torch.rand(n, 1, generator=gen)], -1)  # fmt: skip
    g = Gaussians(means, torch.log(0.3 + torch.rand(n, 3, generator=gen)), torch.randn(n, 4, generator=gen),
                  torch.randn(n, generator=gen), 0.3 * torch.randn(n, 1, 3, generator=gen), torch.zeros(n, 0, 3))  # fmt: skip
    cams = Cameras.from_intrinsics(torch.eye(4)[None], 30.0, 28.0, 17.0, 12.0, 32, 24)
    ux = means[:, 0] / means[:, 2]
    assert ((ux > 1.3 * (32 - 17) / 30) | (ux < -1.3 * 17 / 30)).sum() >= 5  # several clamp
    c32, c64 = _leaf_cameras(cams, torch.float32), _leaf_cameras(cams, torch.float64)
    weights = torch.randn(1, 24, 32, 3, generator=gen, dtype=torch.float64)
    amb: dict = {}
    spec = SceneSpec(seed=0, n=n, width=32, height=24)
    r = _reference(g.to(dtype=torch.float64), c64, torch.zeros(1, 3, dtype=torch.float64), spec, amb)
    keep = (~amb["pixels"])[..., None].double()
    (r[0] * weights * keep).sum().backward()
    out = rasterize(g, c32, sh_degree=0, backend="native")
    (out.image.double() * weights * keep).sum().backward()
    (w_nat, k_nat), (w_ref, k_ref) = _camera_grads(c32), _camera_grads(c64)
    assert _rel_inf(k_nat, k_ref) <= GRAD_RTOL and _rel_inf(w_nat, w_ref) <= GRAD_RTOL


@pytest.mark.parametrize("backend", ["native", "reference"])
def test_culled_and_poisoned_gaussians_add_nothing_to_the_camera(backend, request):
    if backend == "native":
        request.getfixturevalue("native")
    spec = SceneSpec(seed=11, n=50, width=24, height=20, sh_degree=1, near_cases=True)
    g, cams, _ = make_scene(spec)
    grads = []
    for poison in (False, True):
        gi = Gaussians(*(t.detach().clone() for t in g.tensors()))
        if poison:  # NaN and Inf Gaussians and ones behind the camera are added: they are not rendered
            extra = Gaussians(*(t[:3].clone() for t in gi.tensors()))
            extra.means[0, 0] = float("nan")
            extra.log_scales[1, 1] = float("inf")
            extra.means[2] = cams.centers[0] - 5 * cams.world_to_camera[0, 2, :3]  # behind
            gi = Gaussians(*(torch.cat([a, b]) for a, b in zip(gi.tensors(), extra.tensors())))
        ci = _leaf_cameras(cams, torch.float32)
        out = rasterize(gi, ci, sh_degree=1, backend=backend)
        (out.image.sum() + out.alpha.sum()).backward()
        grads.append(_camera_grads(ci))
    (w0, k0), (w1, k1) = grads
    assert torch.isfinite(w1).all() and torch.isfinite(k1).all()
    torch.testing.assert_close(w1, w0, rtol=1e-6, atol=1e-6)
    torch.testing.assert_close(k1, k0, rtol=1e-6, atol=1e-6)


def test_empty_scene_gives_a_zero_camera_gradient(native):
    g = Gaussians(torch.zeros(0, 3), torch.zeros(0, 3), torch.zeros(0, 4), torch.zeros(0), torch.zeros(0, 1, 3),
                  torch.zeros(0, 0, 3))  # fmt: skip
    cams = _leaf_cameras(Cameras.from_intrinsics(torch.eye(4)[None], 10.0, 10.0, 4.0, 4.0, 8, 8), torch.float32)
    out = rasterize(g, cams, background=(0.2, 0.3, 0.4), backend="native")
    out.image.sum().backward()
    w, k = _camera_grads(cams)
    assert torch.count_nonzero(w) == 0 and torch.count_nonzero(k) == 0
