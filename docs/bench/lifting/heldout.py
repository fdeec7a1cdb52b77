"""Lifting measured on the held-out procedural arrangements (issue 17's real test).

    python docs/bench/lifting/heldout.py --guidance none --steps 1500 --out runs/lift-heldout > heldout_none.json

(``--seeds 500 501`` for arrangements that are neither held out nor a prior's training seeds:
where to choose settings.)

For each held-out seed (data/arrangements.HELD_OUT): the reference view (elevation
--elevation, azimuth 0, 64 x 64, RGBA) is written as a PNG and lifted with `splatfield lift`
(the same defaults: distance 2.5, field of view 40 degrees); the lifted scene is then
rendered from --views novel cameras (azimuths evenly around, elevations alternating
--elevation and --elevation + 20) and compared with the ray-cast ground truth composited
over white: PSNR and SSIM over the whole image. The reference view is reported apart.
"""

from __future__ import annotations

import argparse
import json
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from splatfield.apps.lift import Lift
from splatfield.apps.lift_run import run_lift
from splatfield.apps.machine import machine_info
from splatfield.data import arrangements as A
from splatfield.scenes.metrics import psnr, ssim
from splatfield.scenes.run import Run


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--guidance", default="none")
    ap.add_argument("--estimator", default="sds")
    ap.add_argument("--weight", type=float, default=None, help="--distill.weight (default: the option's)")
    ap.add_argument("--guidance-scale", type=float, default=None, help="--distill.guidance-scale (default: the option's)")
    ap.add_argument("--model", default="gaussians", choices=["gaussians", "field"])
    ap.add_argument("--reference-probability", type=float, nargs=2, default=None,
                    help="--distill.reference-probability START END (default: the option's)")
    ap.add_argument("--steps", type=int, default=1500)
    ap.add_argument("--size", type=int, default=64)
    ap.add_argument("--elevation", type=float, default=15.0)
    ap.add_argument("--views", type=int, default=8)
    ap.add_argument("--seeds", type=int, nargs="*", default=list(A.HELD_OUT))
    ap.add_argument("--out", type=Path, default=Path("runs/lift-heldout"))
    a = ap.parse_args()
    rows = []
    for seed in a.seeds:
        folder = a.out / f"seed{seed}"
        folder.mkdir(parents=True, exist_ok=True)
        ref = A.render(seed, A.camera(a.elevation, 0.0), a.size)
        Image.fromarray((ref * 255 + 0.5).astype(np.uint8), "RGBA").save(folder / "reference_input.png")
        t0 = time.perf_counter()
        cfg = Lift(image=folder / "reference_input.png", guidance=a.guidance, out=folder, steps=a.steps, frames=8,
                   elevation=a.elevation, model=a.model)  # fmt: skip
        tuned = {k: v for k, v in (("weight", a.weight), ("guidance_scale", a.guidance_scale),
                                   ("reference_probability", a.reference_probability and tuple(a.reference_probability)))
                 if v is not None}  # fmt: skip
        cfg = replace(cfg, distill=replace(cfg.distill, estimator=a.estimator, **tuned))
        res = run_lift(cfg, log=lambda m: None)
        seconds = time.perf_counter() - t0
        scene = Run.open(res.run).scene()
        angles = A.novel_view_angles(a.elevation, a.views)
        truth = torch.from_numpy(A.views_over_white(seed, angles, a.size))
        ref_white = torch.from_numpy(A.over_white(ref)).float()
        with torch.no_grad():
            got = scene.render(A.as_cameras(angles, a.size), background=(1.0, 1.0, 1.0)).image.clamp(0, 1)
            ref_got = scene.render(A.as_cameras([(a.elevation, 0.0)], a.size), background=(1.0, 1.0, 1.0)).image.clamp(0, 1)
        p, s = psnr(got, truth), ssim(got, truth)
        rows.append({"seed": seed, "seconds": round(seconds, 1), "novel_psnr": float(p.mean()), "novel_ssim": float(s.mean()),
                     "novel_psnr_per_view": [round(float(v), 2) for v in p],
                     "reference_psnr": float(psnr(ref_got, ref_white[None]).mean())})  # fmt: skip
        strip = torch.cat([ref_white[None], truth, got], 0).numpy()  # reference, then truth and lifted views
        tiles = np.concatenate([np.concatenate(list(strip[1 : 1 + a.views]), 1), np.concatenate(list(strip[1 + a.views :]), 1)], 0)
        Image.fromarray((np.clip(tiles, 0, 1) * 255 + 0.5).astype(np.uint8)).save(folder / "novel_truth_vs_lifted.png")
    out = {"guidance": a.guidance, "estimator": a.estimator if a.guidance != "none" else None, "steps": a.steps,
           "model": a.model, "reference_probability": a.reference_probability,
           "weight": a.weight, "guidance_scale": a.guidance_scale, "seeds": a.seeds,
           "size": a.size, "elevation": a.elevation, "views": a.views, "machine": machine_info(),
           "novel_psnr_mean": float(np.mean([r["novel_psnr"] for r in rows])),
           "novel_ssim_mean": float(np.mean([r["novel_ssim"] for r in rows])), "runs": rows}  # fmt: skip
    print(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
