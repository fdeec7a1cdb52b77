"""The raw parameters of a set of 3D Gaussians (ARCHITECTURE.md conventions).

Stored raw and activated by exp (scales), normalisation (quaternions, w x y z) and sigmoid
(opacity). Colour is spherical harmonics: ``sh0`` [N,1,3] (RGB = 0.5 + C0 * sh0) and
``shN`` [N,K-1,3] for degrees 1..3.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import torch
from torch import Tensor

SH_C0 = 0.28209479177387814


@dataclass
class Gaussians:
    means: Tensor  # [N, 3]
    log_scales: Tensor  # [N, 3]
    quats: Tensor  # [N, 4] w x y z, unnormalised
    opacity_logits: Tensor  # [N]
    sh0: Tensor  # [N, 1, 3]
    shN: Tensor  # [N, K-1, 3], K = (degree+1)^2; may be [N, 0, 3]

    def __post_init__(self) -> None:
        N = self.means.shape[0]
        expected = {
            "means": (N, 3),
            "log_scales": (N, 3),
            "quats": (N, 4),
            "opacity_logits": (N,),
            "sh0": (N, 1, 3),
        }
        for name, shape in expected.items():
            if tuple(getattr(self, name).shape) != shape:
                raise ValueError(f"Gaussians.{name} must be {list(shape)}, got {list(getattr(self, name).shape)}")
        if self.shN.dim() != 3 or self.shN.shape[0] != N or self.shN.shape[2] != 3:
            raise ValueError(f"Gaussians.shN must be [N, K-1, 3], got {list(self.shN.shape)}")
        if self.shN.shape[1] + 1 not in (1, 4, 9, 16):
            raise ValueError(f"Gaussians.shN holds {self.shN.shape[1]} coefficients; expected 0, 3, 8 or 15")

    def __len__(self) -> int:
        return self.means.shape[0]

    @property
    def max_sh_degree(self) -> int:
        return int(round((self.shN.shape[1] + 1) ** 0.5)) - 1

    @property
    def sh(self) -> Tensor:  # [N, K, 3]
        return torch.cat([self.sh0, self.shN], dim=1)

    @property
    def device(self) -> torch.device:
        return self.means.device

    def to(self, device: torch.device | str | None = None, dtype: torch.dtype | None = None) -> Gaussians:
        return Gaussians(*(t.to(device=device, dtype=dtype) for t in self.tensors()))

    def tensors(self) -> tuple[Tensor, ...]:
        return (self.means, self.log_scales, self.quats, self.opacity_logits, self.sh0, self.shN)

    def detach(self) -> Gaussians:
        return Gaussians(*(t.detach() for t in self.tensors()))

    def requires_grad_(self, flag: bool = True) -> Gaussians:
        for t in self.tensors():
            t.requires_grad_(flag)
        return self

    def select(self, index: Tensor) -> Gaussians:
        return Gaussians(*(t[index] for t in self.tensors()))

    @classmethod
    def from_rgb(
        cls,
        means: Tensor,  # [N, 3]
        scales: Tensor,  # [N, 3] linear
        quats: Tensor,  # [N, 4]
        opacities: Tensor,  # [N] in (0, 1)
        rgb: Tensor,  # [N, 3] in [0, 1]
        sh_degree: int = 0,
    ) -> Gaussians:
        """Builds raw parameters from activated values (view-independent colour)."""
        N = means.shape[0]
        K = (sh_degree + 1) ** 2
        return cls(
            means=means,
            log_scales=torch.log(scales),
            quats=quats,
            opacity_logits=torch.logit(opacities),
            sh0=((rgb - 0.5) / SH_C0)[:, None, :],
            shN=torch.zeros(N, K - 1, 3, dtype=means.dtype, device=means.device),
        )

    def with_(self, **changes: Tensor) -> Gaussians:
        return replace(self, **changes)
