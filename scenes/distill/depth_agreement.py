"""SteinDreamer's baseline for the Stein control variate: how well a monocular depth
estimate of the noisy view agrees with the scene's own depth there.

``phi(x_t) = corr(D(view(x_t)), disparity of the render)`` per sample: ``view(x_t)`` is the
image ``x_t / alpha_t`` shows (through the guidance's VAE decoder for a latent model), ``D``
a depth-estimation model from a local transformers folder (``AutoModelForDepthEstimation``:
DPT, Depth Anything, ...; it predicts relative inverse depth), and the render's disparity is
``alpha^2 / accumulated depth`` (1/z on the object, 0 where nothing is). The correlation is
invariant to the estimate's scale and shift, which a monocular model does not know. Any
smooth ``phi`` keeps the control variate zero-mean (:func:`~.estimators.stein_control_variate`);
this one is correlated with what a prior finds wrong in the render's shape, which is where
SteinDreamer finds its variance reduction.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Callable

import torch
import torch.nn.functional as F
from torch import Tensor

from ..config import first_line

WEIGHTS = ("model.safetensors", "pytorch_model.bin")
IMAGENET_MEAN, IMAGENET_STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)


class DepthModelError(Exception):
    """A depth-model folder that cannot be used; one line naming the folder."""


class DepthEstimator:
    """A frozen monocular depth model: [B, 3, H, W] in [0, 1] -> [B, H, W] relative disparity."""

    def __init__(self, path: str | Path, *, device: torch.device | str = "cpu", dtype: torch.dtype = torch.float32) -> None:
        root = Path(path)
        if not root.is_dir():
            raise DepthModelError(f"{root}: no such folder (a depth-estimation model folder: config.json and weights)")
        missing = [] if (root / "config.json").is_file() else ["config.json"]
        if not any((root / w).is_file() for w in WEIGHTS):
            missing.append(WEIGHTS[0])
        if missing:
            raise DepthModelError(f"{root}: not a complete depth-estimation model, missing {', '.join(missing)}")
        try:
            from transformers import AutoModelForDepthEstimation

            self.model = AutoModelForDepthEstimation.from_pretrained(root, local_files_only=True, torch_dtype=dtype)
        except Exception as e:  # transformers raises many kinds; the user needs the first line of any
            raise DepthModelError(f"{root}: cannot load the depth model: {first_line(e)}") from None
        self.model.requires_grad_(False).eval().to(device)
        pre = root / "preprocessor_config.json"
        config = json.loads(pre.read_text()) if pre.is_file() else {}
        self.mean = torch.tensor(config.get("image_mean", IMAGENET_MEAN), dtype=dtype, device=device).view(1, 3, 1, 1)
        self.std = torch.tensor(config.get("image_std", IMAGENET_STD), dtype=dtype, device=device).view(1, 3, 1, 1)
        self.root = root

    def __call__(self, images: Tensor) -> Tensor:
        """Differentiable in ``images`` (the model's weights are frozen)."""
        x = (images.to(self.mean.dtype) - self.mean) / self.std
        out = self.model(pixel_values=x).predicted_depth  # [B, h, w]
        if out.shape[-2:] != images.shape[-2:]:
            out = F.interpolate(out[:, None], size=images.shape[-2:], mode="bilinear", align_corners=False)[:, 0]
        return out


def render_disparity(alpha: Tensor, depth: Tensor, eps: float = 1e-6) -> Tensor:
    """[B, H, W] from a render's alpha and accumulated depth [B, H, W, 1]: alpha / mean depth."""
    a, d = alpha[..., 0], depth[..., 0]
    return a * a / d.clamp_min(eps) * (d > eps)


def correlation(a: Tensor, b: Tensor, eps: float = 1e-8) -> Tensor:
    """Pearson correlation per sample of [B, ...] tensors."""
    a, b = a.flatten(1), b.flatten(1)
    a, b = a - a.mean(1, keepdim=True), b - b.mean(1, keepdim=True)
    return (a * b).sum(1) / (a.norm(dim=1) * b.norm(dim=1) + eps)


def depth_agreement(estimator: DepthEstimator, view: Callable[[Tensor], Tensor], disparity: Tensor) -> Callable[[Tensor], Tensor]:
    """``phi(x_t)`` [B] for :func:`~.estimators.stein_control_variate`: ``view`` turns ``x_t``
    into images [B, 3, H, W] in [0, 1] (scaled by 1/alpha_t, decoded), compared with the
    render's ``disparity`` [B, H, W] (resized to the images)."""
    def phi(x_t: Tensor) -> Tensor:
        images = view(x_t)
        target = disparity.detach().to(images)
        if target.shape[-2:] != images.shape[-2:]:
            target = F.interpolate(target[:, None], size=images.shape[-2:], mode="bilinear", align_corners=False)[:, 0]
        return correlation(estimator(images), target)

    return phi
