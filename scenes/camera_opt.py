"""Camera refinement: corrections of the training cameras learned with the scene.

Each training camera gets an SE(3) correction applied on the camera side,
``world_to_camera' = exp(xi) @ world_to_camera`` with ``xi = (omega, tau)``: omega a rotation
vector in radians, tau a translation in units of the scene extent (so one learning rate
suits every scene). With ``pose+intrinsics`` each intrinsics group (the cameras that share
fx, fy, cx, cy: one physical camera, "one camera model") also gets a focal-length factor
``exp(s)`` and a principal-point offset in units of the image size; test cameras of a
group get the group's corrected intrinsics too.

The corrections train through the rasterizer's camera gradient (the native VJP in
``cuda/include/splatfield/projection.h``) with their own Adam, learning rates decaying
exponentially to ``final_lr_fraction`` of the start over the run, and an L2 regulariser on
the batch's corrections. ``align_pose`` is the test-time alignment of a held-out view: a
fresh correction fitted with the scene frozen.
"""

from __future__ import annotations

import copy
import math
from dataclasses import dataclass, replace
from typing import Callable, Sequence

import torch
from torch import Tensor

from splatfield.render import Cameras
from splatfield.render.camera import similarity_fit

from .options import CameraOptMode, CameraPivot, CorrectionConfig


def skew(v: Tensor) -> Tensor:  # [..., 3] -> [..., 3, 3]
    x, y, z = v.unbind(-1)
    o = torch.zeros_like(x)
    return torch.stack([torch.stack([o, -z, y], -1), torch.stack([z, o, -x], -1), torch.stack([-y, x, o], -1)], -2)


def pose_correction(xi: Tensor, extent: float, pivot_depth: Tensor | None = None) -> Tensor:
    """[..., 6] (rotation vector, translation / extent) -> [..., 4, 4] rigid transforms of
    camera coordinates: the turn about the point ``(0, 0, pivot_depth)`` (on the optical axis;
    None: the camera centre), then the translation."""
    R = torch.linalg.matrix_exp(skew(xi[..., :3]))  # exact at zero and differentiable there
    out = torch.zeros(*xi.shape[:-1], 4, 4, dtype=xi.dtype, device=xi.device)
    out[..., :3, :3] = R
    out[..., :3, 3] = xi[..., 3:] * extent
    if pivot_depth is not None:  # p - R p with p = (0, 0, d)
        d = pivot_depth.to(xi)[..., None]
        out[..., :3, 3] += d * (torch.eye(3, dtype=xi.dtype, device=xi.device)[:, 2] - R[..., :, 2])
    out[..., 3, 3] = 1.0
    return out


def pivot_depths(cameras: Cameras, points: Tensor, *, limit: int = 20000) -> Tensor:
    """[B] per camera: the median depth of the ``points`` [N, 3] in front of it (at most
    ``limit`` of them, evenly picked); a camera that sees none: the depth of their centroid,
    or 1 when that is behind it too."""
    pts = points.detach().double().cpu()
    if len(pts) > limit:
        pts = pts[torch.linspace(0, len(pts) - 1, limit).long()]
    W = cameras.world_to_camera.detach().double().cpu()
    out = torch.ones(len(cameras), dtype=torch.float64)
    if len(pts) == 0:
        return out
    z = pts @ W[:, 2, :3].T + W[:, 2, 3]  # [N, B]
    front = torch.where(z > 0, z, torch.nan).nanmedian(0).values  # NaN for a camera that sees none
    centroid_z = W[:, 2, :3] @ pts.mean(0) + W[:, 2, 3]
    out = torch.where(centroid_z > 0, centroid_z, out)
    return torch.where(front.isnan(), out, front)


@dataclass(frozen=True)
class FrameChange:
    """How the world drifted as a whole while the training cameras were refined: a point
    ``x`` of the given frame is ``scale * rotation @ x + translation`` in the refined one."""

    scale: float
    rotation: Tensor  # [3, 3] float64
    translation: Tensor  # [3] float64

    def apply(self, cameras: Cameras) -> Cameras:
        """``cameras`` (of the given frame) in the refined frame. Their camera coordinates are
        scaled by ``scale`` with the world, which leaves every projection unchanged."""
        W = cameras.world_to_camera.detach().double().cpu()
        turned = W[:, :3, :3] @ self.rotation.T
        out = W.clone()
        out[:, :3, :3] = turned
        out[:, :3, 3] = self.scale * W[:, :3, 3] - turned @ self.translation
        return replace(cameras, world_to_camera=out.to(cameras.world_to_camera))


def frame_change(given: Cameras, refined: Cameras) -> FrameChange:
    """The similarity that best maps the ``given`` camera centres onto their ``refined`` ones
    (least squares; the scene may drift, turn and scale as a whole while every camera is
    refined). Fewer than 3 cameras fix no frame: the identity."""
    if len(given) < 3:
        return FrameChange(1.0, torch.eye(3, dtype=torch.float64), torch.zeros(3, dtype=torch.float64))
    scale, R, t = similarity_fit(given.centers.detach().double().cpu(), refined.centers.detach().double().cpu())
    return FrameChange(scale, R, t)


def intrinsics_groups(cameras: Cameras) -> tuple[Tensor, Tensor]:
    """Cameras sharing their intrinsics: (group index per camera [B], each group's fx fy cx cy [G, 4])."""
    ks = cameras.Ks.detach().double().cpu()
    groups: list[Tensor] = []
    index = torch.empty(len(cameras), dtype=torch.long)
    for i in range(len(cameras)):
        for g, k in enumerate(groups):
            if torch.allclose(ks[i], k, rtol=1e-6, atol=1e-6):
                index[i] = g
                break
        else:
            index[i] = len(groups)
            groups.append(ks[i])
    return index, torch.stack(groups) if groups else torch.zeros(0, 4, dtype=torch.float64)


@dataclass(frozen=True)
class CameraOptSettings:
    """The refinement's settings; defaults are ``splatfield train``'s (``CorrectionConfig``)."""

    mode: CameraOptMode = "pose"
    pose_lr: float = CorrectionConfig.camera_pose_lr  # radians, and extents, per Adam step
    intrinsics_lr: float = CorrectionConfig.camera_intrinsics_lr  # log-focal, principal point in image sizes
    final_lr_fraction: float = CorrectionConfig.camera_lr_final_ratio
    reg: float = CorrectionConfig.camera_reg  # weight of the L2 of the batch's corrections
    pivot: CameraPivot = CorrectionConfig.camera_pivot  # what a pose correction turns the camera about


class CameraRefinement:
    """The corrections of ``cameras`` (the training cameras, in view order)."""

    def __init__(self, cameras: Cameras, settings: CameraOptSettings, *, extent: float, steps: int,
                 points: Tensor | None = None) -> None:  # fmt: skip
        """``points`` [N, 3]: the scene's initial Gaussians, whose depths place the pivots
        (``settings.pivot == "scene"``; without them the pivot is the camera centre)."""
        if settings.mode == "off":
            raise ValueError("camera refinement needs mode pose or pose+intrinsics")
        device = cameras.device
        self.pivot_depth: Tensor | None = None
        if settings.pivot == "scene" and points is not None:
            self.pivot_depth = pivot_depths(cameras, points).to(device=device, dtype=torch.float32)
        self.settings = settings
        self.extent = float(extent)
        self.steps = int(steps)
        self.size = (cameras.width, cameras.height)
        index, ks = intrinsics_groups(cameras)
        self.groups = index.to(device)
        self.group_intrinsics = ks  # float64, CPU: matched against other cameras' intrinsics
        self.pose = torch.zeros(len(cameras), 6, device=device, requires_grad=True)
        self.focal = torch.zeros(len(ks), device=device, requires_grad=True)
        self.principal = torch.zeros(len(ks), 2, device=device, requires_grad=True)
        groups = [{"params": [self.pose], "lr": settings.pose_lr, "name": "pose"}]
        if self.refines_intrinsics:
            groups.append({"params": [self.focal, self.principal], "lr": settings.intrinsics_lr, "name": "intrinsics"})
        self.optimizer = torch.optim.Adam(groups, eps=1e-15)
        self._start_lrs = [g["lr"] for g in groups]

    @property
    def refines_intrinsics(self) -> bool:
        return self.settings.mode == "pose+intrinsics"

    def parameters(self) -> list[Tensor]:
        return [p for g in self.optimizer.param_groups for p in g["params"]]

    # ------------------------------------------------------------------ applying

    def apply(self, cameras: Cameras, views: Sequence[int]) -> Cameras:
        """The training ``cameras`` of ``views``, corrected (differentiable w.r.t. the corrections)."""
        idx = torch.as_tensor(list(views), dtype=torch.long, device=self.pose.device)
        fixed = cameras.to(device=self.pose.device)
        pivot = None if self.pivot_depth is None else self.pivot_depth[idx]
        w2c = pose_correction(self.pose[idx], self.extent, pivot) @ fixed.world_to_camera.to(self.pose.dtype)
        if not self.refines_intrinsics:
            return replace(fixed, world_to_camera=w2c)
        return self._with_intrinsics(replace(fixed, world_to_camera=w2c), self.groups[idx])

    def _with_intrinsics(self, cameras: Cameras, groups: Tensor) -> Cameras:
        scale = torch.exp(self.focal[groups])
        W, H = cameras.width, cameras.height
        return replace(cameras, fx=cameras.fx * scale, fy=cameras.fy * scale,
                       cx=cameras.cx + self.principal[groups, 0] * W, cy=cameras.cy + self.principal[groups, 1] * H)  # fmt: skip

    @torch.no_grad()
    def refined(self, cameras: Cameras) -> Cameras:
        """All training ``cameras`` corrected (detached)."""
        return self.apply(cameras, range(len(cameras))).to(device=cameras.device)

    @torch.no_grad()
    def refined_others(self, cameras: Cameras, train: Cameras) -> Cameras:
        """Other cameras (test views) in the refined training cameras' frame: moved by the
        common change of frame between the given ``train`` cameras and their refined ones
        (:func:`frame_change`: the scene may drift as a whole while every camera is refined),
        with the corrected intrinsics of the training group they match."""
        if len(cameras) == 0:
            return cameras
        return self.refined_intrinsics(frame_change(train, self.refined(train)).apply(cameras))

    @torch.no_grad()
    def refined_intrinsics(self, cameras: Cameras) -> Cameras:
        """``cameras`` with the corrected intrinsics of the training group they match; cameras
        that match no training group, or a run without intrinsics, are unchanged."""
        if not self.refines_intrinsics or len(cameras) == 0 or (cameras.width, cameras.height) != self.size:
            return cameras
        ks = cameras.Ks.detach().double().cpu()
        match = torch.full((len(cameras),), -1, dtype=torch.long)
        for g, k in enumerate(self.group_intrinsics):
            hit = torch.isclose(ks, k[None], rtol=1e-6, atol=1e-6).all(-1)
            match[hit & (match < 0)] = g
        if not (match >= 0).any():
            return cameras
        moved = self._with_intrinsics(cameras.to(device=self.focal.device, dtype=self.focal.dtype),
                                      match.clamp_min(0).to(self.focal.device))  # fmt: skip
        keep = (match >= 0).to(self.focal.device)
        pick = lambda a, b: torch.where(keep, a, b)  # noqa: E731
        fixed = cameras.to(device=self.focal.device, dtype=self.focal.dtype)
        out = replace(fixed, fx=pick(moved.fx, fixed.fx), fy=pick(moved.fy, fixed.fy), cx=pick(moved.cx, fixed.cx),
                      cy=pick(moved.cy, fixed.cy))  # fmt: skip
        return out.to(device=cameras.device, dtype=cameras.fx.dtype)

    def regularizer(self, views: Sequence[int]) -> Tensor:
        idx = torch.as_tensor(list(views), dtype=torch.long, device=self.pose.device)
        reg = self.pose[idx].square().sum()
        if self.refines_intrinsics:
            reg = reg + self.focal.square().sum() + self.principal.square().sum()
        return self.settings.reg * reg

    # ------------------------------------------------------------------ learning

    def lr_factor(self, step: int) -> float:
        """Exponential decay from 1 to final_lr_fraction over the run."""
        t = min(max(step / max(1, self.steps), 0.0), 1.0)
        return math.exp(t * math.log(self.settings.final_lr_fraction))

    def step(self, step: int) -> None:
        f = self.lr_factor(step)
        for g, lr in zip(self.optimizer.param_groups, self._start_lrs):
            g["lr"] = lr * f
        self.optimizer.step()

    def zero_grad(self) -> None:
        self.optimizer.zero_grad(set_to_none=True)

    def summary(self) -> dict[str, float]:
        """Mean and largest correction: degrees, scene extents, focal factor, principal point in pixels."""
        with torch.no_grad():
            deg = self.pose[:, :3].norm(dim=-1) * (180.0 / math.pi)
            shift = self.pose[:, 3:].norm(dim=-1)
            out = {"rotation_deg_mean": float(deg.mean()), "rotation_deg_max": float(deg.max()),
                   "translation_extent_mean": float(shift.mean()), "translation_extent_max": float(shift.max())}  # fmt: skip
            if self.refines_intrinsics:
                W, H = self.size
                pp = self.principal * torch.tensor([W, H], device=self.principal.device)
                out["focal_factor_max"] = float(torch.exp(self.focal.abs().max()))
                out["principal_px_max"] = float(pp.norm(dim=-1).max())
        return out

    # ------------------------------------------------------------------ persistence

    def state_dict(self) -> dict:
        return {
            "settings": vars(self.settings).copy(),
            "extent": self.extent,
            "steps": self.steps,
            "size": list(self.size),
            "groups": self.groups.cpu(),
            "group_intrinsics": self.group_intrinsics,
            "pose": self.pose.detach().cpu().clone(),
            "focal": self.focal.detach().cpu().clone(),
            "principal": self.principal.detach().cpu().clone(),
            "pivot_depth": None if self.pivot_depth is None else self.pivot_depth.cpu().clone(),
            "optimizer": copy.deepcopy(self.optimizer.state_dict()),  # a copy, not the live moments
        }

    def load_state_dict(self, state: dict) -> None:
        if tuple(state["pose"].shape) != tuple(self.pose.shape) or tuple(state["focal"].shape) != tuple(self.focal.shape):
            raise ValueError("the checkpoint's camera corrections are for other training views")
        with torch.no_grad():
            self.pose.copy_(state["pose"])
            self.focal.copy_(state["focal"])
            self.principal.copy_(state["principal"])
        pivot = state.get("pivot_depth")
        if (pivot is None) != (self.pivot_depth is None):
            raise ValueError("the checkpoint's camera corrections turn about another --camera-pivot")
        if pivot is not None:  # the start's pivots, not the resumed scene's
            self.pivot_depth = pivot.to(self.pivot_depth)
        self.optimizer.load_state_dict(state["optimizer"])


def align_pose(
    render: Callable[[Cameras], Tensor],
    camera: Cameras,
    target: Tensor,  # [H, W, 3] float in [0, 1]
    *,
    extent: float,
    steps: int,
    lr: float = 1e-3,
    mask: Tensor | None = None,  # [H, W] bool: pixels that count
    pivot_depth: float | None = None,  # the turn's pivot on the optical axis (None: the camera centre)
) -> Cameras:
    """Test-time alignment: the pose correction of one camera that best fits ``target`` with
    the scene frozen (``render`` maps cameras to an image [1, H, W, 3]); L1 loss, Adam with
    a cosine-decayed learning rate. Returns the aligned camera (detached)."""
    xi = torch.zeros(1, 6, device=camera.device, requires_grad=True)
    pivot = None if pivot_depth is None else torch.tensor([pivot_depth], device=camera.device)
    opt = torch.optim.Adam([xi], lr=lr, eps=1e-15)
    base = camera.world_to_camera.detach().to(xi.dtype)
    for k in range(steps):
        for g in opt.param_groups:
            g["lr"] = lr * 0.5 * (1 + math.cos(math.pi * k / max(1, steps)))
        cam = replace(camera, world_to_camera=pose_correction(xi, extent, pivot) @ base)
        err = (render(cam)[0] - target).abs()
        loss = err.mean() if mask is None else err[mask].mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    with torch.no_grad():
        return replace(camera, world_to_camera=(pose_correction(xi, extent, pivot) @ base).to(camera.world_to_camera.dtype))
