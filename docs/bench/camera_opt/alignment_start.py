"""Test-view PSNR before test-time alignment, with each test view moved by the mean change of
frame of its k nearest training cameras (issue 19; the table "where the alignment starts").

    python docs/bench/camera_opt/alignment_start.py RUN --every 1 --k 1 3 10 25 1000

k larger than the training cameras is the evaluation's own start (the mean over all of them).
"""

from __future__ import annotations

import argparse
import json
from dataclasses import replace
from pathlib import Path

import torch

from splatfield.apps import training
from splatfield.apps.run_data import background_of, load_dataset, load_views
from splatfield.render import rasterize
from splatfield.scenes import checkpoint as ckpt
from splatfield.scenes.camera_opt import frame_change
from splatfield.scenes.run import Run


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("run", type=Path)
    ap.add_argument("--every", type=int, default=1)
    ap.add_argument("--k", type=int, nargs="+", default=[1, 3, 10, 25, 1000])
    a = ap.parse_args()
    run = Run.open(a.run)
    ds = load_dataset(run.config)
    state = ckpt.load_checkpoint(ckpt.latest_checkpoint(run.path / "checkpoints"))
    trainer = training.new_trainer(run.config, ds, load_views(ds.train), state)
    cams = trainer.corrections.cameras
    given = ds.train.cameras.to(dtype=torch.float32)
    refined = cams.refined(given)
    centres = given.centers.double()
    idx = list(range(0, len(ds.test), a.every))
    test = ds.test.cameras.to(dtype=torch.float32)[torch.tensor(idx)]
    frozen, bg = trainer.scene.snapshot().gaussians, background_of(ds)
    images = [ds.test.image(i).float() / 255 for i in idx]
    out = {"run": str(a.run), "views": idx, "k": {}}
    for k in a.k:
        moved = []
        for c in test.centers.double():
            near = (centres - c).norm(dim=-1).argsort()[:k]
            moved.append(frame_change(given[near], refined[near]))
        start = cams.refined_intrinsics(replace(test, world_to_camera=test.world_to_camera @ torch.stack(moved).float()))
        psnrs = []
        with torch.no_grad():
            for j in range(len(idx)):
                im = rasterize(frozen, start[j : j + 1], background=bg).image[0]
                psnrs.append(float(-10 * torch.log10((im - images[j]).square().mean())))
        out["k"][str(k)] = {"mean": sum(psnrs) / len(psnrs), "per_view": [round(p, 2) for p in psnrs]}
    print(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
