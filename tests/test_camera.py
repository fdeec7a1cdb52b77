"""Cameras: OpenCV conventions, conversion from OpenGL, scaling and rays agree with the
rasterizer's projection."""

from __future__ import annotations

import torch

from splatfield.render import Cameras, Gaussians, opengl_to_opencv_c2w, rasterize


def test_look_at_puts_the_target_at_the_principal_point():
    cams = Cameras.look_at(torch.tensor([[1.0, -2.0, 3.0]]), torch.tensor([[0.2, 0.1, -0.3]]), (0.0, -1.0, 0.0), 60, 64, 48)
    p = cams.world_to_camera[0] @ torch.tensor([0.2, 0.1, -0.3, 1.0])
    assert p[2] > 0
    torch.testing.assert_close(p[:2] / p[2], torch.zeros(2), atol=1e-6, rtol=0)
    torch.testing.assert_close(cams.centers[0], torch.tensor([1.0, -2.0, 3.0]), atol=1e-6, rtol=0)


def test_opengl_conversion_flips_y_and_z():
    c2w_gl = torch.eye(4)
    c2w_gl[:3, 3] = torch.tensor([0.0, 0.0, 5.0])  # OpenGL camera at +5z looking down -z
    w2c = opengl_to_opencv_c2w(c2w_gl)
    p = w2c @ torch.tensor([0.0, 1.0, 0.0, 1.0])  # a point above the origin
    assert p[2] > 0 and p[1] < 0  # in front, and up is -y in OpenCV


def test_scale_and_rays_hit_the_projected_pixel():
    cams = Cameras.look_at(torch.tensor([[0.0, 0.0, -4.0]]), torch.zeros(1, 3), (0.0, -1.0, 0.0), 50, 80, 60)
    half = cams.scale(0.5)
    assert (half.width, half.height) == (40, 30)
    torch.testing.assert_close(half.fx, cams.fx / 2)
    origins, dirs = half.generate_rays()
    assert dirs.shape == (1, 30, 40, 3)
    # the ray through pixel (x, y) passes through a point that projects to its centre
    y, x = 7, 31
    point = origins[0, y, x] + 3.0 * dirs[0, y, x]
    p = half.world_to_camera[0] @ torch.cat([point, torch.ones(1)])
    u = half.fx[0] * p[0] / p[2] + half.cx[0]
    v = half.fy[0] * p[1] / p[2] + half.cy[0]
    torch.testing.assert_close(torch.stack([u, v]), torch.tensor([x + 0.5, y + 0.5]), atol=1e-4, rtol=0)


def test_a_single_gaussian_lands_on_its_pixel(native):
    cams = Cameras.from_intrinsics(torch.eye(4), 50.0, 50.0, 20.0, 15.0, 40, 30)
    # world point projecting to pixel centre (12.5, 20.5)
    z = 3.0
    mean = torch.tensor([[(12.5 - 20.0) * z / 50.0, (20.5 - 15.0) * z / 50.0, z]])
    g = Gaussians.from_rgb(mean, torch.full((1, 3), 1e-4), torch.tensor([[1.0, 0, 0, 0]]), torch.tensor([0.9]),
                           torch.tensor([[1.0, 0.0, 0.0]]))  # fmt: skip
    out = rasterize(g, cams)
    a = out.alpha[0, ..., 0]
    assert tuple((a == a.max()).nonzero()[0].tolist()) == (20, 12)
    torch.testing.assert_close(out.meta.means2d[0, 0], torch.tensor([12.5, 20.5]), atol=1e-4, rtol=0)
    torch.testing.assert_close(out.depth[0, 20, 12, 0], torch.tensor(z), atol=1e-5, rtol=0)
