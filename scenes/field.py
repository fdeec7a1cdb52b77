"""A radiance field to look at: a sparse vertex grid of raw densities and spherical-
harmonics colour coefficients (Plenoxels-style, no network: docs/FIELD.md says why),
rendered by marching rays through its occupancy bitfield and compositing the samples with
:func:`splatfield.render.composite`.

A sample at p, direction d: sigma = softplus(density(p) + shift), alpha = 1 - exp(-sigma *
interval) (the sample's length in cells of the final grid), colour = sigmoid(sum_k Y_k(d) c_k(p)), density and c trilinear in the grid. The
occupancy has a bit per cell, set where some sample of the cell can reach alpha >= 1/255
(the largest of its 8 vertex densities does): skipping the other cells changes nothing
the compositing would have used.
"""

from __future__ import annotations

import copy
import math
from dataclasses import dataclass, replace
from typing import Sequence

import torch
from torch import Tensor

from splatfield.render import Cameras, RenderMeta, RenderOutput, RenderStats, composite, resolve_backend
from splatfield.render.field import (
    ALPHA_MIN, GridBox, RaySamples, block_bits, grid_sample, march_rays, pack_bits, render_rays, softplus_alphas,
)  # fmt: skip
from splatfield.render.reference import sh_basis

CHUNK_RAYS = 1 << 15  # rays marched at once when rendering whole images
EMPTY_RAW = -20.0  # raw density of vertices a growth adds where the old grid had none: alpha ~ 0
NEAR = 0.05  # no sample nearer the camera than this (world units)
PREVIEW_STEPS = 2.0  # a moving view's samples are this many times farther apart (docs/FIELD.md)


@dataclass
class FieldModel:
    """The field's tensors; ``density`` [N, 1] and ``color`` [N, 3 K] (SH coefficient k of
    channel c at 3 k + c) are the rows of the vertices ``index`` maps."""

    box: GridBox
    index: Tensor  # [X, Y, Z] int32, -1 = no row
    density: Tensor  # [N, 1] raw
    color: Tensor  # [N, 3 K] SH coefficients, or [N, F] the features of the MLP head
    occupancy: Tensor  # packed bits over the cells
    shift: float  # sigma = softplus(raw + shift), per `unit` of length
    unit: float  # the density's unit of length: the final grid's cell (world units)
    step_ratio: float  # sample spacing in cells
    max_sh_degree: int
    blocks: Tensor | None = None  # packed bits over blocks of cells (render.field.block_bits), None: none known empty
    mlp: torch.nn.Module | None = None  # the mlp head (features + direction encoding -> rgb logits), or SH colour
    envmap: Tensor | None = None  # [3, H, 2H] logits of the learned background (equirectangular), or None: fixed

    kind = "field"
    count_label = "grid vertices"

    def __post_init__(self) -> None:
        # the kernels trust the index (checked once here, for a checkpoint read from disk too)
        N = self.density.shape[0]
        if tuple(self.index.shape) != self.box.res or self.color.shape[0] != N:
            raise ValueError(f"a field needs index {list(self.box.res)} and tables of one length")
        if self.index.numel() and not (int(self.index.min()) >= -1 and int(self.index.max()) < N):
            raise ValueError(f"the field's index holds rows outside its table of {N}")
        if self.envmap is not None and not (self.envmap.dim() == 3 and self.envmap.shape[0] == 3
                                            and self.envmap.shape[2] == 2 * self.envmap.shape[1]):  # fmt: skip
            raise ValueError(f"a learned background is [3, H, 2H], not {list(self.envmap.shape)}")

    def __len__(self) -> int:
        return int(self.density.shape[0])

    @property
    def device(self) -> torch.device:
        return self.density.device

    @property
    def step(self) -> float:
        """Distance between samples along a ray (world units)."""
        return self.step_ratio * min(1.0 / s for s in self.box.scale)

    @property
    def interval(self) -> float:
        """A sample's length in the density's unit (the same alpha for the same raw density
        on every grid level, as the sample spacing shrinks with the cells)."""
        return self.step / self.unit

    def snapshot(self) -> FieldModel:
        return replace(self, density=self.density.detach().clone(), color=self.color.detach().clone(),
                       index=self.index.clone(), occupancy=self.occupancy.clone(),
                       blocks=None if self.blocks is None else self.blocks.clone(),
                       mlp=None if self.mlp is None else copy.deepcopy(self.mlp),
                       envmap=None if self.envmap is None else self.envmap.detach().clone())  # fmt: skip

    def preview(self) -> FieldModel:
        """The same field marched with PREVIEW_STEPS times longer steps (alphas follow the
        longer intervals): about that many times fewer samples, a little less sharp."""
        return replace(self, step_ratio=self.step_ratio * PREVIEW_STEPS)

    @property
    def parameters(self) -> list[Tensor]:
        """What training changes: the tables, the mlp head's weights, the learned background."""
        return ([self.density, self.color] + ([] if self.mlp is None else list(self.mlp.parameters()))
                + ([] if self.envmap is None else [self.envmap]))  # fmt: skip

    def points(self, limit: int = 100_000) -> Tensor:  # [n, 3]
        """Vertices with rows (at most ``limit``, evenly strided)."""
        pos = self.box.vertex_positions(self.device)[self.index >= 0]
        return pos[:: max(1, pos.shape[0] // limit)]

    # ------------------------------------------------------------------ occupancy

    def per_vertex(self, row_values: Tensor, missing: float | bool) -> Tensor:  # [N] -> [X, Y, Z]
        """``row_values`` at every vertex, ``missing`` where a vertex has no row (index -1; a
        table without rows is fine)."""
        return torch.cat([row_values.new_full((1,), missing), row_values])[(self.index + 1).long()]

    def vertex_raw_density(self) -> Tensor:  # [X, Y, Z], -inf where no row
        return self.per_vertex(self.density.detach()[:, 0], float("-inf"))

    def cell_alphas(self) -> Tensor:  # [X-1, Y-1, Z-1]
        """The largest alpha a sample of each cell can have (its densest vertex's; 0 where a
        vertex has no row)."""
        top = cell_corners_reduce(self.vertex_raw_density(), torch.maximum)
        present = cell_corners_reduce(self.index >= 0, torch.logical_and)
        return softplus_alphas(top, self.shift, self.interval) * present

    def occupied_cells(self) -> Tensor:  # [X-1, Y-1, Z-1] bool
        """Cells with all 8 vertices and a vertex density whose alpha reaches 1/255 (as
        ``cell_alphas() >= ALPHA_MIN``: alpha rises with the density, so the test can be made
        per row and the cells folded over bools, 4x faster than over floats)."""
        hot = self.per_vertex(softplus_alphas(self.density.detach()[:, 0], self.shift, self.interval) >= ALPHA_MIN, False)
        present = cell_corners_reduce(self.index >= 0, torch.logical_and)
        return cell_corners_reduce(hot, torch.logical_or) & present

    def update_occupancy(self) -> float:
        """Recomputes the bitfield; returns the occupied fraction of the cells."""
        occ = self.occupied_cells()
        self.occupancy = pack_bits(occ)
        self.blocks = block_bits(occ)
        return float(occ.float().mean())

    # ------------------------------------------------------------------ rendering

    def ray_background(self, dirs: Tensor, given: Tensor) -> Tensor:  # [R, 3]
        """What each ray sees past the field: the learned background in its direction, or
        ``given`` ([R, 3], the run's colour) when the background is fixed."""
        if self.envmap is None:
            return given
        d = dirs / dirs.norm(dim=-1, keepdim=True).clamp_min(1e-12)
        u = torch.atan2(d[:, 1], d[:, 0]) / math.pi  # around, [-1, 1]
        v = torch.asin(d[:, 2].clamp(-1.0, 1.0)) / (math.pi / 2)  # pole to pole, [-1, 1]
        grid = torch.stack([u, v], dim=-1).to(self.envmap.dtype)[None, None]
        texels = torch.nn.functional.grid_sample(self.envmap[None], grid, mode="bilinear", padding_mode="border",
                                                 align_corners=False)  # fmt: skip
        return torch.sigmoid(texels[0, :, 0].t())

    def march(self, origins: Tensor, dirs: Tensor, jitter: Tensor) -> RaySamples:
        return march_rays(self.occupancy, self.index, self.density.detach()[:, 0], origins, dirs, jitter, self.box,
                          near=NEAR, far=1e10, step=self.step, interval=self.interval,
                          shift=self.shift, blocks=self.blocks)  # fmt: skip

    def shade(self, samples: RaySamples, dirs: Tensor, background: Tensor, sh_degree: int | None = None
              ) -> tuple[Tensor, Tensor, Tensor]:  # fmt: skip
        """Colour [R, 3], alpha [R, 1] and depth [R, 1] of the rays' samples (differentiable
        in the tables)."""
        R = dirs.shape[0]
        degree = self.max_sh_degree if sh_degree is None else min(sh_degree, self.max_sh_degree)
        K = (degree + 1) ** 2
        rays = samples.ray_indices
        raw = grid_sample(self.index, self.density, samples.positions, self.box)[:, 0]
        alphas = softplus_alphas(raw, self.shift, self.interval)
        if self.mlp is not None:
            feats = grid_sample(self.index, self.color, samples.positions, self.box)
            rgb = torch.sigmoid(self.mlp(torch.cat([feats, sh_basis(self.max_sh_degree, dirs)[rays]], dim=1)))
        else:
            # the whole table is interpolated (a column slice would not carry the sparse gradient)
            coef = grid_sample(self.index, self.color, samples.positions, self.box).view(-1, self.color.shape[1] // 3, 3)
            basis = sh_basis(degree, dirs)[rays]  # [M, K]
            rgb = torch.sigmoid(torch.einsum("mk,mkc->mc", basis, coef[:, :K]))
        return composite(rays, alphas, rgb, samples.ts, R, background=background)

    def render_rays(self, origins: Tensor, dirs: Tensor, background: Tensor, jitter: Tensor | None = None,
                    sh_degree: int | None = None) -> tuple[Tensor, Tensor, Tensor, int]:  # fmt: skip
        """Marches and shades rays [R, 3]; returns colour, alpha, depth and the sample count."""
        if jitter is None:
            jitter = torch.full_like(origins[:, 0], 0.5)
        samples = self.march(origins, dirs, jitter)
        rgb, alpha, depth = self.shade(samples, dirs, self.ray_background(dirs, background), sh_degree)
        return rgb, alpha, depth, int(samples.ts.shape[0])

    def render(self, cameras: Cameras, *, background: Tensor | Sequence[float] | None = None,
               sh_degree: int | None = None) -> RenderOutput:  # fmt: skip
        cams = cameras.to(device=self.device, dtype=torch.float32)
        B, H, W = len(cams), cams.height, cams.width
        bg = torch.zeros(3, device=self.device) if background is None else torch.as_tensor(
            background, dtype=torch.float32, device=self.device).reshape(-1)[:3]  # fmt: skip
        origins, dirs = cams.generate_rays()
        origins, dirs = origins.reshape(-1, 3).contiguous(), dirs.reshape(-1, 3).contiguous()
        degree = self.max_sh_degree if sh_degree is None else min(sh_degree, self.max_sh_degree)
        fused = self.mlp is None and resolve_backend("auto", self.device) == "native"
        parts = []
        with torch.no_grad():
            for s in range(0, origins.shape[0], CHUNK_RAYS):
                o, d = origins[s : s + CHUNK_RAYS], dirs[s : s + CHUNK_RAYS]
                b = bg.expand(o.shape[0], 3)
                if fused:  # march, shade and composite in one native pass per ray
                    b = self.ray_background(d, b).contiguous()
                    parts.append(render_rays(self.occupancy, self.index, self.density.detach()[:, 0], self.color.detach(),
                                             o, d, torch.full_like(o[:, 0], 0.5), b, self.box, near=NEAR, far=1e10,
                                             step=self.step, interval=self.interval, shift=self.shift,
                                             sh_degree=degree, blocks=self.blocks))  # fmt: skip
                else:
                    parts.append(self.render_rays(o, d, b, sh_degree=degree)[:3])
        rgb, alpha, depth = (torch.cat(p).view(B, H, W, -1) for p in zip(*parts))
        return RenderOutput(rgb, alpha, depth, empty_meta(cams))


def cell_corners_reduce(v: Tensor, op) -> Tensor:  # [X, Y, Z] -> [X-1, Y-1, Z-1]
    """``op`` folded over each cell's 8 vertex values."""
    out = v[:-1, :-1, :-1]
    for c in range(1, 8):
        dx, dy, dz = (c >> 2) & 1, (c >> 1) & 1, c & 1
        out = op(out, v[dx : v.shape[0] - 1 + dx, dy : v.shape[1] - 1 + dy, dz : v.shape[2] - 1 + dz])
    return out


def empty_meta(cameras: Cameras | None) -> RenderMeta:
    """A field render has no Gaussians: empty per-Gaussian fields."""
    B = 1 if cameras is None else len(cameras)
    dev = None if cameras is None else cameras.device
    return RenderMeta(torch.zeros(B, 0, 2, device=dev), torch.zeros(B, 0, device=dev),
                      torch.zeros(B, 0, 2, dtype=torch.int32, device=dev), RenderStats(), cameras)  # fmt: skip
