"""The radiance field's native steps (render/field.py): interpolation of a sparse vertex
grid and its sparse table gradient, ray marching through the occupancy bitfield, the lazy
Adam of the grid rows and the bit packing, each against the float64 reference of
render/reference_field.py; the reference against finite differences; and the marcher's
promise that skipping empty cells and stopping early change nothing the compositing uses."""

from __future__ import annotations

import math

import pytest
import torch
from splatfield.render import composite
from splatfield.render import field as F
from splatfield.render import reference_field as RF
from splatfield.scenes.field import FieldModel, cell_corners_reduce

# float32 trilinear interpolation of O(1) values: 8 products and a sum, a few ulps each
# (the largest error seen is ~7e-7)
FWD_ATOL = 1e-5
# the table gradient sums w * v_out over up to a few hundred points per row: relative to its
# largest entry (seen: ~1e-7)
GRAD_RTOL = 1e-5
# the float64 reference at a vertex: u = (p - lo) * scale lands within an ulp of the integer
VERTEX_ATOL_F64 = 1e-12
# marching in float32 against float64 along rays a few world units long: t and positions
# agree to a few ulps of t (seen: ~4e-7)
MARCH_ATOL = 1e-5
# A sample whose cell boundary, alpha threshold, box exit or stopping transmittance lies
# within float32 error of the decision may go one way natively and the other in float64;
# with continuous random inputs that has probability ~1e-6 per decision, so almost every
# ray must agree exactly. A ray that disagrees may differ by at most one sample.
MAX_DIFFERING_RAY_FRACTION = 0.02
# a returned position may sit outside the box by the float32 rounding of o + t d
BOX_TOL = 1e-5
# marched (float32 positions) vs every fixed-step sample (float64): rgb/alpha differ by the
# positions' rounding propagated through the density (seen: ~3e-6); depth in world units
COMPOSITE_ATOL = 1e-4
# the fused forward (march, shade, composite in one pass) against the differentiable path
# (the same float32 samples, colours summed in another order): a few ulps of O(1) values;
# depth is in world units (a few)
FUSED_ATOL = 1e-5
# native float32 Adam against the float64 reference after a few steps of lr <= 0.1
ADAM_ATOL = 1e-5
# the marcher's alpha vs torch's softplus/expm1 of the same float32 raw density: an ulp or two
ALPHA_RTOL = 1e-5
# consecutive samples of a ray are whole steps apart: (t_j - t_i) / step within float32
# rounding of t (a few units) over a step of ~0.05
STEP_GAP_TOL = 1e-3


# ---------------------------------------------------------------------------- helpers


def random_grid(gen: torch.Generator, res, lo, hi, hole_fraction: float, channels: int, spare_rows: int = 3):
    """A grid with a random share of vertices without rows (-1), rows in random order, and
    ``spare_rows`` table rows no vertex maps to."""
    box = F.GridBox(tuple(lo), tuple(hi), tuple(res))
    holes = torch.rand(box.res, generator=gen) < hole_fraction
    n = int((~holes).sum())
    index = torch.full(box.res, -1, dtype=torch.int32)
    index[~holes] = torch.randperm(n + spare_rows, generator=gen)[:n].int()
    table = torch.randn(n + spare_rows, channels, generator=gen)
    return box, index, table


def box_tensors(box: F.GridBox, dtype=torch.float32):
    return torch.tensor(box.lo, dtype=dtype), torch.tensor(box.hi, dtype=dtype)


def points_around(gen: torch.Generator, box: F.GridBox, m: int, margin: float = 0.25):
    """Uniform in the box grown by ``margin`` of its size per side: about half outside."""
    lo, hi = box_tensors(box)
    return lo - margin * (hi - lo) + (1 + 2 * margin) * (hi - lo) * torch.rand(m, 3, generator=gen)


def random_rays(gen: torch.Generator, box: F.GridBox, r: int):
    """A quarter of each: from outside aimed into the box, starting inside in any direction,
    axis-parallel (some passing beside the box), and aimed away from the box (missing it)."""
    lo, hi = box_tensors(box)
    size = hi - lo
    q = r // 4
    o1 = lo - size + 3 * size * torch.rand(q, 3, generator=gen)
    d1 = lo + size * torch.rand(q, 3, generator=gen) - o1
    o2 = lo + size * torch.rand(q, 3, generator=gen)
    d2 = torch.randn(q, 3, generator=gen)
    axis = torch.randint(0, 3, (q,), generator=gen)
    sign = torch.where(torch.rand(q, generator=gen) < 0.5, -1.0, 1.0)
    o3 = lo - 0.2 * size + 1.4 * size * torch.rand(q, 3, generator=gen)  # some beside the box
    o3[torch.arange(q), axis] = torch.where(sign > 0, lo[axis] - 0.5, hi[axis] + 0.5)
    d3 = torch.zeros(q, 3)
    d3[torch.arange(q), axis] = sign
    n4 = r - 3 * q
    centre = (lo + hi) / 2
    away = torch.nn.functional.normalize(torch.randn(n4, 3, generator=gen), dim=-1)
    o4 = centre + away * (size.norm() + 1.0)
    d4 = away + 0.1 * torch.randn(n4, 3, generator=gen)
    origins = torch.cat([o1, o2, o3, o4])
    dirs = torch.nn.functional.normalize(torch.cat([d1, d2, d3, d4]), dim=-1)
    jitter = torch.rand(r, generator=gen)
    return origins.contiguous(), dirs.contiguous(), jitter


def per_ray(samples: F.RaySamples, r: int):
    a, b = int(samples.offsets[r]), int(samples.offsets[r + 1])
    return samples.ts[a:b], samples.positions[a:b]


def occupied_of_positions(bits: torch.Tensor, box: F.GridBox, p: torch.Tensor) -> torch.Tensor:
    """The bit of each position's cell, computed as the marcher does (float32, clamped)."""
    lo = torch.tensor(box.lo, dtype=torch.float32)
    scale = torch.tensor(box.scale, dtype=torch.float32)
    cells = torch.tensor(box.cells)
    c = torch.minimum(torch.floor((p - lo) * scale).long().clamp(min=0), cells - 1)
    occ = F.unpack_bits(bits, box.cells)
    return occ[c[:, 0], c[:, 1], c[:, 2]]


# ---------------------------------------------------------------------------- grid_sample

GRID_CASES = [
    # seed, vertices per axis, channels, points, share of vertices without a row
    (0, (2, 2, 2), 1, 1, 0.0),
    (1, (5, 3, 7), 1, 60, 0.3),
    (2, (6, 4, 5), 27, 200, 0.3),
    (3, (4, 4, 4), 3, 0, 0.2),
    (4, (9, 2, 3), 27, 400, 0.5),
    (5, (3, 8, 4), 4, 300, 0.0),
]
ANISO = ((-1.0, -0.5, 0.2), (1.5, 0.5, 1.0))  # a box whose cells are far from cubic


def sample_both(seed, res, channels, m, holes):
    gen = torch.Generator().manual_seed(seed)
    box, index, table = random_grid(gen, res, *ANISO, holes, channels)
    points = points_around(gen, box, m)
    v_out = torch.randn(m, channels, generator=gen)
    nat_t = table.clone().requires_grad_()
    nat = F.grid_sample(index, nat_t, points, box, backend="native")
    (nat * v_out).sum().backward()
    ref_t = table.double().requires_grad_()
    ref = RF.grid_sample(index, ref_t, points, box)
    (ref * v_out.double()).sum().backward()
    return box, index, points, nat.detach(), nat_t.grad, ref.detach(), ref_t.grad


@pytest.mark.parametrize("seed,res,channels,m,holes", GRID_CASES)
def test_grid_sample_native_matches_reference(native, seed, res, channels, m, holes):
    _, _, _, nat, nat_grad, ref, ref_grad = sample_both(seed, res, channels, m, holes)
    assert nat.shape == (m, channels) and nat.dtype == torch.float32
    if m:
        assert (nat.double() - ref).abs().max().item() <= FWD_ATOL
    assert nat_grad.is_sparse and nat_grad.shape == ref_grad.shape
    dense = nat_grad.to_dense().double()
    scale = max(ref_grad.abs().max().item(), 1.0) if ref_grad.numel() else 1.0
    assert (dense - ref_grad).abs().max().item() <= GRAD_RTOL * scale
    if m == 0:
        assert nat_grad._nnz() == 0


@pytest.mark.parametrize("seed,res,channels,m,holes", [c for c in GRID_CASES if c[3] > 0])
def test_grid_sample_gradient_is_coalesced_over_the_touched_rows(native, seed, res, channels, m, holes):
    box, index, points, _, nat_grad, _, _ = sample_both(seed, res, channels, m, holes)
    rows = nat_grad._indices()[0]
    assert rows.numel() < 2 or bool((rows[1:] > rows[:-1]).all()), "rows must be distinct and ascending"
    corner_rows, _ = RF.corners(index, points, box)
    touched = torch.unique(corner_rows[corner_rows >= 0])  # sorted
    assert torch.equal(rows, touched)
    assert nat_grad._values().shape == (touched.numel(), channels)
    # coalescing it again changes nothing
    again = torch.sparse_coo_tensor(
        nat_grad._indices(), nat_grad._values(), nat_grad.shape, check_invariants=True
    ).coalesce()
    assert torch.equal(again.indices(), nat_grad._indices()) and torch.equal(again.values(), nat_grad._values())
    # and the gradient straight from autograd (not accumulated into .grad) carries the flag
    table = torch.randn(int(index.max()) + 4, channels, requires_grad=True)
    out = F.grid_sample(index, table, points, box, backend="native")
    (g,) = torch.autograd.grad(out.sum(), table)
    assert g.is_sparse and g.is_coalesced()


def test_reference_grid_sample_gradcheck():
    gen = torch.Generator().manual_seed(11)
    box, index, table = random_grid(gen, (3, 4, 3), *ANISO, 0.25, 2)
    points = points_around(gen, box, 12).double()
    t = table.double().requires_grad_()
    assert torch.autograd.gradcheck(lambda tab: RF.grid_sample(index, tab, points, box), (t,), eps=1e-6,
                                    atol=1e-8, rtol=1e-6)  # fmt: skip


@pytest.mark.parametrize("seed", [0, 1])
def test_interpolation_is_exact_at_vertices_and_linear_along_edges(native, seed):
    gen = torch.Generator().manual_seed(seed)
    box, index, table = random_grid(gen, (4, 3, 5), *ANISO, 0.3, 3)
    lo = torch.tensor(box.lo, dtype=torch.float64)
    step = 1.0 / torch.tensor(box.scale, dtype=torch.float64)
    ijk = torch.stack(torch.meshgrid(*[torch.arange(r) for r in box.res], indexing="ij"), -1).reshape(-1, 3)
    vertices = lo + ijk.double() * step
    rows = index[ijk[:, 0], ijk[:, 1], ijk[:, 2]].long()
    expect = torch.where((rows >= 0)[:, None], table.double()[rows.clamp(min=0)], 0.0)
    ref = RF.grid_sample(index, table.double(), vertices, box)
    assert (ref - expect).abs().max().item() <= VERTEX_ATOL_F64
    nat = F.grid_sample(index, table, vertices.float(), box, backend="native")
    assert (nat.double() - expect).abs().max().item() <= FWD_ATOL
    # along every edge from a vertex in each axis: (1 - s) a + s b (a missing end counts 0)
    s = torch.linspace(0, 1, 9, dtype=torch.float64)
    for axis in range(3):
        ok = ijk[:, axis] < box.res[axis] - 1
        start = ijk[ok]
        end = start.clone()
        end[:, axis] += 1
        a = expect[ok]
        b_rows = index[end[:, 0], end[:, 1], end[:, 2]].long()
        b = torch.where((b_rows >= 0)[:, None], table.double()[b_rows.clamp(min=0)], 0.0)
        p0, p1 = lo + start.double() * step, lo + end.double() * step
        pts = (p0[:, None] + s[None, :, None] * (p1 - p0)[:, None]).reshape(-1, 3)
        want = ((1 - s)[None, :, None] * a[:, None] + s[None, :, None] * b[:, None]).reshape(-1, 3)
        assert (RF.grid_sample(index, table.double(), pts, box) - want).abs().max().item() <= VERTEX_ATOL_F64
        nat = F.grid_sample(index, table, pts.float(), box, backend="native")
        assert (nat.double() - want).abs().max().item() <= FWD_ATOL


def test_grid_sample_clamps_points_outside_the_box(native):
    gen = torch.Generator().manual_seed(3)
    box, index, table = random_grid(gen, (3, 3, 3), *ANISO, 0.0, 2)
    lo, hi = box_tensors(box)
    inside = lo + (hi - lo) * torch.rand(20, 3, generator=gen)
    outside = inside.clone()
    outside[:, 0] = hi[0] + 5.0  # far beyond +x: reads as the +x face
    outside[:10, 1] = lo[1] - 3.0  # and beyond -y
    face = inside.clone()
    face[:, 0] = hi[0]
    face[:10, 1] = lo[1]
    a = F.grid_sample(index, table, outside, box, backend="native")
    b = F.grid_sample(index, table, face, box, backend="native")
    assert (a - b).abs().max().item() <= FWD_ATOL


@pytest.mark.parametrize("bad", [float("nan"), float("inf"), -float("inf")])
def test_grid_sample_rejects_non_finite_points(native, bad):
    box, index, table = random_grid(torch.Generator().manual_seed(0), (3, 3, 3), *ANISO, 0.0, 1)
    points = torch.zeros(4, 3)
    points[2, 1] = bad
    for backend in ("native", "reference"):
        with pytest.raises(ValueError, match="points contain NaN or Inf"):
            F.grid_sample(index, table, points, box, backend=backend)


# ---------------------------------------------------------------------------- march_rays

MARCH_CASES = [
    # seed, vertices per axis, rays, share without rows, share of occupied cells, step (world)
    (0, (6, 4, 5), 160, 0.2, 0.6, 0.07),
    (1, (9, 5, 6), 200, 0.0, 0.8, 0.05),
    (2, (4, 7, 3), 120, 0.4, 0.5, 0.11),
    (3, (5, 5, 5), 200, 0.1, 1.0, 0.04),
]


def march_inputs(seed, res, r, holes, occupied, step):
    gen = torch.Generator().manual_seed(seed)
    box, index, table = random_grid(gen, res, *ANISO, holes, 1)
    density = table[:, 0] * 3 + 0.5  # many samples above alpha 1/255, many below, some rays stop early
    bits = F.pack_bits(torch.rand(box.cells, generator=gen) < occupied)
    origins, dirs, jitter = random_rays(gen, box, r)
    kw = {"near": 0.05, "far": 1e10, "step": step, "interval": 0.6, "shift": -0.5}
    return box, index, density, bits, origins, dirs, jitter, kw


@pytest.mark.parametrize("seed,res,r,holes,occupied,step", MARCH_CASES)
def test_march_rays_native_matches_reference(native, seed, res, r, holes, occupied, step):
    box, index, density, bits, origins, dirs, jitter, kw = march_inputs(seed, res, r, holes, occupied, step)
    nat = F.march_rays(bits, index, density, origins, dirs, jitter, box, backend="native", **kw)
    ref = F.march_rays(bits, index, density, origins, dirs, jitter, box, backend="reference", **kw)
    assert nat.offsets.shape == ref.offsets.shape == (r + 1,)
    n_counts = nat.offsets[1:] - nat.offsets[:-1]
    r_counts = ref.offsets[1:] - ref.offsets[:-1]
    assert int(r_counts.sum()) >= 3 * r, "the case should march many samples"
    differing = 0
    for i in range(r):
        (nt, npos), (rt, rpos) = per_ray(nat, i), per_ray(ref, i)
        same = nt.numel() == rt.numel() and (
            nt.numel() == 0
            or (
                (nt.double() - rt).abs().max().item() <= MARCH_ATOL
                and (npos.double() - rpos).abs().max().item() <= MARCH_ATOL
            )
        )
        if same:
            continue
        differing += 1
        assert abs(int(n_counts[i]) - int(r_counts[i])) <= 1, f"ray {i}: {int(n_counts[i])} vs {int(r_counts[i])}"
    assert differing <= MAX_DIFFERING_RAY_FRACTION * r, f"{differing} of {r} rays differ"


@pytest.mark.parametrize("seed,res,r,holes,occupied,step", MARCH_CASES)
def test_march_rays_samples_keep_the_rules(native, seed, res, r, holes, occupied, step):
    box, index, density, bits, origins, dirs, jitter, kw = march_inputs(seed, res, r * 4, holes, occupied, step)
    s = F.march_rays(bits, index, density, origins, dirs, jitter, box, backend="native", **kw)
    M = s.ts.shape[0]
    assert M > 0 and s.positions.shape == (M, 3) and s.offsets.dtype == torch.int64
    assert int(s.offsets[0]) == 0 and bool((s.offsets[1:] >= s.offsets[:-1]).all())
    lo, hi = box_tensors(box)
    p = s.positions
    assert bool(((p >= lo - BOX_TOL) & (p <= hi + BOX_TOL)).all()), "a sample outside the box"
    assert bool(occupied_of_positions(bits, box, p).all()), "a sample in an empty cell"
    raw = F.grid_sample(index, density[:, None], p, box, backend="native")[:, 0]
    alpha = F.softplus_alphas(raw, kw["shift"], kw["interval"])
    assert bool((alpha >= F.ALPHA_MIN * (1 - ALPHA_RTOL)).all()), "a sample the compositing would skip"
    rays = s.ray_indices
    assert torch.equal(torch.bincount(rays, minlength=origins.shape[0]), s.offsets[1:] - s.offsets[:-1])
    # on its ray: o + t d, t past near, and increasing
    on_ray = origins[rays] + s.ts[:, None] * dirs[rays]
    assert (on_ray - p).abs().max().item() <= MARCH_ATOL
    assert bool((s.ts >= kw["near"]).all())
    same_ray = rays[1:] == rays[:-1]
    assert bool((s.ts[1:][same_ray] > s.ts[:-1][same_ray]).all())
    # samples are a whole number of steps apart along the ray (from the jittered first)
    gaps = (s.ts[1:] - s.ts[:-1])[same_ray] / step
    assert (gaps - gaps.round()).abs().max().item() <= STEP_GAP_TOL and bool((gaps.round() >= 1).all())


def test_march_rays_without_occupied_cells_or_hits_gives_nothing(native):
    box, index, density, bits, origins, dirs, jitter, kw = march_inputs(5, (5, 4, 6), 80, 0.1, 0.7, 0.05)
    empty = torch.zeros_like(bits)
    for backend in ("native", "reference"):
        s = F.march_rays(empty, index, density, origins, dirs, jitter, box, backend=backend, **kw)
        assert torch.equal(s.offsets, torch.zeros(81, dtype=torch.long)) and s.ts.numel() == 0
        assert s.positions.shape == (0, 3)
    # every cell occupied and dense, but the rays miss the box: pointing away, or parallel
    # to an axis beside it
    full = F.pack_bits(torch.ones(box.cells, dtype=torch.bool))
    lo, hi = box_tensors(box)
    away_o = torch.tensor([[hi[0] + 1, 0.0, 0.6], [lo[0] - 1, 0.0, 0.6], [0.0, hi[1] + 2, lo[2] - 0.5]])
    away_d = torch.nn.functional.normalize(torch.tensor([[1.0, 0.2, 0.0], [-1.0, 0.0, 0.1], [0.0, 1.0, -1.0]]), dim=-1)
    beside_o = torch.tensor([[lo[0] - 1, hi[1] + 0.1, 0.6], [0.0, lo[1] - 1, hi[2] + 0.01]])
    beside_d = torch.tensor([[1.0, 0.0, 0.0], [0.0, 1.0, 0.0]])
    o, d = torch.cat([away_o, beside_o]), torch.cat([away_d, beside_d])
    dense = torch.full_like(density, 10.0)
    for backend in ("native", "reference"):
        s = F.march_rays(full, index, dense, o, d, torch.rand(5), box, backend=backend, **kw)
        assert torch.equal(s.offsets, torch.zeros(6, dtype=torch.long))
    # the same rays turned towards the box do hit it (the case above is not empty by accident)
    hit = F.march_rays(full, index, dense, o, -d, torch.rand(5), box, backend="native", **kw)
    assert int(hit.offsets[-1]) > 0


def test_march_rays_takes_an_empty_batch(native):
    box, index, density, bits, *_, kw = march_inputs(6, (4, 4, 4), 8, 0.0, 0.5, 0.05)
    for backend in ("native", "reference"):
        s = F.march_rays(bits, index, density, torch.zeros(0, 3), torch.zeros(0, 3), torch.zeros(0), box,
                         backend=backend, **kw)  # fmt: skip
        assert torch.equal(s.offsets, torch.zeros(1, dtype=torch.long))
        assert s.ts.shape == (0,) and s.positions.shape == (0, 3) and s.ray_indices.shape == (0,)


@pytest.mark.parametrize("which", ["origins", "dirs"])
@pytest.mark.parametrize("bad", [float("nan"), float("inf"), -float("inf")])
def test_march_rays_rejects_non_finite_rays(native, which, bad):
    box, index, density, bits, origins, dirs, jitter, kw = march_inputs(7, (4, 4, 4), 8, 0.0, 0.5, 0.05)
    t = (origins if which == "origins" else dirs).clone()
    t[3, 2] = bad
    o, d = (t, dirs) if which == "origins" else (origins, t)
    message = "ray origins contain NaN or Inf" if which == "origins" else "ray directions contain NaN or Inf"
    for backend in ("native", "reference"):
        with pytest.raises(ValueError, match=message):
            F.march_rays(bits, index, density, o, d, jitter, box, backend=backend, **kw)


# ------------------------------------------- marching + compositing = compositing every step


def every_step_samples(origins, dirs, jitter, box, near, far, step):
    """Every fixed-step sample of each ray inside the box (no occupancy, no alpha test), in
    float64: the sample set the marcher thins out."""
    lo, hi = box_tensors(box, torch.float64)
    counts, ts = [], []
    for o, d, j in zip(origins.double(), dirs.double(), jitter.double()):
        t0, t1 = near, far
        for a in range(3):
            if d[a] == 0:
                t0, t1 = (t0, t1) if lo[a] <= o[a] <= hi[a] else (1.0, 0.0)
                continue
            ta, tb = sorted([((lo[a] - o[a]) / d[a]).item(), ((hi[a] - o[a]) / d[a]).item()])
            t0, t1 = max(t0, ta), min(t1, tb)
        t = torch.zeros(0, dtype=torch.float64)
        if t0 < t1:
            t = t0 + (torch.arange(math.ceil((t1 - t0) / step) + 1, dtype=torch.float64) + float(j)) * step
            t = t[t < t1]
        counts.append(t.numel())
        ts.append(t)
    rays = torch.repeat_interleave(torch.arange(len(counts)), torch.tensor(counts, dtype=torch.long))
    t = torch.cat(ts)
    return rays, t, origins.double()[rays] + t[:, None] * dirs.double()[rays]


COMPOSITE_CASES = [
    # seed, vertices per axis, share without rows, share of empty vertices, shift
    (0, (9, 5, 6), 0.0, 0.6, -1.0),
    (1, (7, 7, 7), 0.0, 0.5, -3.19),  # the trainer's initial shift
    (2, (6, 9, 5), 0.05, 0.6, -1.0),
    (3, (8, 6, 6), 0.0, 0.5, 1.0),  # dense: rays stop early
]


@pytest.mark.parametrize("seed,res,holes,empty,shift", COMPOSITE_CASES)
def test_marched_samples_composite_like_every_step(native, seed, res, holes, empty, shift):
    """Occupancy skipping and early stopping drop only samples the compositing would skip or
    never reach: compositing the marched samples equals compositing every fixed-step sample
    of the rays (float64 reference, the same density and colour fields)."""
    gen = torch.Generator().manual_seed(seed)
    box, index, table = random_grid(gen, res, *ANISO, holes, 1, spare_rows=0)
    n = table.shape[0]
    density = torch.where(torch.rand(n, generator=gen) < empty, torch.full((n,), -12.0),
                          -2 + 8 * torch.rand(n, generator=gen))  # fmt: skip
    # and a slab of empty space (whole blocks for the marcher to skip)
    axis = seed % 3
    slab = torch.zeros(box.res, dtype=torch.bool)
    slab.narrow(axis, 0, box.res[axis] // 2).fill_(True)
    density[index[slab & (index >= 0)].long()] = -12.0
    colour = torch.randn(n, 3, generator=gen)
    model = FieldModel(box, index, density[:, None], colour, torch.zeros(0, dtype=torch.uint8), shift,
                       0.4 * box.voxel, 0.5, 0)  # fmt: skip
    occupied = model.update_occupancy()
    model.blocks = F.block_bits(model.occupied_cells(), 1)  # blocks of 2^3 cells: some empty on these small grids
    blocks = F.unpack_bits(model.blocks, tuple(-(-c // 2) for c in box.cells))
    assert not bool(blocks.all()), "the case should have empty blocks to skip"
    assert 0.05 < occupied < 0.98, "the case should have both empty and occupied cells"
    R = 160
    origins, dirs, jitter = random_rays(gen, box, R)
    near, step, interval = 0.05, model.step, model.interval
    marched = F.march_rays(model.occupancy, index, density, origins, dirs, jitter, box, near=near, far=1e10,
                           step=step, interval=interval, shift=shift, blocks=model.blocks, block_shift=1,
                           backend="native")  # fmt: skip
    rays, ts, pos = every_step_samples(origins, dirs, jitter, box, near, 1e10, step)
    # The field as the marcher defines it: a cell missing one of its 8 vertices is empty
    # space (FieldModel.occupied_cells). A missing vertex reads as raw 0 in grid_sample,
    # not as empty, so those cells' samples are left out of "every sample" here.
    complete = cell_corners_reduce(index >= 0, torch.logical_and)
    keep = occupied_of_positions(F.pack_bits(complete), box, pos.float())
    rays, ts, pos = rays[keep], ts[keep], pos[keep]

    def shade(ray_indices, t, p):
        raw = RF.grid_sample(index, density[:, None].double(), p, box)[:, 0]
        alphas = F.softplus_alphas(raw, shift, interval)
        rgb = torch.sigmoid(RF.grid_sample(index, colour.double(), p, box))
        bg = torch.tensor([0.2, 0.5, 0.9], dtype=torch.float64)
        return composite(ray_indices, alphas, rgb, t.double(), R, background=bg, backend="reference")

    got = shade(marched.ray_indices, marched.ts, marched.positions.double())
    want = shade(rays, ts, pos)
    assert marched.ts.numel() < 0.7 * ts.numel(), "marching should skip samples"
    for a, b in zip(got, want):
        assert (a - b).abs().max().item() <= COMPOSITE_ATOL
    assert float(want[1].max()) > 0.5, "some rays should be mostly opaque"
    if shift > 0:  # the early stop is exercised: without it the marcher returns more samples
        assert float(want[1].max()) > 1 - 1e-3, "rays should reach the stopping transmittance"
        unstopped = F.march_rays(model.occupancy, index, density, origins, dirs, jitter, box, near=near, far=1e10,
                                 step=step, interval=interval, shift=shift, stop_T=0.0, backend="native")  # fmt: skip
        assert unstopped.ts.numel() > marched.ts.numel()


def sh_field(seed: int, holes: float, max_degree: int = 2):
    gen = torch.Generator().manual_seed(seed)
    box, index, table = random_grid(gen, (9, 7, 8), *ANISO, holes, 1, spare_rows=0)
    n = table.shape[0]
    density = torch.where(torch.rand(n, generator=gen) < 0.5, torch.full((n,), -12.0), 6 * torch.rand(n, generator=gen))
    sh = torch.randn(n, 3 * (max_degree + 1) ** 2, generator=gen)
    model = FieldModel(box, index, density[:, None], sh, torch.zeros(0, dtype=torch.uint8), -2.0, box.voxel, 0.5,
                       max_degree)  # fmt: skip
    model.update_occupancy()  # and its blocks (of 8^3 cells: one here; the block skip is tested below)
    origins, dirs, jitter = random_rays(gen, box, 400)
    return model, origins, dirs, jitter, torch.rand(400, 3, generator=gen)


def truncated(model: FieldModel, degree: int) -> FieldModel:
    """The same field with only the SH coefficients of ``degree`` (its maximum)."""
    K = (degree + 1) ** 2
    return FieldModel(model.box, model.index, model.density, model.color[:, : 3 * K].contiguous(), model.occupancy,
                      model.shift, model.unit, model.step_ratio, degree, model.blocks)  # fmt: skip


@pytest.mark.parametrize("seed,sh_degree,holes", [(0, 0, 0.0), (1, 1, 0.1), (2, 2, 0.0), (3, 2, 0.05)])
def test_fused_render_matches_march_shade_composite(native, seed, sh_degree, holes):
    """render.field.render_rays (the views' forward, reading the first coefficients of the
    full SH table) gives what march + grid_sample + SH colour + composite give (the path
    training differentiates, here on the table cut to ``sh_degree``)."""
    model, origins, dirs, jitter, background = sh_field(seed, holes)
    want = truncated(model, sh_degree).render_rays(origins, dirs, background, jitter)
    got = F.render_rays(model.occupancy, model.index, model.density[:, 0], model.color, origins, dirs, jitter, background,
                        model.box, near=0.05, far=1e10, step=model.step, interval=model.interval, shift=model.shift,
                        sh_degree=sh_degree, blocks=model.blocks)  # fmt: skip
    assert want[3] > 400, "the rays should meet the field"
    assert float(want[1].max()) > 0.9 and float(want[1].min()) == 0.0
    for a, b in zip(got, want[:3]):
        assert a.shape == b.shape
        assert (a - b.detach()).abs().max().item() <= FUSED_ATOL


def test_shade_at_a_lower_sh_degree(native):
    model, origins, dirs, jitter, background = sh_field(4, 0.0)
    model.color = torch.nn.Parameter(model.color)
    got = model.render_rays(origins, dirs, background, jitter, sh_degree=1)
    want = truncated(model, 1).render_rays(origins, dirs, background, jitter)
    for a, b in zip(got[:3], want[:3]):
        assert (a - b).abs().max().item() <= FUSED_ATOL
    got[0].sum().backward()
    assert model.color.grad is not None


# ---------------------------------------------------------------------------- empty blocks


def blocky_cells(gen: torch.Generator, cells, shift: int, empty_blocks: float, occupied: float) -> torch.Tensor:
    """Cells occupied at random inside blocks of 2^shift cells per axis, a share of the blocks empty."""
    b = 1 << shift
    nb = [-(-c // b) for c in cells]
    keep = torch.rand(nb, generator=gen) >= empty_blocks
    full = keep.repeat_interleave(b, 0).repeat_interleave(b, 1).repeat_interleave(b, 2)
    return full[: cells[0], : cells[1], : cells[2]] & (torch.rand(cells, generator=gen) < occupied)


@pytest.mark.parametrize("shape,shift", [((5, 3, 7), 1), ((8, 8, 8), 3), ((17, 9, 2), 3), ((1, 1, 1), 2)])
def test_block_bits_mark_blocks_with_an_occupied_cell(shape, shift):
    gen = torch.Generator().manual_seed(sum(shape) + shift)
    cells = torch.rand(shape, generator=gen) < 0.05
    b = 1 << shift
    nb = tuple(-(-n // b) for n in shape)
    got = F.unpack_bits(F.block_bits(cells, shift), nb)
    for i in range(nb[0]):
        for j in range(nb[1]):
            for k in range(nb[2]):
                any_cell = bool(cells[i * b : (i + 1) * b, j * b : (j + 1) * b, k * b : (k + 1) * b].any())
                assert bool(got[i, j, k]) == any_cell


@pytest.mark.parametrize("seed,res,shift", [(0, (17, 17, 17), 2), (1, (33, 20, 9), 3), (2, (10, 13, 6), 1)])
def test_march_rays_skipping_empty_blocks_keeps_the_same_samples(native, seed, res, shift):
    gen = torch.Generator().manual_seed(seed)
    box, index, table = random_grid(gen, res, *ANISO, 0.0, 1, spare_rows=0)
    cells = blocky_cells(gen, box.cells, shift, 0.5, 0.7)
    bits = F.pack_bits(cells)
    origins, dirs, jitter = random_rays(gen, box, 2000)
    kw = {"near": 0.05, "far": 1e10, "step": 0.3 * min(1 / s for s in box.scale), "interval": 0.5, "shift": -1.0}
    density = table[:, 0] * 2 + 1
    plain = F.march_rays(bits, index, density, origins, dirs, jitter, box, backend="native", **kw)
    skipping = F.march_rays(bits, index, density, origins, dirs, jitter, box, blocks=F.block_bits(cells, shift),
                            block_shift=shift, backend="native", **kw)  # fmt: skip
    assert plain.ts.numel() > 2000
    for a, b in zip((plain.offsets, plain.ts, plain.positions), (skipping.offsets, skipping.ts, skipping.positions)):
        assert torch.equal(a, b)


def test_march_rays_skipping_empty_blocks_keeps_grazing_samples(native):
    """Rays starting next to a block face, nearly parallel to it (|d_x| ~ 1e-4): the same
    samples with and without the empty-block skip."""
    gen = torch.Generator().manual_seed(0)
    box = F.GridBox((-1.0, -1.0, -1.0), (1.0, 1.0, 1.0), (33, 33, 33))
    index = torch.arange(33**3, dtype=torch.int32).view(box.res)
    density = torch.randn(33**3, generator=gen) * 2 + 1
    cells = blocky_cells(gen, box.cells, 3, 0.5, 0.7)
    R = 20000
    origins = -1 + 2 * torch.rand(R, 3, generator=gen)
    face = torch.randint(1, 4, (R,), generator=gen) * 0.5 - 1  # x of a face between blocks of 8 cells
    origins[:, 0] = face + (torch.rand(R, generator=gen) - 0.5) * 1e-4
    dirs = torch.randn(R, 3, generator=gen)
    dirs[:, 0] = 1e-4 * torch.randn(R, generator=gen)
    dirs = torch.nn.functional.normalize(dirs, dim=-1)
    jitter = torch.rand(R, generator=gen)
    kw = {"near": 0.0, "far": 1e10, "step": 1 / 32, "interval": 0.5, "shift": -1.0, "backend": "native"}
    plain = F.march_rays(F.pack_bits(cells), index, density, origins, dirs, jitter, box, **kw)
    skipping = F.march_rays(F.pack_bits(cells), index, density, origins, dirs, jitter, box,
                            blocks=F.block_bits(cells, 3), block_shift=3, **kw)  # fmt: skip
    counts = lambda s: s.offsets[1:] - s.offsets[:-1]
    differ = int((counts(plain) != counts(skipping)).sum())
    assert differ == 0, f"{differ} of {R} rays lose samples to the block skip"


# ---------------------------------------------------------------------------- sparse Adam


@pytest.mark.parametrize("seed,n,channels,steps", [(0, 40, 1, 4), (1, 64, 27, 5), (2, 7, 3, 3)])
def test_sparse_adam_native_matches_reference(native, seed, n, channels, steps):
    gen = torch.Generator().manual_seed(seed)
    param = torch.randn(n, channels, generator=gen)
    m, v = torch.zeros(n, channels), torch.zeros(n, channels)
    ref = [param.double(), m.double(), v.double()]
    lr = 0.01 + 0.09 * torch.rand(channels, generator=gen)  # one per channel
    betas, eps = (0.9, 0.99), 1e-8
    for step in range(1, steps + 1):
        k = int(torch.randint(1, n + 1, (), generator=gen))
        rows = torch.randperm(n, generator=gen)[:k]  # distinct, any order
        grads = torch.randn(k, channels, generator=gen)
        if step == 2:  # non-finite gradient entries leave their entry (and moments) alone
            grads[0, 0] = float("nan")
            grads[-1, -1] = float("inf")
        before = [t.clone() for t in (param, m, v)]
        F.sparse_adam_(param, m, v, rows, grads, lr, betas=betas, eps=eps, step=step, backend="native")
        F.sparse_adam_(*ref, rows, grads, lr, betas=betas, eps=eps, step=step, backend="reference")
        untouched = torch.ones(n, dtype=torch.bool)
        untouched[rows] = False
        for now, then, r in zip((param, m, v), before, ref):
            assert torch.equal(now[untouched], then[untouched]), "a row the step did not touch changed"
            assert (now.double() - r).abs().max().item() <= ADAM_ATOL
        if step == 2:
            for now, then in zip((param, m, v), before):
                assert now[rows[0], 0] == then[rows[0], 0] and now[rows[-1], -1] == then[rows[-1], -1]


def test_sparse_adam_uses_each_channels_learning_rate(native):
    param = torch.zeros(3, 2)
    m, v = torch.zeros(3, 2), torch.zeros(3, 2)
    lr = torch.tensor([0.1, 0.02])
    F.sparse_adam_(param, m, v, torch.tensor([1]), torch.tensor([[2.0, -3.0]]), lr, betas=(0.9, 0.99), eps=1e-8,
                   step=1, backend="native")  # fmt: skip
    # the first Adam step moves by lr * sign(g) (bias-corrected m / sqrt(v) = g / |g|)
    torch.testing.assert_close(param[1], torch.tensor([-0.1, 0.02]), rtol=0, atol=1e-6)
    assert torch.equal(param[[0, 2]], torch.zeros(2, 2))


# ---------------------------------------------------------------------------- bits


@pytest.mark.parametrize("shape", [(0,), (1,), (7,), (9,), (2, 3, 4), (3, 5, 7), (4, 1, 13)])
def test_pack_bits_round_trip(shape):
    gen = torch.Generator().manual_seed(sum(shape))
    mask = torch.rand(shape, generator=gen) < 0.5
    n = mask.numel()
    bits = F.pack_bits(mask)
    assert bits.dtype == torch.uint8 and bits.shape == ((n + 7) // 8,)
    assert torch.equal(F.unpack_bits(bits, shape), mask)
    flat = mask.reshape(-1)
    for i in range(n):  # bit i of byte i >> 3, C order; the padding bits are 0
        assert bool((int(bits[i >> 3]) >> (i & 7)) & 1) == bool(flat[i])
    if n % 8:
        assert int(bits[-1]) >> (n % 8) == 0
