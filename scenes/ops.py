"""The one place that edits trainable parameters together with their optimizer state.

A scene keeps its per-Gaussian tensors as ``torch.nn.Parameter``s, one per name, each in
its own optimizer parameter group (so learning rates differ per group). Changing the
number of Gaussians means replacing every parameter *and* re-indexing the optimizer's
per-element state (Adam's ``exp_avg``/``exp_avg_sq``) the same way; doing that anywhere
else is how optimizer state silently goes out of sync. Strategies call these functions.

Rows appended get zero optimizer state (a fresh start); rows removed take their state
with them; ``reset`` zeroes the state of chosen rows after their values were replaced.
"""

from __future__ import annotations

from typing import Callable

import torch
from torch import Tensor

Params = dict[str, torch.nn.Parameter]


def _group_of(optimizer: torch.optim.Optimizer, param: torch.nn.Parameter) -> dict:
    for group in optimizer.param_groups:
        if any(p is param for p in group["params"]):
            return group
    raise KeyError("parameter is not in the optimizer")


def _swap(
    params: Params,
    optimizer: torch.optim.Optimizer,
    name: str,
    values: Tensor,
    edit_state: Callable[[Tensor], Tensor],
) -> None:
    """Replaces parameter ``name`` by ``values`` and its per-element state by ``edit_state(state)``."""
    old = params[name]
    new = torch.nn.Parameter(values.detach().contiguous(), requires_grad=old.requires_grad)
    group = _group_of(optimizer, old)
    group["params"] = [new if p is old else p for p in group["params"]]
    state = optimizer.state.pop(old, None)
    if state is not None:
        for key, v in list(state.items()):
            # per-element state has the parameter's shape; scalars (Adam's step) are kept
            if isinstance(v, Tensor) and v.dim() > 0 and v.shape == old.shape:
                state[key] = edit_state(v).contiguous()
        optimizer.state[new] = state
    params[name] = new


def append(params: Params, optimizer: torch.optim.Optimizer, new_rows: dict[str, Tensor]) -> None:
    """Appends rows (one tensor per parameter name, same leading count) with zero state."""
    if set(new_rows) != set(params):
        raise ValueError(f"append needs rows for exactly {sorted(params)}, got {sorted(new_rows)}")
    counts = {v.shape[0] for v in new_rows.values()}
    if len(counts) != 1:
        raise ValueError(f"appended rows disagree on their count: { {k: v.shape[0] for k, v in new_rows.items()} }")
    for name, rows in new_rows.items():
        p = params[name]
        rows = rows.to(dtype=p.dtype, device=p.device)
        _swap(params, optimizer, name, torch.cat([p.detach(), rows]),
              lambda s, rows=rows: torch.cat([s, torch.zeros_like(rows)]))  # fmt: skip


def keep(params: Params, optimizer: torch.optim.Optimizer, mask: Tensor) -> None:  # mask [N] bool
    """Keeps the rows where ``mask`` is true (and their state); removes the others."""
    for name in list(params):
        _swap(params, optimizer, name, params[name].detach()[mask], lambda s: s[mask])


def remove(params: Params, optimizer: torch.optim.Optimizer, mask: Tensor) -> None:  # mask [N] bool
    """Removes the rows where ``mask`` is true, with their optimizer state."""
    keep(params, optimizer, ~mask)


def replace_rows(
    params: Params, optimizer: torch.optim.Optimizer, name: str, index: Tensor, values: Tensor
) -> None:
    """Sets rows ``index`` of parameter ``name`` to ``values`` and zeroes their optimizer state."""
    data = params[name].detach().clone()
    data[index] = values.to(dtype=data.dtype, device=data.device)

    def zero_rows(s: Tensor) -> Tensor:
        s = s.clone()
        s[index] = 0
        return s

    _swap(params, optimizer, name, data, zero_rows)


def count(params: Params) -> int:
    return next(iter(params.values())).shape[0]
