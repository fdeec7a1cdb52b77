"""Camera paths for rendering novel views: orbits, spirals, smooth interpolation through
keyframes, and nerfstudio's ``camera_path.json`` layout (read and written).

Every path is a :class:`Cameras` batch (OpenCV axes, pinhole). Interpolation is
Catmull-Rom on positions and spherical (slerp) on rotations, so a path through keyframes
passes through each of them with a continuous velocity.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import torch
from torch import Tensor

from .camera import Cameras
from .reference import quat_to_rotmat


class CameraPathError(ValueError):
    """A camera-path file that cannot be used, reported as one line naming the file."""

    def __init__(self, path: Path | str, problem: str) -> None:
        super().__init__(f"{path}: {problem}")


# ----------------------------------------------------------------------------- rings around a scene


def scene_frame(cameras: Cameras, centre: Tensor) -> tuple[Tensor, float, float]:
    """The world's up (the mean of the cameras' up axes), the cameras' mean distance from
    ``centre`` across that axis, and their mean height above ``centre`` along it."""
    c2w = cameras.camera_to_world.to(torch.float64)
    up = torch.nn.functional.normalize(-c2w[:, :3, 1].mean(dim=0), dim=0)  # OpenCV y points down
    rel = c2w[:, :3, 3] - centre.to(torch.float64)
    height = rel @ up
    radius = (rel - height[:, None] * up).norm(dim=-1)
    return up, float(radius.mean()), float(height.mean())


def horizontal_axes(up: Tensor) -> tuple[Tensor, Tensor]:
    """Two unit vectors (float64) spanning the plane orthogonal to the unit vector ``up``,
    ``b = up x a``: angles measured from ``a`` towards ``b`` turn counter-clockwise seen from above."""
    up = up.to(torch.float64)
    helper = torch.tensor([1.0, 0.0, 0.0], dtype=torch.float64)
    if abs(float(helper @ up)) > 0.9:
        helper = torch.tensor([0.0, 1.0, 0.0], dtype=torch.float64)
    a = torch.nn.functional.normalize(torch.linalg.cross(up, helper), dim=0)
    return a, torch.linalg.cross(up, a)


def _ring(centre: Tensor, up: Tensor, radius: float, heights: Tensor, angles: Tensor) -> Tensor:  # [F, 3] eyes
    a, b = horizontal_axes(up)
    return centre + radius * (torch.cos(angles)[:, None] * a + torch.sin(angles)[:, None] * b) + heights[:, None] * up


def orbit(
    centre: Tensor, up: Tensor, radius: float, height: float, frames: int, *, fov_y: float, width: int, height_px: int,
    turns: float = 1.0, height_swing: float = 0.0,
) -> Cameras:  # fmt: skip
    """``frames`` cameras on a ring of ``radius`` at ``height`` above ``centre`` (along ``up``),
    looking at ``centre``; ``height_swing`` > 0 makes it a spiral whose height goes up and down
    by that much twice per turn."""
    if frames < 1:
        raise ValueError(f"a path needs at least one frame, got {frames}")
    centre, up = centre.to(torch.float64), up.to(torch.float64)
    t = torch.arange(frames, dtype=torch.float64) / frames
    angles = 2 * math.pi * turns * t
    heights = height + height_swing * torch.sin(4 * math.pi * t)
    eyes = _ring(centre, up, radius, heights, angles)
    return Cameras.look_at(eyes, centre.expand_as(eyes), tuple(up.tolist()), fov_y, width, height_px)


# ----------------------------------------------------------------------------- interpolation


def ring_around(points: Tensor) -> tuple[Tensor, float]:  # [N, 3] -> centre [3] (float64), radius
    """The centre of the points' 5–95% box and a ring radius of 1.2 times its diagonal (to
    frame a scene that comes without cameras)."""
    p = points.detach().double()
    lo, hi = torch.quantile(p, 0.05, dim=0), torch.quantile(p, 0.95, dim=0)
    return (lo + hi) / 2, float((hi - lo).norm()) * 1.2 + 1e-6


def orbit_around(points: Tensor, views: int, size: int = 256) -> Cameras:
    """``views`` cameras on a ring around the points' robust centre, looking at it (z up)."""
    centre, radius = ring_around(points)
    phi = torch.arange(views, dtype=torch.float64) * (2 * math.pi / views)
    eyes = centre + torch.stack([radius * torch.cos(phi), radius * torch.sin(phi), torch.full_like(phi, 0.3 * radius)], -1)
    return Cameras.look_at(eyes, centre.expand_as(eyes), (0.0, 0.0, 1.0), 50.0, size, size).to(dtype=torch.float32)


def rotmat_to_quat(R: Tensor) -> Tensor:  # [..., 3, 3] -> [..., 4] (w, x, y, z), w >= 0
    m = R.to(torch.float64)
    w = torch.sqrt(torch.clamp(1 + m[..., 0, 0] + m[..., 1, 1] + m[..., 2, 2], min=0)) / 2
    x = torch.sqrt(torch.clamp(1 + m[..., 0, 0] - m[..., 1, 1] - m[..., 2, 2], min=0)) / 2
    y = torch.sqrt(torch.clamp(1 - m[..., 0, 0] + m[..., 1, 1] - m[..., 2, 2], min=0)) / 2
    z = torch.sqrt(torch.clamp(1 - m[..., 0, 0] - m[..., 1, 1] + m[..., 2, 2], min=0)) / 2
    x = torch.copysign(x, m[..., 2, 1] - m[..., 1, 2])
    y = torch.copysign(y, m[..., 0, 2] - m[..., 2, 0])
    z = torch.copysign(z, m[..., 1, 0] - m[..., 0, 1])
    return torch.nn.functional.normalize(torch.stack([w, x, y, z], -1), dim=-1)


def slerp(q0: Tensor, q1: Tensor, t: Tensor) -> Tensor:  # [..., 4], [..., 4], [...] -> [..., 4]
    dot = (q0 * q1).sum(-1)
    q1 = torch.where(dot[..., None] < 0, -q1, q1)  # the short way round
    dot = dot.abs().clamp(max=1.0)
    theta = torch.acos(dot)
    s = torch.sin(theta)
    near = s < 1e-6
    w0 = torch.where(near, 1 - t, torch.sin((1 - t) * theta) / torch.where(near, 1.0, s))
    w1 = torch.where(near, t, torch.sin(t * theta) / torch.where(near, 1.0, s))
    return torch.nn.functional.normalize(w0[..., None] * q0 + w1[..., None] * q1, dim=-1)


def interpolate(keyframes: Cameras, frames: int, *, loop: bool = False) -> Cameras:
    """``frames`` cameras through ``keyframes`` (in order): Catmull-Rom positions, slerped
    rotations, linearly interpolated intrinsics; the first frame is the first keyframe and,
    unless ``loop``, the last frame the last keyframe."""
    K = len(keyframes)
    if K == 0 or frames < 1:
        raise ValueError(f"need keyframes and frames >= 1, got {K} keyframes, {frames} frames")
    c2w = keyframes.camera_to_world.to(torch.float64)
    pos, quat = c2w[:, :3, 3], rotmat_to_quat(c2w[:, :3, :3])
    intr = torch.stack([keyframes.fx, keyframes.fy, keyframes.cx, keyframes.cy], -1).to(torch.float64)
    if K == 1:
        s = torch.zeros(frames, dtype=torch.float64)
    else:
        segments = K if loop else K - 1
        s = torch.arange(frames, dtype=torch.float64) * (segments / (frames if loop else max(1, frames - 1)))
    i0 = torch.clamp(s.floor().long(), max=(K - 1 if loop else max(0, K - 2)))
    t = s - i0
    idx = (lambda j: j % K) if loop else (lambda j: j.clamp(0, K - 1))
    i1 = idx(i0 + 1)
    p_prev, p0, p1, p_next = pos[idx(i0 - 1)], pos[idx(i0)], pos[i1], pos[idx(i0 + 2)]
    tt = t[:, None]
    # uniform Catmull-Rom: passes through p0 at t = 0 and p1 at t = 1
    eyes = 0.5 * (2 * p0 + (-p_prev + p1) * tt + (2 * p_prev - 5 * p0 + 4 * p1 - p_next) * tt**2
                  + (-p_prev + 3 * p0 - 3 * p1 + p_next) * tt**3)  # fmt: skip
    R = quat_to_rotmat(slerp(quat[idx(i0)], quat[i1], t))
    k = intr[idx(i0)] * (1 - tt) + intr[i1] * tt
    c2w_out = torch.eye(4, dtype=torch.float64).repeat(frames, 1, 1)
    c2w_out[:, :3, :3], c2w_out[:, :3, 3] = R, eyes
    return Cameras(torch.linalg.inv(c2w_out), k[:, 0], k[:, 1], k[:, 2], k[:, 3], keyframes.width, keyframes.height)


# ----------------------------------------------------------------------------- nerfstudio camera_path.json

_GL_FROM_CV = torch.diag(torch.tensor([1.0, -1.0, -1.0, 1.0], dtype=torch.float64))


def _entries(cameras: Cameras) -> list[dict]:
    c2w = cameras.camera_to_world.to(torch.float64) @ _GL_FROM_CV
    fov = [math.degrees(2 * math.atan(0.5 * cameras.height / float(f))) for f in cameras.fy]
    return [{"camera_to_world": m.reshape(-1).tolist(), "fov": f, "aspect": cameras.width / cameras.height}
            for m, f in zip(c2w, fov)]  # fmt: skip


def write_camera_path(
    path: Path | str, cameras: Cameras, *, fps: float, keyframes: Cameras | None = None, loop: bool = False
) -> None:
    """nerfstudio's layout: OpenGL camera-to-world matrices (row-major, 16 numbers), the
    vertical field of view in degrees, the aspect ratio, render size, fps and duration; with
    ``keyframes``, also the keyframes the path was interpolated through (so the viewer can
    load it back for editing) and whether it loops."""
    doc = {
        "camera_type": "perspective",
        "render_width": cameras.width,
        "render_height": cameras.height,
        "fps": fps,
        "seconds": len(cameras) / fps,
        "camera_path": _entries(cameras),
    }
    if keyframes is not None:
        doc["keyframes"], doc["loop"] = _entries(keyframes), bool(loop)
    Path(path).write_text(json.dumps(doc, indent=1))


def read_camera_path(path: Path | str, *, width: int | None = None, height: int | None = None) -> tuple[Cameras, float]:
    """Reads a nerfstudio ``camera_path.json``: the cameras (OpenCV, pinhole) and the fps.
    ``width``/``height`` override the file's render size (the field of view is kept)."""
    try:
        doc = json.loads(Path(path).read_text())
    except FileNotFoundError:
        raise CameraPathError(path, "not found") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise CameraPathError(path, f"not a JSON camera path ({str(e).splitlines()[0]})") from None
    try:
        W = int(width or doc["render_width"])
        H = int(height or doc["render_height"])
        fps = float(doc.get("fps", 30.0))
        cams = _cameras(path, doc["camera_path"], W, H, "camera_path")
    except CameraPathError:
        raise
    except (KeyError, TypeError, ValueError) as e:
        raise CameraPathError(path, f"not a nerfstudio camera path (missing or bad {e})") from None
    if not fps > 0:
        raise CameraPathError(path, f"fps {fps} must be positive")
    return cams, fps


def read_keyframes(path: Path | str) -> tuple[Cameras, bool] | None:
    """The keyframes (and loop flag) a path file was made from, if it records them."""
    cams, _ = read_camera_path(path)  # validates the file as a whole
    doc = json.loads(Path(path).read_text())
    if "keyframes" not in doc:
        return None
    try:
        return _cameras(path, doc["keyframes"], cams.width, cams.height, "keyframes"), bool(doc.get("loop", False))
    except (KeyError, TypeError, ValueError) as e:
        raise CameraPathError(path, f"bad keyframes (missing or bad {e})") from None


def _cameras(path: Path | str, entries: list, W: int, H: int, what: str) -> Cameras:
    if not entries:
        raise CameraPathError(path, f"{what} is empty")
    c2w = torch.tensor([e["camera_to_world"] for e in entries], dtype=torch.float64)
    fov = torch.tensor([float(e["fov"]) for e in entries], dtype=torch.float64)
    if c2w.shape[1:] != (16,):
        raise CameraPathError(path, f"camera_to_world must hold 16 numbers, got {c2w.shape[1]}")
    if W < 1 or H < 1:
        raise CameraPathError(path, f"render size {W}x{H} must be positive")
    if not bool(torch.isfinite(c2w).all() & torch.isfinite(fov).all()) or not bool(((fov > 0) & (fov < 180)).all()):
        raise CameraPathError(path, f"{what}: camera_to_world or fov holds non-finite values or a fov outside (0, 180)")
    c2w = c2w.view(-1, 4, 4) @ _GL_FROM_CV
    f = 0.5 * H / torch.tan(torch.deg2rad(fov) / 2)
    return Cameras(torch.linalg.inv(c2w), f, f, torch.full_like(f, W / 2), torch.full_like(f, H / 2), W, H)
