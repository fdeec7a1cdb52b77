"""``elastic``: train once, deploy at any size (FlexGS, METHODS.md §3; the model is
:class:`splatfield.scenes.elastic.ElasticModel`).

The elastic phase runs in the last part of training, from where densification stops (70%
of a short run, as ``adc``'s ``refine_stop``): from then on the set of Gaussians is fixed,
so a ranking of them means the same at every later step and at inference. Each step of the
phase it

1. adds the step's per-Gaussian importance (sum of alpha * T over the pixels, from the
   rasterizer's forward pass) to the model's running total;
2. draws a ratio r log-uniformly in [``ratio_min``, 1] from its own generator (saved with
   its state: a resumed run draws the same);
3. keeps the top ceil(r N) Gaussians by selector score, their opacities multiplied by a
   straight-through mask (1 in value; the gradient of sigmoid((score - threshold) / T),
   so the photometric loss moves the scores of the kept ones), transformed at r;
4. renders the reduced scene from the step's views and adds ``weight`` times its
   photometric loss. The scene's own parameters are detached in this branch: the full
   model trains exactly as without the phase, only the selector and transform learn from
   the reduced renders (their own Adam, stepped after the backward pass; a ``table``
   transform has a sparse, lazy Adam of its own: only the rows a step read move).
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from splatfield.render import RenderOutput, Statistic, rasterize

from ..elastic import KNOTS, ElasticModel, kept_count, ranking, subset
from ..gaussian_scene import GaussianScene
from ..views import Batch
from .options import ElasticConfig


class Elastic:
    name = "elastic"
    scene_kinds = frozenset({"gaussians"})

    def __init__(self, config: ElasticConfig = ElasticConfig(), *, start: int = 1,
                 background: tuple[float, float, float] = (0.0, 0.0, 0.0), ssim_weight: float = 0.2) -> None:  # fmt: skip
        """``start``: the first step of the elastic phase (the registry passes where
        densification stops); ``background`` and ``ssim_weight``: the run's."""
        self.config = config
        self.start = int(start)
        self.background = tuple(float(c) for c in background)
        self.ssim_weight = float(ssim_weight)
        self.model: ElasticModel | None = None
        self.optimizer: torch.optim.Adam | None = None
        self.table_optimizer: torch.optim.SparseAdam | None = None
        self.generator = torch.Generator().manual_seed(config.seed)
        self.next_step = 1

    @property
    def active(self) -> bool:
        return self.next_step >= self.start

    @property
    def statistics(self) -> tuple[Statistic, ...]:
        return ("importance",) if self.active else ()

    # ------------------------------------------------------------------ hooks

    def _begin(self, scene: GaussianScene) -> ElasticModel:
        """A fresh model for the scene's Gaussians (at the phase's start, or if their number
        changed: a strategy after this one pruned)."""
        c = self.config
        model = ElasticModel(len(scene), hidden=c.hidden, seed=c.seed, selector_range=c.selector_range,
                             transform=c.transform, knots=c.knots).to(scene.device)  # fmt: skip
        model.fit_normalisation(scene.gaussians)
        self._optimizers(model)
        return model

    def _optimizers(self, model: ElasticModel) -> None:
        self.model = model
        if model.transform_kind == "table":  # eps as the scene's: per-Gaussian gradients are tiny
            self.optimizer = torch.optim.Adam(model.selector.parameters(), lr=self.config.lr)
            table = model.transform.parameters()
            self.table_optimizer = torch.optim.SparseAdam(table, lr=self.config.table_lr, eps=1e-15)
        else:
            self.optimizer = torch.optim.Adam(model.parameters(), lr=self.config.lr)
            self.table_optimizer = None

    def draw_ratio(self) -> float:
        u = float(torch.rand((), generator=self.generator))
        lo = math.log(self.config.ratio_min)
        return math.exp(lo + u * (0.0 - lo))

    def extra_loss(self, step: int, scene: GaussianScene, batch: Batch, out: RenderOutput) -> Tensor | None:
        if step < self.start:
            return None
        model = self.model
        if model is None or model.importance.shape[0] != len(scene):
            model = self._begin(scene)
        imp = out.stats.importance.detach()  # [B, N]
        model.importance += imp.sum(dim=0).to(model.importance.dtype)
        model.views_seen += imp.shape[0]
        r = self.draw_ratio()
        g = scene.gaussians
        g = type(g)(*(t.detach() for t in g.tensors()))
        feats = model.features(g)
        scores = model.scores(feats)
        N = len(g)
        k = kept_count(r, N)
        order = ranking(scores)
        keep = order[:k]
        # the threshold between the last kept and the first dropped score
        s_sorted = scores.detach()[order]
        tau = s_sorted[k - 1] - 1.0 if k == N else 0.5 * (s_sorted[k - 1] + s_sorted[k])
        soft = torch.sigmoid((scores[keep] - tau) / self.config.temperature)
        mask = 1.0 + soft - soft.detach()  # 1 in value, the soft keep's gradient
        reduced = model.transformed(subset(g, keep), feats[keep], r, keep) if r < 1.0 else subset(g, keep)
        opacity = (torch.sigmoid(reduced.opacity_logits) * mask).clamp(1e-6, 1 - 1e-6)
        reduced = type(g)(reduced.means, reduced.log_scales, reduced.quats, torch.logit(opacity), reduced.sh0, reduced.shN)
        out_r = rasterize(reduced, batch.cameras, sh_degree=scene.sh_degree_at(step - 1), background=self.background)
        loss, _ = scene.batch_loss(batch, out_r, ssim_weight=self.ssim_weight)
        return self.config.weight * loss

    def after_backward(self, step: int, scene: GaussianScene, out: RenderOutput) -> None:
        if step >= self.start and self.optimizer is not None:
            for opt in (self.optimizer, self.table_optimizer):
                if opt is not None:
                    opt.step()
                    opt.zero_grad(set_to_none=True)

    def after_step(self, step: int, scene: GaussianScene, generator: torch.Generator) -> dict[str, float]:
        self.next_step = step + 1
        return {}

    def schedule_at(self, step: int) -> dict[str, float]:
        return {"elastic": float(step >= self.start)}

    # ------------------------------------------------------------------ persistence

    def state_dict(self) -> dict:
        return {
            "start": self.start,
            "next_step": self.next_step,
            "generator": self.generator.get_state(),
            "model": None if self.model is None else {k: v.clone() for k, v in self.model.state_dict().items()},
            "optimizer": None if self.optimizer is None else self.optimizer.state_dict(),
            "table_optimizer": None if self.table_optimizer is None else self.table_optimizer.state_dict(),
            "hidden": self.config.hidden,
            "transform": "mlp" if self.model is None else self.model.transform_kind,
            "knots": getattr(None if self.model is None else self.model.transform, "knots", None),
        }

    def load_state_dict(self, state: dict) -> None:
        self.start = int(state["start"])
        self.next_step = int(state["next_step"])
        self.generator.set_state(state["generator"])
        if state["model"] is None:
            self.model = self.optimizer = self.table_optimizer = None
            return
        self._optimizers(elastic_model_from_state(state))
        self.optimizer.load_state_dict(state["optimizer"])
        if self.table_optimizer is not None:
            self.table_optimizer.load_state_dict(state["table_optimizer"])


def elastic_model_from_state(state: dict, device: torch.device | str = "cpu") -> ElasticModel:
    """The trained model of an elastic strategy's saved state (a checkpoint's)."""
    weights = state["model"]
    model = ElasticModel(int(weights["importance"].shape[0]), hidden=int(state["hidden"]),
                         transform=state.get("transform", "mlp"), knots=tuple(state.get("knots") or KNOTS))  # fmt: skip
    model.load_state_dict(weights)
    return model.to(device)
