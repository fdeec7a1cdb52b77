"""Does the projection-curvature term of the splitting matrix matter? (docs/TRAINING.md, steepest)

Usage: python docs/bench/curvature_term.py CHECKPOINT   (a checkpoint of a lego run at downscale 2)
Sums the splitting matrices of every 5th training view with and without the term and compares
them: relative size, the angle between the v_min, and the candidate sets at three thresholds.
"""
import sys, torch, json
from splatfield import data as sfdata
from splatfield.scenes import checkpoint as ckpt
from splatfield.scenes.gaussian_scene import GaussianScene
from splatfield.scenes.losses import photometric
from splatfield.scenes.strategies.steepest import lift_splitting_matrix
torch.set_num_threads(1)
path = sys.argv[1]
state = ckpt.load_checkpoint(path)
scene = GaussianScene.from_state_dict(state["scene"])
ds = sfdata.load("/work/shared/datasets/nerf_synthetic_lego", downscale=2)
cams = ds.train.cameras.to(dtype=torch.float32)
N = len(scene); A = torch.zeros(N, 3, 3, dtype=torch.float64); B = torch.zeros_like(A); cnt = torch.zeros(N)
for i in range(0, len(ds.train), 5):
    out = scene.render(cams[i:i+1], background=[1.0, 1.0, 1.0], stats=("split2d", "mean2d_grad"))
    target = ds.train.image(i).float() / 255
    photometric(out.image[0], target, None, ssim_weight=0.2).backward()
    scene.optimizer.zero_grad(set_to_none=True)
    vis = out.meta.visible[0]; ids = vis.nonzero()[:, 0]
    m = scene.params["means"].detach()[ids]
    A.index_add_(0, ids, lift_splitting_matrix(m.double(), cams[i:i+1], out.stats.split2d[0, ids], None))
    B.index_add_(0, ids, lift_splitting_matrix(m.double(), cams[i:i+1], out.stats.split2d[0, ids], out.stats.mean2d_grad[0, ids]))
    cnt[ids] += 1
seen = cnt > 0
e = scene.extent ** 2
A, B = A[seen] / cnt[seen, None, None] * e, B[seen] / cnt[seen, None, None] * e
curv = B - A
rel = curv.flatten(1).norm(dim=1) / A.flatten(1).norm(dim=1).clamp_min(1e-30)
la, va = torch.linalg.eigh(A); lb, vb = torch.linalg.eigh(B)
cos = (va[:, :, 0] * vb[:, :, 0]).sum(-1).abs()
res = {"checkpoint": path, "gaussians_seen": int(seen.sum()), "views": int((len(ds.train) + 4) // 5),
       "curvature_over_main_frobenius_median": float(rel.median()), "p90": float(rel.quantile(0.9)),
       "vmin_angle_deg_median": float(torch.rad2deg(torch.acos(cos.clamp(max=1))).median()),
       "vmin_angle_deg_p90": float(torch.rad2deg(torch.acos(cos.clamp(max=1))).quantile(0.9))}
for thr in (1e-6, 0.03, 0.1):
    ca, cb = la[:, 0] < -thr, lb[:, 0] < -thr
    res[f"candidates_{thr:g}"] = {"without": int(ca.sum()), "with": int(cb.sum()), "disagree": int((ca ^ cb).sum())}
print(json.dumps(res, indent=1))
