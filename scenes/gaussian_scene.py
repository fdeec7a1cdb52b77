"""A trainable set of 3D Gaussians: raw parameters, their optimizer, learning-rate schedules.

Parameters are stored raw (ARCHITECTURE.md conventions) as one ``nn.Parameter`` per name,
each in its own Adam group so that learning rates differ per group. Only
:mod:`splatfield.scenes.ops` changes the number of Gaussians. :class:`GaussianScene`
implements the :class:`~splatfield.scenes.scene.Scene` protocol (a training batch is one
whole view); :class:`FixedGaussians` is a trained or loaded set to look at.
"""

from __future__ import annotations

import copy
import math
from dataclasses import asdict, dataclass, replace
from typing import Sequence

import numpy as np
import torch
from torch import Tensor

from splatfield.render import SH_C0, Cameras, Gaussians, RenderOutput, Statistic, rasterize

from . import ops
from .losses import photometric
from .views import Batch, Views, ViewSampler

PARAM_NAMES = ("means", "log_scales", "quats", "opacity_logits", "sh0", "shN")


@dataclass(frozen=True)
class LearningRates:
    """The 3DGS learning rates. ``means`` (and its final value) are multiplied by the scene
    extent and decay exponentially over ``means_decay_steps``."""

    means: float = 1.6e-4
    means_final: float = 1.6e-6
    means_decay_steps: int = 30_000
    log_scales: float = 5e-3
    quats: float = 1e-3
    opacity_logits: float = 5e-2
    sh0: float = 2.5e-3
    shN: float = 2.5e-3 / 20


class FixedGaussians:
    """Gaussians to look at (a trained scene's snapshot, a splat file): a ``Renderable``."""

    kind = "gaussians"
    count_label = "Gaussians"

    def __init__(self, gaussians: Gaussians) -> None:
        self.gaussians = gaussians

    def __len__(self) -> int:
        return len(self.gaussians)

    @property
    def device(self) -> torch.device:
        return self.gaussians.means.device

    @property
    def max_sh_degree(self) -> int:
        return self.gaussians.max_sh_degree

    @torch.no_grad()
    def render(self, cameras: Cameras, *, background=None, sh_degree: int | None = None) -> RenderOutput:
        return rasterize(self.gaussians, cameras.to(device=self.device), background=background, sh_degree=sh_degree)

    def snapshot(self) -> FixedGaussians:
        return self

    def preview(self) -> FixedGaussians:
        return self

    def points(self) -> Tensor:  # [N, 3]
        return self.gaussians.means.detach()


def batch_rule(batch_size: int) -> tuple[float, tuple[float, float]]:
    """Adam for B views per step (as gsplat, after Malladi et al. 2022): learning rates times
    sqrt(B), betas (1 - B(1 - 0.9), 1 - B(1 - 0.999)), so B views in one step move the
    parameters about as B steps of one view would. B = 1: 3DGS's values."""
    if batch_size == 1:
        return 1.0, (0.9, 0.999)
    return math.sqrt(batch_size), (1 - batch_size * (1 - 0.9), 1 - batch_size * (1 - 0.999))


def _adam(params: ops.Params, lrs: LearningRates, extent: float) -> torch.optim.Adam:
    groups = [
        {"params": [params[name]], "lr": getattr(lrs, name) * (extent if name == "means" else 1.0), "name": name}
        for name in PARAM_NAMES
    ]
    # eps as in 3DGS: the opacity and SH gradients are tiny, a larger eps would stall them.
    # fused: one pass per tensor instead of ~10 elementwise ops (6x faster on a CPU).
    return torch.optim.Adam(groups, lr=0.0, eps=1e-15, fused=True)


class GaussianScene:
    """Gaussians being trained: parameters, Adam, and schedules (position LR, SH degree)."""

    kind = "gaussians"
    count_label = "Gaussians"

    def __init__(self, gaussians: Gaussians, *, extent: float, lrs: LearningRates = LearningRates(),
                 sh_degree_interval: int = 1000) -> None:  # fmt: skip
        self.extent = float(extent)
        self.lrs = lrs
        self.sh_degree_interval = int(sh_degree_interval)
        self.max_sh_degree = gaussians.max_sh_degree
        self.params: ops.Params = {
            name: torch.nn.Parameter(t.detach().clone().contiguous())
            for name, t in zip(PARAM_NAMES, gaussians.tensors())
        }
        self.optimizer = _adam(self.params, lrs, self.extent)
        self.lr_factor = 1.0  # the batch rule's (set_batch_size)

    # ------------------------------------------------------------------ construction

    @classmethod
    def from_points(
        cls,
        points: Tensor,  # [N, 3]
        colors: Tensor,  # [N, 3] in [0, 1]
        *,
        extent: float,
        max_sh_degree: int = 3,
        initial_opacity: float = 0.1,
        lrs: LearningRates = LearningRates(),
        device: torch.device | str = "cpu",
    ) -> GaussianScene:
        """Isotropic Gaussians at ``points``, sized by the mean distance to their 3 nearest
        neighbours (as 3DGS), coloured ``colors``, opacity ``initial_opacity``."""
        points = points.to(torch.float32)
        n = points.shape[0]
        if n == 0:
            raise ValueError("cannot initialise a scene from zero points")
        dist = nearest_neighbour_distance(points)
        K = (max_sh_degree + 1) ** 2
        g = Gaussians(
            means=points,
            log_scales=torch.log(dist)[:, None].repeat(1, 3),
            quats=torch.tensor([1.0, 0.0, 0.0, 0.0]).repeat(n, 1),
            opacity_logits=torch.full((n,), math.log(initial_opacity / (1 - initial_opacity))),
            sh0=((colors.to(torch.float32) - 0.5) / SH_C0)[:, None, :],
            shN=torch.zeros(n, K - 1, 3),
        )
        return cls(g.to(device=device), extent=extent, lrs=lrs)

    # ------------------------------------------------------------------ views

    def __len__(self) -> int:
        return ops.count(self.params)

    @property
    def device(self) -> torch.device:
        return self.params["means"].device

    @property
    def gaussians(self) -> Gaussians:
        """The trainable parameters as ``Gaussians`` (gradients flow into the parameters)."""
        return Gaussians(*(self.params[name] for name in PARAM_NAMES))

    def snapshot(self) -> FixedGaussians:
        return FixedGaussians(Gaussians(*(t.detach().clone() for t in self.gaussians.tensors())))

    def preview(self) -> GaussianScene:
        return self

    def points(self) -> Tensor:  # [N, 3]
        return self.params["means"].detach()

    @property
    def scales(self) -> Tensor:  # [N, 3]
        return torch.exp(self.params["log_scales"].detach())

    @property
    def opacities(self) -> Tensor:  # [N]
        return torch.sigmoid(self.params["opacity_logits"].detach())

    def sh_degree_at(self, step: int) -> int:
        """SH degree in use at ``step``: one more every ``sh_degree_interval`` steps."""
        return min(self.max_sh_degree, step // max(1, self.sh_degree_interval))

    def render(
        self,
        cameras: Cameras,
        *,
        background: Tensor | Sequence[float] | None = None,
        sh_degree: int | None = None,
        stats: Sequence[Statistic] = (),
    ) -> RenderOutput:
        return rasterize(self.gaussians, cameras.to(device=self.device), sh_degree=sh_degree, background=background,
                         stats=stats)  # fmt: skip

    # ------------------------------------------------------------------ training batches

    def draw_batch(self, views: Views, sampler: ViewSampler, size: int = 1, share: slice | None = None) -> Batch:
        """``size`` whole training views (rendered together by the batched rasterizer); with
        ``share``, only that part of them (one process's, the step's views recorded)."""
        step_views = [sampler.next() for _ in range(size)]
        picked = step_views if share is None else step_views[share]
        at = slice(picked[0], picked[0] + 1) if len(picked) == 1 else torch.tensor(picked)
        device = self.device
        # images stay in (pinned, on a GPU run) host memory; a batch at a time travels
        target = views.images[at].to(device=device, non_blocking=True).to(torch.float32) / 255.0
        mask = None if views.masks is None else views.masks[at].to(device, non_blocking=True)
        obj = None if views.silhouettes is None else views.silhouettes[at].to(device).to(torch.float32) / 255.0
        if share is None:
            return Batch(picked, views.cameras[at], target, mask, silhouette=obj)
        return Batch(picked, views.cameras[at], target, mask, step_views, views.cameras[torch.tensor(step_views)],
                     silhouette=obj)  # fmt: skip

    def render_batch(self, batch: Batch, *, step: int, background: Tensor, stats: Sequence[Statistic] = ()) -> RenderOutput:
        return self.render(batch.cameras, background=background, sh_degree=self.sh_degree_at(step - 1), stats=stats)

    def batch_loss(self, batch: Batch, out: RenderOutput, *, ssim_weight: float,
                   alpha_weight: float = 0.0) -> tuple[Tensor, float]:  # fmt: skip
        """The photometric loss averaged over the step's views (a share's views summed, divided
        by the step's size), plus ``alpha_weight`` times the L1 of the alpha to an object mask;
        and the batch's mean squared error."""
        losses = []
        for b in range(len(batch.views)):
            mask = None if batch.mask is None else batch.mask[b]
            loss_b = photometric(out.image[b], batch.target[b], mask, ssim_weight=ssim_weight)
            if batch.silhouette is not None and alpha_weight > 0:
                loss_b = loss_b + alpha_weight * (out.alpha[b, ..., 0] - batch.silhouette[b]).abs().mean()
            losses.append(loss_b)
        loss = losses[0] if batch.step_size == 1 else torch.stack(losses).sum() / batch.step_size
        with torch.no_grad():
            err = (out.image.detach() - batch.target) ** 2
            mse = float(err.mean() if batch.mask is None else err[batch.mask].mean())
        return loss, mse

    # ------------------------------------------------------------------ schedules

    def means_lr_at(self, step: int) -> float:
        """Exponential decay from lrs.means to lrs.means_final (both times the extent and the
        batch rule's factor)."""
        t = min(max(step / max(1, self.lrs.means_decay_steps), 0.0), 1.0)
        lr = math.exp((1 - t) * math.log(self.lrs.means) + t * math.log(self.lrs.means_final))
        return lr * self.extent if self.lr_factor == 1.0 else lr * self.extent * self.lr_factor

    def set_batch_size(self, batch_size: int) -> None:
        """Learning rates and Adam's betas for ``batch_size`` views per step (:func:`batch_rule`)."""
        self.lr_factor, betas = batch_rule(batch_size)
        for group in self.optimizer.param_groups:
            group["betas"] = betas
            if group["name"] != "means":  # the position's follows its schedule (set_step)
                group["lr"] = getattr(self.lrs, group["name"]) * self.lr_factor

    def set_run_length(self, steps: int) -> None:
        """The position learning rate decays over the run's own length (as gsplat does), so a
        short run ends on a settled step size instead of part way down 3DGS's 30k decay."""
        self.lrs = replace(self.lrs, means_decay_steps=int(steps))

    def set_step(self, step: int) -> None:
        for group in self.optimizer.param_groups:
            if group["name"] == "means":
                group["lr"] = self.means_lr_at(step)

    def schedule_at(self, step: int) -> dict[str, float]:
        lrs = {f"lr.{name}": getattr(self.lrs, name) * self.lr_factor for name in PARAM_NAMES}
        return {**lrs, "lr.means": self.means_lr_at(step), "sh_degree": self.sh_degree_at(step - 1)}

    # ------------------------------------------------------------------ persistence

    def state_dict(self) -> dict:
        return {
            "params": {name: p.detach().clone() for name, p in self.params.items()},
            # deep copy: Adam steps its state tensors in place, a snapshot must not follow
            "optimizer": copy.deepcopy(self.optimizer.state_dict()),
            "kind": self.kind,
            "extent": self.extent,
            "lrs": asdict(self.lrs),
            "sh_degree_interval": self.sh_degree_interval,
        }

    @classmethod
    def from_state_dict(cls, state: dict, device: torch.device | str = "cpu") -> GaussianScene:
        g = Gaussians(*(state["params"][name].to(device) for name in PARAM_NAMES))
        scene = cls(g, extent=state["extent"], lrs=LearningRates(**state["lrs"]),
                    sh_degree_interval=state["sh_degree_interval"])  # fmt: skip
        scene.optimizer.load_state_dict(state["optimizer"])
        return scene


def nearest_neighbour_distance(points: Tensor, k: int = 3) -> Tensor:  # [N, 3] -> [N]
    """sqrt of the mean squared distance to the k nearest other points (floored at 1e-7)."""
    from scipy.spatial import cKDTree

    pts = points.detach().cpu().numpy().astype(np.float64)
    n = pts.shape[0]
    if n < 2:
        return torch.full((n,), 0.01, dtype=torch.float32, device=points.device)
    kk = min(k, n - 1)
    d, _ = cKDTree(pts).query(pts, k=kk + 1, workers=-1)
    mean_sq = np.maximum((d[:, 1:] ** 2).mean(axis=1), 1e-7)
    return torch.from_numpy(np.sqrt(mean_sq)).to(torch.float32).to(points.device)

