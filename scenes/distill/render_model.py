"""The second model of VSD and ESD: the guidance's UNet adapted online to the current
renders, conditioned on their camera (METHODS.md §4, ``eps_q(x_t; camera)``).

Two adapters (``adapter``):

- ``lora``: low-rank updates ``W + (scale/rank) B A`` on the attention projections
  (``to_q``, ``to_k``, ``to_v``, ``to_out.0``) of the guidance's own UNet, switched on only
  while this model predicts or trains, so the pretrained predictions stay exactly the
  pretrained model's and the large UNet is held once;
- ``copy``: a trainable copy of the whole UNet (for small models such as a prior trained
  here).

The camera enters as an additive term on the UNet's timestep embedding (a small MLP of the
camera's 3×4 camera-to-world entries, as diffusers' class embeddings do); ``camera=None``
uses a learned "no camera" vector, trained by dropping the camera of ``camera_dropout`` of
the samples, so that ``predict_noise(x_t, t, None)`` models the renders over all cameras
(ESD's camera-free branch). The adapters start as the identity (``B``, the MLP's last layer
and the no-camera vector are zero): at the start this model predicts what the guidance does.
It trains with its own Adam on the standard denoising loss of the renders it is given
(detached: nothing flows back into the scene).
"""

from __future__ import annotations

import copy
from contextlib import contextmanager
from typing import Any, Iterator, Literal

import torch
from torch import Tensor, nn

from .diffusers_guidance import DiffusersGuidance

Adapter = Literal["lora", "copy"]
CAMERA_FEATURES = 12  # the camera-to-world matrix's first three rows


class LoRALinear(nn.Module):
    """``base(x) + scale/rank * up(down(x))`` while ``enabled``; ``base(x)`` otherwise."""

    def __init__(self, base: nn.Linear, rank: int, scale: float = 1.0, generator: torch.Generator | None = None) -> None:
        super().__init__()
        self.base = base
        self.down = nn.Linear(base.in_features, rank, bias=False, device=base.weight.device, dtype=base.weight.dtype)
        self.up = nn.Linear(rank, base.out_features, bias=False, device=base.weight.device, dtype=base.weight.dtype)
        with torch.no_grad():  # drawn on the CPU from ``generator``: the same start on any device
            self.down.weight.copy_(torch.randn(self.down.weight.shape, generator=generator) / rank)
        nn.init.zeros_(self.up.weight)
        self.scaling = scale / rank
        self.enabled = False

    def forward(self, x: Tensor) -> Tensor:
        out = self.base(x)
        return out + self.scaling * self.up(self.down(x)) if self.enabled else out


def add_lora(unet: nn.Module, rank: int, generator: torch.Generator | None = None) -> list[LoRALinear]:
    """Wraps the projections of every attention block of ``unet`` (``to_q``, ``to_k``,
    ``to_v`` and ``to_out[0]``, diffusers' ``Attention``) in a disabled :class:`LoRALinear`."""
    layers = []
    for module in list(unet.modules()):
        if not all(hasattr(module, name) for name in ("to_q", "to_k", "to_v", "to_out")):
            continue
        for name in ("to_q", "to_k", "to_v"):
            base = getattr(module, name)
            if isinstance(base, nn.Linear):
                layers.append(LoRALinear(base, rank, generator=generator))
                setattr(module, name, layers[-1])
        if isinstance(module.to_out, nn.ModuleList) and isinstance(module.to_out[0], nn.Linear):
            layers.append(LoRALinear(module.to_out[0], rank, generator=generator))
            module.to_out[0] = layers[-1]
    if not layers:
        raise ValueError("the UNet has no attention projections to adapt (to_q, to_k, to_v, to_out)")
    return layers


class RenderModel:
    def __init__(
        self, guidance: DiffusersGuidance, *, adapter: Adapter = "lora", rank: int = 4, lr: float = 1e-3,
        camera_dropout: float = 0.1, condition: Any = None, generator: torch.Generator | None = None, seed: int = 0,
    ) -> None:  # fmt: skip
        """``seed`` draws the adapters' start (the same model every time); ``generator`` the
        timesteps, noise and camera dropout of its training steps."""
        if not 0.0 <= camera_dropout < 1.0:
            raise ValueError(f"camera dropout {camera_dropout} is outside [0, 1)")
        self.guidance, self.schedule, self.condition = guidance, guidance.schedule, condition
        self.camera_dropout, self.generator = camera_dropout, generator
        device, dtype = guidance.device, guidance.dtype
        if adapter == "lora":
            self.unet = guidance.unet
            self.lora = add_lora(self.unet, rank, torch.Generator().manual_seed(seed))
            trainable = [p for layer in self.lora for p in (*layer.down.parameters(), *layer.up.parameters())]
        elif adapter == "copy":
            self.unet = copy.deepcopy(guidance.unet).requires_grad_(True)
            self.lora = []
            trainable = list(self.unet.parameters())
        else:
            raise ValueError(f"unknown adapter {adapter!r}")
        width = self.unet.time_embedding.linear_2.out_features
        self.camera_mlp = nn.Sequential(nn.Linear(CAMERA_FEATURES, width), nn.SiLU(), nn.Linear(width, width)).to(device, dtype)
        with torch.no_grad():
            first = torch.randn(width, CAMERA_FEATURES, generator=torch.Generator().manual_seed(seed + 1))
            self.camera_mlp[0].weight.copy_(first / CAMERA_FEATURES**0.5)
            for t in (self.camera_mlp[0].bias, self.camera_mlp[2].weight, self.camera_mlp[2].bias):
                t.zero_()
        self.no_camera = nn.Parameter(torch.zeros(width, device=device, dtype=dtype))
        self.parameters = [*trainable, *self.camera_mlp.parameters(), self.no_camera]
        for p in self.parameters:
            p.requires_grad_(True)
        self.optimizer = torch.optim.Adam(self.parameters, lr=lr)
        self._camera_term: Tensor | None = None
        self.unet.time_embedding.register_forward_hook(self._add_camera)

    # ------------------------------------------------------------------ conditioning

    def _add_camera(self, module: nn.Module, inputs: Any, output: Tensor) -> Tensor | None:
        return None if self._camera_term is None else output + self._camera_term

    def camera_term(self, camera: Tensor | None, batch: int, drop: Tensor | None = None) -> Tensor:
        """[B, width]: the MLP of each camera ([B, 3, 4] or [B, 4, 4] camera-to-world, or
        [B, 12]), the no-camera vector where ``camera`` is None or ``drop`` is set."""
        if camera is None:
            return self.no_camera.expand(batch, -1)
        features = camera[..., :3, :4].reshape(batch, CAMERA_FEATURES) if camera.ndim == 3 else camera
        term = self.camera_mlp(features.to(self.no_camera))
        return term if drop is None else torch.where(drop[:, None], self.no_camera.expand(batch, -1), term)

    @contextmanager
    def _active(self, term: Tensor) -> Iterator[None]:
        for layer in self.lora:
            layer.enabled = True
        self._camera_term = term
        try:
            yield
        finally:
            for layer in self.lora:
                layer.enabled = False
            self._camera_term = None

    def _raw(self, x_t: Tensor, t: Tensor, term: Tensor) -> Tensor:
        sample, states = self.guidance.unet_inputs(x_t, self.condition)
        with self._active(term):
            return self.unet(sample, t, encoder_hidden_states=states).sample

    # ------------------------------------------------------------------ use and training

    @torch.no_grad()
    def predict_noise(self, x_t: Tensor, t: Tensor, camera: Tensor | None = None) -> Tensor:
        raw = self._raw(x_t, t, self.camera_term(camera, x_t.shape[0]))
        return self.guidance.noise_from_output(raw.to(x_t.dtype), x_t, t)

    def train_step(self, renders: Tensor, camera: Tensor) -> float:
        """One Adam step of the denoising loss on ``renders`` (model space, detached) taken by
        ``camera``; returns the loss."""
        x = renders.detach()
        B = x.shape[0]
        t = torch.randint(0, self.schedule.steps, (B,), generator=self.generator).to(x.device)
        eps = torch.randn(x.shape, generator=self.generator, dtype=x.dtype).to(x.device)
        drop = torch.rand(B, generator=self.generator).to(x.device) < self.camera_dropout
        x_t = self.schedule.add_noise(x, t, eps)
        raw = self._raw(x_t, t, self.camera_term(camera, B, drop))
        loss = (raw.to(x.dtype) - self.guidance.training_target(x, eps, t)).square().mean()
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        self.optimizer.step()
        return loss.item()

    def state_dict(self) -> dict:
        return {"parameters": [p.detach().clone() for p in self.parameters], "optimizer": copy.deepcopy(self.optimizer.state_dict())}

    def load_state_dict(self, state: dict) -> None:
        if len(state["parameters"]) != len(self.parameters) or any(
            a.shape != b.shape for a, b in zip(state["parameters"], self.parameters)
        ):
            raise ValueError("the saved render model is for another UNet or adapter")
        with torch.no_grad():
            for p, v in zip(self.parameters, state["parameters"]):
                p.copy_(v)
        self.optimizer.load_state_dict(state["optimizer"])

