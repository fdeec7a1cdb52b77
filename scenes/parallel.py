"""Data-parallel training over processes (torch.distributed: gloo on CPUs, NCCL on GPUs).

Every process holds the same scene. Each step all of them draw the same batch of views
(the same generator, the same sampler), and each renders its own contiguous share. The
loss of a share is its views' losses summed and divided by the batch's size, so the
gradients summed over the processes (:meth:`DataParallel.reduce_gradients`, an
all-reduce in rank order) are those of the batch's mean loss in one process. The
per-view statistics are gathered in view order (:meth:`gather_output`), so the strategies
see the whole batch, as in one process, and take the same decisions everywhere with the
same random draws. A peer that dies or stalls raises :class:`PeerLost` within the timeout.
"""

from __future__ import annotations

import os
import re
from contextlib import contextmanager
from dataclasses import replace
from datetime import timedelta
from typing import Iterator

import torch
import torch.distributed as dist

from splatfield.render import Cameras, RenderOutput


class PeerLost(RuntimeError):
    """Another process stopped answering (killed, crashed or stalled past the timeout)."""


@contextmanager
def _collective() -> Iterator[None]:
    """A backend error inside becomes :class:`PeerLost`, in a few words (gloo's carries a source
    path and advice)."""
    try:
        yield
    except (RuntimeError, dist.DistBackendError) as e:
        text = re.sub(r"^\[[^\]]*\]\s*", "", (str(e).splitlines() or [type(e).__name__])[0])
        raise PeerLost(text.split(". This is typically")[0]) from None


def launched_processes() -> int:
    """How many processes torchrun started for this command (1 when it did not)."""
    return int(os.environ.get("WORLD_SIZE", "1"))


def launched_rank() -> int:
    return int(os.environ.get("RANK", "0"))


class DataParallel:
    def __init__(self, rank: int, world: int, device: torch.device = torch.device("cpu")) -> None:
        self.rank = rank
        self.world = world
        self.device = device  # where collectives' tensors live (NCCL needs them on the GPU)

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @classmethod
    def start(cls, device: torch.device, timeout_s: float) -> DataParallel:
        """Joins the group torchrun describes in the environment (RANK, WORLD_SIZE, MASTER_ADDR...);
        on CUDA each process of a machine takes its own GPU (``self.device``)."""
        if device.type == "cuda":
            device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")) % torch.cuda.device_count())
        backend = "nccl" if device.type == "cuda" else "gloo"
        dist.init_process_group(backend, timeout=timedelta(seconds=timeout_s))
        return cls(dist.get_rank(), dist.get_world_size(), device)

    def barrier(self) -> None:
        dist.barrier()

    def gathered(self, obj: object) -> list:
        """Every process's ``obj`` (picklable), in rank order."""
        out: list = [None] * self.world
        dist.all_gather_object(out, obj)
        return out

    def from_main(self, obj: object) -> object:
        """The first process's ``obj`` on every process (e.g. an output name it chose)."""
        box = [obj]
        dist.broadcast_object_list(box, src=0)
        return box[0]

    def stop(self) -> None:
        if dist.is_initialized():
            dist.destroy_process_group()

    # ------------------------------------------------------------------ a step

    def share(self, size: int) -> slice:
        """This process's contiguous part of a batch of ``size`` (a multiple of the world)."""
        per = size // self.world
        return slice(self.rank * per, (self.rank + 1) * per)

    def reduce_gradients(self, params) -> None:
        with _collective():
            for p in params:
                if p.grad is not None:
                    dist.all_reduce(p.grad, op=dist.ReduceOp.SUM)

    def gather_output(self, out: RenderOutput, cameras: Cameras) -> RenderOutput:
        """``out`` with its per-view rows (radii, means, depths, statistics) gathered from every
        process in rank order, i.e. in the batch's view order, and the batch's ``cameras``."""

        def cat(t: torch.Tensor) -> torch.Tensor:
            parts = [torch.empty_like(t) for _ in range(self.world)]
            with _collective():
                dist.all_gather(parts, t.contiguous())
            return torch.cat(parts)

        m = out.meta
        stats = replace(m.stats, values={k: cat(v.detach()) for k, v in m.stats.values.items()})
        meta = replace(m, means2d=cat(m.means2d.detach()), depths=cat(m.depths.detach()), radii=cat(m.radii),
                       stats=stats, cameras=cameras)  # fmt: skip
        return replace(out, meta=meta)

    def sums(self, *values: float) -> list[float]:
        """Numbers summed over the processes in one collective (the losses for the log, and
        the stop requests: a sum above 0 means some process was asked to stop)."""
        t = torch.tensor(values, dtype=torch.float64, device=self.device)
        with _collective():
            dist.all_reduce(t, op=dist.ReduceOp.SUM)
        return t.tolist()
