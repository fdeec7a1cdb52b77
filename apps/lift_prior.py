"""``splatfield lift-prior train``: fits the small camera-conditioned prior of
:mod:`splatfield.scenes.distill.prior` on ray-cast views of procedural arrangements
(:mod:`splatfield.data.arrangements`, training seeds only). The work is :mod:`.lift_prior_run`."""

from __future__ import annotations

from .console import PROG, bars, phase_bar, say
from .lift_options import LiftPriorShow, LiftPriorTrain


def run(cfg: LiftPriorTrain | LiftPriorShow) -> int:
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


def show(cfg: LiftPriorShow) -> int:
    from splatfield.scenes.distill.prior import MARKER, guidance_folder, read_marker

    from .errors import CLIError
    from .lift_prior_run import folder_megabytes

    try:
        folder = guidance_folder(cfg.prior)
    except FileNotFoundError as e:
        raise CLIError(str(e)) from None
    meta = read_marker(folder) if folder.is_dir() else None
    if meta is None:
        raise CLIError(f"{folder}: not a prior folder (no {MARKER})")
    print(f"{folder}: {meta.get('conditioning')} prior, {folder_megabytes(folder):.1f} MB, {meta.get('steps')} steps in "
          f"{float(meta.get('train_seconds', 0)) / 60:.1f} min")  # fmt: skip
    print(f"made by: {meta.get('command')}")
    return 0
