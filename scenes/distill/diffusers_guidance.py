"""Guidance from a diffusers checkpoint in a local folder (never a download).

Supported layout (diffusers' ``save_pretrained`` of a text-to-image pipeline, the layout
Stable Diffusion 1.x/2.x checkpoints are published in)::

    PATH/unet/config.json + diffusion_pytorch_model.safetensors (or .bin)   required
    PATH/scheduler/scheduler_config.json                                  required
    PATH/vae/config.json + weights            optional: the UNet then works in the VAE's latents
    PATH/splatfield_prior.json                optional: a prior of ours conditioned on a reference view and a camera (:mod:`.prior`)

or a Zero-1-to-3 checkpoint in its published diffusers layout (``cc_projection/`` and
``image_encoder/`` beside an 8-channel UNet and a VAE, :mod:`.zero123`), conditioned on a
reference view and the camera change from it.

The UNet is a ``UNet2DConditionModel`` conditioned through cross-attention on
``encoder_hidden_states``: ``condition`` is that tensor ([L, C] or [B, L, C]); ``None`` is a
zero embedding of length 1 (a stand-in for an empty prompt: text prompts need a text
encoder, not wired yet). The scheduler's ``prediction_type`` (``epsilon``, ``v_prediction``
or ``sample``) is converted to a noise prediction. The model is frozen: no parameter
requires grad, and predictions run without building a graph.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

from ..config import first_line
from . import zero123
from .prior import MARKER, ReferenceCondition, camera_features, camera_tokens, guidance_folder, read_marker
from .schedule import NoiseSchedule

WEIGHTS = ("diffusion_pytorch_model.safetensors", "diffusion_pytorch_model.bin")


@dataclass(frozen=True)
class EncodedReference:
    """A reference view as the model reads it: in model space [1, C, h, w] (Zero123: its
    VAE latent), and for Zero123 its CLIP image embedding [1, D]."""

    image: Tensor
    embedding: Tensor | None = None


class GuidanceError(Exception):
    """A guidance folder that cannot be used; the message is one line naming the path."""


def _check_component(root: Path, name: str, config: str, weights: bool) -> list[str]:
    missing = [] if (root / name / config).is_file() else [f"{name}/{config}"]
    if weights and not any((root / name / w).is_file() for w in WEIGHTS):
        missing.append(f"{name}/{WEIGHTS[0]}")
    return missing


class DiffusersGuidance:
    def __init__(self, path: str | Path, *, device: torch.device | str = "cpu", dtype: torch.dtype = torch.float32) -> None:
        try:
            root = guidance_folder(path)
        except FileNotFoundError as e:
            raise GuidanceError(str(e)) from None
        if not root.is_dir():
            raise GuidanceError(f"{root}: no such folder (--guidance takes a diffusers checkpoint folder)")
        missing = _check_component(root, "unet", "config.json", True) + _check_component(root, "scheduler", "scheduler_config.json", False)
        is_zero123 = not (root / MARKER).is_file() and zero123.is_zero123(root)
        has_vae = (root / "vae").is_dir() or is_zero123  # Zero123 works in latents: its VAE is required
        if has_vae:
            missing += _check_component(root, "vae", "config.json", True)
        if is_zero123:
            missing += zero123.missing_parts(root)
        if missing:
            kind = "Zero-1-to-3" if is_zero123 else "diffusers"
            raise GuidanceError(f"{root}: not a complete {kind} checkpoint, missing {', '.join(missing)}")
        try:
            from diffusers import AutoencoderKL, DDPMScheduler, UNet2DConditionModel
        except ImportError as e:  # a dependency of the project: only a broken install gets here
            raise GuidanceError(f"{root}: diffusers does not import ({e})") from None
        config = json.loads((root / "scheduler" / "scheduler_config.json").read_text())
        self.prediction = config.get("prediction_type", "epsilon")
        if self.prediction not in ("epsilon", "v_prediction", "sample"):
            raise GuidanceError(f"{root / 'scheduler' / 'scheduler_config.json'}: prediction_type {self.prediction!r} is not supported")
        try:
            scheduler = DDPMScheduler.from_config(config)
            self.unet = UNet2DConditionModel.from_pretrained(root, subfolder="unet", local_files_only=True, torch_dtype=dtype, low_cpu_mem_usage=False)
            self.vae = AutoencoderKL.from_pretrained(root, subfolder="vae", local_files_only=True, torch_dtype=dtype, low_cpu_mem_usage=False) if has_vae else None
            self.reference_encoder = zero123.Zero123Encoder(root, dtype, self.unet.config.cross_attention_dim) if is_zero123 else None
        except Exception as e:  # diffusers raises many kinds; the user needs the first line of any
            raise GuidanceError(f"{root}: cannot load the checkpoint: {first_line(e)}") from None
        self.schedule = NoiseSchedule(scheduler.alphas_cumprod.to(torch.float64))
        marker = read_marker(root)
        self.conditioning = "zero123" if is_zero123 else "embedding" if marker is None else str(marker.get("conditioning"))
        if self.conditioning not in ("embedding", "reference+camera", "zero123"):
            raise GuidanceError(f"{root / MARKER}: conditioning {self.conditioning!r} is not supported")
        self.root = root
        self.text_encoder = self.tokenizer = None  # read on the first prompt (SD 1.5's encoder is 123M parameters)
        self.device, self.dtype = torch.device(device), dtype
        for module in (self.unet, self.vae):
            if module is not None:
                module.requires_grad_(False).eval().to(self.device)
        if self.reference_encoder is not None:
            self.reference_encoder.to(self.device)

    @property
    def sample_size(self) -> int:
        """The side of the images the model works on (pixels; for a latent model, the latents' side times the VAE's factor)."""
        size = int(self.unet.config.sample_size)
        if self.vae is not None:
            size *= 2 ** (len(self.vae.config.block_out_channels) - 1)
        return size

    def pixels(self, images: Tensor) -> Tensor:
        """[B, H, W, 3] in [0, 1] -> [B, 3, S, S] in [-1, 1] at the model's pixel size S."""
        x = images.permute(0, 3, 1, 2).to(self.dtype) * 2 - 1
        size = self.sample_size
        if x.shape[-2:] != (size, size):
            x = F.interpolate(x, size=(size, size), mode="bilinear", align_corners=False, antialias=True)
        return x

    def encode(self, images: Tensor) -> Tensor:
        """Renders [B, H, W, 3] in [0, 1] to the model's input space, differentiably: resized to
        the model's size, scaled to [-1, 1], and through the VAE's encoder (its mean) if any."""
        x = self.pixels(images)
        if self.vae is None:
            return x
        return self.vae.encode(x).latent_dist.mean * self.vae.config.scaling_factor

    def decode(self, x: Tensor) -> Tensor:
        """Model space back to images [B, 3, S, S] in [0, 1] (about: not clamped, so it stays
        differentiable everywhere), through the VAE's decoder for a latent model."""
        if self.vae is not None:
            x = self.vae.decode(x.to(self.dtype) / self.vae.config.scaling_factor).sample
        return (x + 1) / 2

    def unet_inputs(self, x_t: Tensor, condition: Any) -> tuple[Tensor, Tensor]:
        """(sample, encoder_hidden_states) for the UNet: ``x_t`` and the condition's embedding,
        or, for a reference-conditioned prior (:mod:`.prior`, or Zero123's
        :class:`~.zero123.Zero123Condition`), ``x_t`` with the reference view (Zero123: its
        latent) concatenated and the camera tokens (``None``: zeros, the unconditional prediction)."""
        x = x_t.to(self.dtype)
        if self.conditioning == "embedding":
            return x, self.embedding(condition, x.shape[0])
        if condition is None:
            reference = torch.zeros_like(x)
            tokens = torch.zeros(x.shape[0], 1, self.unet.config.cross_attention_dim, dtype=self.dtype, device=x.device)
        elif isinstance(condition, ReferenceCondition):
            reference, tokens = condition.reference.to(x), condition.tokens.to(x)
        else:
            raise TypeError("a reference-conditioned prior takes a ReferenceCondition (or None)")
        return torch.cat([x, reference.expand(x.shape[0], -1, -1, -1)], 1), tokens.expand(x.shape[0], -1, -1)

    @property
    def takes_reference(self) -> bool:
        """Whether the model is conditioned on a reference view and a camera change (else on an embedding)."""
        return self.conditioning != "embedding"

    @torch.no_grad()
    def encode_reference(self, reference: Tensor) -> EncodedReference:
        """What the model reads of a reference view [1, H, W, 3] in [0, 1] over white, once:
        the reference's side of every :meth:`reference_condition` (the view does not change
        during a run; Zero123's VAE and CLIP passes would otherwise run every step)."""
        if self.conditioning == "zero123":  # the latent's mode, not scaled: Zero123 was trained on it so
            image = reference[:1].to(self.device)
            latent = self.vae.encode(self.pixels(image)).latent_dist.mode()
            return EncodedReference(latent, self.reference_encoder.embed(image))
        return EncodedReference(self.encode(reference[:1]))

    @torch.no_grad()
    def reference_condition(self, reference: Tensor | EncodedReference, ref_elevation: Tensor, ref_azimuth: Tensor,
                            elevation: Tensor, azimuth: Tensor) -> ReferenceCondition:  # fmt: skip
        """The condition for views at ``elevation``/``azimuth`` [B] (degrees around the object,
        at the reference's distance) given the reference view (an image [1, H, W, 3] in [0, 1]
        over white, or :meth:`encode_reference`'s reading of it), seen at
        ``ref_elevation``/``ref_azimuth`` [1]."""
        n = elevation.shape[0]
        encoded = reference if isinstance(reference, EncodedReference) else self.encode_reference(reference)
        if self.conditioning == "zero123":
            camera = zero123.camera_vector(ref_elevation.expand(n), ref_azimuth.expand(n), elevation, azimuth)
            camera = camera.to(device=self.device, dtype=self.dtype)
            tokens = self.reference_encoder.tokens(encoded.embedding, camera)
            return zero123.Zero123Condition(encoded.image.expand(n, -1, -1, -1), tokens, camera)
        features = camera_features(ref_elevation.expand(n), ref_azimuth.expand(n), elevation, azimuth).to(encoded.image)
        return ReferenceCondition(encoded.image.expand(n, -1, -1, -1), camera_tokens(features))

    @torch.no_grad()
    def encode_prompt(self, text: str) -> Tensor:
        """[1, L, C]: a prompt through the checkpoint's CLIP tokenizer (``tokenizer/``, padded
        to its length) and text encoder (``text_encoder/``, its last hidden state), the
        condition a Stable Diffusion UNet cross-attends to; ``""`` is its unconditional one."""
        if self.conditioning != "embedding":
            raise GuidanceError(f"{self.root}: this prior is conditioned on a reference view and a camera, not on a prompt")
        if self.text_encoder is None:
            self._load_text_encoder()
        ids = self.tokenizer(text, padding="max_length", max_length=self.tokenizer.model_max_length, truncation=True,
                             return_tensors="pt").input_ids  # fmt: skip
        return self.text_encoder(ids.to(self.device))[0].to(self.dtype)

    def _load_text_encoder(self) -> None:
        root = self.root
        missing = _check_component(root, "text_encoder", "config.json", False)
        if not any((root / "text_encoder" / w).is_file() for w in ("model.safetensors", "pytorch_model.bin")):
            missing.append("text_encoder/model.safetensors")
        if not any((root / "tokenizer" / f).is_file() for f in ("tokenizer.json", "vocab.json")):
            missing.append("tokenizer/tokenizer.json (or vocab.json and merges.txt)")
        if missing:
            raise GuidanceError(f"{root}: a prompt needs the checkpoint's text encoder and tokenizer, missing {', '.join(missing)}")
        try:
            from transformers import CLIPTextModel, CLIPTokenizer

            self.tokenizer = CLIPTokenizer.from_pretrained(root / "tokenizer", local_files_only=True)
            self.text_encoder = CLIPTextModel.from_pretrained(root, subfolder="text_encoder", local_files_only=True,
                                                              torch_dtype=self.dtype)  # fmt: skip
        except Exception as e:  # transformers raises many kinds; the user needs the first line of any
            raise GuidanceError(f"{root}: cannot load the text encoder: {first_line(e)}") from None
        self.text_encoder.requires_grad_(False).eval().to(self.device)

    def embedding(self, condition: Any, batch: int) -> Tensor:
        """``encoder_hidden_states`` for a batch: ``condition`` ([L, C] broadcast, or [B, L, C]),
        or a zero embedding of length 1 for ``None``."""
        if condition is None:
            return torch.zeros(batch, 1, self.unet.config.cross_attention_dim, dtype=self.dtype, device=self.device)
        c = torch.as_tensor(condition, dtype=self.dtype, device=self.device)
        return c.expand(batch, *c.shape) if c.ndim == 2 else c

    def noise_from_output(self, out: Tensor, x_t: Tensor, t: Tensor) -> Tensor:
        """The noise prediction for the UNet's output ``out`` in its ``prediction_type``."""
        if self.prediction == "epsilon":
            return out
        alpha, sigma = self.schedule.coefficients(t, x_t)
        if self.prediction == "v_prediction":  # v = alpha eps - sigma x0
            return sigma * x_t + alpha * out
        return (x_t - alpha * out) / sigma  # sample: the clean image x0

    def training_target(self, x: Tensor, eps: Tensor, t: Tensor) -> Tensor:
        """What the UNet's output should be for ``x_t = alpha x + sigma eps`` (for adapting a copy of it)."""
        return self.schedule.training_target(self.prediction, x, eps, t)

    @torch.no_grad()
    def predict_noise(self, x_t: Tensor, t: Tensor, condition: Any = None) -> Tensor:
        sample, states = self.unet_inputs(x_t, condition)
        out = self.unet(sample, t.to(self.device), encoder_hidden_states=states).sample
        return self.noise_from_output(out.to(x_t.dtype), x_t, t)
