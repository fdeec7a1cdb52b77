// Per-item kernel bodies shared verbatim by the CPU and CUDA drivers: one
// (camera, Gaussian) projection, one Gaussian's projection VJP over all
// cameras, and one ray of packed samples (forward and VJP). The drivers only
// decide how items are scheduled.
#pragma once
#include <stdint.h>

#include "composite.h"
#include "field.h"
#include "projection.h"
#include "sh.h"

namespace splatfield {

struct ProjectArgs {
  // inputs
  const float* means;           // [N, 3]
  const float* quats;           // [N, 4]
  const float* log_scales;      // [N, 3]
  const float* opacity_logits;  // [N]
  const float* sh;              // [N, K, 3]
  const float* viewmats;        // [B, 4, 4]
  const float* Ks;              // [B, 4] fx fy cx cy
  int64_t B, N, K;
  int width, height, sh_degree;
  float near_plane, far_plane, eps2d;
  bool antialiased;
  // forward outputs, [B, N, ...]
  float* means2d;    // 2
  float* conics;     // 3
  float* opacities;  // 1
  float* colors;     // 3
  float* depths;     // 1
  int32_t* radii;    // 2
  // backward inputs (gradients of the forward outputs) and outputs
  const float *v_means2d, *v_conics, *v_opacities, *v_colors, *v_depths;
  float *v_means, *v_quats, *v_log_scales, *v_opacity_logits, *v_sh;
  // [B, N, kCameraGradSize] per-(camera, Gaussian) camera gradients (zeroed by
  // the driver), summed over N by the host; null when the camera is fixed.
  float* v_cameras;
};

// R (3x3 row-major), t (3), fx, fy, cx, cy
constexpr int kCameraGradSize = 16;

SF_HD void store_camera_grad(const CameraGrad& g, float* out) {
  for (int i = 0; i < 3; ++i)
    for (int j = 0; j < 3; ++j) out[3 * i + j] = g.R.m[i][j];
  out[9] = g.t.x;
  out[10] = g.t.y;
  out[11] = g.t.z;
  out[12] = g.fx;
  out[13] = g.fy;
  out[14] = g.cx;
  out[15] = g.cy;
}

SF_HD GaussianParams load_gaussian(const ProjectArgs& a, int64_t n) {
  GaussianParams g;
  g.mean = {a.means[3 * n], a.means[3 * n + 1], a.means[3 * n + 2]};
  for (int i = 0; i < 4; ++i) g.q[i] = a.quats[4 * n + i];
  g.log_scale = {a.log_scales[3 * n], a.log_scales[3 * n + 1], a.log_scales[3 * n + 2]};
  g.opacity_logit = a.opacity_logits[n];
  return g;
}

SF_HD CameraParams load_camera(const ProjectArgs& a, int64_t b) {
  CameraParams c;
  const float* V = a.viewmats + 16 * b;
  for (int i = 0; i < 3; ++i)
    for (int j = 0; j < 3; ++j) c.R.m[i][j] = V[4 * i + j];
  c.t = {V[3], V[7], V[11]};
  c.fx = a.Ks[4 * b];
  c.fy = a.Ks[4 * b + 1];
  c.cx = a.Ks[4 * b + 2];
  c.cy = a.Ks[4 * b + 3];
  c.width = a.width;
  c.height = a.height;
  c.near_plane = a.near_plane;
  c.far_plane = a.far_plane;
  c.eps2d = a.eps2d;
  c.antialiased = a.antialiased;
  return c;
}

// Camera centre in world coordinates: -R^T t.
SF_HD Vec3 camera_center(const CameraParams& c) { return -1.f * matTvec(c.R, c.t); }

SF_HD void project_forward_item(const ProjectArgs& a, int64_t b, int64_t n) {
  const GaussianParams g = load_gaussian(a, n);
  const CameraParams cam = load_camera(a, b);
  Projected p;
  ProjectCache cache;
  const int64_t i = b * a.N + n;
  a.means2d[2 * i] = a.means2d[2 * i + 1] = 0.f;
  a.conics[3 * i] = a.conics[3 * i + 1] = a.conics[3 * i + 2] = 0.f;
  a.opacities[i] = 0.f;
  a.colors[3 * i] = a.colors[3 * i + 1] = a.colors[3 * i + 2] = 0.f;
  a.depths[i] = 0.f;
  a.radii[2 * i] = a.radii[2 * i + 1] = 0;
  if (!project_gaussian(g, cam, p, cache)) return;
  // Non-finite SH coefficients mask the Gaussian (checked on the coefficients: the
  // colour's clamp at zero would hide a NaN).
  const float* sh = a.sh + 3 * a.K * n;
  for (int k = 0; k < 3 * sh_num_bases(a.sh_degree); ++k)
    if (!isfinite(sh[k])) return;
  const Vec3 rgb = sh_color(a.sh_degree, g.mean - camera_center(cam), sh);
  a.means2d[2 * i] = p.mean2d.x;
  a.means2d[2 * i + 1] = p.mean2d.y;
  a.conics[3 * i] = p.conic.a;
  a.conics[3 * i + 1] = p.conic.b;
  a.conics[3 * i + 2] = p.conic.c;
  a.opacities[i] = p.opacity;
  a.colors[3 * i] = rgb.x;
  a.colors[3 * i + 1] = rgb.y;
  a.colors[3 * i + 2] = rgb.z;
  a.depths[i] = p.depth;
  a.radii[2 * i] = p.radius_x;
  a.radii[2 * i + 1] = p.radius_y;
}

// Gradients of Gaussian n summed over the cameras that see it (no races: one
// item owns one Gaussian's outputs).
SF_HD void project_backward_item(const ProjectArgs& a, int64_t n) {
  const GaussianParams g = load_gaussian(a, n);
  Vec3 v_mean = {0.f, 0.f, 0.f}, v_ls = {0.f, 0.f, 0.f};
  float v_q[4] = {0.f, 0.f, 0.f, 0.f};
  float v_logit = 0.f;
  const int nb = sh_num_bases(a.sh_degree);
  float* v_sh = a.v_sh + 3 * a.K * n;
  for (int64_t k = 0; k < 3 * a.K; ++k) v_sh[k] = 0.f;
  for (int64_t b = 0; b < a.B; ++b) {
    const int64_t i = b * a.N + n;
    if (a.radii[2 * i] <= 0) continue;
    const CameraParams cam = load_camera(a, b);
    Projected p;
    ProjectCache cache;
    if (!project_gaussian(g, cam, p, cache)) continue;
    ProjectedGrad v;
    v.mean2d = {a.v_means2d[2 * i], a.v_means2d[2 * i + 1]};
    v.conic = {a.v_conics[3 * i], a.v_conics[3 * i + 1], a.v_conics[3 * i + 2]};
    v.opacity = a.v_opacities[i];
    v.depth = a.v_depths[i];
    CameraGrad v_cam;
    camera_grad_zero(v_cam);
    project_gaussian_vjp(g, cam, cache, v, v_mean, v_q, v_ls, v_logit,
                         a.v_cameras ? &v_cam : nullptr);
    float v_sh_b[48];
    const Vec3 v_rgb = {a.v_colors[3 * i], a.v_colors[3 * i + 1], a.v_colors[3 * i + 2]};
    const Vec3 v_view =
        sh_color_vjp(a.sh_degree, g.mean - camera_center(cam), a.sh + 3 * a.K * n, v_rgb, v_sh_b);
    for (int k = 0; k < 3 * nb; ++k) v_sh[k] += v_sh_b[k];
    v_mean = v_mean + v_view;
    if (a.v_cameras) {
      camera_center_vjp(cam, v_view, v_cam);
      store_camera_grad(v_cam, a.v_cameras + kCameraGradSize * i);
    }
  }
  a.v_means[3 * n] = v_mean.x;
  a.v_means[3 * n + 1] = v_mean.y;
  a.v_means[3 * n + 2] = v_mean.z;
  for (int k = 0; k < 4; ++k) a.v_quats[4 * n + k] = v_q[k];
  a.v_log_scales[3 * n] = v_ls.x;
  a.v_log_scales[3 * n + 1] = v_ls.y;
  a.v_log_scales[3 * n + 2] = v_ls.z;
  a.v_opacity_logits[n] = v_logit;
}

// Packed ray samples: samples of ray r are [offsets[r], offsets[r+1]), sorted
// front to back. Channels composited: rgb, t (depth) and 1 (alpha).
struct CompositeArgs {
  const int64_t* offsets;    // [R + 1]
  const float* alphas;       // [M]
  const float* colors;       // [M, 3]
  const float* ts;           // [M]
  const float* background;   // [R, 3]
  int64_t R;
  float* out_rgb;            // [R, 3]
  float* out_depth;          // [R]
  float* out_alpha;          // [R]
  float* final_T;            // [R]
  int64_t* last;             // [R] one past the last sample composited
  const float *v_rgb, *v_depth, *v_alpha;  // [R, 3], [R], [R]
  float *v_alphas, *v_colors, *v_ts;       // [M], [M, 3], [M]
};

SF_HD void composite_forward_item(const CompositeArgs& a, int64_t r) {
  float T = 1.f, acc[5] = {0.f, 0.f, 0.f, 0.f, 0.f};
  int64_t last = a.offsets[r];
  for (int64_t s = a.offsets[r]; s < a.offsets[r + 1]; ++s) {
    const float alpha = fminf(kAlphaMax, a.alphas[s]);
    if (!(alpha >= kAlphaMin)) continue;  // also skips NaN
    const float v[5] = {a.colors[3 * s], a.colors[3 * s + 1], a.colors[3 * s + 2], a.ts[s], 1.f};
    if (!composite_step<5>(alpha, v, T, acc)) break;
    last = s + 1;
  }
  for (int ch = 0; ch < 3; ++ch) a.out_rgb[3 * r + ch] = acc[ch] + T * a.background[3 * r + ch];
  a.out_depth[r] = acc[3];
  a.out_alpha[r] = acc[4];
  a.final_T[r] = T;
  a.last[r] = last;
}

SF_HD void composite_backward_item(const CompositeArgs& a, int64_t r) {
  float T = a.final_T[r];
  float behind[5] = {a.background[3 * r], a.background[3 * r + 1], a.background[3 * r + 2], 0.f,
                     0.f};
  const float v_out[5] = {a.v_rgb[3 * r], a.v_rgb[3 * r + 1], a.v_rgb[3 * r + 2], a.v_depth[r],
                          a.v_alpha[r]};
  for (int64_t s = a.offsets[r + 1] - 1; s >= a.offsets[r]; --s) {
    a.v_alphas[s] = 0.f;
    a.v_colors[3 * s] = a.v_colors[3 * s + 1] = a.v_colors[3 * s + 2] = 0.f;
    a.v_ts[s] = 0.f;
    if (s >= a.last[r]) continue;
    const float raw = a.alphas[s];
    const float alpha = fminf(kAlphaMax, raw);
    if (!(alpha >= kAlphaMin)) continue;
    const float v[5] = {a.colors[3 * s], a.colors[3 * s + 1], a.colors[3 * s + 2], a.ts[s], 1.f};
    float v_val[5] = {0.f, 0.f, 0.f, 0.f, 0.f};
    const float v_alpha = composite_step_vjp<5>(alpha, v, v_out, T, behind, v_val);
    a.v_alphas[s] = raw < kAlphaMax ? v_alpha : 0.f;
    for (int ch = 0; ch < 3; ++ch) a.v_colors[3 * s + ch] = v_val[ch];
    a.v_ts[s] = v_val[3];
  }
}

}  // namespace splatfield
