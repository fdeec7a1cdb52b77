"""Where a run's remaining pose error lies (issue 19): the turn of each refined training camera
against the dataset's own, and how far that camera puts the scene centre (the world origin
of the given frame) in its image from where the true camera puts it.

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
from splatfield.data.pose_alignment import umeyama
from splatfield.scenes.options import with_options
from splatfield.scenes.run import Run


def _centre(W: np.ndarray) -> np.ndarray:
    return -W[:3, :3].T @ W[:3, 3]


def ambiguity(run_dir: Path) -> dict:
    run = Run.open(run_dir)
    truth = load_dataset(with_options(run.config, {"dataset.train_pose_noise": (0.0, 0.0)})).train.cameras
    ref = truth.world_to_camera.double().numpy()
    fx = truth.fx.double().numpy()
    doc = json.loads((run_dir / "cameras.json").read_text())
    est = np.array([r.get("refined", r)["world_to_camera"] for r in doc["train"]], dtype=np.float64)
    s, R, t = umeyama(np.array([_centre(W) for W in ref]), np.array([_centre(W) for W in est]))
    turns, shifts = [], []
    for i, (We, Wr) in enumerate(zip(est, ref)):
        Rr, cr = Wr[:3, :3] @ R.T, s * R @ _centre(Wr) + t  # the true camera in the refined frame
        origin = t  # the given frame's origin in the refined frame
        pe, pr = We[:3, :3] @ origin + We[:3, 3], Rr @ (origin - cr)
        shifts.append(float(np.linalg.norm(fx[i] * (pe[:2] / pe[2] - pr[:2] / pr[2]))))
        dR = We[:3, :3] @ Rr.T
        turns.append(float(np.degrees(np.arccos(np.clip((np.trace(dR) - 1) / 2, -1, 1)))))
    turn_px = np.radians(turns) * fx
    return {"run": str(run_dir), "turn_deg_mean": float(np.mean(turns)), "turn_px_mean": float(turn_px.mean()),
            "centre_shift_px_mean": float(np.mean(shifts)), "centre_shift_px_max": float(np.max(shifts))}


if __name__ == "__main__":
    print(json.dumps([ambiguity(Path(p)) for p in sys.argv[1:]], indent=1))
