"""How far a run's refined training cameras are from reference poses (issue 19's synthetic recovery).

    python docs/bench/camera_opt/pose_recovery.py RUN [RUN ...] > recovery.json

Per run: the training poses it started from (its cameras.json "world_to_camera", after
--train-pose-noise) and the refined ones ("refined"), each compared with the dataset's own
poses (loaded again, without noise) after the least-squares similarity of
splatfield.data.pose_alignment (rotation error in degrees, position error as a fraction of
the camera rig's radius).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np

from splatfield.apps.run_data import load_dataset
from splatfield.data.pose_alignment import compare_poses
from splatfield.scenes.options import with_options
from splatfield.scenes.run import Run


def recovery(run_dir: Path) -> dict:
    run = Run.open(run_dir)
    clean = load_dataset(with_options(run.config, {"dataset.train_pose_noise": (0.0, 0.0)}))
    ref = clean.train.cameras.world_to_camera.double().numpy()
    doc = json.loads((run_dir / "cameras.json").read_text())
    out = {"run": str(run_dir), "noise": list(run.config.dataset.train_pose_noise)}
    for key, pick in (("start", lambda r: r["world_to_camera"]), ("refined", lambda r: r.get("refined", r)["world_to_camera"])):
        est = np.array([pick(r) for r in doc["train"]], dtype=np.float64)
        c = compare_poses(est, ref)
        out[key] = {k: getattr(c, k) for k in ("rotation_error_deg_mean", "rotation_error_deg_max",
                                                 "position_error_rel_mean", "position_error_rel_max", "scale")}
    return out


if __name__ == "__main__":
    print(json.dumps([recovery(Path(p)) for p in sys.argv[1:]], indent=1))
