"""Adam for a radiance field's grid tables: a sparse gradient (the rows a step touched)
updates only those rows and their moments (lazy Adam, as torch's ``SparseAdam``, fused in
one native pass); a dense gradient is plain Adam. One learning rate per parameter group.
A sparse parameter's state also says which rows ever had a gradient (``touched``): the
field keeps the cells rays reached when its grid grows."""

from __future__ import annotations

import torch
from torch import Tensor

from splatfield.render.field import sparse_adam_


class GridAdam(torch.optim.Optimizer):
    def __init__(self, params, lr: float = 0.1, betas: tuple[float, float] = (0.9, 0.99), eps: float = 1e-8) -> None:
        super().__init__(params, dict(lr=lr, betas=betas, eps=eps))

    @torch.no_grad()
    def step(self, closure=None):  # type: ignore[override]
        for group in self.param_groups:
            b1, b2 = group["betas"]
            for p in group["params"]:
                if p.grad is None:
                    continue
                state = self.state[p]
                if not state:
                    state["step"] = 0
                    state["exp_avg"] = torch.zeros_like(p)
                    state["exp_avg_sq"] = torch.zeros_like(p)
                state["step"] += 1
                g = p.grad
                if g.is_sparse:
                    if not g.is_coalesced() and not _strictly_increasing(g._indices()[0]):
                        g = g.coalesce()  # several uses in one step add up (autograd drops the flag)
                    if "touched" not in state:
                        state["touched"] = torch.zeros(p.shape[0], dtype=torch.bool, device=p.device)
                    state["touched"][g._indices()[0]] = True
                    lr = torch.full((p.shape[1],), group["lr"], device=p.device)
                    sparse_adam_(p.data, state["exp_avg"], state["exp_avg_sq"], g._indices()[0], g._values(), lr,
                                 betas=(b1, b2), eps=group["eps"], step=state["step"])  # fmt: skip
                else:
                    m, v, t = state["exp_avg"], state["exp_avg_sq"], state["step"]
                    m.mul_(b1).add_(g, alpha=1 - b1)
                    v.mul_(b2).addcmul_(g, g, value=1 - b2)
                    denom = (v / (1 - b2**t)).sqrt_().add_(group["eps"])
                    p.addcdiv_(m, denom, value=-group["lr"] / (1 - b1**t))
        return None


def _strictly_increasing(rows: Tensor) -> bool:
    """Distinct and sorted (what the grid's VJP returns): coalesced in all but the flag."""
    return rows.numel() < 2 or bool((rows[1:] > rows[:-1]).all())
