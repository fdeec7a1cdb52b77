"""Image quality metrics: PSNR, SSIM and (when its weights are already on disk) LPIPS.

Images are ``[..., H, W, C]`` floats in [0, 1] (C = 3 for RGB), channel last like every
image in splatfield; each metric returns one value per image, shape ``[...]``. An optional
``mask`` ``[..., H, W]`` (bool) selects the pixels that count.

SSIM is the standard one used by the 3DGS evaluation: an 11x11 Gaussian window with
sigma 1.5, C1 = 0.01^2, C2 = 0.03^2 (data range 1), computed per channel with 'same'
output size (zero padding of 5 pixels), then averaged over pixels and channels. The
Gaussian window is separable, so the filter is two 1D depthwise convolutions; on
channel-last data they run in PyTorch's channels_last layout without a copy.

LPIPS needs the ``lpips`` package (or torchmetrics) and its network weights. Nothing is
ever downloaded here: :func:`lpips_available` says whether everything is already on disk
and, if not, what is missing; :func:`lpips` raises a ``RuntimeError`` with that reason.
"""

from __future__ import annotations

import functools
import importlib
import os
from pathlib import Path
from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor

__all__ = ["psnr", "ssim", "ssim_map", "gaussian_blur", "lpips_available", "lpips"]

SSIM_WINDOW = 11
SSIM_SIGMA = 1.5
SSIM_C1 = 0.01**2
SSIM_C2 = 0.03**2


def _check_images(pred: Tensor, target: Tensor, mask: Tensor | None) -> None:
    if pred.shape != target.shape:
        raise ValueError(f"pred and target must have the same shape, got {list(pred.shape)} and {list(target.shape)}")
    if pred.dim() < 3:
        raise ValueError(f"images must be [..., H, W, C], got {list(pred.shape)}")
    if mask is not None and tuple(mask.shape) != tuple(pred.shape[:-1]):
        raise ValueError(f"mask must be [..., H, W] = {list(pred.shape[:-1])}, got {list(mask.shape)}")


def _mask_weights(mask: Tensor, like: Tensor) -> Tensor:  # [..., H, W] -> [..., H, W, 1] in like's dtype
    return mask.to(dtype=like.dtype, device=like.device).unsqueeze(-1)


# --------------------------------------------------------------------------------------- PSNR


def psnr(
    pred: Tensor,  # [..., H, W, C] in [0, 1]
    target: Tensor,  # [..., H, W, C] in [0, 1]
    mask: Tensor | None = None,  # [..., H, W] bool
) -> Tensor:  # [...]
    """Peak signal-to-noise ratio in dB (data range 1), one value per image.

    With a mask the mean squared error is taken over the selected pixels only (an image with
    no selected pixel gives NaN). Identical images give +inf. Values are not clamped: clamp
    renders to [0, 1] first if that is what you want to measure.
    """
    _check_images(pred, target, mask)
    se = (pred - target).square()
    if mask is None:
        mse = se.mean(dim=(-3, -2, -1))
    else:
        w = _mask_weights(mask, se)
        mse = (se * w).sum(dim=(-3, -2, -1)) / (w.sum(dim=(-3, -2, -1)) * se.shape[-1])
    return -10.0 * torch.log10(mse)


# --------------------------------------------------------------------------------------- SSIM


@functools.lru_cache(maxsize=16)
def _window_1d(dtype: torch.dtype, device: torch.device) -> Tensor:  # [SSIM_WINDOW]
    r = SSIM_WINDOW // 2
    x = torch.arange(-r, r + 1, dtype=torch.float64)
    g = torch.exp(-(x * x) / (2.0 * SSIM_SIGMA**2))
    return (g / g.sum()).to(dtype=dtype, device=device)


def gaussian_blur(x: Tensor) -> Tensor:  # [N, H, W, C] -> [N, H, W, C]
    """The SSIM window (11 taps, sigma 1.5) applied to each channel, 'same' size, zero padding.

    Two separable depthwise convolutions. For float32 on the CPU both passes run in
    channels_last layout, which oneDNN handles fastest and which needs no transposed copy:
    the horizontal pass reads the contiguous [N, H, W, C] tensor as NCHW channels_last, and
    the vertical pass reads it as [N, W·C, H, 1] channels_last, i.e. a depthwise conv over
    W·C "channels". Elsewhere (float64, CUDA) it is the ordinary contiguous NCHW pair
    (PyTorch's float64 channels_last depthwise path is very slow). The window is
    symmetric, so this operator is its own adjoint (the SSIM backward relies on it).
    """
    N, H, W, C = x.shape
    g = _window_1d(x.dtype, x.device)
    r = SSIM_WINDOW // 2
    row, col = g.view(1, 1, 1, -1), g.view(1, 1, -1, 1)
    if x.device.type == "cpu" and x.dtype == torch.float32:
        x = x.contiguous()
        h = F.conv2d(x.permute(0, 3, 1, 2), row.expand(C, 1, 1, SSIM_WINDOW), padding=(0, r), groups=C)
        h = h.permute(0, 2, 3, 1).contiguous().view(N, H, 1, W * C).permute(0, 3, 1, 2)  # [N, W*C, H, 1]
        v = F.conv2d(h, col.expand(W * C, 1, SSIM_WINDOW, 1), padding=(r, 0), groups=W * C)
        return v.permute(0, 2, 3, 1).reshape(N, H, W, C)
    nchw = x.permute(0, 3, 1, 2).contiguous()
    y = F.conv2d(nchw, row.expand(C, 1, 1, SSIM_WINDOW), padding=(0, r), groups=C)
    y = F.conv2d(y, col.expand(C, 1, SSIM_WINDOW, 1), padding=(r, 0), groups=C)
    return y.permute(0, 2, 3, 1)  # [N, H, W, C]


def _blur_stacked(buf: Tensor) -> Tensor:  # [Q, B, H, W, C] -> [Q, B, H, W, C]
    Q, B, H, W, C = buf.shape
    return gaussian_blur(buf.view(Q * B, H, W, C)).reshape(Q, B, H, W, C)


def _scalar_if_uniform(grad: Tensor) -> Tensor:
    """A 0-d view of ``grad`` when it is one value broadcast everywhere (a mean's gradient)."""
    if grad.dim() > 0 and all(s == 0 for s in grad.stride()):
        return grad[(0,) * grad.dim()]
    return grad


class _SSIMMap(torch.autograd.Function):
    """Per-pixel, per-channel SSIM with a hand-written backward.

    Four statistics are blurred: m_x = blur(x), m_y = blur(y), e = blur(x² + y²) and
    p = blur(2xy) (the variances only ever appear summed). Then
        S = A·B / (C·D),  A = 2 m_x m_y + C1,  B = p − 2 m_x m_y + C2,
                          C = m_x² + m_y² + C1,  D = e − m_x² − m_y² + C2.
    Its derivatives with respect to the blurred statistics are pointwise:
        ∂S/∂p = A/(CD),  ∂S/∂e = −S/D,
        ∂S/∂m_x = 2 m_y (B − A)/(CD) + 2 m_x S (1/D − 1/C)   (same with x, y swapped),
    and since the blur is self-adjoint the gradient with respect to x is
        blur(ḡ·∂S/∂m_x) + 2x·blur(ḡ·∂S/∂e) + 2y·blur(ḡ·∂S/∂p):
    three more blurs, instead of autograd's trip back through all of them.

    On a CPU the pointwise work costs as much as the filtering, so it is written to touch
    memory as few times as possible, and every statistic is its own contiguous block
    (stacked on a leading axis, blurred in one call): slices of an interleaved
    [..., 4C] tensor would make each pointwise op several times slower.
    """

    @staticmethod
    def forward(ctx, x: Tensor, y: Tensor) -> Tensor:  # [B, H, W, C] each -> [B, H, W, C]
        buf = x.new_empty(4, *x.shape)  # x | y | x² + y² | 2xy
        buf[0] = x
        buf[1] = y
        torch.mul(x, x, out=buf[2]).addcmul_(y, y)
        torch.addcmul(x.new_zeros(()), x, y, value=2.0, out=buf[3])
        mx, my, e, p = _blur_stacked(buf).unbind(0)
        c1 = x.new_tensor(SSIM_C1)
        A = torch.addcmul(c1, mx, my, value=2.0)  # 2 m_x m_y + C1
        Bt = p.sub_(A).add_(SSIM_C1 + SSIM_C2)  # p − 2 m_x m_y + C2 (p is not needed again)
        Cm = torch.addcmul(c1, mx, mx).addcmul_(my, my)  # m_x² + m_y² + C1
        D = torch.sub(e, Cm).add_(SSIM_C1 + SSIM_C2)  # e − m_x² − m_y² + C2
        den = torch.mul(Cm, D)
        S = torch.mul(A, Bt).div_(den)
        ctx.save_for_backward(x, y, mx, my, A, Bt, Cm, D, den, S)
        return S

    @staticmethod
    def backward(ctx, grad: Tensor):  # [B, H, W, C]
        x, y, mx, my, A, Bt, Cm, D, den, S = ctx.saved_tensors
        need_x, need_y = ctx.needs_input_grad[:2]
        g2 = _scalar_if_uniform(grad) * 2.0
        n = int(need_x) + int(need_y)
        buf = x.new_empty(n + 2, *x.shape)  # [∂/∂m_x] | [∂/∂m_y] | −∂/∂e | ∂/∂p, all times 2ḡ
        u = torch.mul(S, g2)  # 2ḡS
        torch.div(u, D, out=buf[n])  # q = 2ḡS/D = −2ḡ ∂S/∂e
        ratio = torch.addcdiv(buf[n], u, Cm, value=-1.0)  # 2ḡS (1/D − 1/C)
        r = torch.div(g2, den)  # 2ḡ/(CD)
        torch.mul(A, r, out=buf[n + 1])  # 2ḡ ∂S/∂p
        common = r.mul_(Bt - A)  # 2ḡ (B − A)/(CD)
        if need_x:
            torch.mul(common, my, out=buf[0]).addcmul_(ratio, mx)
        if need_y:
            torch.mul(common, mx, out=buf[n - 1]).addcmul_(ratio, my)
        blurred = _blur_stacked(buf)
        b_q, b_p = blurred[n], blurred[n + 1]
        gx = gy = None
        if need_x:  # blur(∂/∂m_x) − x·blur(q) + y·blur(∂/∂p)
            gx = torch.addcmul(blurred[0], x, b_q, value=-1.0).addcmul_(y, b_p)
        if need_y:
            gy = torch.addcmul(blurred[n - 1], y, b_q, value=-1.0).addcmul_(x, b_p)
        return gx, gy


def ssim_map(
    pred: Tensor,  # [..., H, W, C]
    target: Tensor,  # [..., H, W, C]
    mask: Tensor | None = None,  # [..., H, W] bool
) -> Tensor:  # [..., H, W, C]
    """The SSIM value of every pixel and channel (differentiable w.r.t. both images).

    With a mask, both images are set to zero outside it before filtering, so unselected
    pixels act like the zero padding at the image border: changing them changes nothing.
    Weighting the map by the mask is left to the caller (:func:`ssim`, ``losses.dssim``).
    """
    _check_images(pred, target, mask)
    target = target.to(pred.dtype)
    if mask is not None:
        w = _mask_weights(mask, pred)
        pred, target = pred * w, target * w
    lead, (H, W, C) = pred.shape[:-3], pred.shape[-3:]
    x = pred.reshape(-1, H, W, C).contiguous()
    y = target.reshape(-1, H, W, C).contiguous()
    return _SSIMMap.apply(x, y).reshape(*lead, H, W, C)


def ssim(
    pred: Tensor,  # [..., H, W, C] in [0, 1]
    target: Tensor,  # [..., H, W, C] in [0, 1]
    mask: Tensor | None = None,  # [..., H, W] bool
) -> Tensor:  # [...]
    """Mean SSIM over pixels and channels, one value per image (1 for identical images).

    With a mask, the mean is over the selected pixels of :func:`ssim_map` (NaN for an image
    with no selected pixel).
    """
    S = ssim_map(pred, target, mask)
    if mask is None:
        return S.mean(dim=(-3, -2, -1))
    w = _mask_weights(mask, S)
    return (S * w).sum(dim=(-3, -2, -1)) / (w.sum(dim=(-3, -2, -1)) * S.shape[-1])


# -------------------------------------------------------------------------------------- LPIPS

LpipsNet = Literal["alex", "vgg"]

# torchvision's ImageNet weights that both LPIPS implementations load as the backbone.
_BACKBONE_FILES = {"alex": "alexnet-owt-7be5be79.pth", "vgg": "vgg16-397923af.pth"}
_BACKBONE_WEIGHTS_ENUM = {"alex": "AlexNet_Weights", "vgg": "VGG16_Weights"}


def _backbone_file(net: str) -> str:
    try:  # the name torchvision itself would fetch, when it says
        models = importlib.import_module("torchvision.models")
        return os.path.basename(getattr(models, _BACKBONE_WEIGHTS_ENUM[net]).IMAGENET1K_V1.url)
    except Exception:
        return _BACKBONE_FILES[net]


def _lpips_backend(net: str) -> tuple[str | None, str]:
    """(backend name, '') when usable offline, else (None, why not)."""
    if net not in _BACKBONE_FILES:
        return None, f"unknown LPIPS network {net!r} (expected one of {sorted(_BACKBONE_FILES)})"
    reasons = []
    candidates = (
        ("lpips", lambda m: Path(m.__file__).parent / "weights" / "v0.1" / f"{net}.pth"),
        (
            "torchmetrics.functional.image.lpips",
            lambda m: Path(m.__file__).parent / "lpips_models" / f"{net}.pth",
        ),
    )
    for module_name, head_path in candidates:
        try:
            module = importlib.import_module(module_name)
        except Exception as exc:  # ImportError, or a broken install
            reasons.append(f"{module_name.split('.')[0]} not importable ({type(exc).__name__}: {exc})")
            continue
        head = head_path(module)
        if not head.is_file():
            reasons.append(f"{module_name.split('.')[0]}: linear-layer weights {head} missing")
            continue
        return module_name, ""
    return None, "; ".join(reasons)


def lpips_available(net: LpipsNet = "alex") -> tuple[bool, str]:
    """Whether :func:`lpips` can run without downloading anything, and if not, why.

    Needs the ``lpips`` package (or torchmetrics) with its shipped linear-layer weights for
    ``net``, torchvision, and the torchvision backbone weights already in the torch hub
    cache (``torch.hub.get_dir()/checkpoints``). Returns ``(True, description)`` or
    ``(False, reason)``.
    """
    backend, why = _lpips_backend(net)
    if backend is None:
        return False, f"LPIPS unavailable: {why}"
    try:
        importlib.import_module("torchvision")
    except Exception as exc:
        return False, f"LPIPS unavailable: torchvision not importable ({type(exc).__name__}: {exc})"
    backbone = Path(torch.hub.get_dir()) / "checkpoints" / _backbone_file(net)
    if not backbone.is_file():
        return False, (
            f"LPIPS unavailable: backbone weights {backbone} not in the torch hub cache (never downloaded here)"
        )
    return True, f"LPIPS ({net}) via {backend.split('.')[0]}, backbone {backbone}"


@functools.lru_cache(maxsize=4)
def _lpips_model(net: str, device: torch.device) -> torch.nn.Module:
    backend, why = _lpips_backend(net)
    if backend == "lpips":
        lp = importlib.import_module("lpips")
        try:
            model = lp.LPIPS(net=net, verbose=False)
        except TypeError:  # older releases have no `verbose`
            model = lp.LPIPS(net=net)
    elif backend is not None:
        tm = importlib.import_module("torchmetrics.image.lpip")
        model = tm.LearnedPerceptualImagePatchSimilarity(net_type=net, normalize=True)
    else:
        raise RuntimeError(f"LPIPS unavailable: {why}")
    return model.eval().requires_grad_(False).to(device)


def lpips(
    pred: Tensor,  # [..., H, W, 3] in [0, 1]
    target: Tensor,  # [..., H, W, 3] in [0, 1]
    net: LpipsNet = "alex",
) -> Tensor:  # [...]
    """LPIPS distance per image (lower is better); raises RuntimeError when unavailable.

    Only runs when :func:`lpips_available` says so: the weights must already be on disk.
    """
    ok, reason = lpips_available(net)
    if not ok:
        raise RuntimeError(reason)
    _check_images(pred, target, None)
    if pred.shape[-1] != 3:
        raise ValueError(f"LPIPS needs RGB images [..., H, W, 3], got {list(pred.shape)}")
    lead, (H, W, C) = pred.shape[:-3], pred.shape[-3:]
    x = pred.reshape(-1, H, W, C).permute(0, 3, 1, 2).float()
    y = target.reshape(-1, H, W, C).permute(0, 3, 1, 2).float()
    model = _lpips_model(net, x.device)
    with torch.no_grad():
        if hasattr(model, "net") and type(model).__module__.startswith("lpips"):
            d = model(x * 2.0 - 1.0, y * 2.0 - 1.0).reshape(-1)  # lpips wants [-1, 1]
        else:  # torchmetrics' module reduces over the batch: one image at a time
            d = torch.stack([model(x[i : i + 1], y[i : i + 1]).reshape(()) for i in range(x.shape[0])])
    return d.to(pred.dtype).reshape(lead)
