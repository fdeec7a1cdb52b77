"""``splatfield lift-prior train``: fits the small camera-conditioned prior of
:mod:`splatfield.scenes.distill.prior` on ray-cast views of procedural arrangements
(:mod:`splatfield.data.arrangements`, training seeds only). The work is :mod:`.lift_prior_run`."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Optional

import tyro
from typing_extensions import Annotated

from splatfield.scenes.config import at_least, finite_at_least, require

from .console import PROG, bars, phase_bar, say


@dataclass(frozen=True)
class LiftPriorTrain:
    """Trains the lifting prior of our own (a 64x64 denoiser conditioned on another view of the
    object and the camera change) on renders of procedural arrangements; saves it in diffusers'
    layout for --guidance. Runs again from where it stopped (Ctrl-C saves)."""

    out: Path = Path("runs/lift-prior")
    """Output folder: prior/ (the checkpoint, diffusers layout), data.npz (the rendered views), state.pt (to resume)."""
    arrangements: int = 2000
    """Training arrangements (seeds from data.arrangements.TRAIN_SEED_START)."""
    views: int = 8
    """Rendered views per arrangement (pairs are drawn among them)."""
    size: int = 64
    """Image size."""
    steps: int = 100_000
    """Training steps at most (--minutes usually stops it first)."""
    minutes: Optional[float] = None
    """Stop after this many minutes of training (None: --steps)."""
    batch: int = 16
    """Pairs per step."""
    lr: float = 2e-4
    """Adam learning rate."""
    ema: float = 0.999
    """Decay of the exponential moving average of the weights (what is saved)."""
    save_every: int = 200
    """Save the checkpoint every N steps."""
    seed: int = 0
    """Seed of the views, pairs, noise and the network's start."""
    threads: Optional[int] = None
    """torch.set_num_threads(T)."""

    def __post_init__(self) -> None:
        for name in ("arrangements", "steps", "batch", "save_every"):
            at_least(getattr(self, name), name, 1)
        at_least(self.views, "views", 2)
        require(self.size % 8 == 0 and self.size >= 16, "size", f"must be a multiple of 8, at least 16 (got {self.size})")
        if self.minutes is not None:
            finite_at_least(self.minutes, "minutes", 0.0, strict=True)
        finite_at_least(self.lr, "lr", 0.0, strict=True)
        require(0.0 <= self.ema < 1.0, "ema", f"must be in [0, 1) (got {self.ema})")
        at_least(self.threads, "threads", 1)


def run(cfg: "LiftPriorTrain | LiftPriorShow") -> int:
    if isinstance(cfg, LiftPriorShow):
        return show(cfg)
    from . import lift_prior_run

    with bars() as opened:
        res = lift_prior_run.train_prior(cfg, on_phase=phase_bar(opened), log=say)
    if res.interrupted:
        print(f"{PROG} lift-prior train: stopped at step {res.step}; saved {res.prior}; run the same command to continue")
        return 130
    print(f"{PROG} lift-prior train: {res.step} steps in {res.seconds / 60:.1f} min, loss {res.loss:.4f}; prior {res.prior} "
          f"({res.megabytes:.1f} MB; --guidance {res.prior})")  # fmt: skip
    return 0


@dataclass(frozen=True)
class LiftPriorShow:
    """Says what a prior folder holds: how it is conditioned, its size, and the steps, time
    and command that trained it."""

    prior: Annotated[Path, tyro.conf.Positional, tyro.conf.arg(metavar="PRIOR")]
    """A prior folder (lift-prior train's out/prior)."""


def show(cfg: LiftPriorShow) -> int:
    from splatfield.scenes.distill.prior import MARKER, read_marker

    from .errors import CLIError
    from .lift_prior_run import folder_megabytes

    meta = read_marker(cfg.prior) if cfg.prior.is_dir() else None
    if meta is None:
        raise CLIError(f"{cfg.prior}: not a prior folder (no {MARKER})")
    print(f"{cfg.prior}: {meta.get('conditioning')} prior, {folder_megabytes(cfg.prior):.1f} MB, {meta.get('steps')} steps in "
          f"{float(meta.get('train_seconds', 0)) / 60:.1f} min")  # fmt: skip
    print(f"made by: {meta.get('command')}")
    return 0
