"""How much the Stein control variate (``--distill.estimator stein``) lowers the variance of
SDS's gradient with the shipped procedural prior, on a lifted scene.

    python docs/bench/lifting/stein_variance.py --run runs/lift-heldout/seed0/run --seed 0 > stein_variance.json

The scene of a finished lift (``--run``, its held-out arrangement ``--seed``, reference view
at elevation 15) is rendered from ``--cameras`` random views drawn as the distill strategy
draws them; for each timestep ``t`` and camera, ``--draws`` noises give SDS gradients ``g``
and control variates ``cv = eps``. The coefficient ``mu`` is fitted per timestep on the first
half of the draws (as the strategy fits it, from other draws than those it corrects) and the
variance over noises of ``g`` and of ``g + mu cv`` is measured on the second half; the factor
is their ratio, summed over the render's values and averaged over cameras.
"""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import replace
from pathlib import Path
from types import SimpleNamespace

import torch

from splatfield.apps.lift_options import LIFT_DISTILL
from splatfield.apps.machine import machine_info
from splatfield.data import arrangements as A
from splatfield.render import rasterize
from splatfield.scenes.distill import sds_gradient
from splatfield.scenes.run import Run
from splatfield.scenes.strategies.distill import Distill


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--run", type=Path, required=True)
    ap.add_argument("--seed", type=int, required=True, help="the held-out arrangement the run lifted")
    ap.add_argument("--elevation", type=float, default=15.0)
    ap.add_argument("--cameras", type=int, default=4)
    ap.add_argument("--draws", type=int, default=64)
    ap.add_argument("--timesteps", type=int, nargs="*", default=[50, 150, 250, 350, 450, 550, 650, 750, 850, 950])
    a = ap.parse_args()
    torch.manual_seed(0)
    scene = Run.open(a.run).scene()
    size = 64
    config = replace(LIFT_DISTILL, guidance="procedural", up=(0.0, 0.0, 1.0), views=a.cameras)
    strategy = Distill(config, steps=1000, background=(1.0, 1.0, 1.0))
    reference = torch.from_numpy(A.over_white(A.render(a.seed, A.camera(a.elevation, 0.0), size)))[None]
    camera = A.as_cameras([(a.elevation, 0.0)], size)
    strategy.bind_views(SimpleNamespace(images=(reference * 255 + 0.5).to(torch.uint8), cameras=camera))  # as lift loads it
    cameras = strategy.random_cameras(camera)
    guidance = strategy.guidance
    with torch.no_grad():
        x = guidance.encode(rasterize(scene.gaussians, cameras, sh_degree=0, background=(1.0, 1.0, 1.0)).image)
    condition = strategy.condition_for(cameras)
    g = torch.Generator().manual_seed(1)
    rows = []
    for tv in a.timesteps:
        t = torch.full((len(cameras),), tv)
        grads, noises = [], []
        for _ in range(a.draws):
            eps = torch.randn(x.shape, generator=g)
            grads.append(sds_gradient(guidance, x, t, eps, condition, guidance_scale=config.guidance_scale))
            noises.append(eps)
        G, E = torch.stack(grads).double(), torch.stack(noises).double()  # [draws, B, C, H, W]
        h = a.draws // 2
        fit_g, fit_e = G[:h].flatten(2), E[:h].flatten(2)
        mu = -(fit_g * fit_e).sum((0, 2)) / fit_e.square().sum((0, 2))  # [B]: one per camera, as one band sees them
        mu = mu.mean()  # the strategy's band mixes cameras: one coefficient
        test_g, test_e = G[h:].flatten(2), E[h:].flatten(2)
        before = test_g.var(0).sum(-1)
        after = (test_g + mu * test_e).var(0).sum(-1)
        rows.append({"t": tv, "mu": float(mu), "factor_per_camera": [round(float(v), 3) for v in before / after],
                     "factor": float((before / after).mean())})  # fmt: skip
        print(f"t {tv}: mu {float(mu):.4g}, variance lowered {rows[-1]['factor']:.3f}x", flush=True, file=sys.stderr)
    print(json.dumps({"run": str(a.run), "seed": a.seed, "cameras": a.cameras, "draws": a.draws,
                      "guidance_scale": config.guidance_scale, "machine": machine_info(), "rows": rows}, indent=1))  # fmt: skip


if __name__ == "__main__":
    main()
