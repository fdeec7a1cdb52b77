"""Float64 reference of the radiance field's native steps (:mod:`.field`): the test
oracle, written for clarity, not speed."""

from __future__ import annotations

import math

import torch
from torch import Tensor

from .grid import ALPHA_MAX, ALPHA_MIN, GridBox, RaySamples, softplus_alphas, unpack_bits


def corners(index: Tensor, points: Tensor, box: GridBox) -> tuple[Tensor, Tensor]:
    """Rows [M, 8] (-1: none) and trilinear weights [M, 8] of each point, corner c =
    (dx << 2 | dy << 1 | dz), positions clamped into the grid."""
    p = points.double()
    lo = torch.tensor(box.lo, dtype=torch.float64, device=p.device)
    scale = torch.tensor(box.scale, dtype=torch.float64, device=p.device)
    res = torch.tensor(box.res, device=p.device)
    u = torch.minimum(torch.clamp((p - lo) * scale, min=0.0), (res - 1).double())
    i0 = torch.minimum(torch.floor(u).long(), res - 2)
    f = u - i0.double()
    rows, weights = [], []
    for c in range(8):
        d = torch.tensor([(c >> 2) & 1, (c >> 1) & 1, c & 1], device=p.device)
        v = i0 + d
        rows.append(index.long()[v[:, 0], v[:, 1], v[:, 2]])
        weights.append(torch.where(d.bool(), f, 1.0 - f).prod(dim=1))
    return torch.stack(rows, dim=1), torch.stack(weights, dim=1)


def grid_sample(index: Tensor, table: Tensor, points: Tensor, box: GridBox) -> Tensor:
    """Differentiable (dense gradients) float64 interpolation of ``table`` at ``points``."""
    rows, w = corners(index, points, box)
    vals = table.double()[rows.clamp(min=0)] * (rows >= 0)[..., None]  # [M, 8, C]
    return (w[..., None] * vals).sum(dim=1)


def march_rays(occupancy: Tensor, index: Tensor, density: Tensor, origins: Tensor, dirs: Tensor, jitter: Tensor,
               box: GridBox, *, near: float, far: float, step: float, interval: float, shift: float,
               stop_T: float) -> RaySamples:  # fmt: skip
    """One ray at a time, every candidate sample at once: entry into the box, samples at
    (k + jitter) steps, kept where the cell is occupied and alpha >= 1/255, until the
    transmittance falls to ``stop_T``."""
    occ = unpack_bits(occupancy, box.cells)
    lo = torch.tensor(box.lo, dtype=torch.float64)
    hi = torch.tensor(box.hi, dtype=torch.float64)
    cells = torch.tensor(box.cells)
    scale = torch.tensor(box.scale, dtype=torch.float64)
    counts, all_ts, all_pos = [], [], []
    for o, d, j in zip(origins.double().cpu(), dirs.double().cpu(), jitter.double().cpu()):
        t0, t1 = near, far
        miss = False
        for a in range(3):
            if abs(d[a]) < 1e-12:
                miss |= bool(o[a] < lo[a] or o[a] > hi[a])
                continue
            ta, tb = sorted([((lo[a] - o[a]) / d[a]).item(), ((hi[a] - o[a]) / d[a]).item()])
            t0, t1 = max(t0, ta), min(t1, tb)
        if miss or not t0 < t1:
            counts.append(0)
            continue
        n = max(0, math.ceil((t1 - t0) / step - float(j)) + 1)
        t = t0 + (torch.arange(n, dtype=torch.float64) + j) * step
        t = t[t < t1]
        p = o + t[:, None] * d
        c = torch.minimum(torch.floor((p - lo) * scale).long().clamp(min=0), cells - 1)
        keep = occ[c[:, 0], c[:, 1], c[:, 2]]
        raw = grid_sample(index, density[:, None].double(), p, box)[:, 0]
        alpha = softplus_alphas(raw, shift, interval)
        keep &= alpha >= ALPHA_MIN
        T = torch.cumprod(torch.where(keep, 1.0 - alpha.clamp(max=ALPHA_MAX), torch.ones_like(alpha)), 0)
        stopped = torch.nonzero(keep & (T <= stop_T))
        if stopped.numel():
            keep[int(stopped[0]) + 1 :] = False
        counts.append(int(keep.sum()))
        all_ts.append(t[keep])
        all_pos.append(p[keep])
    offsets = torch.zeros(len(counts) + 1, dtype=torch.long)
    offsets[1:] = torch.cumsum(torch.tensor(counts, dtype=torch.long), 0)
    ts = torch.cat(all_ts) if all_ts else torch.zeros(0, dtype=torch.float64)
    pos = torch.cat(all_pos) if all_pos else torch.zeros(0, 3, dtype=torch.float64)
    dev = origins.device
    return RaySamples(offsets.to(dev), ts.to(dev), pos.reshape(-1, 3).to(dev))


def sparse_adam_(param: Tensor, exp_avg: Tensor, exp_avg_sq: Tensor, rows: Tensor, grads: Tensor, lr: Tensor,
                 beta1: float, beta2: float, eps: float, bias1: float, bias2: float) -> None:  # fmt: skip
    rows = rows.long()
    g = grads.to(param.dtype)
    finite = torch.isfinite(g)
    g = torch.where(finite, g, torch.zeros_like(g))
    m = torch.where(finite, beta1 * exp_avg[rows] + (1 - beta1) * g, exp_avg[rows])
    v = torch.where(finite, beta2 * exp_avg_sq[rows] + (1 - beta2) * g * g, exp_avg_sq[rows])
    exp_avg[rows] = m
    exp_avg_sq[rows] = v
    upd = lr.to(param.dtype) * (m / bias1) / ((v / bias2).sqrt() + eps)
    param[rows] = param[rows] - torch.where(finite, upd, torch.zeros_like(upd))
