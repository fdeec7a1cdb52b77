"""Elastic model size (FlexGS, docs/TRAINING.md "Elastic size"): one trained Gaussian scene
served at any size ratio r in (0, 1] without fine-tuning.

Two learnt parts, trained by the ``elastic`` strategy (:mod:`.strategies.elastic`):

- the **selector** scores every Gaussian from its own features (normalised position,
  log-scales, rotation, opacity, log-importance). The score does not depend on r: the
  Gaussians kept at r are the top ceil(r N) by score, so the kept sets are nested (those kept
  at r1 < r2 are kept at r2 too) and LOD levels share Gaussians. The keep-logit at r is the
  score minus the r-th quantile of the scores. The score starts as the log-importance (the
  network is a zero-initialised residual on top of it), so an untrained selector is the
  importance-pruning baseline;
- the **transform** changes a kept Gaussian at r: ``mlp`` maps its position and features and
  log r to small changes of position (in units of its own size), log-scales, rotation and
  opacity, scaled by (1 - r); ``table`` (:class:`DeltaTable`) holds the changes of each
  Gaussian, colour too, at a few knot ratios, piecewise-linear in log r between them and zero
  at r = 1. Either way the full model (r = 1) is exactly the trained scene. Zero-initialised.

Inference (:meth:`ElasticModel.at_ratio`) is deterministic: no noise, a stable sort, the same
Gaussians bit for bit for the same r. Baseline rankings (importance, opacity, random) use
the same nested top-k rule (:func:`baseline_order`).
"""

from __future__ import annotations

import math
from typing import Callable, Literal

import numpy as np
import torch
from torch import Tensor, nn

from splatfield.render import Cameras, Gaussians, rasterize

RankingMethod = Literal["importance", "opacity", "random"]
TransformKind = Literal["mlp", "table"]
RANKING_METHODS: tuple[RankingMethod, ...] = ("importance", "opacity", "random")
FEATURES = 12  # position 3, log-scales 3, rotation 4, opacity 1, log-importance 1
FREQUENCIES = 4  # sin/cos octaves of the position read by the transform
DELTAS = 11  # position 3, log-scales 3, rotation 4, opacity logit 1
TABLE_DELTAS = DELTAS + 3  # and the colour (sh0)
KNOTS = (0.5, 0.25, 0.1, 0.05, 0.01)
# a table entry's change per unit: the 3DGS learning rates relative to the log-scales' (one
# Adam rate then moves each quantity at its usual pace); positions in units of the size
TABLE_UNITS = (1.0,) * 6 + (0.2,) * 4 + (10.0,) + (0.5,) * 3
EPS = 1e-12


def kept_count(ratio: float, total: int) -> int:
    """ceil(r N), at least one Gaussian of a non-empty scene."""
    if not (0.0 < ratio <= 1.0) or not math.isfinite(ratio):
        raise ValueError(f"a size ratio lies in (0, 1], not {ratio}")
    return min(total, max(1 if total else 0, math.ceil(ratio * total - 1e-9)))


def subset(g: Gaussians, keep: Tensor) -> Gaussians:
    return Gaussians(*(t[keep] for t in g.tensors()))


def top(order: Tensor, ratio: float) -> Tensor:
    """The first ceil(r N) of a ranking, in ascending index order (the scene's own order)."""
    keep = torch.zeros(order.shape[0], dtype=torch.bool, device=order.device)
    keep[order[: kept_count(ratio, order.shape[0])]] = True
    return keep.nonzero()[:, 0]


def ranking(key: Tensor) -> Tensor:
    """Indices from the largest key to the smallest, ties in index order (numpy's stable
    sort: torch's stable sort takes ~1 s for a million keys on a CPU, numpy's ~0.1 s)."""
    order = np.argsort(-key.detach().float().cpu().numpy(), kind="stable")
    return torch.from_numpy(order).to(key.device)


def baseline_order(method: RankingMethod, g: Gaussians, importance: Tensor | None = None, seed: int = 0) -> Tensor:
    """Gaussians from most to least worth keeping by a baseline rule (ties by index)."""
    if method == "importance":
        if importance is None:
            raise ValueError("importance ranking needs the importance of every Gaussian")
        key = importance.float()
    elif method == "opacity":
        key = g.opacity_logits.detach().float()
    elif method == "random":
        return torch.randperm(len(g), generator=torch.Generator().manual_seed(seed)).to(g.means.device)
    else:
        raise ValueError(f"unknown ranking {method!r}; choose from {RANKING_METHODS}")
    return ranking(key)


@torch.no_grad()
def importance_over(g: Gaussians, cameras: Cameras, *, on_view: Callable[[int], None] | None = None,
                    reduce: Literal["sum", "max"] = "sum") -> Tensor:  # fmt: skip
    """Global significance of every Gaussian (LightGaussian): the sum over all ``cameras``
    (a run's training views) and their pixels of alpha * T, from the rasterizer's
    ``importance`` statistic; one view at a time, without gradients. [N] float64 on ``g``'s
    device; a Gaussian no view sees has 0. ``reduce="max"``: the largest of the per-view
    sums instead (what a Gaussian gives the one view it matters most to; export's
    ``--min-contribution``)."""
    total = torch.zeros(len(g), dtype=torch.float64, device=g.means.device)
    cams = cameras.to(device=g.means.device, dtype=torch.float32)
    for i in range(len(cams)):
        out = rasterize(g, cams[i : i + 1], stats=("importance",))
        view = out.stats.importance[0].to(torch.float64)
        if reduce == "max":
            torch.maximum(total, view, out=total)
        else:
            total += view
        if on_view is not None:
            on_view(i)
    return total


def _mlp(inputs: int, hidden: int, outputs: int) -> nn.Sequential:
    net = nn.Sequential(nn.Linear(inputs, hidden), nn.ReLU(), nn.Linear(hidden, hidden), nn.ReLU(),
                        nn.Linear(hidden, outputs))  # fmt: skip
    nn.init.zeros_(net[-1].weight)  # a residual that starts at nothing
    nn.init.zeros_(net[-1].bias)
    return net


class DeltaTable(nn.Module):
    """Per-Gaussian changes at the knot ratios (descending, below 1), piecewise-linear in
    log r between them, zero at r = 1 and constant below the last knot. One row per knot and
    Gaussian, read with sparse gradients: a step trains only the rows of the kept Gaussians at
    the (at most two) knots around its r (``torch.optim.SparseAdam``: lazy moments)."""

    def __init__(self, num_gaussians: int, knots: tuple[float, ...] = KNOTS) -> None:
        super().__init__()
        if not knots or list(knots) != sorted(set(knots), reverse=True) or not (0.0 < knots[-1] and knots[0] < 1.0):
            raise ValueError(f"knots lie in (0, 1), descending, not {knots}")
        self.knots = tuple(float(k) for k in knots)
        self.num_gaussians = num_gaussians
        self.weight = nn.Parameter(torch.zeros(len(knots) * num_gaussians, TABLE_DELTAS))
        self.register_buffer("units", torch.tensor(TABLE_UNITS))

    def weights(self, ratio: float) -> list[tuple[int, float]]:
        """(knot index, weight) of the knots that make the change at r (none at r = 1)."""
        xs = [0.0] + [math.log(k) for k in self.knots]  # log r of r = 1 and of the knots
        x = math.log(ratio)
        if x <= xs[-1]:
            return [(len(self.knots) - 1, 1.0)]
        i = next(i for i in range(len(xs) - 1) if xs[i + 1] < x)  # xs[i] >= x > xs[i + 1]
        t = (xs[i] - x) / (xs[i] - xs[i + 1])
        out = [(i - 1, 1.0 - t), (i, t)]  # knot j is xs[j + 1]; xs[0] (r = 1) is fixed at zero
        return [(j, w) for j, w in out if j >= 0 and w > 0.0]

    def forward(self, index: Tensor, ratio: float) -> Tensor:  # [K, TABLE_DELTAS] of the Gaussians ``index``
        out = torch.zeros(index.shape[0], TABLE_DELTAS, device=index.device)
        for j, w in self.weights(ratio):
            out = out + w * nn.functional.embedding(index + j * self.num_gaussians, self.weight, sparse=True)
        return out * self.units


class ElasticModel(nn.Module):
    """Selector and transform, with the feature normalisation fixed when the elastic phase
    starts (the scene's bounds and log-scale mean) and the importance it accumulates."""

    def __init__(self, num_gaussians: int, hidden: int = 32, seed: int = 0, selector_range: float = 0.2,
                 transform: TransformKind = "mlp", knots: tuple[float, ...] = KNOTS) -> None:  # fmt: skip
        super().__init__()
        self.transform_kind = transform
        with torch.random.fork_rng(devices=[]):  # the networks' start is part of the run's seed
            torch.manual_seed(seed)
            self.selector = _mlp(FEATURES, hidden, 1)
            if transform == "mlp":
                self.transform: nn.Module = _mlp(FEATURES + 6 * FREQUENCIES + 1, hidden, DELTAS)
            elif transform == "table":
                self.transform = DeltaTable(num_gaussians, knots)
            else:
                raise ValueError(f"unknown transform {transform!r}; choose mlp or table")
        self.register_buffer("centre", torch.zeros(3))
        self.register_buffer("half_size", torch.ones(3))
        self.register_buffer("log_scale_mean", torch.zeros(()))
        self.register_buffer("importance", torch.zeros(num_gaussians, dtype=torch.float64))
        self.register_buffer("views_seen", torch.zeros((), dtype=torch.int64))
        # how far the learnt residual may move a score, in standard deviations of the
        # log-importance (unbounded, it reshuffled lego's ranking: docs/BENCHMARKS.md)
        self.register_buffer("selector_range", torch.tensor(float(selector_range)))

    # ------------------------------------------------------------------ features

    @torch.no_grad()
    def fit_normalisation(self, g: Gaussians) -> None:
        """Bounds from the 1st to the 99th percentile of the positions (floaters far out do
        not squash the rest), and the mean log-scale."""
        m = g.means.detach().float()
        lo, hi = torch.quantile(m, 0.01, dim=0), torch.quantile(m, 0.99, dim=0)
        self.centre.copy_((lo + hi) / 2)
        self.half_size.copy_(((hi - lo) / 2).clamp_min(1e-6))
        self.log_scale_mean.copy_(g.log_scales.detach().float().mean())

    def log_importance(self) -> Tensor:  # [N], zero mean, unit spread
        mean_i = self.importance / self.views_seen.clamp_min(1)
        li = torch.log(mean_i + EPS).float()
        return (li - li.mean()) / li.std().clamp_min(1e-6) if li.numel() > 1 else li - li.mean()

    def features(self, g: Gaussians) -> Tensor:  # [N, FEATURES], detached from the scene
        if len(g) != self.importance.shape[0]:
            raise ValueError(f"the elastic model was trained on {self.importance.shape[0]:,} Gaussians, "
                             f"this scene has {len(g):,}")  # fmt: skip
        pos = ((g.means.detach().float() - self.centre) / self.half_size).clamp(-2.0, 2.0)
        ls = g.log_scales.detach().float() - self.log_scale_mean
        q = torch.nn.functional.normalize(g.quats.detach().float(), dim=-1)
        op = torch.sigmoid(g.opacity_logits.detach().float())[:, None]
        return torch.cat([pos, ls, q, op, self.log_importance()[:, None]], dim=1)

    # ------------------------------------------------------------------ selection

    def scores(self, feats: Tensor) -> Tensor:  # [N]: the log-importance plus a bounded learnt residual
        return feats[:, -1] + self.selector_range * torch.tanh(self.selector(feats)[:, 0])

    @torch.no_grad()
    def order(self, g: Gaussians) -> Tensor:
        """Gaussians from most to least worth keeping (stable: ties by index)."""
        return ranking(self.scores(self.features(g)))

    # ------------------------------------------------------------------ transform

    def deltas(self, feats: Tensor, ratio: float) -> Tensor:  # [K, DELTAS], times (1 - r)
        pos = feats[:, :3]
        octaves = pos[:, None, :] * (math.pi * 2.0 ** torch.arange(FREQUENCIES, device=pos.device))[None, :, None]
        enc = torch.cat([octaves.sin().flatten(1), octaves.cos().flatten(1)], dim=1)
        log_r = torch.full_like(pos[:, :1], math.log(ratio))
        return (1.0 - ratio) * self.transform(torch.cat([feats, enc, log_r], dim=1))

    def transformed(self, g: Gaussians, feats: Tensor, ratio: float, keep: Tensor) -> Gaussians:
        """``g`` (the kept Gaussians: ``keep`` their indices in the scene, ``feats`` their
        features) moved by the transform at r."""
        d = self.transform(keep, ratio) if self.transform_kind == "table" else self.deltas(feats, ratio)
        size = torch.exp(g.log_scales.mean(dim=1, keepdim=True))
        sh0 = g.sh0 + d[:, None, 11:14] if d.shape[1] > DELTAS else g.sh0
        return Gaussians(g.means + d[:, 0:3] * size, g.log_scales + d[:, 3:6],
                         torch.nn.functional.normalize(g.quats, dim=-1) + d[:, 6:10], g.opacity_logits + d[:, 10],
                         sh0, g.shN)  # fmt: skip

    @torch.no_grad()
    def at_ratio(self, g: Gaussians, ratio: float, order: Tensor | None = None) -> Gaussians:
        """The scene at size ratio r: the top ceil(r N) by score, transformed (an ordinary
        scene; r = 1 returns ``g``'s values unchanged)."""
        feats = self.features(g)
        if order is None:
            order = ranking(self.scores(feats))
        keep = top(order, ratio)
        if ratio >= 1.0:
            return subset(g, keep)
        return self.transformed(subset(g, keep), feats[keep], ratio, keep)
