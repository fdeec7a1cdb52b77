"""Bad and degenerate inputs: a clear error or a masked Gaussian, never a crash, never a
NaN image or gradient. Each case runs on both backends."""

from __future__ import annotations

import math

import pytest
import torch

from splatfield.render import Cameras, Gaussians, rasterize

BACKENDS = ["native", "reference"]


def scene(n: int = 64, seed: int = 0) -> tuple[Gaussians, Cameras]:
    gen = torch.Generator().manual_seed(seed)
    means = torch.cat([(torch.rand(n, 2, generator=gen) - 0.5) * 2, 2 + 2 * torch.rand(n, 1, generator=gen)], 1)
    g = Gaussians.from_rgb(
        means,
        0.05 + 0.1 * torch.rand(n, 3, generator=gen),
        torch.randn(n, 4, generator=gen),
        0.2 + 0.7 * torch.rand(n, generator=gen),
        torch.rand(n, 3, generator=gen),
        sh_degree=1,
    )
    g.shN.normal_(0, 0.1, generator=gen)
    cams = Cameras.from_intrinsics(torch.eye(4), 40.0, 40.0, 20.0, 15.0, 40, 30)
    return g, cams


def render_and_grad(g: Gaussians, cams: Cameras, backend: str, **kw):
    g = g.detach().requires_grad_()
    if backend == "reference":
        g = g.detach().to(dtype=torch.float64).requires_grad_()
        cams = cams.to(dtype=torch.float64)
    out = rasterize(g, cams, backend=backend, background=[0.1, 0.2, 0.3], stats=("grad2d", "importance", "split2d"), **kw)
    (out.image.sum() + out.alpha.sum() + out.depth.sum()).backward()
    return out, g


def assert_all_finite(out, g):
    for t in (out.image, out.alpha, out.depth, out.stats.importance, out.stats.grad2d, out.stats.split2d):
        assert torch.isfinite(t).all()
    for t in g.tensors():
        assert t.grad is None or torch.isfinite(t.grad).all()


POISON = {
    "nan_mean": ("means", float("nan")),
    "inf_mean": ("means", float("inf")),
    "nan_scale": ("log_scales", float("nan")),
    "inf_scale": ("log_scales", float("inf")),
    "zero_scale": ("log_scales", float("-inf")),
    "nan_quat": ("quats", float("nan")),
    "zero_quat": ("quats", 0.0),
    "nan_opacity": ("opacity_logits", float("nan")),
    "nan_sh": ("sh0", float("nan")),
    "inf_sh": ("shN", float("inf")),
}


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("case", sorted(POISON))
def test_poisoned_gaussians_are_masked(backend, case, request):
    if backend == "native":
        request.getfixturevalue("native")
    g, cams = scene()
    field, value = POISON[case]
    bad = torch.tensor([3, 10, 11])
    tensors = {name: getattr(g, name).clone() for name in ("means", "log_scales", "quats", "opacity_logits", "sh0", "shN")}
    if field == "quats" and value == 0.0:
        tensors["quats"][bad] = 0.0
    else:
        tensors[field][bad] = value
    poisoned = Gaussians(**tensors)
    out, gp = render_and_grad(poisoned, cams, backend)
    assert_all_finite(out, gp)
    assert not (out.meta.radii[0, bad] > 0).any()
    # identical to the scene without those Gaussians
    keep = torch.ones(len(g), dtype=torch.bool)
    keep[bad] = False
    clean, _ = render_and_grad(g.select(keep), cams, backend)
    torch.testing.assert_close(out.image, clean.image, rtol=0, atol=1e-6)


@pytest.mark.parametrize("backend", BACKENDS)
def test_empty_scene_renders_the_background(backend, request):
    if backend == "native":
        request.getfixturevalue("native")
    g, cams = scene(n=0)
    out, _ = render_and_grad(g, cams, backend)
    expected = torch.tensor([0.1, 0.2, 0.3], dtype=out.image.dtype).expand_as(out.image)
    torch.testing.assert_close(out.image, expected)
    assert (out.alpha == 0).all() and (out.depth == 0).all()


@pytest.mark.parametrize("backend", BACKENDS)
def test_everything_behind_the_camera(backend, request):
    if backend == "native":
        request.getfixturevalue("native")
    g, cams = scene()
    g = g.with_(means=g.means * torch.tensor([1.0, 1.0, -1.0]))
    out, gp = render_and_grad(g, cams, backend)
    assert_all_finite(out, gp)
    assert (out.meta.radii == 0).all() and (out.alpha == 0).all()
    assert all(t.grad is None or (t.grad == 0).all() for t in gp.tensors())


@pytest.mark.parametrize("backend", BACKENDS)
def test_extreme_but_finite_values_stay_finite(backend, request):
    if backend == "native":
        request.getfixturevalue("native")
    g, cams = scene()
    ls = g.log_scales.clone()
    ls[:5] = 30.0  # astronomically large
    ls[5:10] = -60.0  # far below a pixel
    logits = g.opacity_logits.clone()
    logits[10:15] = 80.0  # opacity 1 -> alpha clamped at 0.99
    logits[15:20] = -80.0  # invisible
    means = g.means.clone()
    means[20:25, 2] = 1e-3  # inside the near plane
    means[25:30, 2] = 1e12  # beyond the far plane
    ls[30:35] = -100.0  # scales exp(-100): denormal in float32
    quats = g.quats.clone()
    quats[35:40] = 1e-39  # denormal quaternion: its norm underflows, so it is masked
    sh0 = g.sh0.clone()
    sh0[40:45] = 1e-41  # denormal colour coefficients
    means[45:50, :2] = 1e-40  # denormal coordinates
    g = g.with_(log_scales=ls, opacity_logits=logits, means=means, quats=quats, sh0=sh0)
    out, gp = render_and_grad(g, cams, backend)
    assert_all_finite(out, gp)
    assert (out.meta.radii[0, 15:30] == 0).all()
    assert (out.meta.radii[0, 35:40] == 0).all()


def test_native_huge_image_and_tiny_image(native):
    g, _ = scene(n=200)
    for w, h in ((1, 1), (1, 300), (517, 3)):
        cams = Cameras.from_intrinsics(torch.eye(4), 40.0, 40.0, w / 2, h / 2, w, h)
        out, gp = render_and_grad(g, cams, "native")
        assert out.image.shape == (1, h, w, 3)
        assert_all_finite(out, gp)


@pytest.mark.parametrize(
    "mutate,message",
    [
        (lambda c: Cameras(c.world_to_camera * float("nan"), c.fx, c.fy, c.cx, c.cy, c.width, c.height), "NaN"),
        (lambda c: Cameras(c.world_to_camera, c.fx * 0, c.fy, c.cx, c.cy, c.width, c.height), "focal"),
        (lambda c: Cameras(c.world_to_camera, c.fx, c.fy, c.cx * math.inf, c.cy, c.width, c.height), "NaN or Inf"),
    ],
)
def test_bad_cameras_raise_clear_errors(mutate, message):
    g, cams = scene()
    with pytest.raises(ValueError, match=message):
        rasterize(g, mutate(cams))


def test_bad_arguments_raise_clear_errors():
    g, cams = scene()
    with pytest.raises(ValueError, match="sh_degree"):
        rasterize(g, cams, sh_degree=3)
    with pytest.raises(ValueError, match="statistics"):
        rasterize(g, cams, stats=("gradient",))
    with pytest.raises(ValueError, match="background"):
        rasterize(g, cams, background=[0.0, float("nan"), 0.0])
    with pytest.raises(ValueError, match="backend"):
        rasterize(g, cams, backend="opengl")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="size"):
        Cameras.from_intrinsics(torch.eye(4), 1.0, 1.0, 0.0, 0.0, 0, 10)
    with pytest.raises(ValueError, match="shN"):
        Gaussians(torch.zeros(2, 3), torch.zeros(2, 3), torch.zeros(2, 4), torch.zeros(2), torch.zeros(2, 1, 3),
                  torch.zeros(2, 2, 3))  # fmt: skip


def test_statistics_before_backward_is_an_error(native):
    g, cams = scene()
    out = rasterize(g.requires_grad_(), cams, stats=("grad2d", "importance"))
    assert out.stats.importance.shape == (1, len(g))
    with pytest.raises(RuntimeError, match="backward"):
        _ = out.stats.grad2d
    with pytest.raises(KeyError, match="split2d"):
        _ = out.stats.split2d
