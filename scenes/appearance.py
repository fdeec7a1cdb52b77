"""Per-training-image appearance compensation: a colour correction applied to the rendered
image before the loss, so exposure and white-balance changes between real photos are
absorbed here instead of being baked into the scene as floaters or view-dependent colour.

Modes (one ``Appearance`` object; ``none`` keeps callers free of branches):

- ``none``: the identity, no parameters.
- ``affine``: per image one 3x4 colour matrix, ``out = A @ rgb + b``, for each pixel.
- ``bilateral``: per image a bilateral grid (Wang et al. 2024, "Bilateral Guided Radiance
  Field Processing", as offered by gsplat): a (W, H, L) = (16, 16, 8) grid of 3x4 affine
  matrices over (x, y, luminance), sliced trilinearly at each pixel's
  ``(x, y, gray(rendered rgb))`` and applied to that pixel's colour. Total variation over
  the grids regularises it.

Both corrections are stored as a *residual* from the identity (zeros at init): slicing a
zero grid gives exact zeros, so ``apply`` returns its input bit for bit at initialisation
(interpolating a grid of identity matrices would not: trilinear weights need not sum to
exactly 1 in floating point).

The parameters have their own dense Adam (gsplat's settings: lr 2e-3, eps 1e-15; as there,
a view trained earlier coasts on its momentum for a few steps while others train, and the TV
term reaches every non-constant grid each step) with an explicit schedule, ``lr_at(step)``: a linear warm-up from 1 % over ``warmup_steps`` times an
exponential decay to ``final_lr_factor`` at ``max_steps``. The schedule's step is state of
the object (``set_step``, saved by ``state_dict``), never a global.

Images are ``[B, H, W, 3]`` floats, channel last like every image in splatfield; ``views``
says which training image each of the B images is (routing to its correction).
"""

from __future__ import annotations

from typing import Sequence, get_args

import torch
import torch.nn.functional as F
from torch import Tensor

from splatfield.scenes.losses import l1

from .options import AppearanceMode

__all__ = [
    "AppearanceMode",
    "APPEARANCE_MODES",
    "Appearance",
    "affine_apply",
    "bilateral_apply",
    "grid_total_variation",
    "luminance",
]

APPEARANCE_MODES: tuple[str, ...] = get_args(AppearanceMode)

# Rec. 601 luma weights (what gsplat's bilateral grid uses for its guidance).
LUMA = (0.299, 0.587, 0.114)
STATE_VERSION = 1


# ------------------------------------------------------------------------- pure functions


def luminance(image: Tensor) -> Tensor:  # [..., 3] -> [...]
    r, g, b = image.unbind(-1)
    return LUMA[0] * r + LUMA[1] * g + LUMA[2] * b


def affine_apply(
    image: Tensor,  # [B, H, W, 3]
    delta: Tensor,  # [B, 3, 4] residual from [I | 0]
) -> Tensor:  # [B, H, W, 3]
    """``(I + delta[:, :, :3]) @ rgb + delta[:, :, 3]`` per pixel, written as rgb plus a
    residual so a zero ``delta`` returns ``image`` exactly."""
    delta = delta.to(image.dtype)
    return image + torch.einsum("bhwc,boc->bhwo", image, delta[:, :, :3]) + delta[:, None, None, :, 3]


def bilateral_apply(
    image: Tensor,  # [B, H, W, 3]
    grids: Tensor,  # [B, 12, L, GH, GW] residual 3x4 matrices (row-major) from [I | 0]
) -> Tensor:  # [B, H, W, 3]
    """Slices each image's grid at every pixel's (x, y, luminance) with trilinear
    interpolation and applies the sliced residual affine matrix to the pixel's colour.

    x and y map the pixel index 0 .. W-1 (0 .. H-1) onto the grid's first .. last cell centre
    (align_corners=True), and luminance 0 .. 1 onto the first .. last L cell; a luminance
    outside [0, 1] (an HDR-ish render) takes the border cell's value (padding 'border').
    """
    b, h, w, _ = image.shape
    grids = grids.to(image.dtype)
    # Guidance is NOT detached: the loss then sees the exact derivative of the function it
    # evaluates, A(gray(rgb)) rgb + b(gray(rgb)). Detaching would drop the tone-curve slope
    # (for a gamma-like grid the scene's gradient would be off by a factor ~1/gamma); the
    # TV term keeps that slope bounded, and gsplat/bilarf do the same.
    gray = luminance(image)  # [B, H, W]
    ys = _unit_coords(h, image)[:, None].expand(h, w)
    xs = _unit_coords(w, image)[None, :].expand(h, w)
    # grid_sample's 5-D sampling grid is [B, D_out, H_out, W_out, (x -> GW, y -> GH, z -> L)] in [-1, 1].
    coords = torch.stack([xs.expand(b, h, w), ys.expand(b, h, w), gray], dim=-1) * 2 - 1
    coeffs = F.grid_sample(grids, coords[:, None], mode="bilinear", padding_mode="border", align_corners=True)
    coeffs = coeffs[:, :, 0].permute(0, 2, 3, 1).reshape(b, h, w, 3, 4)  # [B, H, W, 3, 4]
    return image + (coeffs[..., :3] @ image[..., None])[..., 0] + coeffs[..., 3]


def grid_total_variation(grids: Tensor) -> Tensor:  # [N, 12, L, GH, GW] -> []
    """Mean squared difference between neighbouring cells along x, y and luminance, summed
    over the three axes (the bilateral-grid paper's smoothness term). Zero for any constant
    grid, so untrained (identity) grids feel no pull."""
    tv = grids.new_zeros(())
    for dim in (2, 3, 4):
        if grids.shape[dim] > 1:
            tv = tv + grids.diff(dim=dim).square().mean()
    return tv


def _unit_coords(n: int, like: Tensor) -> Tensor:  # [n] in [0, 1]
    if n == 1:
        return torch.full((1,), 0.5, dtype=like.dtype, device=like.device)
    return torch.arange(n, dtype=like.dtype, device=like.device) / (n - 1)


# ------------------------------------------------------------------------------- the object


class Appearance:
    """Per-training-image colour correction applied to the rendered image before the loss."""

    def __init__(
        self,
        mode: AppearanceMode,
        num_images: int,
        *,
        device: torch.device | str,
        grid_shape: tuple[int, int, int] = (16, 16, 8),  # (W, H, L) cells, gsplat's default
        lr: float = 2e-3,  # gsplat's bilateral-grid lr; also used for affine
        tv_weight: float = 10.0,  # gsplat's bilateral TV weight
        warmup_steps: int = 1000,  # gsplat: linear warm-up from 1 % over 1000 steps
        max_steps: int = 30_000,  # end of the exponential decay; pass the training's length
        final_lr_factor: float = 0.01,  # lr at max_steps, relative to lr (gsplat: 0.01)
        betas: tuple[float, float] = (0.9, 0.999),
        eps: float = 1e-15,  # gsplat's (a never-trained view has zero moments and stays exact)
        fit_lr: float = 5e-2,  # test-time fit: a few hundred steps, no warm-up, decays to 1 %
    ) -> None:
        if mode not in APPEARANCE_MODES:
            raise ValueError(f"appearance mode must be one of {APPEARANCE_MODES}, got {mode!r}")
        if num_images < 0:
            raise ValueError(f"num_images must be >= 0, got {num_images}")
        grid_shape = tuple(int(s) for s in grid_shape)
        if len(grid_shape) != 3 or min(grid_shape) < 1:
            raise ValueError(f"grid_shape must be 3 positive sizes (W, H, L), got {grid_shape}")
        if lr <= 0 or fit_lr <= 0 or tv_weight < 0 or warmup_steps < 0 or max_steps < 1 or not 0 < final_lr_factor <= 1:
            raise ValueError("appearance: need lr > 0, fit_lr > 0, tv_weight >= 0, warmup_steps >= 0, "
                             "max_steps >= 1, 0 < final_lr_factor <= 1")  # fmt: skip
        self.mode: AppearanceMode = mode
        self.num_images = int(num_images)
        self.grid_shape: tuple[int, int, int] = grid_shape  # type: ignore[assignment]
        self.lr = float(lr)
        self.tv_weight = float(tv_weight)
        self.warmup_steps = int(warmup_steps)
        self.max_steps = int(max_steps)
        self.final_lr_factor = float(final_lr_factor)
        self.betas = (float(betas[0]), float(betas[1]))
        self.eps = float(eps)
        self.fit_lr = float(fit_lr)
        self.global_step = 0  # schedule position: optimizer steps taken (or set by set_step)

        gw, gh, gl = grid_shape
        shape = {"none": None, "affine": (num_images, 3, 4), "bilateral": (num_images, 12, gl, gh, gw)}[mode]
        self._params: list[Tensor] = []
        if shape is not None:
            self._params = [torch.zeros(shape, dtype=torch.float32, device=device, requires_grad=True)]
        self._optimizer = (
            torch.optim.Adam(self._params, lr=self.lr_at(0), betas=self.betas, eps=self.eps) if self._params else None
        )

    # ---------------------------------------------------------------- correction and loss

    @property
    def device(self) -> torch.device | None:
        return self._params[0].device if self._params else None

    def apply(
        self,
        image: Tensor,  # [B, H, W, 3] float
        views: Sequence[int] | Tensor,  # [B] training-image index of each image
    ) -> Tensor:  # [B, H, W, 3]
        """The corrected images; differentiable w.r.t. the parameters and ``image``."""
        if image.dim() != 4 or image.shape[-1] != 3:
            raise ValueError(f"appearance: image must be [B, H, W, 3], got {list(image.shape)}")
        if not image.is_floating_point():
            raise ValueError(f"appearance: image must be floating point, got {image.dtype}")
        if self.mode == "none":
            return image
        param = self._params[0]
        if image.device != param.device:
            raise ValueError(f"appearance: image is on {image.device} but the corrections are on {param.device}")
        index = self._index(views, image.shape[0], param.device)
        delta = param.index_select(0, index)
        return affine_apply(image, delta) if self.mode == "affine" else bilateral_apply(image, delta)

    def regularizer(self) -> Tensor | float:
        """The weighted term to add to the loss: ``tv_weight`` x TV over all bilateral grids
        (as gsplat, every step); 0.0 for ``none`` and ``affine``."""
        if self.mode != "bilateral" or self.tv_weight == 0:
            return 0.0
        return self.tv_weight * grid_total_variation(self._params[0])

    def _index(self, views: Sequence[int] | Tensor, batch: int, device: torch.device) -> Tensor:
        # checked where the indices are (a Python list: on the CPU, no device sync)
        index = torch.as_tensor(views, dtype=torch.long).reshape(-1)
        if index.numel() != batch:
            raise ValueError(f"appearance: {index.numel()} view indices for {batch} images")
        if index.numel() and (int(index.min()) < 0 or int(index.max()) >= self.num_images):
            raise IndexError(f"appearance: view index out of range [0, {self.num_images}): {index.tolist()}")
        return index.to(device)

    # ------------------------------------------------------------------------ optimisation

    def parameters(self) -> list[Tensor]:
        return list(self._params)

    def lr_at(self, step: int) -> float:
        """The learning rate at optimizer step ``step``: linear warm-up from 1 % to 100 % over
        ``warmup_steps``, times ``final_lr_factor ** (step / max_steps)`` (held after max_steps)."""
        warm = 1.0 if self.warmup_steps == 0 else 0.01 + 0.99 * min(step, self.warmup_steps) / self.warmup_steps
        return self.lr * warm * self.final_lr_factor ** (min(step, self.max_steps) / self.max_steps)

    def set_step(self, step: int) -> None:
        """Moves the schedule to ``step`` (e.g. to follow the trainer's iteration)."""
        if step < 0:
            raise ValueError(f"step must be >= 0, got {step}")
        self.global_step = int(step)

    def step(self) -> None:
        """One Adam step at ``lr_at(global_step)``, then advances the schedule."""
        if self._optimizer is None:
            return
        for group in self._optimizer.param_groups:
            group["lr"] = self.lr_at(self.global_step)
        self._optimizer.step()
        self.global_step += 1

    def zero_grad(self) -> None:
        if self._optimizer is not None:
            self._optimizer.zero_grad(set_to_none=True)

    # ------------------------------------------------------------------------ checkpoints

    def _config(self) -> dict:
        return dict(grid_shape=list(self.grid_shape), lr=self.lr, tv_weight=self.tv_weight,
                    warmup_steps=self.warmup_steps, max_steps=self.max_steps, final_lr_factor=self.final_lr_factor,
                    betas=list(self.betas), eps=self.eps, fit_lr=self.fit_lr)  # fmt: skip

    def state_dict(self) -> dict:
        """Mode, hyper-parameters, schedule step, parameters and Adam state: tensors, numbers,
        strings, lists and dicts only (loads with ``torch.load(weights_only=True)``)."""
        return {
            "version": STATE_VERSION,
            "mode": self.mode,
            "num_images": self.num_images,
            "config": self._config(),
            "global_step": self.global_step,
            "params": [p.detach().clone() for p in self._params],
            "optimizer": _clone(self._optimizer.state_dict()) if self._optimizer is not None else None,
        }

    @classmethod
    def from_state_dict(cls, state: dict, device: torch.device | str) -> "Appearance":
        if state.get("version") != STATE_VERSION:
            raise ValueError(f"appearance state version {state.get('version')!r}, expected {STATE_VERSION}")
        config = dict(state["config"])
        config["grid_shape"] = tuple(config["grid_shape"])
        config["betas"] = tuple(config["betas"])
        app = cls(state["mode"], state["num_images"], device=device, **config)
        if len(state["params"]) != len(app._params):
            raise ValueError("appearance state: parameter count does not match its mode")
        with torch.no_grad():
            for p, saved in zip(app._params, state["params"]):
                if p.shape != saved.shape:
                    raise ValueError(f"appearance state: parameter shape {list(saved.shape)}, expected {list(p.shape)}")
                p.copy_(saved)
        if app._optimizer is not None and state["optimizer"] is not None:
            app._optimizer.load_state_dict(state["optimizer"])  # moves the moments onto the parameters' device
        app.global_step = int(state["global_step"])
        return app

    # ------------------------------------------------------------------- test-time fitting

    def fit(
        self,
        image: Tensor,  # [B, H, W, 3] or [H, W, 3], the render
        target: Tensor,  # same shape, the photo
        steps: int,
        mask: Tensor | None = None,  # [B, H, W] or [H, W] bool: the pixels that count
    ) -> Tensor:  # same shape as image, detached
        """Fits one fresh correction of this mode per image (identity start) of ``image``
        towards ``target`` and returns the corrected image, for evaluating held-out views
        "with appearance fitted". The loss is L1 (the training loss's robust part, so render
        artefacts pull less than with MSE) plus this object's regulariser weight; Adam at
        ``fit_lr`` decaying to 1 % over ``steps`` (a constant rate leaves L1 oscillating at
        about the rate). This object's own state is untouched; works under ``torch.no_grad()``."""
        if image.shape != target.shape:
            raise ValueError(f"appearance fit: image {list(image.shape)} and target {list(target.shape)} differ")
        single = image.dim() == 3
        img = (image[None] if single else image).detach()
        tgt = (target[None] if single else target).detach().to(img.dtype)
        if mask is not None:
            mask = (mask[None] if single else mask).to(img.device)
            if tuple(mask.shape) != tuple(img.shape[:-1]):
                raise ValueError(f"appearance fit: mask must be {list(img.shape[:-1])}, got {list(mask.shape)}")
        if self.mode == "none" or steps <= 0:
            out = img.clone()
            return out[0] if single else out
        fresh = Appearance(self.mode, img.shape[0], device=img.device, grid_shape=self.grid_shape, lr=self.fit_lr,
                           tv_weight=self.tv_weight, warmup_steps=0, max_steps=steps, final_lr_factor=0.01,
                           betas=self.betas, eps=self.eps)  # fmt: skip
        views = list(range(img.shape[0]))
        with torch.enable_grad():
            for _ in range(steps):
                fresh.zero_grad()
                (l1(fresh.apply(img, views), tgt, mask) + fresh.regularizer()).backward()
                fresh.step()
        with torch.no_grad():
            out = fresh.apply(img, views)
        return out[0] if single else out


def _clone(obj):
    """A deep copy of a state dict's tensors, so a saved state never aliases live moments."""
    if isinstance(obj, Tensor):
        return obj.detach().clone()
    if isinstance(obj, dict):
        return {k: _clone(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return type(obj)(_clone(v) for v in obj)
    return obj
