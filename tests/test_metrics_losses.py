"""PSNR / SSIM / LPIPS entry points (scenes/metrics.py) and the training losses (scenes/losses.py)."""

from __future__ import annotations

import sys
import types

import numpy as np
import pytest
import torch

from splatfield.scenes import losses, metrics


def _images(*shape: int, seed: int = 0, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.rand(*shape, generator=g, dtype=torch.float64).to(dtype)


def _smooth_image(H: int, W: int, seed: int = 0) -> torch.Tensor:
    """A structured image (SSIM of pure noise against itself-plus-noise is less telling)."""
    g = torch.Generator().manual_seed(seed)
    lin = lambda n: torch.linspace(0, 1, n, dtype=torch.float64)  # noqa: E731
    yy, xx = torch.meshgrid(lin(H), lin(W), indexing="ij")
    phase = torch.rand(3, generator=g, dtype=torch.float64) * 6.0
    img = torch.stack([0.5 + 0.35 * torch.sin(7 * xx + 5 * yy + p) for p in phase], dim=-1)
    return img.float()


# ------------------------------------------------------------------------ independent SSIM


def _ssim_direct(pred: np.ndarray, target: np.ndarray) -> float:
    """Textbook SSIM in float64 with an explicit 11x11 window (zero padding, 'same' size)."""
    r, sigma = 5, 1.5
    k = np.arange(-r, r + 1, dtype=np.float64)
    w = np.exp(-(k[:, None] ** 2 + k[None, :] ** 2) / (2 * sigma**2))
    w /= w.sum()
    H, W, C = pred.shape
    c1, c2 = 0.01**2, 0.03**2
    total = 0.0
    for c in range(C):
        x = np.pad(pred[:, :, c].astype(np.float64), r)
        y = np.pad(target[:, :, c].astype(np.float64), r)
        mx, my, sxx, syy, sxy = (np.zeros((H, W)) for _ in range(5))
        for i in range(H):
            for j in range(W):
                px, py = x[i : i + 2 * r + 1, j : j + 2 * r + 1], y[i : i + 2 * r + 1, j : j + 2 * r + 1]
                mx[i, j] = (w * px).sum()
                my[i, j] = (w * py).sum()
                sxx[i, j] = (w * px * px).sum() - mx[i, j] ** 2
                syy[i, j] = (w * py * py).sum() - my[i, j] ** 2
                sxy[i, j] = (w * px * py).sum() - mx[i, j] * my[i, j]
        s = ((2 * mx * my + c1) * (2 * sxy + c2)) / ((mx**2 + my**2 + c1) * (sxx + syy + c2))
        total += s.mean()
    return total / C


@pytest.mark.parametrize("shape", [(23, 31), (6, 4)])  # the second is smaller than the window
def test_ssim_matches_direct_implementation(shape):
    H, W = shape
    pred = _images(H, W, 3, seed=1)
    target = (0.6 * pred + 0.4 * _images(H, W, 3, seed=2)).float()
    expected = _ssim_direct(pred.numpy(), target.numpy())
    got32 = metrics.ssim(pred, target)
    got64 = metrics.ssim(pred.double(), target.double())
    assert got32.shape == ()
    assert abs(float(got32) - expected) < 1e-5
    assert abs(float(got64) - expected) < 1e-12
    assert 0.1 < expected < 0.95  # a non-trivial comparison


def test_ssim_identical_is_one_and_noise_lowers_it():
    img = _smooth_image(48, 40)
    assert torch.allclose(metrics.ssim(img, img), torch.tensor(1.0), atol=1e-6)
    g = torch.Generator().manual_seed(3)
    noise = torch.randn(img.shape, generator=g)
    values = [float(metrics.ssim((img + s * noise).clamp(0, 1), img)) for s in (0.01, 0.05, 0.2)]
    assert 1.0 - 1e-6 > values[0] > values[1] > values[2]
    assert values[0] > 0.9 and values[2] < 0.5


def test_ssim_per_image_batch_shape():
    a, b = _images(2, 3, 20, 18, 3, seed=4), _images(2, 3, 20, 18, 3, seed=5)
    batched = metrics.ssim(a, b)
    assert batched.shape == (2, 3)
    assert torch.allclose(batched[1, 2], metrics.ssim(a[1, 2], b[1, 2]), atol=1e-6)


def test_gaussian_blur_is_self_adjoint():
    # The SSIM backward relies on <blur(u), v> == <u, blur(v)> (symmetric window, zero padding).
    u, v = _images(1, 17, 13, 2, seed=6, dtype=torch.float64), _images(1, 17, 13, 2, seed=7, dtype=torch.float64)
    lhs = (metrics.gaussian_blur(u) * v).sum()
    rhs = (u * metrics.gaussian_blur(v)).sum()
    assert abs(float(lhs - rhs)) < 1e-12
    # and it is the normalised 11-tap window: a constant far from the border stays constant
    ones = torch.ones(1, 30, 30, 1, dtype=torch.float64)
    assert abs(float(metrics.gaussian_blur(ones)[0, 15, 15, 0]) - 1.0) < 1e-12
    assert float(metrics.gaussian_blur(ones)[0, 0, 0, 0]) < 0.6  # zero padding at the corner


# ------------------------------------------------------------------------------------ PSNR


def test_psnr_of_known_mse():
    target = _images(2, 16, 12, 3, seed=8, dtype=torch.float64) * 0.8
    pred = target.clone()
    pred[0] += 0.1  # MSE 0.01 -> 20 dB
    pred[1] += 0.01  # MSE 1e-4 -> 40 dB
    values = metrics.psnr(pred, target)
    assert values.shape == (2,)
    assert torch.allclose(values, torch.tensor([20.0, 40.0], dtype=torch.float64), atol=1e-9)
    assert float(metrics.psnr(target[0], target[0])) == float("inf")


def test_psnr_with_mask_uses_only_selected_pixels():
    target = _images(10, 10, 3, seed=9) * 0.5
    pred = target + 0.1
    mask = torch.zeros(10, 10, dtype=torch.bool)
    mask[2:8, 3:9] = True
    pred[~mask] = 1.0  # large errors, all outside the mask
    assert abs(float(metrics.psnr(pred, target, mask)) - 20.0) < 1e-4
    assert float(metrics.psnr(pred, target)) < 15.0


# ---------------------------------------------------------------------------------- losses


def test_l1_and_photometric_values():
    target = _images(12, 9, 3, seed=10) * 0.5
    pred = target + 0.1
    l1 = losses.l1(pred, target)
    d = losses.dssim(pred, target)
    assert abs(float(l1) - 0.1) < 1e-6
    assert abs(float(d) - (1.0 - float(metrics.ssim(pred, target)))) < 1e-6
    mixed = losses.photometric(pred, target, ssim_weight=0.2)
    assert abs(float(mixed) - (0.8 * float(l1) + 0.2 * float(d))) < 1e-6
    assert abs(float(losses.photometric(pred, target, ssim_weight=0.0)) - float(l1)) < 1e-7
    assert float(losses.dssim(target, target)) == pytest.approx(0.0, abs=1e-6)
    with pytest.raises(ValueError):
        losses.photometric(pred, target, ssim_weight=1.5)
    with pytest.raises(ValueError):
        losses.l1(pred, target[:-1])


def test_batched_losses_average_the_images():
    pred, target = _images(3, 14, 11, 3, seed=11), _images(3, 14, 11, 3, seed=12)
    batched = losses.photometric(pred, target)
    single = torch.stack([losses.photometric(pred[i], target[i]) for i in range(3)]).mean()
    assert abs(float(batched) - float(single)) < 1e-6


@pytest.mark.parametrize("batched", [False, True])
def test_masked_losses_ignore_masked_pixels(batched):
    shape = (2, 24, 20) if batched else (24, 20)
    pred, target = _images(*shape, 3, seed=13), _images(*shape, 3, seed=14)
    g = torch.Generator().manual_seed(15)
    mask = torch.rand(shape, generator=g) > 0.4
    mask[..., :6, :] = False  # a solid block too, not only scattered pixels
    pred2, target2 = pred.clone(), target.clone()
    pred2[~mask] = _images(int((~mask).sum()), 3, seed=16)
    target2[~mask] = 1.0 - target2[~mask]
    assert not torch.equal(pred, pred2)
    for fn in (losses.l1, losses.dssim, losses.photometric):
        a, b = fn(pred, target, mask), fn(pred2, target2, mask)
        assert abs(float(a) - float(b)) < 1e-6, fn.__name__
        assert abs(float(a) - float(fn(pred, target))) > 1e-4, fn.__name__  # the mask matters
    for fn in (metrics.ssim, metrics.psnr):
        assert torch.allclose(fn(pred, target, mask), fn(pred2, target2, mask), atol=1e-6)
    # and they get no gradient
    p = pred.clone().requires_grad_(True)
    losses.photometric(p, target, mask).backward()
    assert p.grad is not None and float(p.grad[~mask].abs().max()) == 0.0
    assert float(p.grad[mask].abs().max()) > 0.0
    # an all-True mask is no mask
    full = torch.ones(shape, dtype=torch.bool)
    assert abs(float(losses.photometric(pred, target, full)) - float(losses.photometric(pred, target))) < 1e-6


@pytest.fixture
def one_thread():
    # gradcheck runs thousands of tiny ops: with a 2-thread pool on a busy machine each one
    # can wait for a descheduled worker, turning one second into a minute.
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def test_dssim_gradcheck_float64(one_thread):
    g = torch.Generator().manual_seed(17)
    pred = torch.rand(7, 6, 3, generator=g, dtype=torch.float64, requires_grad=True)
    target = torch.rand(7, 6, 3, generator=g, dtype=torch.float64, requires_grad=True)
    mask = torch.rand(7, 6, generator=g) > 0.3
    assert torch.autograd.gradcheck(lambda p, t: losses.dssim(p, t), (pred, target))
    assert torch.autograd.gradcheck(lambda p, t: losses.dssim(p, t, mask), (pred, target))
    # a non-uniform upstream gradient (the map itself), batched, prediction only
    pb = torch.rand(2, 5, 6, 3, generator=g, dtype=torch.float64, requires_grad=True)
    tb = torch.rand(2, 5, 6, 3, generator=g, dtype=torch.float64)
    assert torch.autograd.gradcheck(lambda p: metrics.ssim_map(p, tb), (pb,))


def test_ssim_gradient_matches_autograd_of_plain_formula():
    # The hand-written backward against autograd through the textbook formula, at 64x48.
    pred = _images(64, 48, 3, seed=18, dtype=torch.float64).requires_grad_(True)
    target = _images(64, 48, 3, seed=19, dtype=torch.float64)

    def plain(x, y):
        b = metrics.gaussian_blur
        x, y = x[None], y[None]
        mx, my = b(x), b(y)
        sxx, syy, sxy = b(x * x) - mx * mx, b(y * y) - my * my, b(x * y) - mx * my
        c1, c2 = 0.01**2, 0.03**2
        return (((2 * mx * my + c1) * (2 * sxy + c2)) / ((mx * mx + my * my + c1) * (sxx + syy + c2))).mean()

    (g_ours,) = torch.autograd.grad(metrics.ssim(pred, target), pred)
    (g_plain,) = torch.autograd.grad(plain(pred, target), pred)
    assert torch.allclose(g_ours, g_plain, rtol=1e-9, atol=1e-13)
    # the float32 CPU path (channels_last filtering) agrees with float64
    p32 = pred.detach().float().requires_grad_(True)
    (g32,) = torch.autograd.grad(metrics.ssim(p32, target.float()), p32)
    assert float((g32.double() - g_ours).abs().max()) < 1e-4 * float(g_ours.abs().max())


# ----------------------------------------------------------------------------------- LPIPS


def test_lpips_reports_and_raises_when_unavailable():
    ok, reason = metrics.lpips_available()
    assert isinstance(ok, bool) and isinstance(reason, str) and reason
    if ok:
        pytest.skip(f"LPIPS is available here ({reason}); the unavailable path is covered by the fake-module test")
    x = _images(16, 16, 3, seed=20)
    with pytest.raises(RuntimeError, match="LPIPS unavailable"):
        metrics.lpips(x, x)


def test_lpips_availability_checks_files_and_never_downloads(tmp_path, monkeypatch):
    # A fake `lpips` package and torchvision: availability follows the files on disk only.
    pkg = tmp_path / "site" / "lpips"
    pkg.mkdir(parents=True)
    fake_lpips = types.ModuleType("lpips")
    fake_lpips.__file__ = str(pkg / "__init__.py")
    monkeypatch.setitem(sys.modules, "lpips", fake_lpips)
    monkeypatch.setitem(sys.modules, "torchvision", types.ModuleType("torchvision"))
    monkeypatch.setitem(sys.modules, "torchmetrics", None)  # a real install must not answer instead
    hub = tmp_path / "hub"
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(hub))

    ok, reason = metrics.lpips_available("alex")
    assert not ok and "alex.pth" in reason
    (pkg / "weights" / "v0.1").mkdir(parents=True)
    (pkg / "weights" / "v0.1" / "alex.pth").write_bytes(b"0")
    ok, reason = metrics.lpips_available("alex")
    assert not ok and "hub cache" in reason and str(hub) in reason
    (hub / "checkpoints").mkdir(parents=True)
    (hub / "checkpoints" / "alexnet-owt-7be5be79.pth").write_bytes(b"0")
    ok, reason = metrics.lpips_available("alex")
    assert ok, reason
    ok, reason = metrics.lpips_available("vgg")  # its own files are still missing
    assert not ok and "vgg.pth" in reason
