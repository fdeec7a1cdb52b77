"""Pure-PyTorch rasterizer: the test oracle (run in float64) and the fallback.

Written for clarity, not speed: every Gaussian is evaluated at every pixel of a band of
rows (optionally only those whose footprint box reaches the band), then composited with
cumulative products. Gradients come from autograd. The rules are those of the native
kernels (ARCHITECTURE.md): pixel centres at integer + 0.5, 0.3-pixel dilation,
alpha = min(0.99, o * exp(-1/2 d^T C d)) skipped below 1/255, and a pixel stops before
its transmittance would fall to 1e-4 or below.
"""

from __future__ import annotations

import torch
from torch import Tensor

from .types import RenderStats

ALPHA_MIN = 1.0 / 255.0
ALPHA_MAX = 0.99
TRANSMITTANCE_MIN = 1e-4

SH_C0 = 0.28209479177387814
SH_C1 = 0.4886025119029199
SH_C2 = (1.0925484305920792, -1.0925484305920792, 0.31539156525252005, -1.0925484305920792, 0.5462742152960396)
SH_C3 = (
    -0.5900435899266435,
    2.890611442640554,
    -0.4570457994644658,
    0.3731763325901154,
    -0.4570457994644658,
    1.445305721320277,
    -0.5900435899266435,
)


def quat_to_rotmat(q: Tensor) -> Tensor:  # [..., 4] unit (w, x, y, z) -> [..., 3, 3]
    w, x, y, z = q.unbind(-1)
    rows = [
        [1 - 2 * (y * y + z * z), 2 * (x * y - w * z), 2 * (x * z + w * y)],
        [2 * (x * y + w * z), 1 - 2 * (x * x + z * z), 2 * (y * z - w * x)],
        [2 * (x * z - w * y), 2 * (y * z + w * x), 1 - 2 * (x * x + y * y)],
    ]
    return torch.stack([torch.stack(r, -1) for r in rows], -2)


def sh_basis(degree: int, d: Tensor) -> Tensor:  # [..., 3] unit -> [..., (degree+1)^2]
    x, y, z = d.unbind(-1)
    out = [torch.full_like(x, SH_C0)]
    if degree >= 1:
        out += [-SH_C1 * y, SH_C1 * z, -SH_C1 * x]
    if degree >= 2:
        xx, yy, zz = x * x, y * y, z * z
        out += [
            SH_C2[0] * x * y,
            SH_C2[1] * y * z,
            SH_C2[2] * (2 * zz - xx - yy),
            SH_C2[3] * x * z,
            SH_C2[4] * (xx - yy),
        ]
    if degree >= 3:
        out += [
            SH_C3[0] * y * (3 * xx - yy),
            SH_C3[1] * x * y * z,
            SH_C3[2] * y * (4 * zz - xx - yy),
            SH_C3[3] * z * (2 * zz - 3 * xx - 3 * yy),
            SH_C3[4] * x * (4 * zz - xx - yy),
            SH_C3[5] * z * (xx - yy),
            SH_C3[6] * x * (xx - 3 * yy),
        ]
    return torch.stack(out, -1)


def project(
    means: Tensor,  # [N, 3]
    quats: Tensor,  # [N, 4]
    log_scales: Tensor,  # [N, 3]
    opacity_logits: Tensor,  # [N]
    sh: Tensor,  # [N, K, 3]
    viewmats: Tensor,  # [B, 4, 4]
    Ks: Tensor,  # [B, 4] fx fy cx cy
    width: int,
    height: int,
    sh_degree: int,
    near_plane: float,
    far_plane: float,
    eps2d: float,
    antialiased: bool,
) -> tuple[Tensor, Tensor, Tensor, Tensor, Tensor, Tensor]:
    """EWA projection. Returns means2d [B,N,2], conics [B,N,3] (a, b, c of [[a,b],[b,c]]),
    opacities [B,N], colors [B,N,3], depths [B,N] and radii [B,N,2] (int32, 0 = culled)."""
    finite = (
        means.isfinite().all(-1)
        & quats.isfinite().all(-1)
        & log_scales.isfinite().all(-1)
        & ~opacity_logits.isnan()
        & sh.isfinite().flatten(1).all(-1)
        & (quats.square().sum(-1) > 1e-24)
    )
    # Masked Gaussians get harmless stand-in values so no NaN reaches autograd.
    f = finite[:, None]
    means = torch.where(f, means, torch.zeros_like(means))
    quats = torch.where(f, quats, torch.tensor([1.0, 0, 0, 0], dtype=quats.dtype, device=quats.device))
    log_scales = torch.where(f, log_scales, torch.zeros_like(log_scales))
    opacity_logits = torch.where(finite, opacity_logits, torch.zeros_like(opacity_logits))
    sh = torch.where(finite[:, None, None], sh, torch.zeros_like(sh))

    R = quat_to_rotmat(torch.nn.functional.normalize(quats, dim=-1))
    M = R * torch.exp(log_scales)[:, None, :]
    Sigma = M @ M.transpose(-1, -2)  # [N, 3, 3]

    W, tw = viewmats[:, None, :3, :3], viewmats[:, None, :3, 3]  # [B, 1, 3, 3], [B, 1, 3]
    t = (W @ means[None, :, :, None])[..., 0] + tw  # [B, N, 3]
    Sigma_c = W @ Sigma[None] @ W.transpose(-1, -2)
    fx, fy, cx, cy = (Ks[:, i, None] for i in range(4))  # [B, 1]
    x, y, z = t.unbind(-1)
    in_depth = (z >= near_plane) & (z <= far_plane)
    zs = torch.where(in_depth, z, torch.ones_like(z))

    # x/z, y/z clamped to 1.3x the frustum before the Jacobian (as the native code).
    rx = torch.minimum(torch.maximum(x / zs, -1.3 * cx / fx), 1.3 * (width - cx) / fx)
    ry = torch.minimum(torch.maximum(y / zs, -1.3 * cy / fy), 1.3 * (height - cy) / fy)
    zero = torch.zeros_like(zs)
    J = torch.stack(
        [torch.stack([fx / zs, zero, -fx * rx / zs], -1), torch.stack([zero, fy / zs, -fy * ry / zs], -1)], -2
    )  # [B, N, 2, 3]
    cov0 = J @ Sigma_c @ J.transpose(-1, -2)
    cov = cov0 + eps2d * torch.eye(2, dtype=cov0.dtype, device=cov0.device)
    det0 = cov0[..., 0, 0] * cov0[..., 1, 1] - cov0[..., 0, 1] * cov0[..., 1, 0]
    det = cov[..., 0, 0] * cov[..., 1, 1] - cov[..., 0, 1] * cov[..., 1, 0]
    ok_det = det > 0
    det_s = torch.where(ok_det, det, torch.ones_like(det))
    conics = torch.stack([cov[..., 1, 1] / det_s, -cov[..., 0, 1] / det_s, cov[..., 0, 0] / det_s], -1)

    opacities = torch.sigmoid(opacity_logits)[None].expand_as(det)
    if antialiased:
        opacities = opacities * torch.sqrt(torch.clamp_min(det0, 0) / det_s)
    means2d = torch.stack([fx * x / zs + cx, fy * y / zs + cy], -1)

    centers = -(viewmats[:, :3, :3].transpose(1, 2) @ viewmats[:, :3, 3:4])[..., 0]  # [B, 3]
    dirs = torch.nn.functional.normalize(means[None] - centers[:, None], dim=-1)
    basis = sh_basis(sh_degree, dirs)  # [B, N, K']
    colors = torch.clamp_min((basis[..., None] * sh[None, :, : basis.shape[-1]]).sum(-2) + 0.5, 0.0)

    # Extent where alpha can reach 1/255 (same padding as the native code), for culling.
    K = 2 * torch.log(torch.clamp_min(opacities, 1e-30) / ALPHA_MIN)
    ex = torch.sqrt(torch.clamp_min(K * cov[..., 0, 0], 0)) * 1.0001 + 1e-3
    ey = torch.sqrt(torch.clamp_min(K * cov[..., 1, 1], 0)) * 1.0001 + 1e-3
    on_screen = (
        (means2d[..., 0] + ex >= 0.5)
        & (means2d[..., 0] - ex <= width - 0.5)
        & (means2d[..., 1] + ey >= 0.5)
        & (means2d[..., 1] - ey <= height - 0.5)
    )
    valid = finite[None] & in_depth & ok_det & (opacities >= ALPHA_MIN) & on_screen
    radii = torch.stack([torch.ceil(ex.clamp(max=2**24)), torch.ceil(ey.clamp(max=2**24))], -1).detach()
    radii = torch.where(valid[..., None], radii, torch.zeros_like(radii)).to(torch.int32)

    def masked(v: Tensor) -> Tensor:
        m = valid.reshape(valid.shape + (1,) * (v.dim() - 2))
        return torch.where(m, v, torch.zeros_like(v))

    return masked(means2d), masked(conics), masked(opacities), masked(colors), masked(z), radii


def rasterize(
    means2d: Tensor,  # [B, N, 2]
    conics: Tensor,  # [B, N, 3]
    opacities: Tensor,  # [B, N]
    colors: Tensor,  # [B, N, 3]
    depths: Tensor,  # [B, N]
    radii: Tensor,  # [B, N, 2]
    background: Tensor,  # [B, 3]
    width: int,
    height: int,
    stats: RenderStats | None = None,
    cull: bool = True,
    block: int = 32,
    max_pairs: int = 4_000_000,
    ambiguity: dict[str, Tensor] | None = None,
    alpha_margin: float = 1e-4,
    transmittance_margin: float = 2e-3,
) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """Composites depth-sorted Gaussians front to back. Returns image [B,H,W,3],
    accumulated depth [B,H,W,1], alpha [B,H,W,1] and final transmittance [B,H,W].

    With ``cull`` each ``block`` x ``block`` square of pixels only evaluates the Gaussians
    whose (conservative) footprint box reaches it; without it, every visible Gaussian is
    evaluated at every pixel, in bands of rows of at most ``max_pairs`` pairs.

    With ``ambiguity`` (a dict to fill), ``ambiguity["pixels"]`` [B,H,W] flags pixels where
    a decision sits within a relative margin of its threshold (alpha vs 1/255 or 0.99,
    transmittance vs 1e-4): there a float32 kernel may legitimately decide the other way,
    a measure-zero discontinuity that tests exclude (and count).
    """
    B, N = opacities.shape
    dt, dev = means2d.dtype, means2d.device
    want = () if stats is None else stats.requested
    importance = torch.zeros(B, N, dtype=dt, device=dev)
    split2d = torch.zeros(B, N, 3, dtype=dt, device=dev) if "split2d" in want else None
    if means2d.requires_grad and ("grad2d" in want or "mean2d_grad" in want):

        def capture_mean2d_grad(g: Tensor) -> None:
            if "grad2d" in want:
                stats.values["grad2d"] = g.norm(dim=-1)
            if "mean2d_grad" in want:
                stats.values["mean2d_grad"] = g.detach().clone()

        means2d.register_hook(capture_mean2d_grad)

    image = means2d.new_zeros(B, height, width, 3)
    depth = means2d.new_zeros(B, height, width, 1)
    alpha_out = means2d.new_zeros(B, height, width, 1)
    final_T = means2d.new_ones(B, height, width)
    blocks = []  # (b, y0, y1, x0, x1, rgb, depth, alpha, T, ambiguous) assembled at the end
    margins = None if ambiguity is None else (alpha_margin, transmittance_margin)
    for b in range(B):
        visible = (radii[b] > 0).all(-1)
        ids = visible.nonzero()[:, 0]
        ids = ids[torch.sort(depths[b, ids].detach(), stable=True).indices]  # front to back, ties by index
        m = means2d[b, ids].detach()
        r = radii[b, ids].to(dt)
        # conservative pixel ranges of each footprint (pixel centres at integer + 0.5)
        x_lo, x_hi = m[:, 0] - r[:, 0] - 0.5, m[:, 0] + r[:, 0] - 0.5
        y_lo, y_hi = m[:, 1] - r[:, 1] - 0.5, m[:, 1] + r[:, 1] - 0.5
        if cull:
            bw = bh = block
        else:
            bw, bh = width, max(1, min(height, max_pairs // max(1, width * max(1, ids.numel()))))
        for y0 in range(0, height, bh):
            for x0 in range(0, width, bw):
                y1, x1 = min(height, y0 + bh), min(width, x0 + bw)
                if cull:
                    hit = (y_hi >= y0 - 1) & (y_lo <= y1) & (x_hi >= x0 - 1) & (x_lo <= x1)
                    sel = ids[hit]
                else:
                    sel = ids
                blocks.append((b, y0, y1, x0, x1) + _composite_block(
                    b, sel, y0, y1, x0, x1, means2d, conics, opacities, colors, depths, background,
                    importance, split2d, margins,
                ))  # fmt: skip
    if blocks:
        # Scatter the blocks (they do not overlap) into flat canvases; index_put keeps the graph.
        flat = torch.cat([_block_pixels(bl[:5], width, height, dev) for bl in blocks])
        image = image.reshape(-1, 3).index_put((flat,), torch.cat([bl[5] for bl in blocks])).view_as(image)
        depth = depth.reshape(-1).index_put((flat,), torch.cat([bl[6] for bl in blocks])).view_as(depth)
        alpha_out = alpha_out.reshape(-1).index_put((flat,), torch.cat([bl[7] for bl in blocks])).view_as(alpha_out)
        final_T = final_T.reshape(-1).index_put((flat,), torch.cat([bl[8] for bl in blocks])).view_as(final_T)
    if ambiguity is not None:
        flags = torch.zeros(B * height * width, dtype=torch.bool, device=dev)
        if blocks:
            flags[flat] = torch.cat([bl[9] for bl in blocks])
        ambiguity["pixels"] = flags.view(B, height, width)
    if stats is not None:
        if "importance" in want:
            stats.values["importance"] = importance
        if split2d is not None:
            stats.values["split2d"] = split2d
    return image, depth, alpha_out, final_T


def _block_pixels(block: tuple, width: int, height: int, device: torch.device) -> Tensor:
    """Flat indices (b*H + y)*W + x of a block's pixels, row-major like its values."""
    b, y0, y1, x0, x1 = block
    ys = torch.arange(y0, y1, device=device)[:, None]
    xs = torch.arange(x0, x1, device=device)[None, :]
    return ((b * height + ys) * width + xs).reshape(-1)


def _composite_block(b, sel, y0, y1, x0, x1, means2d, conics, opacities, colors, depths, background,
                     importance, split2d, margins):  # fmt: skip
    """Composites the Gaussians ``sel`` (front to back) over pixels [y0,y1) x [x0,x1) of
    camera b. Returns rgb [P,3], accumulated depth [P], alpha [P], final T [P] and the
    pixels whose decisions lie within ``margins`` of a threshold (or None)."""
    dt, dev = means2d.dtype, means2d.device
    ys, xs = torch.meshgrid(
        torch.arange(y0, y1, dtype=dt, device=dev) + 0.5,
        torch.arange(x0, x1, dtype=dt, device=dev) + 0.5,
        indexing="ij",
    )
    pix = torch.stack([xs, ys], -1).reshape(-1, 2)  # [P, 2]
    d = pix[:, None, :] - means2d[b, sel][None]  # [P, n, 2]
    a, bb, c = conics[b, sel].unbind(-1)
    dx, dy = d[..., 0], d[..., 1]
    G = torch.exp(-0.5 * (a * dx * dx + c * dy * dy) - bb * dx * dy)
    raw = opacities[b, sel] * G
    alpha = torch.clamp_max(raw, ALPHA_MAX)
    active = alpha >= ALPHA_MIN
    alpha = torch.where(active, alpha, torch.zeros_like(alpha))
    kept = torch.cumprod(1 - alpha, dim=1) > TRANSMITTANCE_MIN
    alpha = alpha * kept
    trans = torch.cumprod(1 - alpha, dim=1)
    T = torch.cat([torch.ones_like(trans[:, :1]), trans[:, :-1]], dim=1)
    T_final = trans[:, -1] if trans.shape[1] else torch.ones(pix.shape[0], dtype=dt, device=dev)
    w = alpha * T  # [P, n]
    rgb = (w[..., None] * colors[b, sel][None]).sum(1) + T_final[:, None] * background[b]
    importance[b].index_add_(0, sel, w.detach().sum(0))
    if split2d is not None and alpha.requires_grad:
        # g = dL/dalpha, captured when the loss is back-propagated.
        mask = (active & kept & (raw < ALPHA_MAX)).to(dt)
        ux = a * dx + bb * dy
        uy = bb * dx + c * dy
        terms = torch.stack([ux * ux - a, ux * uy - bb, uy * uy - c], -1).detach()
        w_alpha = (mask * raw).detach()

        def capture(g: Tensor) -> None:
            split2d[b].index_add_(0, sel, ((g * w_alpha)[..., None] * terms).sum(0))

        alpha.register_hook(capture)
    ambiguous = None
    if margins is not None:
        with torch.no_grad():
            near_alpha = ((raw - ALPHA_MIN).abs() < margins[0] * ALPHA_MIN) | (
                (raw - ALPHA_MAX).abs() < margins[0] * ALPHA_MAX
            )
            t_next = torch.cumprod(1 - torch.where(active, torch.clamp_max(raw, ALPHA_MAX), torch.zeros_like(raw)), 1)
            near_T = (t_next - TRANSMITTANCE_MIN).abs() < margins[1] * TRANSMITTANCE_MIN
            ambiguous = (near_alpha | near_T).any(1)
    return rgb, (w * depths[b, sel][None]).sum(1), w.sum(1), T_final, ambiguous


def composite(
    offsets: Tensor,  # [R + 1] int64
    alphas: Tensor,  # [M]
    colors: Tensor,  # [M, 3]
    ts: Tensor,  # [M]
    background: Tensor,  # [R, 3]
) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """Front-to-back compositing of packed ray samples. Returns rgb [R,3], accumulated
    depth [R], alpha [R] and final transmittance [R]."""
    R = offsets.numel() - 1
    counts = offsets[1:] - offsets[:-1]
    S = int(counts.max()) if R > 0 and counts.numel() else 0
    ray = torch.repeat_interleave(torch.arange(R, device=alphas.device), counts)
    slot = torch.arange(alphas.numel(), device=alphas.device) - offsets[:-1][ray]

    def padded(v: Tensor) -> Tensor:
        out = torch.zeros((R, S) + v.shape[1:], dtype=v.dtype, device=v.device)
        return out.index_put((ray, slot), v)

    raw = padded(alphas)
    alpha = torch.clamp_max(raw, ALPHA_MAX)
    alpha = torch.where(alpha >= ALPHA_MIN, alpha, torch.zeros_like(alpha))
    alpha = alpha * (torch.cumprod(1 - alpha, dim=1) > TRANSMITTANCE_MIN)
    trans = torch.cumprod(1 - alpha, dim=1)
    T = torch.cat([torch.ones_like(trans[:, :1]), trans[:, :-1]], dim=1)
    T_final = trans[:, -1] if S else torch.ones(R, dtype=alphas.dtype, device=alphas.device)
    w = alpha * T
    rgb = (w[..., None] * padded(colors)).sum(1) + T_final[:, None] * background
    return rgb, (w * padded(ts)).sum(1), w.sum(1), T_final

