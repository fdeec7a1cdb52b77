"""The radiance field's native steps: a sparse vertex grid interpolated at points (with
a sparse gradient), rays marched through an occupancy bitfield, and Adam on the grid rows
a step touched. The compositing of the samples is :func:`splatfield.render.composite`,
shared with nothing else than its rules: alpha below 1/255 is skipped, a ray stops before
its transmittance falls to 1e-4.

A grid (:class:`GridBox`) has ``res`` vertices per axis spanning ``[lo, hi]``; ``index``
[X, Y, Z] int32 maps a vertex to a row of a table [N, C] or to -1 (no row: zero). Cells
are the boxes between vertices; the occupancy is one bit per cell (:func:`pack_bits`).
Native kernels run where they are built (CPU, CUDA); elsewhere the float64 reference of
:mod:`.reference_field` (slow, for tests) stands in.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from .composite import expected_depth
from .grid import (  # noqa: F401  (re-exported: the field's API is this module)
    ALPHA_MAX,
    ALPHA_MIN,
    BLOCK_SHIFT,
    MARCH_STOP_T,
    TRANSMITTANCE_MIN,
    GridBox,
    RaySamples,
    block_bits,
    pack_bits,
    softplus_alphas,
    unpack_bits,
)  # fmt: skip
from .rasterize import Backend, resolve_backend


def _check_finite(t: Tensor, what: str) -> None:
    if t.numel() and not bool(torch.isfinite(t).all()):
        raise ValueError(f"{what} contain NaN or Inf")


def _blocks_or_none_empty(blocks: Tensor | None, box: GridBox, block_shift: int, device: torch.device) -> Tensor:
    """``blocks`` (contiguous), or bits saying no block is known empty (nothing skipped)."""
    if blocks is not None:
        return blocks.contiguous()
    n = math.prod(-(-c // (1 << block_shift)) for c in box.cells)
    return torch.full(((n + 7) // 8,), 255, dtype=torch.uint8, device=device)


class _GridSample(torch.autograd.Function):
    @staticmethod
    def forward(ctx, table, index, points, lo, scale):
        ctx.save_for_backward(index, points)
        ctx.geom = (lo, scale, table.shape[0])
        return torch.ops.splatfield.grid_sample_fwd(index, table, points, lo, scale)

    @staticmethod
    def backward(ctx, v_out):
        index, points = ctx.saved_tensors
        lo, scale, N = ctx.geom
        rows, grads = torch.ops.splatfield.grid_sample_bwd(index, N, points, v_out.contiguous(), lo, scale)
        # the gradient of the rows the samples touched (distinct, ascending: coalesced)
        grad = torch.sparse_coo_tensor(rows[None], grads, (N, grads.shape[1]), is_coalesced=True,
                                       check_invariants=False)
        return grad, None, None, None, None


def grid_sample(index: Tensor, table: Tensor, points: Tensor, box: GridBox, *, backend: Backend = "auto") -> Tensor:
    """The table's rows interpolated trilinearly at ``points`` [M, 3] -> [M, C]. The gradient
    with respect to ``table`` is sparse (the rows the points touched)."""
    if table.dim() != 2 or points.dim() != 2 or points.shape[1] != 3 or tuple(index.shape) != box.res:
        raise ValueError(f"grid_sample needs table [N, C], points [M, 3] and index {list(box.res)}")
    _check_finite(points, "points")
    lo, scale = list(box.lo), list(box.scale)
    if resolve_backend(backend, table.device) == "native":
        return _GridSample.apply(table, index.int().contiguous(), points.float().contiguous(), lo, scale)
    from . import reference_field

    return reference_field.grid_sample(index, table, points, box)


def march_rays(
    occupancy: Tensor,  # packed bits over the cells
    index: Tensor,
    density: Tensor,  # [N] raw density per row
    origins: Tensor,  # [R, 3]
    dirs: Tensor,  # [R, 3] unit
    jitter: Tensor,  # [R] in [0, 1)
    box: GridBox,
    *,
    near: float,
    far: float,
    step: float,
    interval: float,
    shift: float,
    stop_T: float = MARCH_STOP_T,
    blocks: Tensor | None = None,
    block_shift: int = BLOCK_SHIFT,
    backend: Backend = "auto",
) -> RaySamples:
    """Samples every ``step`` (world units) along each ray inside the box (the first at
    ``jitter`` steps), in occupied cells, whose alpha (:func:`softplus_alphas` of ``interval``,
    the step in the density's unit) reaches 1/255, until the ray's transmittance falls to
    ``stop_T``: exactly the samples the compositing would use. ``blocks``
    (:func:`block_bits` of the occupied cells) lets it skip empty blocks whole; it changes
    which samples are visited, not which are kept."""
    if origins.dim() != 2 or origins.shape[1] != 3 or dirs.shape != origins.shape or jitter.shape != origins.shape[:1]:
        raise ValueError("march_rays needs origins [R, 3], dirs [R, 3] and jitter [R]")
    _check_finite(origins, "ray origins")
    _check_finite(dirs, "ray directions")
    if not (step > 0 and far >= near):
        raise ValueError(f"march_rays needs step > 0 and far >= near (got step {step}, near {near}, far {far})")
    if resolve_backend(backend, origins.device) == "native":
        blocks = _blocks_or_none_empty(blocks, box, block_shift, occupancy.device)
        offsets, ts, positions = torch.ops.splatfield.march_rays(
            occupancy.contiguous(), blocks, block_shift, index.int().contiguous(), density.float().contiguous(),
            origins.float().contiguous(), dirs.float().contiguous(), jitter.float().contiguous(),
            list(box.lo), list(box.scale), near, far, step, interval, shift, stop_T,
        )  # fmt: skip
        return RaySamples(offsets, ts, positions)
    from . import reference_field

    return reference_field.march_rays(occupancy, index, density, origins, dirs, jitter, box, near=near, far=far,
                                      step=step, interval=interval, shift=shift, stop_T=stop_T)  # fmt: skip


def render_rays(
    occupancy: Tensor, index: Tensor, density: Tensor, color: Tensor, origins: Tensor, dirs: Tensor, jitter: Tensor,
    background: Tensor, box: GridBox, *, near: float, far: float, step: float, interval: float, shift: float,
    sh_degree: int, blocks: Tensor | None = None, block_shift: int = BLOCK_SHIFT,
) -> tuple[Tensor, Tensor, Tensor]:
    """Forward only, one native pass per ray: the samples of :func:`march_rays`, coloured
    sigmoid(sum_k Y_k(d) c_k(p)) (``color`` [N, 3 K], channel c of coefficient k at 3 k + c)
    and composited with :func:`composite`'s step. Returns colour [R, 3], alpha [R, 1] and
    depth [R, 1] (the expected distance where alpha > 0). Needs the native kernels."""
    if origins.dim() != 2 or origins.shape[1] != 3 or dirs.shape != origins.shape or background.shape != origins.shape:
        raise ValueError("render_rays needs origins [R, 3], dirs [R, 3] and background [R, 3]")
    _check_finite(origins, "ray origins")
    _check_finite(dirs, "ray directions")
    blocks = _blocks_or_none_empty(blocks, box, block_shift, occupancy.device)
    rgb, depth_acc, alpha = torch.ops.splatfield.field_render(
        occupancy.contiguous(), blocks, block_shift, index.int().contiguous(), density.float().contiguous(),
        color.float().contiguous(), origins.float().contiguous(), dirs.float().contiguous(),
        jitter.float().contiguous(), background.float().contiguous(), list(box.lo), list(box.scale), near, far, step,
        interval, shift, sh_degree,
    )  # fmt: skip
    return rgb, alpha[:, None], expected_depth(depth_acc[:, None], alpha[:, None])


def sparse_adam_(param: Tensor, exp_avg: Tensor, exp_avg_sq: Tensor, rows: Tensor, grads: Tensor, lr: Tensor,
                 *, betas: tuple[float, float], eps: float, step: int, backend: Backend = "auto") -> None:  # fmt: skip
    """Adam on ``rows`` of ``param`` [N, C] in place (their moments too; other rows keep
    theirs), one learning rate per channel ``lr`` [C], bias corrections of ``step``."""
    b1, b2 = betas
    bias1, bias2 = 1.0 - b1**step, 1.0 - b2**step
    if resolve_backend(backend, param.device) == "native":
        torch.ops.splatfield.sparse_adam_(param, exp_avg, exp_avg_sq, rows.long().contiguous(), grads.float().contiguous(),
                                          lr.float().contiguous(), b1, b2, eps, bias1, bias2)  # fmt: skip
        return
    from . import reference_field

    reference_field.sparse_adam_(param, exp_avg, exp_avg_sq, rows, grads, lr, b1, b2, eps, bias1, bias2)
