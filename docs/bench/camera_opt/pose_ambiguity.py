"""Where a run's remaining pose error lies (issue 19): the turn of each refined training camera
against the dataset's own, and how far that camera puts the scene centre (the world origin
of the dataset's frame) in its image from where the true camera puts it.

    python docs/bench/camera_opt/pose_ambiguity.py RUN [RUN ...] > ambiguity.json

Both after the least-squares similarity of the camera centres. A turn of a° moves the image
by about fx · a (in radians) pixels; when the centre moves far less, each turn is cancelled
by a sideways shift of the camera: the motion that cameras around an object barely see.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np

from splatfield.apps.run_data import load_dataset
from splatfield.data.pose_alignment import camera_centres, compare_poses, umeyama
from splatfield.scenes.options import with_options
from splatfield.scenes.run import Run


def ambiguity(run_dir: Path) -> dict:
    run = Run.open(run_dir)
    truth = load_dataset(with_options(run.config, {"dataset.train_pose_noise": (0.0, 0.0)})).train.cameras
    ref = truth.world_to_camera.double().numpy()
    fx = truth.fx.double().numpy()
    doc = json.loads((run_dir / "cameras.json").read_text())
    est = np.array([r.get("refined", r)["world_to_camera"] for r in doc["train"]], dtype=np.float64)
    turns = np.array([c["rotation_error_deg"] for c in compare_poses(est, ref).per_camera])
    # the refined cameras in the reference frame (the same similarity compare_poses fits), and
    # the image of the reference frame's origin through each of them and through the truth
    c_est = camera_centres(est)
    s, R, t = umeyama(c_est, camera_centres(ref))
    rot_e = est[:, :3, :3] @ R.T
    p_e = np.einsum("nij,nj->ni", rot_e, -(s * c_est @ R.T + t))
    p_r = ref[:, :3, 3]
    shifts = fx * np.linalg.norm(p_e[:, :2] / p_e[:, 2:] - p_r[:, :2] / p_r[:, 2:], axis=1)
    turn_px = np.radians(turns) * fx
    return {"run": str(run_dir), "turn_deg_mean": float(turns.mean()), "turn_px_mean": float(turn_px.mean()),
            "centre_shift_px_mean": float(shifts.mean()), "centre_shift_px_max": float(shifts.max())}


if __name__ == "__main__":
    print(json.dumps([ambiguity(Path(p)) for p in sys.argv[1:]], indent=1))
