"""The shipped procedural prior lifts an object it never saw (issue 17's CI check).

A held-out arrangement (seed 0: data.arrangements.HELD_OUT, never in the prior's training
seeds) is lifted from one 64 x 64 view with ``--guidance procedural`` and, as the baseline,
with ``--guidance none`` (the reference view alone). Its novel views (the measured table's
cameras, data.arrangements.novel_view_angles) are scored against the ray-cast truth: the
prior must beat the baseline by a margin, and clear a floor. docs/LIFTING.md has the
figures the floor and margin were set from.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from splatfield.apps.lift import Lift
from splatfield.apps.lift_run import run_lift
from splatfield.data import arrangements as A
from splatfield.scenes.metrics import psnr
from splatfield.scenes.run import Run

pytest.importorskip("diffusers")

SEED, ELEVATION, SIZE, VIEWS = 0, 15.0, 64, 8
STEPS = 600
FLOOR_DB = 15.0  # measured 15.64 dB with the shipped prior (13.91 without; 1000 steps: 15.55 / 14.07)
MARGIN_DB = 1.0  # measured 1.73 dB


def novel_view_psnr(tmp_path, guidance: str) -> float:
    image = tmp_path / "reference.png"
    Image.fromarray((A.render(SEED, A.camera(ELEVATION, 0.0), SIZE) * 255 + 0.5).astype(np.uint8), "RGBA").save(image)
    res = run_lift(Lift(image=image, guidance=guidance, out=tmp_path / guidance, steps=STEPS, frames=1,
                        elevation=ELEVATION), log=lambda m: None)  # fmt: skip
    assert res.finished
    angles = A.novel_view_angles(ELEVATION, VIEWS)
    truth = torch.from_numpy(A.views_over_white(SEED, angles, SIZE))
    with torch.no_grad():
        got = Run.open(res.run).scene().render(A.as_cameras(angles, SIZE), background=(1.0, 1.0, 1.0)).image.clamp(0, 1)
    return float(psnr(got, truth).mean())


def test_the_shipped_prior_lifts_a_held_out_object_beyond_its_reference_view(tmp_path, native):
    with_prior, alone = novel_view_psnr(tmp_path, "procedural"), novel_view_psnr(tmp_path, "none")
    print(f"held-out seed {SEED}, {STEPS} steps: novel-view PSNR {with_prior:.2f} dB with the prior, {alone:.2f} without")
    assert with_prior >= alone + MARGIN_DB and with_prior >= FLOOR_DB
