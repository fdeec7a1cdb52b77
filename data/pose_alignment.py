"""How well recovered camera poses agree with reference poses, up to a similarity.

SfM fixes the world frame and scale arbitrarily, so the estimated camera centres are first
mapped onto the reference ones by the least-squares similarity (Umeyama 1991: scale,
rotation, translation). Then, per camera: the position error (distance between the mapped
and the reference centre) and the rotation error (angle of the residual rotation between
the mapped and the reference camera orientation). Position errors are also given as a
fraction of the scene extent, taken as the largest distance of a reference camera centre
from their centroid (the radius of the camera rig, not its diameter: the stricter choice).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch

from splatfield.render.camera import similarity_fit


def umeyama(src: np.ndarray, dst: np.ndarray) -> tuple[float, np.ndarray, np.ndarray]:  # [N, 3], [N, 3]
    """(s, R, t) minimising sum |dst_i - (s R src_i + t)|^2, with det R = +1
    (:func:`splatfield.render.camera.similarity_fit` on numpy arrays)."""
    s, R, t = similarity_fit(torch.from_numpy(np.asarray(src, dtype=np.float64)), torch.from_numpy(np.asarray(dst, dtype=np.float64)))
    return s, R.numpy(), t.numpy()


@dataclass
class PoseComparison:
    cameras: int
    scale: float  # reference units per estimated unit
    extent: float  # reference scene extent (rig radius)
    rotation_error_deg_mean: float
    rotation_error_deg_max: float
    position_error_mean: float  # reference units
    position_error_max: float
    position_error_rel_mean: float  # / extent
    position_error_rel_max: float
    per_camera: list[dict]

    def to_json(self) -> dict:
        return asdict(self)


def camera_centres(w2c: np.ndarray) -> np.ndarray:  # [N, 4, 4] world-to-camera -> [N, 3]
    """Each camera's centre in the world, -Rᵀ t."""
    return -np.einsum("nji,nj->ni", w2c[:, :3, :3], w2c[:, :3, 3])


def compare_poses(
    w2c_est: np.ndarray,  # [N, 4, 4] OpenCV world-to-camera, estimated
    w2c_ref: np.ndarray,  # [N, 4, 4] OpenCV world-to-camera, reference
    names: list[str] | None = None,
) -> PoseComparison:
    """Aligns the estimated camera centres to the reference ones and measures the residuals."""
    R_est, R_ref = w2c_est[:, :3, :3], w2c_ref[:, :3, :3]
    c_est, c_ref = camera_centres(w2c_est), camera_centres(w2c_ref)
    s, R, t = umeyama(c_est, c_ref)
    c_map = s * c_est @ R.T + t
    pos = np.linalg.norm(c_map - c_ref, axis=1)
    # camera-to-world rotation of an estimated camera in the reference frame: R @ R_est^T
    resid = R_ref @ (R @ np.transpose(R_est, (0, 2, 1)))  # identity when they agree
    # angle = atan2(sin, cos): precise near zero, where arccos of the trace is not
    cos = (np.trace(resid, axis1=1, axis2=2) - 1) / 2
    r = resid
    axis = np.stack([r[:, 2, 1] - r[:, 1, 2], r[:, 0, 2] - r[:, 2, 0], r[:, 1, 0] - r[:, 0, 1]], 1)
    rot = np.degrees(np.arctan2(np.linalg.norm(axis, axis=1) / 2, cos))
    extent = float(np.linalg.norm(c_ref - c_ref.mean(0), axis=1).max())
    names = names or [str(i) for i in range(len(pos))]
    per = [{"image": n, "rotation_error_deg": float(r), "position_error": float(p)} for n, r, p in zip(names, rot, pos)]
    return PoseComparison(len(pos), s, extent, float(rot.mean()), float(rot.max()), float(pos.mean()), float(pos.max()),
                          float(pos.mean() / extent), float(pos.max() / extent), per)  # fmt: skip


def compare_to_reference(estimated: str | Path, reference: str | Path) -> tuple[PoseComparison, list[str]]:
    """Compares two datasets' cameras (e.g. an SfM output and a transforms.json), matched by
    image file name. Returns the comparison and the reference images missing from the
    estimate."""
    import torch

    from .loading import load

    def cams(path: str | Path) -> dict[str, np.ndarray]:
        ds = load(path, test_every=0)
        w2c = ds.train.cameras.world_to_camera.to(torch.float64).numpy()
        return {Path(p).name: w2c[i] for i, p in enumerate(ds.train.image_paths)}

    est, ref = cams(estimated), cams(reference)
    common = sorted(set(est) & set(ref))
    if len(common) < 3:
        raise ValueError(f"{estimated} and {reference} share {len(common)} image names; 3 or more are needed")
    cmp = compare_poses(np.stack([est[n] for n in common]), np.stack([ref[n] for n in common]), common)
    return cmp, sorted(set(ref) - set(est))
