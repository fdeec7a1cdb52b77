"""`composite` (packed ray samples): native against the float64 reference, the reference
against finite differences, and agreement with the Gaussian path's compositing rule."""

from __future__ import annotations

import pytest
import torch

from splatfield.render import alphas_from_densities, composite, reference

FWD_ATOL = 1e-5
GRAD_RTOL = 1e-4


def random_samples(seed: int, rays: int, max_samples: int):
    gen = torch.Generator().manual_seed(seed)
    counts = torch.randint(0, max_samples + 1, (rays,), generator=gen)
    ray_indices = torch.repeat_interleave(torch.arange(rays), counts)
    M = int(counts.sum())
    densities = torch.rand(M, generator=gen) * 6
    deltas = 0.01 + 0.2 * torch.rand(M, generator=gen)
    ts = torch.cumsum(deltas, 0)  # increasing within each ray
    colors = torch.rand(M, 3, generator=gen)
    bg = torch.rand(rays, 3, generator=gen)
    return ray_indices, densities, deltas, colors, ts, bg


def _rel_inf(a, b):
    scale = b.abs().max().item() if b.numel() else 0.0
    err = (a.double() - b).abs().max().item() if b.numel() else 0.0
    return err / scale if scale > 0 else err


@pytest.mark.parametrize("seed,rays,max_samples", [(0, 1, 1), (1, 7, 3), (2, 64, 40), (3, 500, 200), (4, 33, 0)])
def test_native_composite_matches_reference(native, seed, rays, max_samples):
    ray_indices, densities, deltas, colors, ts, bg = random_samples(seed, rays, max_samples)
    results = {}
    for backend, dt in (("reference", torch.float64), ("native", torch.float32)):
        leaves = [t.to(dt).requires_grad_() for t in (densities, colors, ts, bg)]
        d, c, t, b = leaves
        alphas = alphas_from_densities(d, deltas.to(dt))
        rgb, alpha, depth = composite(ray_indices, alphas, c, t, rays, background=b, backend=backend)
        gen = torch.Generator().manual_seed(seed + 100)
        w = [torch.randn(rays, k, generator=gen, dtype=torch.float64) for k in (3, 1, 1)]
        loss = (rgb.double() * w[0]).sum() + (alpha.double() * w[1]).sum() + ((depth * alpha).double() * w[2]).sum()
        loss.backward()
        results[backend] = (rgb.detach(), alpha.detach(), depth.detach(), [x.grad for x in leaves])
    ref, nat = results["reference"], results["native"]
    for a, b in zip(nat[:2], ref[:2]):
        assert (a.double() - b).abs().max().item() <= FWD_ATOL if b.numel() else True
    for a, b in zip(nat[3], ref[3]):
        assert _rel_inf(a if a is not None else torch.zeros_like(b), b) <= GRAD_RTOL


def test_reference_composite_gradcheck():
    ray_indices, densities, deltas, colors, ts, bg = random_samples(7, 5, 6)
    M = densities.numel()
    alphas = (0.05 + 0.6 * torch.rand(M, generator=torch.Generator().manual_seed(1))).double()
    counts = torch.bincount(ray_indices, minlength=5)
    offsets = torch.cat([torch.zeros(1, dtype=torch.long), counts.cumsum(0)])

    def f(a, c, t, b):
        rgb, depth, alpha, _ = reference.composite(offsets, a, c, t, b)
        return rgb, depth, alpha

    inputs = tuple(x.double().requires_grad_() for x in (alphas, colors, ts, bg))
    assert torch.autograd.gradcheck(f, inputs, eps=1e-6, atol=1e-6, rtol=1e-5)


def test_composite_rule_matches_gaussian_rule(native):
    """Same skip/clamp/stop rule as the rasterizer: alpha < 1/255 skipped, clamped at
    0.99, stop before T <= 1e-4."""
    alphas = torch.tensor([0.003, 0.5, 1.5, 0.9, 0.9, 0.9, 0.9])
    colors = torch.eye(3).repeat(3, 1)[:7]
    ts = torch.arange(1.0, 8.0)
    rgb, alpha, depth = composite(torch.zeros(7, dtype=torch.long), alphas, colors, ts, 1, backend="native")
    # by hand: skip 0.003; 0.5 -> T 0.5; 1.5 -> 0.99 -> T 0.005; 0.9 -> T 5e-4; next 0.9 would give 5e-5 <= 1e-4: stop
    T, acc = 1.0, torch.zeros(3)
    for a, c in ((0.5, colors[1]), (0.99, colors[2]), (0.9, colors[3])):
        acc += a * T * c
        T *= 1 - a
    torch.testing.assert_close(rgb[0], acc, rtol=0, atol=1e-6)
    torch.testing.assert_close(alpha[0, 0], torch.tensor(1 - T), rtol=0, atol=1e-6)


def test_composite_rejects_bad_input():
    with pytest.raises(ValueError, match="sorted"):
        composite(torch.tensor([1, 0]), torch.rand(2), torch.rand(2, 3), torch.rand(2), 2)
    with pytest.raises(ValueError, match=r"\[0, 2\)"):
        composite(torch.tensor([0, 5]), torch.rand(2), torch.rand(2, 3), torch.rand(2), 2)
    with pytest.raises(ValueError, match="ray_indices"):
        composite(torch.tensor([0]), torch.rand(2), torch.rand(2, 3), torch.rand(2), 2)
