"""The radiance field's grid: its box, the occupancy bits and the alpha of a sample — what
the native steps (:mod:`.field`) and their float64 oracle (:mod:`.reference_field`) share."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

ALPHA_MIN = 1.0 / 255.0  # the compositing's rules (cuda/include/splatfield/common.h)
ALPHA_MAX = 0.99
TRANSMITTANCE_MIN = 1e-4
# Marching stops a ray a little after the compositing would, so that float differences
# between the marcher's alpha and the trainer's never drop a sample the compositing uses.
MARCH_STOP_T = 0.5 * TRANSMITTANCE_MIN


@dataclass(frozen=True)
class GridBox:
    lo: tuple[float, float, float]
    hi: tuple[float, float, float]
    res: tuple[int, int, int]  # vertices per axis

    def __post_init__(self) -> None:
        if any(r < 2 for r in self.res) or any(not h > l for l, h in zip(self.lo, self.hi)):
            raise ValueError(f"a grid needs >= 2 vertices per axis and hi > lo (got {self})")

    @property
    def scale(self) -> tuple[float, float, float]:
        """Vertices per world unit along each axis."""
        return tuple((r - 1) / (h - l) for r, l, h in zip(self.res, self.lo, self.hi))  # type: ignore[return-value]

    @property
    def cells(self) -> tuple[int, int, int]:
        return tuple(r - 1 for r in self.res)  # type: ignore[return-value]

    @property
    def voxel(self) -> float:
        """The largest cell side (world units)."""
        return max(1.0 / s for s in self.scale)

    def vertex_positions(self, device: torch.device | str = "cpu") -> Tensor:  # [X, Y, Z, 3]
        axes = [torch.linspace(l, h, r, device=device) for l, h, r in zip(self.lo, self.hi, self.res)]
        return torch.stack(torch.meshgrid(*axes, indexing="ij"), dim=-1)


def softplus_alphas(raw: Tensor, shift: float, interval: float) -> Tensor:
    """alpha = 1 - exp(-softplus(raw + shift) * interval) (the sample's length in the
    density's unit), as the marcher computes it."""
    return -torch.expm1(-torch.nn.functional.softplus(raw + shift) * interval)


def pack_bits(mask: Tensor) -> Tensor:
    """A bool tensor as bits, C order, bit i of byte i >> 3 (the occupancy layout)."""
    flat = mask.reshape(-1).to(torch.uint8)
    pad = (-flat.numel()) % 8
    if pad:
        flat = torch.cat([flat, flat.new_zeros(pad)])
    weights = torch.tensor([1, 2, 4, 8, 16, 32, 64, 128], dtype=torch.uint8, device=mask.device)
    return (flat.view(-1, 8) * weights).sum(dim=1, dtype=torch.uint8)


BLOCK_SHIFT = 3  # empty space is skipped a block of 8^3 cells at a time


def block_bits(cells: Tensor, shift: int = BLOCK_SHIFT) -> Tensor:
    """Packed bits over blocks of 2^shift cells per axis, set where any cell of ``cells``
    (bool [cx, cy, cz]) is: the marcher skips the blocks whose bit is clear."""
    b = 1 << shift
    pad = [(-n) % b for n in cells.shape]
    x = torch.nn.functional.pad(cells.to(torch.uint8), (0, pad[2], 0, pad[1], 0, pad[0]))
    X, Y, Z = (n // b for n in x.shape)
    return pack_bits(x.view(X, b, Y, b, Z, b).amax(dim=(1, 3, 5)) > 0)


def unpack_bits(bits: Tensor, shape: tuple[int, ...]) -> Tensor:
    n = 1
    for s in shape:
        n *= s
    shifts = torch.arange(8, dtype=torch.uint8, device=bits.device)
    return ((bits[:, None] >> shifts) & 1).reshape(-1)[:n].bool().reshape(shape)


@dataclass
class RaySamples:
    offsets: Tensor  # [R + 1] int64: ray r's samples are [offsets[r], offsets[r + 1])
    ts: Tensor  # [M] distance along the ray, increasing within a ray
    positions: Tensor  # [M, 3]

    @property
    def ray_indices(self) -> Tensor:  # [M]
        counts = self.offsets[1:] - self.offsets[:-1]
        return torch.repeat_interleave(torch.arange(counts.numel(), device=counts.device), counts)
