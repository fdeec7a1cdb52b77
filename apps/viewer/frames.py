"""What the viewer draws: a browser camera turned into a validated :class:`Cameras`, and a
rendered frame (RGB, coloured depth or alpha) as uint8 pixels.

Everything a client sends is untrusted: a camera with NaN, a zero quaternion, an absurd
field of view or a resolution of a billion pixels is refused with :class:`ViewRequestError`
(the viewer skips that request and keeps serving), and the render size is always capped.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal, Sequence

import numpy as np
import torch

from splatfield.render import Cameras
from splatfield.scenes.scene import Renderable

from ..media import to_uint8

RenderMode = Literal["rgb", "depth", "alpha"]
RENDER_MODES: tuple[RenderMode, ...] = ("rgb", "depth", "alpha")

MAX_SIDE = 4096  # no client gets a frame larger than this on either side
MAX_COORDINATE = 1e6  # a camera farther out than this from the origin is not a real view


class ViewRequestError(ValueError):
    """A client's camera or setting that cannot be rendered (the request is skipped)."""


@dataclass(frozen=True)
class FrameSettings:
    mode: RenderMode = "rgb"
    sh_degree: int = 3
    background: tuple[float, float, float] = (0.0, 0.0, 0.0)
    max_side: int = 800  # the longer side of a full-quality frame
    moving_scale: float = 0.35  # fraction of max_side while the camera moves


def frame_size(width: float, height: float, max_side: int) -> tuple[int, int]:
    """The client's canvas aspect ratio at a longer side of at most ``max_side`` pixels."""
    if not (math.isfinite(width) and math.isfinite(height)) or width < 1 or height < 1:
        raise ViewRequestError(f"canvas size {width}x{height} is not a positive size")
    aspect = width / height
    if not 1 / 20 <= aspect <= 20:
        raise ViewRequestError(f"canvas aspect ratio {aspect:.3g} is outside 1/20..20")
    side = max(8, min(int(max_side), MAX_SIDE, int(max(width, height))))
    if width >= height:
        return side, max(1, round(side / aspect))
    return max(1, round(side * aspect)), side


def view_camera(
    wxyz: Sequence[float], position: Sequence[float], fov_y: float, width: int, height: int
) -> Cameras:
    """A pinhole camera from the browser's pose (camera-to-world rotation as a quaternion and
    position, OpenCV axes) and vertical field of view in radians."""
    q = np.asarray(wxyz, dtype=np.float64).reshape(-1)
    p = np.asarray(position, dtype=np.float64).reshape(-1)
    if q.shape != (4,) or p.shape != (3,):
        raise ViewRequestError("camera pose must be a quaternion (4 numbers) and a position (3 numbers)")
    if not (np.isfinite(q).all() and np.isfinite(p).all() and math.isfinite(fov_y)):
        raise ViewRequestError("camera pose or field of view is not finite")
    norm = float(np.linalg.norm(q))
    if norm < 1e-6:
        raise ViewRequestError("camera rotation quaternion is zero")
    if float(np.abs(p).max()) > MAX_COORDINATE:
        raise ViewRequestError(f"camera position {p.tolist()} is beyond {MAX_COORDINATE:g} from the origin")
    if not math.radians(1.0) <= fov_y <= math.radians(170.0):
        raise ViewRequestError(f"field of view {math.degrees(fov_y):.3g} degrees is outside 1..170")
    w, x, y, z = q / norm
    R = np.array([
        [1 - 2 * (y * y + z * z), 2 * (x * y - w * z), 2 * (x * z + w * y)],
        [2 * (x * y + w * z), 1 - 2 * (x * x + z * z), 2 * (y * z - w * x)],
        [2 * (x * z - w * y), 2 * (y * z + w * x), 1 - 2 * (x * x + y * y)],
    ])  # fmt: skip
    w2c = np.eye(4)
    w2c[:3, :3] = R.T
    w2c[:3, 3] = -R.T @ p
    f = 0.5 * height / math.tan(0.5 * fov_y)
    return Cameras.from_intrinsics(torch.from_numpy(w2c), f, f, width / 2, height / 2, width, height)


def fov_y_of(cameras: Cameras, i: int) -> float:
    """Camera ``i``'s vertical field of view in radians, as the browser takes it."""
    return 2 * math.atan(0.5 * cameras.height / float(cameras.fy[i]))


def pose_of(cameras: Cameras, i: int) -> tuple[np.ndarray, np.ndarray]:
    """(wxyz, position) of camera ``i``'s camera-to-world pose, as the browser takes it."""
    from splatfield.render.camera_paths import rotmat_to_quat

    c2w = cameras.camera_to_world[i].to(torch.float64)
    return rotmat_to_quat(c2w[:3, :3]).numpy(), c2w[:3, 3].numpy()


# A perceptually ordered ramp (dark blue -> teal -> yellow), interpolated linearly.
_RAMP = np.array([[0.05, 0.03, 0.35], [0.16, 0.35, 0.65], [0.12, 0.62, 0.56], [0.55, 0.80, 0.25], [0.99, 0.91, 0.15]])


def colorize_depth(depth: np.ndarray, alpha: np.ndarray) -> np.ndarray:
    """[H, W] expected depth (normalised by alpha) and alpha -> [H, W, 3] uint8; near is yellow, far is blue, and
    pixels with nothing rendered are black. The range is the 2nd..98th percentile of the
    covered pixels, so a few stray Gaussians do not flatten the picture."""
    covered = alpha > 0.05
    out = np.zeros((*depth.shape, 3), dtype=np.uint8)
    if not covered.any():
        return out
    d = depth[covered]
    lo, hi = np.percentile(d, [2, 98])
    t = 1.0 - np.clip((d - lo) / max(hi - lo, 1e-9), 0.0, 1.0)
    x = t * (len(_RAMP) - 1)
    k = np.minimum(x.astype(np.int64), len(_RAMP) - 2)
    rgb = _RAMP[k] + (x - k)[:, None] * (_RAMP[k + 1] - _RAMP[k])
    out[covered] = (rgb * 255 + 0.5).astype(np.uint8)
    return out


@torch.no_grad()
def render_frame(scene: Renderable, camera: Cameras, settings: FrameSettings) -> np.ndarray:
    """[H, W, 3] uint8 of one camera in the requested mode."""
    degree = min(max(int(settings.sh_degree), 0), scene.max_sh_degree)
    if len(scene) == 0:
        bg = np.asarray(settings.background) if settings.mode == "rgb" else np.zeros(3)
        return np.broadcast_to((bg * 255 + 0.5).astype(np.uint8), (camera.height, camera.width, 3)).copy()
    out = scene.render(camera.to(dtype=torch.float32), sh_degree=degree, background=settings.background)
    if settings.mode == "rgb":
        return to_uint8(out.image[0])
    alpha = out.alpha[0, ..., 0].cpu().numpy()
    if settings.mode == "alpha":
        return np.repeat((np.clip(alpha, 0, 1) * 255 + 0.5).astype(np.uint8)[..., None], 3, axis=-1)
    return colorize_depth(out.depth[0, ..., 0].cpu().numpy(), alpha)
