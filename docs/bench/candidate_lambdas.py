"""How do the splitting-matrix eigenvalues of the gated candidates compare between scenes?

Usage: python docs/bench/candidate_lambdas.py RUN [STEPS]
Continues RUN's training from its step-5000 checkpoint for STEPS steps (default 100) with a
`steepest` strategy that accumulates its statistics but never edits, then reports, for the
Gaussians that pass the 3DGS gradient gate, the distribution of λ_min·extent² (the current
criterion) and of the predicted loss change of the split, ½·δ²·λ_min with δ the standard
deviation along v_min (scale-free: it does not depend on the scene's size).
"""
import json
import sys
from pathlib import Path

import torch

from splatfield import data as sfdata
from splatfield.apps.train import TrainOptions, background_of, load_views
from splatfield.scenes import checkpoint as ckpt
from splatfield.scenes.gaussian_scene import GaussianScene
from splatfield.scenes.strategies.steepest import Steepest, SteepestConfig, std_along
from splatfield.scenes.trainer import Trainer, TrainerConfig

run, steps = Path(sys.argv[1]), int(sys.argv[2]) if len(sys.argv) > 2 else 100
opts = TrainOptions.from_yaml(run / "config.yaml")
ds = sfdata.load(opts.data, downscale=opts.downscale, test_every=opts.test_every)
state = ckpt.load_checkpoint(run / "checkpoints" / "step_0005000.pt")
scene = GaussianScene.from_state_dict(state["scene"])
never = 10**9
strategy = Steepest(SteepestConfig(refine_start=never, refine_stop=never, reset_every=never))
trainer = Trainer(scene, strategy, load_views(ds.train), config=TrainerConfig(steps=never, seed=1),
                  background=background_of(ds))
for _ in range(steps):
    trainer.train_step()
sc = trainer.scene
lam, v, seen = strategy.splitting_eigen(1.0)
gate = seen & (strategy._average_grad() >= strategy.config.grad_threshold)
p = sc.params
std = std_along(p["quats"].detach().double(), p["log_scales"].detach().double(), v)
dloss = 0.5 * std**2 * lam
ext2 = sc.extent**2
q = torch.tensor([0.01, 0.1, 0.25, 0.5, 0.75, 0.9], dtype=torch.float64)
res = {"run": str(run), "steps": steps, "gaussians": len(sc), "seen": int(seen.sum()), "gated": int(gate.sum()),
       "extent": sc.extent,
       "gated_lambda_ext2_quantiles": dict(zip(map(str, q.tolist()), (lam[gate] * ext2).quantile(q).tolist())),
       "gated_dloss_quantiles": dict(zip(map(str, q.tolist()), dloss[gate].quantile(q).tolist())),
       "all_dloss_quantiles": dict(zip(map(str, q.tolist()), dloss[seen].quantile(q).tolist())),
       "gated_fraction_passing_lambda_ext2": {f"{e:g}": float(((lam[gate] * ext2) < -e).float().mean())
                                              for e in (1e-6, 1e-4, 1e-3, 1e-2, 1e-1)},
       "gated_fraction_passing_dloss": {f"{e:g}": float((dloss[gate] < -e).float().mean())
                                        for e in (1e-12, 1e-11, 1e-10, 1e-9, 1e-8, 1e-7)}}
print(json.dumps(res, indent=1))
