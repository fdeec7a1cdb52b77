"""A radiance field being trained (:class:`FieldScene`, the scene protocol): a batch is
rays drawn at random across all training views; the grid grows coarse to fine at the
steps of ``FieldConfig.grow_at``; the occupancy bitfield is recomputed every
``occupancy_every`` steps; the tables learn with :class:`GridAdam` (only the rows a step
touched move). The field itself, and how it renders, is :class:`.field.FieldModel`."""

from __future__ import annotations

import copy
import math
from dataclasses import asdict
from typing import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor

from splatfield.render import Cameras, RenderOutput, Statistic
from splatfield.render.field import GridBox, block_bits, grid_sample, unpack_bits

from .config import from_dict
from .field import EMPTY_RAW, FieldModel, cell_corners_reduce, empty_meta
from .grid_adam import GridAdam
from .options import FieldConfig
from .views import Batch, Views, ViewSampler


BOX_ALPHA = 0.1  # cells whose densest vertex reaches this alpha per sample bound the next grid
TV_VERTICES = 65536  # random vertices of the TV term per step


def mlp_head(config: FieldConfig, device: torch.device | str = "cpu") -> torch.nn.Module | None:
    """The mlp head (None for SH colour): features and the direction's SH encoding -> two
    hidden ReLU layers -> rgb logits; its start drawn from a fixed seed (runs repeat)."""
    if config.head != "mlp":
        return None
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        K = (config.sh_degree + 1) ** 2
        w = config.mlp_width
        return torch.nn.Sequential(torch.nn.Linear(config.features + K, w), torch.nn.ReLU(), torch.nn.Linear(w, w),
                                   torch.nn.ReLU(), torch.nn.Linear(w, 3)).to(device)  # fmt: skip


def learns_background(config: FieldConfig, known_background: bool) -> bool:
    """Whether the field learns what lies past its box (``background_model``; auto: when the
    capture has no background of its own, as real photos)."""
    return config.background_model == "envmap" or (config.background_model == "auto" and not known_background)


def envmap(config: FieldConfig, device: torch.device | str = "cpu") -> Tensor:
    """A grey learned background: [3, H, 2H] logits 0."""
    return torch.zeros(3, config.envmap_height, 2 * config.envmap_height, device=device)


def coarse_box(lo: Sequence[float], hi: Sequence[float], config: FieldConfig) -> GridBox:
    """The first grid: the final resolution halved once per growth, cells about cubic."""
    longest = max(h - l for l, h in zip(lo, hi))
    cells = config.resolution >> len(config.grow_at)
    res = tuple(max(2, round(cells * (h - l) / longest)) + 1 for l, h in zip(lo, hi))
    return GridBox(tuple(lo), tuple(hi), res)  # type: ignore[arg-type]


class FieldScene:
    kind = "field"
    count_label = "grid vertices"

    def __init__(self, model: FieldModel, config: FieldConfig, level: int = 0) -> None:
        self.config = config
        self.level = level  # growths done
        self.run_length = 1
        self.rays_per_step = config.rays
        self.samples_per_ray = 0.0  # of the last training batch, for logs and benchmarks
        self._tv_points: Tensor | None = None
        self._use(model)

    def _use(self, model: FieldModel, optimizer_state: dict | None = None) -> None:
        """Trains ``model``'s tables from now on (a fresh optimizer unless a state is given)."""
        model.density = torch.nn.Parameter(model.density.detach())
        model.color = torch.nn.Parameter(model.color.detach())
        self.model = model
        groups = [
            {"params": [model.density], "lr": self.config.density_lr, "name": "density"},
            {"params": [model.color], "lr": self.config.color_lr, "name": "color"},
        ]  # fmt: skip
        if model.mlp is not None:
            groups.append({"params": list(model.mlp.parameters()), "lr": self.config.mlp_lr, "name": "mlp"})
        if model.envmap is not None:
            model.envmap = torch.nn.Parameter(model.envmap.detach())
            groups.append({"params": [model.envmap], "lr": self.config.envmap_lr, "name": "envmap"})
        self.optimizer = GridAdam(groups)
        if optimizer_state is not None:
            self.optimizer.load_state_dict(optimizer_state)

    @classmethod
    def create(cls, lo: Sequence[float], hi: Sequence[float], config: FieldConfig,
               device: torch.device | str = "cpu", *, learned_background: bool = False) -> FieldScene:  # fmt: skip
        """Every vertex of the coarse grid, grey, with alpha ``init_alpha`` per sample; a grey
        learned background if ``learned_background``."""
        box = coarse_box(lo, hi, config)
        n = box.res[0] * box.res[1] * box.res[2]
        index = torch.arange(n, dtype=torch.int32, device=device).view(box.res)
        # densities are per cell of the final grid: a coarse sample is 2^growths of them long
        coarse_cell = min(1.0 / s for s in box.scale)
        unit = coarse_cell / 2 ** len(config.grow_at)
        # softplus(shift) * interval = -log(1 - init_alpha) on the coarse grid
        sigma0 = -math.log1p(-config.init_alpha) / (config.step_ratio * coarse_cell / unit)
        shift = math.log(math.expm1(sigma0))
        K = (config.sh_degree + 1) ** 2
        width = 3 * K if config.head == "sh" else config.features
        model = FieldModel(box, index, torch.zeros(n, 1, device=device), torch.zeros(n, width, device=device),
                           torch.zeros(0, dtype=torch.uint8, device=device), shift, unit, config.step_ratio,
                           config.sh_degree, mlp=mlp_head(config, device),
                           envmap=envmap(config, device) if learned_background else None)  # fmt: skip
        model.update_occupancy()
        return cls(model, config)

    # ------------------------------------------------------------------ Renderable

    def __len__(self) -> int:
        return len(self.model)

    @property
    def device(self) -> torch.device:
        return self.model.device

    @property
    def max_sh_degree(self) -> int:
        return self.model.max_sh_degree

    def render(self, cameras: Cameras, *, background: Tensor | Sequence[float] | None = None,
               sh_degree: int | None = None) -> RenderOutput:  # fmt: skip
        return self.model.render(cameras, background=background, sh_degree=sh_degree)

    def render_trainable(self, cameras: Cameras, *, background: Tensor, generator: torch.Generator) -> RenderOutput:
        """Whole views with gradients (a loss on renders of other cameras than the training
        views', as score distillation's): every pixel's ray, jittered from ``generator``."""
        cams = cameras.to(device=self.device, dtype=torch.float32)
        B, H, W = len(cams), cams.height, cams.width
        origins, dirs = (v.reshape(-1, 3).contiguous() for v in cams.generate_rays())
        jitter = torch.rand(origins.shape[0], generator=generator).to(self.device)
        bg = torch.as_tensor(background, dtype=torch.float32, device=self.device).reshape(-1)[:3]
        rgb, alpha, depth, _ = self.model.render_rays(origins, dirs, bg.expand(origins.shape[0], 3), jitter)
        return RenderOutput(rgb.view(B, H, W, 3), alpha.view(B, H, W, 1), depth.view(B, H, W, 1), empty_meta(cams))

    def snapshot(self) -> FieldModel:
        return self.model.snapshot()

    def preview(self) -> FieldModel:
        return self.model.preview()

    def points(self) -> Tensor:
        return self.model.points()

    # ------------------------------------------------------------------ batches

    def draw_batch(self, views: Views, sampler: ViewSampler, size: int = 1, share: slice | None = None) -> Batch:
        """``rays × size`` rays through random pixels of random training views (the trainer's
        generator draws them: a resumed run draws the same)."""
        if share is not None:
            raise ValueError("a radiance field trains in one process (--nproc 1)")
        g = sampler.generator
        B, H, W = len(views), views.cameras.height, views.cameras.width
        R = self.rays_per_step * size
        flat = torch.randint(0, B * H * W, (R,), generator=g)
        jitter = torch.rand(R, generator=g)
        # the vertices the TV term reads, drawn here from the trainer's generator (resumable)
        self._tv_points = torch.rand(TV_VERTICES, 3, generator=g) if self.config.tv_weight > 0 else None
        cams, pix = flat // (H * W), flat % (H * W)
        xs, ys = (pix % W).double() + 0.5, (pix // W).double() + 0.5
        origins, dirs = views.cameras.pixel_rays(cams, xs, ys)
        dev = self.device
        target = views.images.view(-1, 3)[flat].to(dev).float() / 255.0
        mask = None if views.masks is None else views.masks.view(-1)[flat].to(dev)
        obj = None if views.silhouettes is None else views.silhouettes.view(-1)[flat].to(dev).float() / 255.0
        rays = (origins.float().to(dev), dirs.float().to(dev), jitter.to(dev))
        return Batch([int(cams[0])], views.cameras[int(cams[0]) : int(cams[0]) + 1], target, mask, rays=rays,
                     silhouette=obj)  # fmt: skip

    def render_batch(self, batch: Batch, *, step: int, background: Tensor, stats: Sequence[Statistic] = ()) -> RenderOutput:
        assert batch.rays is not None, "a field renders ray batches"
        origins, dirs, jitter = batch.rays
        R = origins.shape[0]
        rgb, alpha, depth, n = self.model.render_rays(origins, dirs, background.expand(R, 3), jitter)
        self.samples_per_ray = n / max(1, R)
        return RenderOutput(rgb[None, None], alpha[None, None], depth[None, None], empty_meta(None))

    def batch_loss(self, batch: Batch, out: RenderOutput, *, ssim_weight: float,
                   alpha_weight: float = 0.0) -> tuple[Tensor, float]:  # fmt: skip
        """Mean squared error over the rays (masked ones left out; SSIM needs whole images),
        plus the total variation of the densities when ``tv_weight`` > 0, plus ``alpha_weight``
        times the L1 of the rays' alpha to an object mask."""
        err = ((out.image[0, 0] - batch.target) ** 2).mean(dim=-1)
        if batch.mask is not None:
            err = err[batch.mask]
        mse = err.mean() if err.numel() else err.sum()
        loss = mse
        if batch.silhouette is not None and alpha_weight > 0:
            loss = loss + alpha_weight * (out.alpha[0, 0, :, 0] - batch.silhouette).abs().mean()
        if self.config.tv_weight > 0:
            loss = loss + self.config.tv_weight * self.density_tv()
        return loss, float(mse.detach())

    def density_tv(self) -> Tensor:
        """Mean squared difference of raw densities between random vertices and their +x, +y,
        +z neighbours (pairs where both have rows)."""
        m = self.model
        dev = self.device
        res = torch.tensor(m.box.res, device=dev)
        assert self._tv_points is not None, "draw_batch draws the TV vertices"
        v = (self._tv_points.to(dev) * (res - 1).float()).long()
        base = m.index[v[:, 0], v[:, 1], v[:, 2]].long()
        total = m.density.new_zeros(())
        for a in range(3):
            n = v.clone()
            n[:, a] += 1
            other = m.index[n[:, 0], n[:, 1], n[:, 2]].long()
            ok = (base >= 0) & (other >= 0)
            rows = torch.stack([base[ok], other[ok]])
            vals = F.embedding(rows, m.density, sparse=True)[..., 0]
            total = total + ((vals[0] - vals[1]) ** 2).mean() if ok.any() else total
        return total / 3

    # ------------------------------------------------------------------ schedules

    def lr_factor_at(self, step: int) -> float:
        t = min(max(step / max(1, self.run_length), 0.0), 1.0)
        return self.config.lr_final_ratio**t

    def set_run_length(self, steps: int) -> None:
        self.run_length = int(steps)

    def set_batch_size(self, batch_size: int) -> None:
        """``draw_batch`` draws ``batch_size`` × ``rays`` rays (the learning rates stay)."""
        self.rays_per_step = self.config.rays

    def level_at(self, step: int) -> int:
        """Growths done before training step ``step`` (counted from 1)."""
        return sum(1 for s in self.config.grow_at if step > s)

    def set_step(self, step: int) -> None:
        while self.level < self.level_at(step):
            self.grow()
        if (step - 1) % self.config.occupancy_every == 0:
            self.model.update_occupancy()
            self._roll_touched()
        f = self.lr_factor_at(step)
        for group in self.optimizer.param_groups:
            group["lr"] = getattr(self.config, f"{group['name']}_lr") * f

    def schedule_at(self, step: int) -> dict[str, float]:
        f = self.lr_factor_at(step)
        return {"lr.density": self.config.density_lr * f, "lr.color": self.config.color_lr * f,
                "sh_degree": self.max_sh_degree, "grid_level": self.level_at(step)}  # fmt: skip

    # ------------------------------------------------------------------ coarse to fine

    def recently_touched(self) -> Tensor | None:
        """Rows some sample reached in the last one or two occupancy periods: early steps reach
        everything (the field is faint), later ones only what is not hidden behind surfaces."""
        state = self.optimizer.state.get(self.model.density, {})
        if "touched" not in state:
            return None
        now = state["touched"].bool()  # (a loaded optimizer state holds it as float)
        before = state.get("touched_before")
        return now if before is None else now | before.bool()

    def _roll_touched(self) -> None:
        state = self.optimizer.state.get(self.model.density, {})
        if "touched" in state:
            state["touched_before"] = state["touched"].clone()
            state["touched"].zero_()

    def reached_cells(self) -> Tensor:  # [cx, cy, cz] bool
        """Occupied cells with a vertex some sample reached lately (space no ray sees keeps its
        starting density: it is dropped, not kept as occupied)."""
        m = self.model
        touched = self.recently_touched()
        occ = m.occupied_cells()
        if touched is None:
            return occ
        seen = torch.zeros(m.box.res, dtype=torch.bool, device=self.device)
        has = m.index >= 0
        seen[has] = touched[m.index[has].long()]
        return occ & cell_corners_reduce(seen, torch.logical_or)

    def grown_box(self, keep: Tensor) -> GridBox:
        """The next level's box: the kept cells' bounds, two old cells wider, inside the old box;
        cells along its longest side as the level's resolution (the final one at the last level)."""
        old = self.model.box
        cell = torch.tensor([1.0 / s for s in old.scale], dtype=torch.float64)
        lo0, hi0 = torch.tensor(old.lo, dtype=torch.float64), torch.tensor(old.hi, dtype=torch.float64)
        idx = keep.nonzero()
        if idx.numel() == 0:  # nothing reached: keep the box
            lo, hi = lo0, hi0
        else:
            first, last = idx.min(dim=0).values.cpu().double(), idx.max(dim=0).values.cpu().double()
            lo = torch.maximum(lo0 + (first - 2) * cell, lo0)
            hi = torch.minimum(lo0 + (last + 3) * cell, hi0)
        cells = self.config.resolution >> (len(self.config.grow_at) - self.level - 1)
        side = hi - lo
        res = tuple(max(2, round(cells * float(s) / float(side.max()))) + 1 for s in side)
        return GridBox(tuple(lo.tolist()), tuple(hi.tolist()), res)  # type: ignore[arg-type]

    @torch.no_grad()
    def grow(self) -> None:
        """The next, finer grid over the bounds of the cells rays reached (about twice the
        cells per axis, more where the bounds shrank), with vertices only in and next to
        those cells; values are the old grid's, interpolated. The optimizer starts afresh."""
        old = self.model
        reached = self.reached_cells()
        keep_old = F.max_pool3d(reached.float()[None, None], kernel_size=3, stride=1, padding=1)[0, 0] > 0
        # the box bounds the solid part (faint cells at the edges stay only if inside it)
        solid = reached & (old.cell_alphas() >= BOX_ALPHA)
        box = self.grown_box(solid if bool(solid.any()) else reached)
        pos_all = box.vertex_positions(self.device)
        # a new vertex is kept when it lies in (the closure of) a kept old cell
        u = (pos_all - torch.tensor(old.box.lo, device=self.device)) * torch.tensor(old.box.scale, device=self.device)
        cells = torch.tensor(old.box.cells, device=self.device)
        keep = torch.zeros(box.res, dtype=torch.bool, device=self.device)
        for c in range(8):  # the old cells whose closure holds the vertex
            d = torch.tensor([(c >> 2) & 1, (c >> 1) & 1, c & 1], device=self.device)
            i = (torch.floor(u + 1e-4).long() - d).clamp(min=0)
            i = torch.minimum(i, cells - 1)
            keep |= keep_old[i[..., 0], i[..., 1], i[..., 2]]
        pos = pos_all[keep]
        index = torch.full(box.res, -1, dtype=torch.int32, device=self.device)
        index[keep] = torch.arange(pos.shape[0], dtype=torch.int32, device=self.device)
        density = grid_sample(old.index, old.density.detach(), pos, old.box)
        # a vertex without a row reads as raw 0 (the starting density): where the old grid had
        # no rows around a new vertex, it starts empty instead
        present = grid_sample(old.index, torch.ones_like(old.density.detach()), pos, old.box)[:, 0]
        density[present < 1 - 1e-5] = EMPTY_RAW
        color = grid_sample(old.index, old.color.detach(), pos, old.box)
        model = FieldModel(box, index, density, color, old.occupancy, old.shift, old.unit, old.step_ratio,
                           old.max_sh_degree, mlp=old.mlp, envmap=old.envmap)  # fmt: skip
        model.update_occupancy()
        self.level += 1
        self._use(model)

    # ------------------------------------------------------------------ persistence

    def state_dict(self) -> dict:
        m = self.model
        return {
            "kind": self.kind,
            "config": asdict(self.config),
            "level": self.level,
            "box": {"lo": list(m.box.lo), "hi": list(m.box.hi), "res": list(m.box.res)},
            "index": m.index.clone(),
            "density": m.density.detach().clone(),
            "color": m.color.detach().clone(),
            "occupancy": m.occupancy.clone(),
            "shift": m.shift,
            "unit": m.unit,
            "optimizer": copy.deepcopy(self.optimizer.state_dict()),
            "mlp": None if m.mlp is None else copy.deepcopy(m.mlp.state_dict()),
            "envmap": None if m.envmap is None else m.envmap.detach().clone(),
        }

    @classmethod
    def from_state_dict(cls, state: dict, device: torch.device | str = "cpu") -> FieldScene:
        config = from_dict(FieldConfig, state["config"], "field")
        b = state["box"]
        box = GridBox(tuple(b["lo"]), tuple(b["hi"]), tuple(b["res"]))  # type: ignore[arg-type]
        model = FieldModel(box, state["index"].to(device), state["density"].to(device), state["color"].to(device),
                           state["occupancy"].to(device), float(state["shift"]), float(state["unit"]),
                           config.step_ratio, config.sh_degree, mlp=mlp_head(config, device),
                           envmap=None if state.get("envmap") is None else state["envmap"].to(device))  # fmt: skip
        if model.mlp is not None:
            model.mlp.load_state_dict(state["mlp"])
        model.blocks = block_bits(unpack_bits(model.occupancy, box.cells))  # derived from the occupancy
        scene = cls.__new__(cls)
        FieldScene.__init__(scene, model, config, int(state["level"]))
        scene.optimizer.load_state_dict(state["optimizer"])
        return scene
