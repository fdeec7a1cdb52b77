"""Native CPU kernels against the float64 PyTorch reference on random scenes.

Tolerances (float32 kernels vs a float64 oracle fed the same float32 inputs):
- forward: max |native - reference| <= FWD_ATOL on RGB and alpha, and on depth relative
  to the largest depth in the image;
- gradients and statistics: || native - reference ||_inf <= GRAD_RTOL * || reference ||_inf
  per tensor (the infinity norm over the whole tensor).
Pixels where a decision of the compositing rule sits within a hair of its threshold
(alpha vs 1/255 or 0.99, transmittance vs 1e-4; see reference.rasterize(ambiguity=...))
are the measure-zero discontinuities of the method: they are left out of the forward
comparison, get zero weight in the loss, and their count is bounded.
"""

from __future__ import annotations

import pytest
import torch

from splatfield.render import Gaussians, RenderStats, rasterize, reference

from .scenes import SceneSpec, make_scene, suite

FWD_ATOL = 1e-5
GRAD_RTOL = 1e-4
MAX_AMBIGUOUS_FRACTION = 0.05  # dense scenes see hundreds of pairs per pixel
STATS = ("grad2d", "importance", "split2d", "mean2d_grad")
PARAMS = ("means", "log_scales", "quats", "opacity_logits", "sh0", "shN")


def _reference(g64: Gaussians, cams, bg64, spec: SceneSpec, ambiguity: dict):
    degree = spec.sh_degree
    P = reference.project(
        g64.means, g64.quats, g64.log_scales, g64.opacity_logits, g64.sh,
        cams.world_to_camera.double(), cams.Ks.double(), spec.width, spec.height, degree, 0.01, 1e10, 0.3,
        spec.antialiased,
    )  # fmt: skip
    stats = RenderStats(requested=STATS)
    image, depth_acc, alpha, _ = reference.rasterize(
        *P, bg64, spec.width, spec.height, stats=stats, ambiguity=ambiguity
    )
    depth = torch.where(alpha > 1e-6, depth_acc / alpha.clamp_min(1e-6), torch.zeros_like(depth_acc))
    return image, alpha, depth, stats, P[5]


def _loss(image, alpha, depth, weights):
    w_img, w_alpha, w_depth = weights
    return (image.double() * w_img).sum() + (alpha.double() * w_alpha).sum() + ((depth * alpha).double() * w_depth).sum()


def _rel_inf(a: torch.Tensor, b: torch.Tensor) -> float:
    """|| a - b ||_inf / || b ||_inf (0 when both vanish)."""
    scale = b.abs().max().item() if b.numel() else 0.0
    err = (a.double() - b.double()).abs().max().item() if b.numel() else 0.0
    return err / scale if scale > 0 else err


def compare(spec: SceneSpec) -> dict[str, float]:
    g32, cams, bg = make_scene(spec)
    g32 = g32.requires_grad_()
    g64 = g32.detach().to(dtype=torch.float64).requires_grad_()
    bg32 = None if bg is None else bg.clone().requires_grad_()
    bg64 = (torch.zeros(len(cams), 3, dtype=torch.float64) if bg is None else bg.double()).requires_grad_()

    ambiguity: dict[str, torch.Tensor] = {}
    gen = torch.Generator().manual_seed(spec.seed + 1)
    B, H, W = len(cams), spec.height, spec.width
    weights = [torch.randn(B, H, W, c, generator=gen, dtype=torch.float64) for c in (3, 1, 1)]
    # the reference forward runs first (it defines which pixels are ambiguous); the loss
    # weights then vanish there, and only then is anything back-propagated
    r_img, r_alpha, r_depth, r_stats, r_radii = _reference(g64, cams, bg64, spec, ambiguity)
    amb = ambiguity["pixels"]
    keep = (~amb)[..., None].double()
    weights = [w * keep for w in weights]
    _loss(r_img, r_alpha, r_depth, weights).backward()

    out = rasterize(
        g32, cams, sh_degree=spec.sh_degree, background=bg32, antialiased=spec.antialiased, stats=STATS,
        backend="native",
    )  # fmt: skip
    _loss(out.image, out.alpha, out.depth, weights).backward()

    errors: dict[str, float] = {}
    ok = ~amb
    errors["fwd_rgb"] = (out.image.double() - r_img.detach())[ok].abs().max().item() if ok.any() else 0.0
    errors["fwd_alpha"] = (out.alpha.double() - r_alpha.detach())[ok].abs().max().item() if ok.any() else 0.0
    depth_scale = max(1.0, r_depth.detach().abs().max().item())
    errors["fwd_depth_rel"] = (
        (out.depth.double() - r_depth.detach())[ok].abs().max().item() / depth_scale if ok.any() else 0.0
    )
    errors["ambiguous_fraction"] = amb.double().mean().item()
    assert torch.equal(out.meta.radii > 0, r_radii > 0) or _only_borderline_visibility(out, r_radii)

    for name, a, b in zip(PARAMS, g32.tensors(), g64.tensors()):
        ga = a.grad if a.grad is not None else torch.zeros_like(a)
        gb = b.grad if b.grad is not None else torch.zeros_like(b)
        errors[f"grad_{name}"] = _rel_inf(ga, gb)
    if bg is not None:
        errors["grad_background"] = _rel_inf(bg32.grad, bg64.grad)

    # importance is a forward sum over pixels: compare Gaussians clear of ambiguous pixels
    touched = _touches(amb, r_radii, out)
    imp_n, imp_r = out.stats.importance, r_stats.importance
    errors["importance"] = _rel_inf(imp_n[~touched], imp_r[~touched]) if (~touched).any() else 0.0
    errors["grad2d"] = _rel_inf(out.stats.grad2d, r_stats.grad2d)
    errors["split2d"] = _rel_inf(out.stats.split2d, r_stats.split2d)
    errors["mean2d_grad"] = _rel_inf(out.stats.mean2d_grad, r_stats.mean2d_grad)
    return errors


def _only_borderline_visibility(out, r_radii) -> bool:
    # a footprint whose opacity-scaled extent touches the image border to within rounding
    diff = (out.meta.radii > 0).all(-1) != (r_radii > 0).all(-1)
    return int(diff.sum()) <= 2


def _touches(amb: torch.Tensor, radii: torch.Tensor, out) -> torch.Tensor:
    """[B, N]: footprint boxes that reach an ambiguous pixel."""
    B, H, W = amb.shape
    m2 = out.meta.means2d.detach().double()
    touched = torch.zeros(radii.shape[:2], dtype=torch.bool)
    for b in range(B):
        ys, xs = amb[b].nonzero(as_tuple=True)
        if ys.numel() == 0:
            continue
        px, py = xs.double() + 0.5, ys.double() + 0.5
        dx = (px[None] - m2[b, :, 0:1]).abs() <= radii[b, :, 0:1].double() + 1
        dy = (py[None] - m2[b, :, 1:2]).abs() <= radii[b, :, 1:2].double() + 1
        touched[b] = (dx & dy).any(1)
    return touched


SPECS = suite()


@pytest.mark.parametrize("spec", SPECS, ids=[s.id for s in SPECS])
def test_native_matches_reference(native, spec: SceneSpec):
    errors = compare(spec)
    assert errors["ambiguous_fraction"] <= MAX_AMBIGUOUS_FRACTION or spec.width * spec.height <= 6, errors
    for key in ("fwd_rgb", "fwd_alpha", "fwd_depth_rel"):
        assert errors[key] <= FWD_ATOL, (key, errors)
    for key, value in errors.items():
        if key.startswith("grad_") or key in STATS:
            assert value <= GRAD_RTOL, (key, errors)


def test_suite_covers_the_required_range():
    ns = [s.n for s in SPECS]
    sizes = [(s.width, s.height) for s in SPECS]
    assert len(SPECS) >= 50
    assert min(ns) == 1 and max(ns) >= 20000
    assert (1, 1) in sizes and (256, 192) in sizes and any(w != h for w, h in sizes)
    assert {s.sh_degree for s in SPECS} == {0, 1, 2, 3}
    assert {s.regime for s in SPECS} >= {"tiny", "huge", "normal"}
    assert any(s.near_cases for s in SPECS) and any(s.background for s in SPECS)
    assert any(not s.background for s in SPECS) and any(s.antialiased for s in SPECS)
    assert any(s.cameras > 1 for s in SPECS)
