"""``splatfield lift``: one image of an object to a 3D scene.

The image (its alpha, or ``--mask``, as the object's silhouette) becomes a one-view
Blender-format dataset at a stated reference camera (:mod:`splatfield.data.single_view`);
Gaussians are trained on it with the density control and the ``distill`` strategy (score
distillation on random views around the object) from ``--guidance``: ``procedural`` (the
shipped prior of our own, the default) or a diffusers checkpoint folder (with
``--prompt``); ``--guidance none`` trains on the reference view alone (the baseline a prior
must beat). ``--depth`` adds the ``depth_rank`` strategy. The result is a normal run directory (``view``, ``render``, ``export`` and
``eval`` work on it), plus an orbit video at the reference elevation and distance.
"""

from __future__ import annotations

import shlex

from .console import PROG, bars, phase_bar, print_metrics, report_stop, say, train_progress
from .errors import CLIError
from .lift_options import Lift


def run(cfg: Lift) -> int:
    if cfg.out.exists() and not cfg.out.is_dir():
        raise CLIError(f"{cfg.out}: exists and is not a folder")
    from splatfield.render.device import resolve_device

    from . import lift_run

    with bars() as opened:
        res = lift_run.run_lift(cfg, on_phase=phase_bar(opened), on_step=train_progress(cfg.steps, opened), log=say,
                                device=resolve_device(cfg.device))  # fmt: skip
    if not res.finished:
        what = shlex.quote(str(cfg.image)) if cfg.image is not None else f"--prompt {shlex.quote(cfg.prompt or cfg.distill.prompt)}"
        return report_stop(res.stop_signal, res.steps, f"run {res.run}", f"{PROG} lift {what} --guidance {shlex.quote(cfg.guidance)} --out {cfg.out}")
    print(f"{PROG} lift: run {res.run}" + (f" (reference view: {res.reference})" if cfg.image is not None else " (from the prompt alone)"))
    if res.metrics is not None:
        print_metrics(res.metrics)
    print(f"orbit: {res.video}; frames: {res.frames_dir}/")
    return 0

