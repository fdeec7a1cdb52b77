"""A small camera-conditioned prior of our own (Zero-1-to-3 style, pixel space): a diffusers
``UNet2DConditionModel`` that denoises a view of an object given another view of it (the
reference, concatenated to ``x_t`` as three more input channels) and the camera change
between them (one cross-attention token of fixed Fourier features).

Saved in diffusers' layout (``unet/``, ``scheduler/``) plus :data:`MARKER`, a JSON file that
says how it is conditioned, so :class:`~.diffusers_guidance.DiffusersGuidance` loads it like
any checkpoint and knows to expect a :class:`ReferenceCondition`. Images are RGB over white,
scaled to [-1, 1]. Cameras: elevation and azimuth in degrees around the object (world z up),
as :mod:`splatfield.data.arrangements` and ``lift`` place them.
"""

from __future__ import annotations

import json
import math
import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import Tensor

from .schedule import NoiseSchedule, Prediction

MARKER = "splatfield_prior.json"
PROCEDURAL = "procedural"  # --guidance procedural: the weights shipped beside this module
SHIPPED = Path(__file__).parent / "procedural_prior"
TOKEN_WIDTH = 32  # cross-attention width: 4 camera numbers x 4 frequencies x (sin, cos)
FREQUENCIES = (1.0, 2.0, 4.0, 8.0)


@dataclass(frozen=True)
class ReferenceCondition:
    """What the prior is conditioned on, per sample: the reference view in model space
    [B, 3, H, W] and the camera tokens [B, 1, TOKEN_WIDTH] (:func:`camera_tokens`)."""

    reference: Tensor
    tokens: Tensor


def camera_features(ref_elevation: Tensor, ref_azimuth: Tensor, elevation: Tensor, azimuth: Tensor) -> Tensor:
    """[B, 4]: the azimuth change (sin, cos) and both elevations, in radians: what a view of an
    object seen from a camera on a sphere depends on, given the reference."""
    d = torch.deg2rad(azimuth - ref_azimuth)
    return torch.stack([torch.sin(d), torch.cos(d), torch.deg2rad(ref_elevation), torch.deg2rad(elevation)], -1)


def camera_tokens(features: Tensor) -> Tensor:
    """[B, 4] -> [B, 1, TOKEN_WIDTH]: sin and cos of the features at fixed frequencies."""
    f = torch.as_tensor(FREQUENCIES, dtype=features.dtype, device=features.device)
    angles = features[:, :, None] * f * (math.pi / 2)
    return torch.cat([torch.sin(angles), torch.cos(angles)], -1).reshape(features.shape[0], 1, TOKEN_WIDTH)


def new_unet(size: int = 64, channels: tuple[int, int, int] = (32, 64, 96)):
    """The prior's UNet (attention only at the coarsest level: a CPU can train it)."""
    from diffusers import UNet2DConditionModel

    return UNet2DConditionModel(
        sample_size=size, in_channels=6, out_channels=3, layers_per_block=1, block_out_channels=channels, norm_num_groups=8,
        down_block_types=("DownBlock2D", "DownBlock2D", "CrossAttnDownBlock2D"),
        up_block_types=("CrossAttnUpBlock2D", "UpBlock2D", "UpBlock2D"), cross_attention_dim=TOKEN_WIDTH, attention_head_dim=8,
    )  # fmt: skip


def new_scheduler(prediction: Prediction = "sample"):
    from diffusers import DDPMScheduler

    return DDPMScheduler(num_train_timesteps=1000, beta_schedule="scaled_linear", beta_start=0.00085, beta_end=0.012,
                         prediction_type=prediction)  # fmt: skip


def denoising_loss(unet, schedule: NoiseSchedule, target: Tensor, condition: ReferenceCondition, generator: torch.Generator,
                   drop: float = 0.1, prediction: Prediction = "sample") -> Tensor:  # fmt: skip
    """The denoising loss of ``target`` [B, 3, H, W] (model space) given the condition, in the
    model's ``prediction`` (:meth:`NoiseSchedule.training_target`); ``drop`` of the samples lose their
    condition (zero reference and tokens) so that the model also learns the unconditional
    prediction classifier-free guidance needs."""
    B = target.shape[0]
    t = torch.randint(0, schedule.steps, (B,), generator=generator)
    eps = torch.randn(target.shape, generator=generator)
    x_t = schedule.add_noise(target, t, eps)
    keep = (torch.rand(B, generator=generator) >= drop).to(target.dtype)
    reference = condition.reference * keep.view(B, 1, 1, 1)
    tokens = condition.tokens * keep.view(B, 1, 1)
    out = unet(torch.cat([x_t, reference], 1), t, encoder_hidden_states=tokens).sample
    return (out - schedule.training_target(prediction, target, eps, t)).square().mean()


def save_prior(folder: Path, unet, scheduler, meta: dict) -> None:
    """Writes the checkpoint atomically: a sibling temporary folder, then renamed over ``folder``."""
    folder = Path(folder)
    folder.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{folder.name}.", dir=folder.parent))
    try:
        unet.save_pretrained(tmp / "unet")
        scheduler.save_pretrained(tmp / "scheduler")
        (tmp / MARKER).write_text(json.dumps({"conditioning": "reference+camera", "token_width": TOKEN_WIDTH,
                                              "frequencies": list(FREQUENCIES), **meta}, indent=1))  # fmt: skip
        old = folder.with_name(f".{folder.name}.old")
        if folder.exists():
            os.replace(folder, old)
        os.replace(tmp, folder)
        shutil.rmtree(old, ignore_errors=True)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def read_marker(folder: Path) -> dict | None:
    path = Path(folder) / MARKER
    return json.loads(path.read_text()) if path.is_file() else None


def guidance_folder(name: str | Path) -> Path:
    """The folder ``--guidance`` names: a path, or ``procedural`` for the shipped prior."""
    if str(name) != PROCEDURAL:
        return Path(name)
    if read_marker(SHIPPED) is None:
        raise FileNotFoundError(f"{SHIPPED}: the shipped procedural prior is missing from this install "
                                "(pass a folder made by splatfield lift-prior train instead)")  # fmt: skip
    return SHIPPED
