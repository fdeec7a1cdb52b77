"""The radiance field being trained (scenes/field_scene.py, scenes/field.py,
scenes/grid_adam.py) on tiny grids and synthetic views: training lowers the loss, growth
keeps the field, the occupancy changes no rendered pixel, a checkpoint restores the scene
and a resumed run bit for bit, GridAdam is (lazy) Adam, and masked rays stay out of the
loss."""

from __future__ import annotations

import io
import math

import pytest
import torch
from splatfield.render import Cameras
from splatfield.render import field as F
from splatfield.scenes.field import EMPTY_RAW, cell_corners_reduce
from splatfield.scenes.field_scene import BOX_ALPHA, FieldScene
from splatfield.scenes.grid_adam import GridAdam
from splatfield.scenes.options import FieldConfig, TrainerConfig
from splatfield.scenes.trainer import Trainer
from splatfield.scenes.views import Views, ViewSampler

# 60 steps on a constant colour take the batch PSNR from ~3.8 dB to ~5.5 dB (a field that
# learns nothing stays where it starts): half of that rise is required
PSNR_GAIN_MIN_DB = 0.8
# growth interpolates the old grid natively (float32) at the new vertices; raw densities and
# SH coefficients are O(10): a few ulps of that
GROW_ATOL = 2e-5
# skipping empty cells drops only samples with alpha < 1/255, which the compositing skips
# anyway: the same samples composite in the same order, so the images should agree exactly;
# the tolerance only allows for a sample at float32 distance from the threshold
OCCUPANCY_RENDER_ATOL = 1e-6
# GridAdam's dense path (sqrt(v / bias2) + eps) against torch.optim.Adam (sqrt(v) /
# sqrt(bias2) + eps): the same math in another order, float32, lr 0.05 over 6 steps
DENSE_ADAM_ATOL = 1e-6
# GridAdam's sparse path (float32, native) against lazy Adam by hand in float64
SPARSE_ADAM_ATOL = 1e-6
# the batch mse against the float64 mean over the unmasked rays
MSE_RTOL = 1e-6
# rays of float32 cameras against float64 ones, 3 units away: float32 rounding of unit vectors
CAMERA_RAY_ATOL = 1e-5

# a ball of density ramping over one cell, marched at twice the step: the coarser sum of the
# same integral: a ray grazing the ball's edge differs most (measured: 0.103 of alpha at
# most over the 1728 rays)
PREVIEW_ALPHA_ATOL = 0.15

CONFIG = FieldConfig(resolution=16, grow_at=(3, 6), rays=256, occupancy_every=4)
GROW_CONFIG = FieldConfig(resolution=32, grow_at=(3, 6))  # 8 coarse cells: growth drops far vertices
LO, HI = (-1.0, -1.0, -1.0), (1.0, 1.0, 1.0)
COLOUR = (0.8, 0.25, 0.1)


def ring_cameras(count: int, size: int, dtype=torch.float64) -> Cameras:
    """Cameras around the origin, looking at it from 3 units away, a little above."""
    ang = torch.arange(count, dtype=torch.float64) * 2 * math.pi / count + 0.3
    eyes = torch.stack([3 * torch.cos(ang), 3 * torch.sin(ang), torch.full_like(ang, 0.8)], dim=1)
    cams = Cameras.look_at(eyes, torch.zeros(count, 3, dtype=torch.float64), (0.0, 0.0, 1.0), 50.0, size, size)
    return cams.to(dtype=dtype)


def constant_views(count: int = 4, size: int = 12) -> Views:
    cams = ring_cameras(count, size)
    rgb = (torch.tensor(COLOUR) * 255).round().to(torch.uint8)
    return Views(cams, rgb.expand(count, size, size, 3).clone())


def disc_views(count: int = 4, size: int = 12) -> Views:
    """A coloured disc on white: the field learns density in the middle, empty space around."""
    cams = ring_cameras(count, size)
    ys, xs = torch.meshgrid(torch.arange(size) + 0.5, torch.arange(size) + 0.5, indexing="ij")
    disc = ((xs - size / 2) ** 2 + (ys - size / 2) ** 2) < (size / 4) ** 2
    rgb = (torch.tensor(COLOUR) * 255).round().to(torch.uint8)
    white = torch.full((3,), 255, dtype=torch.uint8)
    return Views(cams, torch.where(disc[..., None], rgb, white).expand(count, size, size, 3).clone())


def random_views(seed: int, count: int = 4, size: int = 12, masks: bool = False) -> Views:
    gen = torch.Generator().manual_seed(seed)
    images = torch.randint(0, 256, (count, size, size, 3), generator=gen, dtype=torch.uint8)
    mask = torch.rand(count, size, size, generator=gen) < 0.6 if masks else None
    return Views(ring_cameras(count, size), images, mask)


def image_psnr(scene: FieldScene, views: Views) -> float:
    out = scene.render(views.cameras, background=(1.0, 1.0, 1.0)).image
    mse = ((out.double() - views.images.double() / 255) ** 2).mean().item()
    return -10 * math.log10(mse)


def occupied(model) -> torch.Tensor:
    return F.unpack_bits(model.occupancy, model.box.cells)


def complete_cells(model) -> torch.Tensor:
    """Cells whose 8 vertices all have rows."""
    return cell_corners_reduce(model.index >= 0, torch.logical_and)


def tables(scene: FieldScene) -> dict[str, torch.Tensor]:
    m = scene.model
    out = {"index": m.index, "density": m.density.detach(), "color": m.color.detach(), "occupancy": m.occupancy}
    return out if m.envmap is None else {**out, "envmap": m.envmap.detach()}


# ---------------------------------------------------------------------------- training


def test_training_on_a_constant_colour_raises_the_psnr(native):
    views = constant_views()
    scene = FieldScene.create(LO, HI, CONFIG)
    before = image_psnr(scene, views)
    trainer = Trainer(scene, [], views, config=TrainerConfig(steps=60), background=(1, 1, 1))
    infos = [trainer.train_step() for _ in range(60)]
    after = image_psnr(trainer.scene, views)
    assert trainer.scene.level == 2 and max(trainer.scene.model.box.cells) == 16
    assert after >= before + PSNR_GAIN_MIN_DB, f"PSNR {before:.2f} -> {after:.2f} dB"
    first = sum(i.psnr for i in infos[:5]) / 5
    last = sum(i.psnr for i in infos[-5:]) / 5
    assert last >= first + PSNR_GAIN_MIN_DB, f"batch PSNR {first:.2f} -> {last:.2f} dB"
    assert all(math.isfinite(i.loss) for i in infos)


# ---------------------------------------------------------------------------- growth


def blobby_scene(seed: int, lo=(-1.0, -0.6, -0.8), hi=(1.0, 0.6, 0.8)) -> FieldScene:
    """A coarse field with two dense blobs in empty space and random colours."""
    gen = torch.Generator().manual_seed(seed)
    scene = FieldScene.create(lo, hi, GROW_CONFIG)
    m = scene.model
    pos = m.box.vertex_positions()[m.index >= 0]  # rows in vertex order (create maps them so)
    raw = torch.full((pos.shape[0],), -9.0)
    for _ in range(2):
        centre = torch.tensor(lo) + 0.6 * (torch.tensor(hi) - torch.tensor(lo)) * torch.rand(3, generator=gen)
        raw = torch.maximum(raw, 6 - 80 * ((pos - centre) ** 2).sum(-1))
    with torch.no_grad():
        m.density[:, 0] = raw + 0.5 * torch.randn(raw.shape, generator=gen)
        m.color.copy_(torch.randn(m.color.shape, generator=gen))
    m.update_occupancy()
    return scene


def check_growth(scene: FieldScene, gen: torch.Generator) -> None:
    old = scene.model.snapshot()
    reached = scene.reached_cells()
    solid = reached & (old.cell_alphas() >= BOX_ALPHA)
    level = scene.level
    scene.grow()
    new = scene.model
    assert scene.level == level + 1
    # the new box lies in the old one and its longest side has the level's cells
    for a in range(3):
        assert old.box.lo[a] - 1e-6 <= new.box.lo[a] and new.box.hi[a] <= old.box.hi[a] + 1e-6
    cells = GROW_CONFIG.resolution >> (len(GROW_CONFIG.grow_at) - scene.level)
    assert max(new.box.cells) == cells
    # the new vertices hold the old field's values where the old grid has all their corners
    # (their rows are the old trilinear field sampled there), and are empty where it has none
    has = new.index >= 0
    pos, rows = new.box.vertex_positions()[has], new.index[has].long()
    present = F.grid_sample(old.index, torch.ones_like(old.density), pos, old.box)[:, 0]
    full = present > 1 - 1e-5
    assert bool(full.any())
    for name in ("density", "color"):
        a = F.grid_sample(old.index, getattr(old, name), pos[full], old.box)
        b = getattr(new, name).detach()[rows[full]]
        assert (a - b).abs().max().item() <= GROW_ATOL, name
    bare = present < 1e-6
    if bool(bare.any()):
        assert bool((new.density.detach()[rows[bare], 0] == EMPTY_RAW).all())
    # every solid old cell is covered by complete new cells (sample points inside it)
    idx = torch.nonzero(solid)
    if idx.numel():
        pick = idx[torch.randint(0, idx.shape[0], (400,), generator=gen)]
        pts = torch.tensor(old.box.lo) + (pick.float() + 0.05 + 0.9 * torch.rand(400, 3, generator=gen)) / torch.tensor(
            old.box.scale)
        u = (pts - torch.tensor(new.box.lo)) * torch.tensor(new.box.scale)
        c = torch.minimum(u.floor().long().clamp(min=0), torch.tensor(new.box.cells) - 1)
        assert bool(complete_cells(new)[c[:, 0], c[:, 1], c[:, 2]].all()), "a solid old cell lost its vertices"
    # the occupancy: never a cell with a missing vertex
    new_occ = occupied(new)
    assert not bool((new_occ & ~complete_cells(new)).any()), "an occupied cell with a missing vertex"
    assert torch.equal(new_occ, new.occupied_cells())
    # a fresh optimizer on the new tables
    assert not scene.optimizer.state
    assert scene.optimizer.param_groups[0]["params"][0] is new.density


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_growth_keeps_the_field(native, seed):
    gen = torch.Generator().manual_seed(100 + seed)
    scene = blobby_scene(seed)
    frac = float(occupied(scene.model).float().mean())
    assert 0.05 < frac < 0.9, "the case should have empty and occupied cells"
    check_growth(scene, gen)  # from a full grid
    assert bool((scene.model.index < 0).any()), "the first growth should drop far vertices"
    check_growth(scene, gen)  # from a grid with holes


def test_growth_next_to_missing_vertices_adds_no_density(native):
    """A cell at the edge of the kept region that training made dense: its neighbours beyond
    the edge have vertices without rows (empty space, never marched). Growth must not give
    the new vertices there the density of raw 0 (alpha ~0.005 per sample at level 2, above
    1/255), which puts faint floaters up to a whole old cell away from any density."""
    scene = blobby_scene(0)
    m = scene.model
    pos = m.box.vertex_positions()[m.index >= 0]
    with torch.no_grad():  # one small blob near a corner: the first growth keeps a corner region
        m.density[:, 0] = torch.where((pos - torch.tensor([-0.5, -0.3, -0.4])).norm(dim=-1) < 0.3, 4.0, -20.0)
    m.update_occupancy()
    scene.grow()
    m = scene.model
    complete = complete_cells(m)
    beyond = ~complete
    touches = torch.zeros_like(beyond)
    touches[:-1] |= beyond[1:]
    touches[1:] |= beyond[:-1]
    edge = torch.nonzero(complete & touches)
    assert edge.shape[0] > 0
    c = edge[0]
    with torch.no_grad():  # as training would: the edge cell becomes dense
        m.density[m.index[c[0] : c[0] + 2, c[1] : c[1] + 2, c[2] : c[2] + 2].reshape(-1).long(), 0] = 4.0
    m.update_occupancy()
    old = m.snapshot()
    # the new cells next to an old occupied cell interpolate its faces' densities (trilinear
    # cells cannot end sharply): one old cell of blur is allowed, nothing farther
    near = torch.nn.functional.max_pool3d(occupied(old).float()[None, None], 3, stride=1, padding=1)[0, 0] > 0
    scene.grow()
    new = scene.model
    centres = new.box.vertex_positions()[:-1, :-1, :-1] + 0.5 / torch.tensor(new.box.scale)
    u = (centres - torch.tensor(old.box.lo)) * torch.tensor(old.box.scale)
    c = torch.minimum(u.floor().long().clamp(min=0), torch.tensor(old.box.cells) - 1)
    extra = occupied(new) & ~near[c[..., 0], c[..., 1], c[..., 2]]
    assert not bool(extra.any()), f"growth occupied {int(extra.sum())} cells away from the old field's density"


# ---------------------------------------------------------------------------- occupancy


@pytest.fixture(scope="module")
def trained_disc_scene():
    """A tiny field trained 24 steps on a disc (grown twice), its occupancy fresh."""
    views = disc_views()
    trainer = Trainer(FieldScene.create(LO, HI, CONFIG), [], views, config=TrainerConfig(steps=24),
                      background=(1, 1, 1))  # fmt: skip
    trainer.run()
    trainer.scene.model.update_occupancy()
    return trainer.scene, views


def test_occupancy_changes_no_pixel(native, trained_disc_scene):
    scene, _ = trained_disc_scene
    m = scene.model
    occ = occupied(m)
    assert scene.level == 2 and float(occ.float().mean()) < 0.99, "training should have emptied some cells"
    assert not bool((occ & ~complete_cells(m)).any()), "an occupied cell with a missing vertex"
    cams = ring_cameras(3, 16)  # other views than the training ones
    with_occupancy = scene.render(cams, background=(1.0, 1.0, 1.0))
    # Every bit set, except in cells missing a vertex: those are empty space by the field's
    # definition (FieldModel.occupied_cells; a missing vertex reads as raw 0 in grid_sample).
    m.occupancy, m.blocks = F.pack_bits(complete_cells(m)), None  # None: no block known empty
    every_cell = scene.render(cams, background=(1.0, 1.0, 1.0))
    m.update_occupancy()
    for a, b in ((with_occupancy.image, every_cell.image), (with_occupancy.alpha, every_cell.alpha),
                 (with_occupancy.depth, every_cell.depth)):  # fmt: skip
        assert (a - b).abs().max().item() <= OCCUPANCY_RENDER_ATOL
    assert float(with_occupancy.alpha.max()) > 0.2, "the render should show the trained field"


# ---------------------------------------------------------------------------- persistence


def save_load(state: dict) -> dict:
    buf = io.BytesIO()
    torch.save(state, buf)
    buf.seek(0)
    return torch.load(buf)


def test_scene_state_dict_round_trip(native, trained_disc_scene):
    scene, views = trained_disc_scene
    # the optimizer has moments for the current tables after one more step
    trainer = Trainer(scene, [], views, config=TrainerConfig(steps=30), background=(1, 1, 1))
    trainer.step = 24
    trainer.train_step()
    restored = FieldScene.from_state_dict(save_load(scene.state_dict()))
    assert restored.level == scene.level and restored.config == scene.config
    assert restored.model.box == scene.model.box
    assert scene.model.blocks is not None and torch.equal(restored.model.blocks, scene.model.blocks)
    assert (restored.model.shift, restored.model.unit) == (scene.model.shift, scene.model.unit)
    for name, t in tables(scene).items():
        assert torch.equal(tables(restored)[name], t), name
    a, b = scene.optimizer.state_dict(), restored.optimizer.state_dict()
    assert a["param_groups"] == b["param_groups"] and a["state"].keys() == b["state"].keys()
    for k, s in a["state"].items():
        assert s["step"] == b["state"][k]["step"]
        assert torch.equal(s["exp_avg"], b["state"][k]["exp_avg"])
        assert torch.equal(s["exp_avg_sq"], b["state"][k]["exp_avg_sq"])
    cams = ring_cameras(2, 10)
    assert torch.equal(scene.render(cams).image, restored.render(cams).image)


RESUME_STEPS = 10
RESUME_AT = (2, 3, 5, 6, 8)  # 3 and 6: the next step grows the grid; 4, 8: the occupancy updates


def run_with_states(config: FieldConfig, views: Views, save_at, steps: int = RESUME_STEPS, learned_background=False
                    ) -> tuple[dict[str, torch.Tensor], dict[int, dict]]:  # fmt: skip
    """An uninterrupted run (a fresh process: global RNG seeded 0), its checkpoints on the way."""
    torch.manual_seed(0)
    scene = FieldScene.create(LO, HI, config, learned_background=learned_background)
    trainer = Trainer(scene, [], views, config=TrainerConfig(steps=steps),
                      background=(1, 1, 1))  # fmt: skip
    states = {}
    for step in range(1, steps + 1):
        trainer.train_step()
        if step in save_at:
            states[step] = save_load(trainer.state_dict())
    return {k: v.clone() for k, v in tables(trainer.scene).items()}, states


def resume(config: FieldConfig, views: Views, state: dict, steps: int = RESUME_STEPS, learned_background=False) -> Trainer:
    """Another process: global RNG seeded 0, a fresh scene, then the checkpoint."""
    torch.manual_seed(0)
    scene = FieldScene.create(LO, HI, config, learned_background=learned_background)
    trainer = Trainer(scene, [], views, config=TrainerConfig(steps=steps),
                      background=(1, 1, 1))  # fmt: skip
    trainer.load_state_dict(state)
    trainer.run()
    return trainer


@pytest.fixture(scope="module")
def uninterrupted():
    views = disc_views()
    return views, *run_with_states(CONFIG, views, RESUME_AT)


@pytest.mark.parametrize("at", RESUME_AT)
def test_resumed_run_continues_bit_identically(native, uninterrupted, at):
    views, final, states = uninterrupted
    trainer = resume(CONFIG, views, states[at])
    assert trainer.step == RESUME_STEPS and trainer.scene.level == 2
    for name, t in tables(trainer.scene).items():
        assert torch.equal(t, final[name]), f"{name} differs after resuming at step {at}"


def test_resumed_run_with_tv_continues_bit_identically(native):
    config = FieldConfig(resolution=16, grow_at=(3, 6), rays=256, tv_weight=0.01)
    views = disc_views()
    final, states = run_with_states(config, views, (2,), steps=3)
    trainer = resume(config, views, states[2], steps=3)
    for name, t in tables(trainer.scene).items():
        assert torch.equal(t, final[name]), f"{name} differs after resuming at step 2"


# ---------------------------------------------------------------------------- GridAdam


def lazy_adam(param, m, v, rows, grads, lr, t, betas=(0.9, 0.99), eps=1e-8):
    """Adam on ``rows`` only (float64, in place), bias corrections of the parameter's step t."""
    b1, b2 = betas
    m[rows] = b1 * m[rows] + (1 - b1) * grads
    v[rows] = b2 * v[rows] + (1 - b2) * grads**2
    param[rows] -= lr * (m[rows] / (1 - b1**t)) / ((v[rows] / (1 - b2**t)).sqrt() + eps)


def test_grid_adam_sparse_step_is_lazy_adam(native):
    gen = torch.Generator().manual_seed(5)
    N, C, lr = 30, 4, 0.05
    p = torch.nn.Parameter(torch.randn(N, C, generator=gen))
    opt = GridAdam([{"params": [p], "lr": lr}])
    ref, m, v = (
        p.detach().double().clone(),
        torch.zeros(N, C, dtype=torch.float64),
        torch.zeros(N, C, dtype=torch.float64),
    )
    t = 0
    box = F.GridBox((0.0, 0.0, 0.0), (1.0, 1.0, 1.0), (3, 3, 3))
    index = (torch.randperm(N, generator=gen)[:27]).int().view(3, 3, 3)
    for step in range(6):
        before = p.detach().clone()
        if step == 2:  # no gradient: the step is skipped (no moment decay, no step count)
            p.grad = None
        elif step == 3:  # an uncoalesced gradient with a repeated row: the rows' sum counts
            rows = torch.tensor([7, 2, 7, 11])
            vals = torch.randn(4, C, generator=gen)
            p.grad = torch.sparse_coo_tensor(rows[None], vals, (N, C), check_invariants=True)
        elif step == 4:  # the grid's own gradient (autograd drops its coalesced flag)
            out = F.grid_sample(index, p, torch.rand(5, 3, generator=gen), box)
            (out * torch.randn(out.shape, generator=gen)).sum().backward()
        else:
            rows = torch.randperm(N, generator=gen)[: 5 + step].sort().values
            p.grad = torch.sparse_coo_tensor(
                rows[None], torch.randn(rows.numel(), C, generator=gen), (N, C), check_invariants=True
            )
        g = None if p.grad is None else p.grad.coalesce()
        opt.step()
        opt.zero_grad(set_to_none=True)
        if g is None:
            assert torch.equal(p.detach(), before)
            continue
        t += 1
        lazy_adam(ref, m, v, g.indices()[0], g.values().double(), lr, t)
        assert (p.detach().double() - ref).abs().max().item() <= SPARSE_ADAM_ATOL
        untouched = torch.ones(N, dtype=torch.bool)
        untouched[g.indices()[0]] = False
        assert torch.equal(p.detach()[untouched], before[untouched]), "a row without gradient moved"
    state = opt.state[p]
    assert state["step"] == t
    assert (state["exp_avg"].double() - m).abs().max().item() <= SPARSE_ADAM_ATOL
    assert (state["exp_avg_sq"].double() - v).abs().max().item() <= SPARSE_ADAM_ATOL


def test_grid_adam_dense_step_is_torch_adam():
    gen = torch.Generator().manual_seed(6)
    a = [torch.nn.Parameter(torch.randn(8, 3, generator=gen)), torch.nn.Parameter(torch.randn(5, generator=gen))]
    b = [torch.nn.Parameter(x.detach().clone()) for x in a]
    start = a[0].detach().clone()
    groups = lambda ps: [{"params": [ps[0]], "lr": 0.05}, {"params": [ps[1]], "lr": 0.01}]
    ours = GridAdam(groups(a), betas=(0.9, 0.99), eps=1e-8)
    torchs = torch.optim.Adam(groups(b), betas=(0.9, 0.99), eps=1e-8)
    for _ in range(6):
        for x, y in zip(a, b):
            g = torch.randn(x.shape, generator=gen)
            x.grad, y.grad = g.clone(), g.clone()
        ours.step()
        torchs.step()
        for x, y in zip(a, b):
            assert (x.detach() - y.detach()).abs().max().item() <= DENSE_ADAM_ATOL
    assert (a[0].detach() - start).abs().max().item() > 0.1, "the parameters should have moved"


# ---------------------------------------------------------------------------- batches


def drawn(scene: FieldScene, views: Views, seed: int):
    sampler = ViewSampler(len(views), torch.Generator().manual_seed(seed))
    return scene.draw_batch(views, sampler)


def test_masked_rays_stay_out_of_the_loss(native):
    views = random_views(3, masks=True)
    B, H, W = len(views), views.cameras.height, views.cameras.width
    scene = FieldScene.create(LO, HI, CONFIG)
    batch = drawn(scene, views, 9)
    R = CONFIG.rays
    # the rays are the generator's pixels: target and mask read there
    flat = torch.randint(0, B * H * W, (R,), generator=torch.Generator().manual_seed(9))
    assert torch.equal(batch.target, views.images.reshape(-1, 3)[flat].float() / 255)
    assert batch.mask is not None and torch.equal(batch.mask, views.masks.reshape(-1)[flat])
    assert 0 < int(batch.mask.sum()) < R
    bg = torch.ones(3)
    out = scene.render_batch(batch, step=1, background=bg)
    loss, mse = scene.batch_loss(batch, out, ssim_weight=0.0)
    err = ((out.image[0, 0].detach().double() - batch.target.double()) ** 2).mean(-1)
    want = err[batch.mask].mean().item()
    assert abs(mse - want) <= MSE_RTOL * want
    assert abs(err.mean().item() - want) > 1e-3, "the masked rays should matter without the mask"
    loss.backward()
    grads = (scene.model.density.grad.to_dense().clone(), scene.model.color.grad.to_dense().clone())
    scene.optimizer.zero_grad(set_to_none=True)
    # other colours where the mask is off: the same loss and gradients, bit for bit
    images = torch.where(views.masks[..., None], views.images, 255 - views.images)
    other = Views(views.cameras, images, views.masks)
    batch2 = drawn(scene, other, 9)
    assert not torch.equal(batch2.target, batch.target)
    out2 = scene.render_batch(batch2, step=1, background=bg)
    loss2, mse2 = scene.batch_loss(batch2, out2, ssim_weight=0.0)
    loss2.backward()
    assert float(loss2.detach()) == float(loss.detach()) and mse2 == mse
    assert torch.equal(scene.model.density.grad.to_dense(), grads[0])
    assert torch.equal(scene.model.color.grad.to_dense(), grads[1])
    scene.optimizer.zero_grad(set_to_none=True)
    # every ray masked off: nothing to learn from
    none = Views(views.cameras, views.images, torch.zeros_like(views.masks))
    batch3 = drawn(scene, none, 9)
    loss3, mse3 = scene.batch_loss(batch3, scene.render_batch(batch3, step=1, background=bg), ssim_weight=0.0)
    assert mse3 == 0.0 and float(loss3.detach()) == 0.0


def test_draw_batch_takes_float32_cameras(native):
    """apps/run_data.load_views gives the views float32 cameras: the same rays as float64 ones."""
    views64 = random_views(4)
    views32 = Views(views64.cameras.to(dtype=torch.float32), views64.images)
    scene = FieldScene.create(LO, HI, CONFIG)
    a, b = drawn(scene, views64, 1), drawn(scene, views32, 1)
    for x, y in zip(a.rays, b.rays):
        assert (x - y).abs().max().item() <= CAMERA_RAY_ATOL


def test_occupied_cells_are_the_cells_whose_densest_vertex_reaches_the_threshold():
    # occupied_cells folds a per-row test over bools; cell_alphas is the definition (the
    # largest alpha of the cell's 8 vertices, 0 where one has no row)
    g = torch.Generator().manual_seed(3)
    scene = FieldScene.create(LO, HI, FieldConfig(resolution=24, grow_at=()))
    m = scene.model
    N = len(m)
    drop = torch.rand(m.index.shape, generator=g) < 0.2
    m.index[drop] = -1  # rows stay, some vertices lose theirs
    with torch.no_grad():
        # raw densities spread around the threshold, some exactly at it
        sigma = -math.log1p(-F.ALPHA_MIN) / m.interval
        at = math.log(math.expm1(sigma)) - m.shift
        m.density.copy_(at + torch.randn(N, 1, generator=g) * 0.5)
        m.density[:: 7] = at
    expected = m.cell_alphas() >= F.ALPHA_MIN
    got = m.occupied_cells()
    assert 0 < int(expected.sum()) < expected.numel()  # both kinds of cell present
    assert torch.equal(got, expected)


def test_preview_marches_half_the_samples_of_the_same_tables():
    # the viewer draws moving frames from preview(): the same tensors, twice the step, the
    # alphas of the longer intervals (so the same opacity through a slab of the field)
    g = torch.Generator().manual_seed(5)
    scene = FieldScene.create(LO, HI, FieldConfig(resolution=32, grow_at=()))
    m = scene.model
    with torch.no_grad():
        pos = m.box.vertex_positions(m.device)[m.index >= 0]
        m.density.copy_(((pos.norm(dim=-1, keepdim=True) < 0.6).float() * 8 - 4))  # a soft ball
        m.color.normal_(0.0, 1.0, generator=g)
    m.update_occupancy()
    p = m.preview()
    assert p.density is m.density and p.color is m.color and p.step == pytest.approx(2 * m.step)
    cams = ring_cameras(3, 24, torch.float32)
    origins, dirs = (t.reshape(-1, 3).contiguous() for t in cams.generate_rays())
    bg = torch.ones(origins.shape[0], 3)
    full, preview = m.render_rays(origins, dirs, bg), p.render_rays(origins, dirs, bg)
    assert 0.4 < preview[3] / full[3] < 0.6  # sample counts
    # a soft ball marched at twice the step: opacities agree to PREVIEW_ALPHA_ATOL
    assert (preview[1] - full[1]).abs().max() < PREVIEW_ALPHA_ATOL
    assert (preview[1] > 0.5).sum() > 100  # the ball is in view


# ---------------------------------------------------------------------------- learned background

# the colour of rays that miss the box, learnt by the background alone (60 steps, lr 0.2):
# measured within 0.0136 of the target (texels at the view's edge see fewer rays)
BACKGROUND_COLOUR_ATOL = 0.02


def outward_views(count: int = 4, size: int = 12) -> Views:
    """Cameras outside the box looking away from it, onto a constant colour: only the
    background can explain what they see."""
    ang = torch.arange(count, dtype=torch.float64) * 2 * math.pi / count + 0.3
    eyes = torch.stack([3 * torch.cos(ang), 3 * torch.sin(ang), torch.full_like(ang, 0.2)], dim=1)
    cams = Cameras.look_at(eyes, 2 * eyes, (0.0, 0.0, 1.0), 50.0, size, size)
    rgb = (torch.tensor(COLOUR) * 255).round().to(torch.uint8)
    return Views(cams, rgb.expand(count, size, size, 3).clone())


def test_a_learned_background_takes_the_colour_of_rays_past_the_box(native):
    views = outward_views()
    config = FieldConfig(resolution=16, grow_at=(3, 6), rays=256, envmap_height=8, envmap_lr=0.2)
    fixed = FieldScene.create(LO, HI, config)
    assert fixed.model.envmap is None
    learned = FieldScene.create(LO, HI, config, learned_background=True)
    assert tuple(learned.model.envmap.shape) == (3, 8, 16)
    trainer = Trainer(learned, [], views, config=TrainerConfig(steps=60), background=(1, 1, 1))
    trainer.run()
    target = torch.tensor(COLOUR).expand(len(views), views.cameras.height, views.cameras.width, 3)
    # the run's background colour (white) is what a fixed background shows; the learned one
    # replaces it
    assert torch.equal(fixed.render(views.cameras, background=(1, 1, 1)).image, torch.ones_like(target))
    got = trainer.scene.render(views.cameras, background=(1, 1, 1)).image
    assert (got - target).abs().max() < BACKGROUND_COLOUR_ATOL
    # it survives growth (the grid grew twice) and a checkpoint
    assert trainer.scene.level == 2
    restored = FieldScene.from_state_dict(save_load(trainer.scene.state_dict()))
    assert torch.equal(restored.model.envmap, trainer.scene.model.envmap)
    assert torch.equal(restored.render(views.cameras).image, got)


def test_resumed_run_with_a_learned_background_continues_bit_identically(native):
    views = disc_views()
    final, states = run_with_states(CONFIG, views, (5,), learned_background=True)
    assert "envmap" in final
    trainer = resume(CONFIG, views, states[5], learned_background=True)
    for name, t in tables(trainer.scene).items():
        assert torch.equal(t, final[name]), f"{name} differs after resuming at step 5"


@pytest.mark.parametrize("model, known, learns", [("auto", True, False), ("auto", False, True),
                                                  ("fixed", False, False), ("envmap", True, True)])  # fmt: skip
def test_background_model_auto_learns_where_the_capture_has_no_background(model, known, learns):
    from splatfield.scenes.field_scene import learns_background

    assert learns_background(FieldConfig(background_model=model), known_background=known) is learns
