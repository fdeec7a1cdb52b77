"""Zero-1-to-3 (Zero123) checkpoints in the diffusers layout they are published in: the
community ``Zero1to3StableDiffusionPipeline`` (diffusers' ``examples/community/
pipeline_zero1to3.py``; ``kxic/zero123-xl`` and the like), read here without that code::

    PATH/unet/             UNet2DConditionModel, in_channels 8: the noisy latent ++ the reference's latent
    PATH/vae/              AutoencoderKL
    PATH/image_encoder/    transformers CLIPVisionModelWithProjection (its ``image_embeds``)
    PATH/cc_projection/    a Linear (D + 4) -> cross_attention_dim, saved by diffusers' ModelMixin as
                           ``projection.weight``/``projection.bias`` (threestudio's ``Zero123Pipeline``
                           names the folder ``clip_camera_projection/`` and the layer ``proj``: also read)
    PATH/scheduler/, PATH/model_index.json, PATH/feature_extractor/ (only its image_mean/image_std are read)

The condition of a view, as the pipeline above and threestudio's zero123 guidance build it:
the UNet cross-attends to one token, the projection of [CLIP image embedding of the reference
++ (Δpolar in radians, sin Δazimuth, cos Δazimuth, Δradius)], polar = 90° − elevation and
Δ = target − reference, azimuth counter-clockwise seen from above (Objaverse's z-up frame,
as :func:`splatfield.render.camera_paths.horizontal_axes` measures it); and the reference's
VAE latent (the mode, *not* times ``scaling_factor``: Zero123 was trained so) is
concatenated to the noisy latent. Unconditional (classifier-free guidance): a zero token and
a zero latent. The reference reaches CLIP as the original Zero123 fed it: resized (bicubic,
no antialiasing) to the encoder's size and normalised with CLIP's mean and std.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .prior import ReferenceCondition

PROJECTIONS = {"cc_projection": "projection", "clip_camera_projection": "proj"}  # folder -> the Linear's name
MODEL_WEIGHTS = ("diffusion_pytorch_model.safetensors", "diffusion_pytorch_model.bin")
ENCODER_WEIGHTS = ("model.safetensors", "pytorch_model.bin")
CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)


@dataclass(frozen=True)
class Zero123Condition(ReferenceCondition):
    """``reference``: the reference's VAE latent [B, 4, h, w]; ``tokens``: the projected
    image-and-camera token [B, 1, C]; ``camera``: the 4-vector each token was made from [B, 4]."""

    camera: Tensor


def projection_folder(root: Path) -> str:
    return next((name for name in PROJECTIONS if (root / name).is_dir()), "cc_projection")


def is_zero123(root: Path) -> bool:
    """A camera projection folder, or a CLIP image encoder beside an 8-channel UNet (an image
    variation checkpoint has the encoder and a 4-channel UNet: it stays a plain one)."""
    if any((root / name).is_dir() for name in PROJECTIONS):
        return True
    if not (root / "image_encoder").is_dir():
        return False
    try:
        return json.loads((root / "unet" / "config.json").read_text()).get("in_channels") == 8
    except (OSError, ValueError):  # no readable UNet config: the caller's checks name what is wrong
        return False


def missing_parts(root: Path) -> list[str]:
    """The Zero123-only files missing from ``root`` (the UNet, VAE and scheduler are checked by the caller)."""
    missing = []
    if not (root / "image_encoder" / "config.json").is_file():
        missing.append("image_encoder/config.json")
    if not any((root / "image_encoder" / w).is_file() for w in ENCODER_WEIGHTS):
        missing.append(f"image_encoder/{ENCODER_WEIGHTS[0]}")
    folder = projection_folder(root)
    if not any((root / folder / w).is_file() for w in MODEL_WEIGHTS):
        missing.append(f"{folder}/{MODEL_WEIGHTS[0]}")
    return missing


def load_projection(root: Path, dtype: torch.dtype) -> nn.Linear:
    """The camera projection's Linear, from its weights alone (the published config.json
    holds no sizes: the class that saved it registered none)."""
    folder = projection_folder(root)
    path = next(root / folder / w for w in MODEL_WEIGHTS if (root / folder / w).is_file())
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        state = load_file(path)
    else:
        state = torch.load(path, map_location="cpu", weights_only=True)
    name = PROJECTIONS[folder]
    weight, bias = state.get(f"{name}.weight"), state.get(f"{name}.bias")
    if weight is None or bias is None or weight.ndim != 2:
        raise ValueError(f"{path}: expected a Linear saved as {name}.weight and {name}.bias, found {', '.join(state) or 'nothing'}")
    linear = nn.Linear(weight.shape[1], weight.shape[0], dtype=dtype)
    with torch.no_grad():
        linear.weight.copy_(weight)
        linear.bias.copy_(bias)
    return linear


def load_image_encoder(root: Path, dtype: torch.dtype):
    from transformers import CLIPVisionModelWithProjection

    return CLIPVisionModelWithProjection.from_pretrained(root / "image_encoder", local_files_only=True, torch_dtype=dtype)


def clip_statistics(root: Path) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """The feature extractor's normalisation if the folder has one, else CLIP's."""
    path = root / "feature_extractor" / "preprocessor_config.json"
    config = json.loads(path.read_text()) if path.is_file() else {}
    return tuple(config.get("image_mean", CLIP_MEAN)), tuple(config.get("image_std", CLIP_STD))


def clip_input(images: Tensor, size: int, mean, std) -> Tensor:
    """[B, H, W, 3] in [0, 1] -> [B, 3, size, size], what the CLIP encoder takes."""
    x = F.interpolate(images.permute(0, 3, 1, 2), size=(size, size), mode="bicubic", align_corners=True)
    m = torch.as_tensor(mean, dtype=x.dtype, device=x.device).view(1, 3, 1, 1)
    s = torch.as_tensor(std, dtype=x.dtype, device=x.device).view(1, 3, 1, 1)
    return (x - m) / s


def camera_vector(ref_elevation: Tensor, ref_azimuth: Tensor, elevation: Tensor, azimuth: Tensor,
                  d_radius: Tensor | float = 0.0) -> Tensor:  # fmt: skip
    """[B, 4] from degrees: (Δpolar in radians, sin Δazimuth, cos Δazimuth, Δradius), Δ =
    target − reference and polar = 90° − elevation, so Δpolar = reference elevation − elevation."""
    d_azimuth = torch.deg2rad(azimuth - ref_azimuth)
    d_radius = torch.as_tensor(d_radius, dtype=d_azimuth.dtype, device=d_azimuth.device).expand_as(d_azimuth)
    return torch.stack([torch.deg2rad(ref_elevation - elevation), torch.sin(d_azimuth), torch.cos(d_azimuth), d_radius], -1)


class Zero123Encoder:
    """The reference's side of a Zero123 checkpoint: its CLIP image encoder and camera projection (frozen)."""

    def __init__(self, root: Path, dtype: torch.dtype, cross_attention_dim: int) -> None:
        self.image_encoder = load_image_encoder(root, dtype)
        self.projection = load_projection(root, dtype)
        self.mean, self.std = clip_statistics(root)
        width = self.image_encoder.config.projection_dim
        if self.projection.in_features != width + 4 or self.projection.out_features != cross_attention_dim:
            raise ValueError(f"{projection_folder(root)}: a Linear {self.projection.in_features} -> {self.projection.out_features} "
                             f"does not fit a {width}-wide image embedding and a {cross_attention_dim}-wide UNet "
                             f"(expected {width + 4} -> {cross_attention_dim})")  # fmt: skip
        for module in (self.image_encoder, self.projection):
            module.requires_grad_(False).eval()

    def to(self, device: torch.device) -> Zero123Encoder:
        self.image_encoder.to(device)
        self.projection.to(device)
        return self

    @torch.no_grad()
    def embed(self, reference: Tensor) -> Tensor:
        """[1, D]: the CLIP image embedding of the reference ([1, H, W, 3] in [0, 1])."""
        x = clip_input(reference[:1].to(self.projection.weight.dtype), self.image_encoder.config.image_size, self.mean, self.std)
        return self.image_encoder(pixel_values=x).image_embeds

    @torch.no_grad()
    def tokens(self, embedding: Tensor, camera: Tensor) -> Tensor:
        """[B, 1, C]: the projection of the reference's embedding [1, D] with each camera [B, 4]."""
        features = torch.cat([embedding.expand(camera.shape[0], -1), camera.to(embedding)], -1)
        return self.projection(features)[:, None]
