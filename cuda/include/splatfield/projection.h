// EWA projection of one 3D Gaussian into one pinhole camera, and its VJP.
//
// Forward: q -> R, s = exp(log_scale), Sigma = R S S R^T, t = W mu + tw,
// Sigma_c = W Sigma W^T, J = d(pixel)/d(t) (x/z, y/z clamped to 1.3x the
// frustum), cov2d = J Sigma_c J^T + eps2d I, conic = cov2d^-1, opacity =
// sigmoid(logit) (times sqrt(det(cov)/det(cov + eps I)) when antialiased).
#pragma once
#include "common.h"

namespace splatfield {

struct CameraParams {
  Mat3 R;      // world-to-camera rotation
  Vec3 t;      // world-to-camera translation
  float fx, fy, cx, cy;
  int width, height;
  float near_plane, far_plane;
  float eps2d;
  bool antialiased;
};

struct GaussianParams {
  Vec3 mean;
  float q[4];  // w, x, y, z (unnormalised)
  Vec3 log_scale;
  float opacity_logit;
};

// Everything the VJP needs, recomputed from the inputs (cheap, so never stored).
struct ProjectCache {
  float qn[4];
  float qnorm;
  Mat3 R;        // Gaussian rotation
  Vec3 s;        // scales
  Mat3 M;        // R diag(s)
  Mat3 Sigma_c;  // camera-space covariance
  Vec3 tc;       // camera-space mean
  float rx, ry;  // clamped x/z, y/z
  bool clamp_x, clamp_y;
  float J[2][3];
  Sym2 cov0;     // J Sigma_c J^T, before dilation
  Sym2 cov;      // after dilation
  float det0, det;
  float sig;     // sigmoid(logit)
  float comp;    // antialiasing compensation (1 when off)
};

struct Projected {
  Vec2 mean2d;
  Sym2 conic;
  float opacity;
  float depth;
  int radius_x, radius_y;  // conservative pixel half-extent of alpha >= kAlphaMin; 0 = culled
};

SF_HD void quat_to_rotmat(const float* q, Mat3& R) {
  const float w = q[0], x = q[1], y = q[2], z = q[3];
  R.m[0][0] = 1.f - 2.f * (y * y + z * z);
  R.m[0][1] = 2.f * (x * y - w * z);
  R.m[0][2] = 2.f * (x * z + w * y);
  R.m[1][0] = 2.f * (x * y + w * z);
  R.m[1][1] = 1.f - 2.f * (x * x + z * z);
  R.m[1][2] = 2.f * (y * z - w * x);
  R.m[2][0] = 2.f * (x * z - w * y);
  R.m[2][1] = 2.f * (y * z + w * x);
  R.m[2][2] = 1.f - 2.f * (x * x + y * y);
}

// VJP of quat_to_rotmat at the unit quaternion q.
SF_HD void quat_to_rotmat_vjp(const float* q, const Mat3& vR, float* vq) {
  const float w = q[0], x = q[1], y = q[2], z = q[3];
  const float(*g)[3] = vR.m;
  vq[0] = 2.f * (z * (g[1][0] - g[0][1]) + y * (g[0][2] - g[2][0]) + x * (g[2][1] - g[1][2]));
  vq[1] = 2.f * (y * (g[0][1] + g[1][0]) + z * (g[0][2] + g[2][0]) + w * (g[2][1] - g[1][2])) -
          4.f * x * (g[1][1] + g[2][2]);
  vq[2] = 2.f * (x * (g[0][1] + g[1][0]) + w * (g[0][2] - g[2][0]) + z * (g[1][2] + g[2][1])) -
          4.f * y * (g[0][0] + g[2][2]);
  vq[3] = 2.f * (w * (g[1][0] - g[0][1]) + x * (g[0][2] + g[2][0]) + y * (g[1][2] + g[2][1])) -
          4.f * z * (g[0][0] + g[1][1]);
}

// Projects one Gaussian. Returns false (and radius 0) when it is culled:
// non-finite inputs, outside [near, far], degenerate covariance, an opacity
// that can never reach kAlphaMin, or a footprint entirely off the image.
SF_HD bool project_gaussian(const GaussianParams& g, const CameraParams& cam, Projected& out,
                            ProjectCache& c) {
  out.radius_x = out.radius_y = 0;
  const float qn2 = g.q[0] * g.q[0] + g.q[1] * g.q[1] + g.q[2] * g.q[2] + g.q[3] * g.q[3];
  if (!finite3(g.mean) || !finite3(g.log_scale) || !isfinite(qn2) || !(qn2 > 1e-24f) ||
      isnan(g.opacity_logit))
    return false;
  c.tc = matvec(cam.R, g.mean) + cam.t;
  const float z = c.tc.z;
  if (!(z >= cam.near_plane && z <= cam.far_plane)) return false;

  c.qnorm = sqrtf(qn2);
  for (int i = 0; i < 4; ++i) c.qn[i] = g.q[i] / c.qnorm;
  quat_to_rotmat(c.qn, c.R);
  c.s = {expf(g.log_scale.x), expf(g.log_scale.y), expf(g.log_scale.z)};
  const float sv[3] = {c.s.x, c.s.y, c.s.z};
  for (int i = 0; i < 3; ++i)
    for (int j = 0; j < 3; ++j) c.M.m[i][j] = c.R.m[i][j] * sv[j];
  // Sigma_c = (W M)(W M)^T
  const Mat3 WM = matmul(cam.R, c.M);
  for (int i = 0; i < 3; ++i)
    for (int j = 0; j < 3; ++j)
      c.Sigma_c.m[i][j] =
          WM.m[i][0] * WM.m[j][0] + WM.m[i][1] * WM.m[j][1] + WM.m[i][2] * WM.m[j][2];

  const float lim_xp = 1.3f * (cam.width - cam.cx) / cam.fx, lim_xn = 1.3f * cam.cx / cam.fx;
  const float lim_yp = 1.3f * (cam.height - cam.cy) / cam.fy, lim_yn = 1.3f * cam.cy / cam.fy;
  const float ux = c.tc.x / z, uy = c.tc.y / z;
  c.clamp_x = ux > lim_xp || ux < -lim_xn;
  c.clamp_y = uy > lim_yp || uy < -lim_yn;
  c.rx = fminf(lim_xp, fmaxf(-lim_xn, ux));
  c.ry = fminf(lim_yp, fmaxf(-lim_yn, uy));
  c.J[0][0] = cam.fx / z; c.J[0][1] = 0.f; c.J[0][2] = -cam.fx * c.rx / z;
  c.J[1][0] = 0.f; c.J[1][1] = cam.fy / z; c.J[1][2] = -cam.fy * c.ry / z;

  // cov0 = J Sigma_c J^T
  float JS[2][3];
  for (int i = 0; i < 2; ++i)
    for (int j = 0; j < 3; ++j)
      JS[i][j] = c.J[i][0] * c.Sigma_c.m[0][j] + c.J[i][1] * c.Sigma_c.m[1][j] +
                 c.J[i][2] * c.Sigma_c.m[2][j];
  c.cov0.a = JS[0][0] * c.J[0][0] + JS[0][1] * c.J[0][1] + JS[0][2] * c.J[0][2];
  c.cov0.b = JS[0][0] * c.J[1][0] + JS[0][1] * c.J[1][1] + JS[0][2] * c.J[1][2];
  c.cov0.c = JS[1][0] * c.J[1][0] + JS[1][1] * c.J[1][1] + JS[1][2] * c.J[1][2];
  c.cov = {c.cov0.a + cam.eps2d, c.cov0.b, c.cov0.c + cam.eps2d};
  c.det0 = c.cov0.a * c.cov0.c - c.cov0.b * c.cov0.b;
  c.det = c.cov.a * c.cov.c - c.cov.b * c.cov.b;
  if (!(c.det > 0.f) || !isfinite(c.det)) return false;

  c.sig = 1.f / (1.f + expf(-g.opacity_logit));
  c.comp = cam.antialiased ? sqrtf(fmaxf(c.det0, 0.f) / c.det) : 1.f;
  const float opacity = c.sig * c.comp;
  if (!(opacity >= kAlphaMin)) return false;

  out.mean2d = {cam.fx * ux + cam.cx, cam.fy * uy + cam.cy};
  out.conic = {c.cov.c / c.det, -c.cov.b / c.det, c.cov.a / c.det};
  out.opacity = opacity;
  out.depth = z;

  // alpha >= kAlphaMin  <=>  d^T conic d <= K; the ellipse's bounding box has
  // half-widths sqrt(K cov_xx), sqrt(K cov_yy). Padded so rounding never cuts it.
  const float K = 2.f * logf(opacity / kAlphaMin);
  const float ex = sqrtf(K * c.cov.a) * 1.0001f + 1e-3f;
  const float ey = sqrtf(K * c.cov.c) * 1.0001f + 1e-3f;
  if (!isfinite(ex) || !isfinite(ey) || !isfinite(out.mean2d.x) || !isfinite(out.mean2d.y))
    return false;
  // Pixel centres sit at integer + 0.5; cull footprints that miss all of them.
  if (out.mean2d.x + ex < 0.5f || out.mean2d.x - ex > cam.width - 0.5f ||
      out.mean2d.y + ey < 0.5f || out.mean2d.y - ey > cam.height - 0.5f)
    return false;
  const float cap = 1 << 24;
  out.radius_x = (int)ceilf(fminf(ex, cap));
  out.radius_y = (int)ceilf(fminf(ey, cap));
  return true;
}

// Gradient of the loss w.r.t. one camera (the world-to-camera rotation and
// translation as matrix entries, and the pinhole intrinsics), from one Gaussian.
struct CameraGrad {
  Mat3 R;
  Vec3 t;
  float fx, fy, cx, cy;
};

SF_HD void camera_grad_zero(CameraGrad& g) {
  for (int i = 0; i < 3; ++i)
    for (int j = 0; j < 3; ++j) g.R.m[i][j] = 0.f;
  g.t = {0.f, 0.f, 0.f};
  g.fx = g.fy = g.cx = g.cy = 0.f;
}

struct ProjectedGrad {
  Vec2 mean2d;
  Sym2 conic;  // gradient w.r.t. the scalars a, b, c as used in a dx^2 + 2 b dx dy + c dy^2
  float opacity;
  float depth;
};

// The camera's share of project_gaussian's VJP, from the gradients the
// Gaussian's VJP has already formed: v_t (camera-space mean), vSc (camera-space
// covariance, symmetric), vJ (the projection Jacobian) and v_rx, v_ry (the
// clamped x/z, y/z). A clamped x/z sits at the frustum limit 1.3 (W - cx) / fx
// or -1.3 cx / fx, which moves with the intrinsics: d/dcx = -1.3 / fx and
// d/dfx = -rx / fx on either side.
SF_HD void camera_vjp(const GaussianParams& g, const CameraParams& cam, const ProjectCache& c,
                      const ProjectedGrad& v, const float (*vJ)[3], const Mat3& vSc, Vec3 v_t,
                      float v_rx, float v_ry, CameraGrad& out) {
  const float z = c.tc.z;
  const float ux = c.tc.x / z, uy = c.tc.y / z;
  // mean2d = (fx ux + cx, fy uy + cy); J = [[fx/z, 0, -fx rx/z], [0, fy/z, -fy ry/z]]
  out.fx += v.mean2d.x * ux + vJ[0][0] / z - vJ[0][2] * c.rx / z;
  out.fy += v.mean2d.y * uy + vJ[1][1] / z - vJ[1][2] * c.ry / z;
  out.cx += v.mean2d.x;
  out.cy += v.mean2d.y;
  if (c.clamp_x) {
    out.fx -= v_rx * c.rx / cam.fx;
    out.cx -= v_rx * 1.3f / cam.fx;
  }
  if (c.clamp_y) {
    out.fy -= v_ry * c.ry / cam.fy;
    out.cy -= v_ry * 1.3f / cam.fy;
  }
  // t_c = R mu + t; Sigma_c = R Sigma R^T -> vR += 2 vSc (R M) M^T
  const Mat3 WM = matmul(cam.R, c.M);
  Mat3 vScWM;
  for (int i = 0; i < 3; ++i)
    for (int j = 0; j < 3; ++j)
      vScWM.m[i][j] =
          vSc.m[i][0] * WM.m[0][j] + vSc.m[i][1] * WM.m[1][j] + vSc.m[i][2] * WM.m[2][j];
  const float mu[3] = {g.mean.x, g.mean.y, g.mean.z};
  const float vt[3] = {v_t.x, v_t.y, v_t.z};
  for (int i = 0; i < 3; ++i)
    for (int j = 0; j < 3; ++j)
      out.R.m[i][j] += vt[i] * mu[j] + 2.f * (vScWM.m[i][0] * c.M.m[j][0] +
                                              vScWM.m[i][1] * c.M.m[j][1] +
                                              vScWM.m[i][2] * c.M.m[j][2]);
  out.t = out.t + v_t;
}

// The camera's share of the colour's VJP: the SH direction is mu - C with the
// camera centre C = -R^T t, so v_C = -v_dir.
SF_HD void camera_center_vjp(const CameraParams& cam, Vec3 v_dir, CameraGrad& out) {
  // C_j = -sum_i R_ij t_i: dC_j/dR_ij = -t_i, dC/dt = -R^T
  const float t[3] = {cam.t.x, cam.t.y, cam.t.z};
  const float vd[3] = {v_dir.x, v_dir.y, v_dir.z};
  for (int i = 0; i < 3; ++i)
    for (int j = 0; j < 3; ++j) out.R.m[i][j] += vd[j] * t[i];
  out.t = out.t + matvec(cam.R, v_dir);
}

// VJP of project_gaussian for a visible Gaussian (the cache comes from the
// forward call). Accumulates into v_mean/v_q/v_log_scale/v_logit, and into
// v_cam (the camera's gradient) unless it is null.
SF_HD void project_gaussian_vjp(const GaussianParams& g, const CameraParams& cam,
                                const ProjectCache& c, const ProjectedGrad& v, Vec3& v_mean,
                                float* v_q, Vec3& v_log_scale, float& v_logit,
                                CameraGrad* v_cam = nullptr) {
  const float z = c.tc.z;
  // conic = cov^-1 with conic gradient G (full-matrix convention, symmetric):
  // dcov = -conic G conic.
  const float ia = c.cov.c / c.det, ib = -c.cov.b / c.det, ic = c.cov.a / c.det;
  const float Ga = v.conic.a, Gb = 0.5f * v.conic.b, Gc = v.conic.c;
  // Q G
  const float QG00 = ia * Ga + ib * Gb, QG01 = ia * Gb + ib * Gc;
  const float QG10 = ib * Ga + ic * Gb, QG11 = ib * Gb + ic * Gc;
  float dP00 = -(QG00 * ia + QG01 * ib);
  float dP01 = -(QG00 * ib + QG01 * ic);
  float dP11 = -(QG10 * ib + QG11 * ic);

  // opacity = sigmoid(logit) * comp
  v_logit += v.opacity * c.comp * c.sig * (1.f - c.sig);
  if (cam.antialiased && c.comp > 0.f && c.det0 > 0.f) {
    const float v_comp = v.opacity * c.sig;
    // comp = sqrt(det0/det); d comp = comp/2 (d det0/det0 - d det/det)
    const float k0 = 0.5f * c.comp / c.det0 * v_comp, k1 = 0.5f * c.comp / c.det * v_comp;
    dP00 += k0 * c.cov0.c - k1 * c.cov.c;
    dP11 += k0 * c.cov0.a - k1 * c.cov.a;
    dP01 += -k0 * c.cov0.b + k1 * c.cov.b;
  }

  Vec3 v_t = {0.f, 0.f, 0.f};
  // mean2d = (fx x/z + cx, fy y/z + cy)
  v_t.x += v.mean2d.x * cam.fx / z;
  v_t.y += v.mean2d.y * cam.fy / z;
  v_t.z -= (v.mean2d.x * cam.fx * c.tc.x + v.mean2d.y * cam.fy * c.tc.y) / (z * z);
  v_t.z += v.depth;

  // cov0 = J Sigma_c J^T: vJ = 2 dP J Sigma_c, vSigma_c = J^T dP J
  const float dP[2][2] = {{dP00, dP01}, {dP01, dP11}};
  float JS[2][3];
  for (int i = 0; i < 2; ++i)
    for (int j = 0; j < 3; ++j)
      JS[i][j] = c.J[i][0] * c.Sigma_c.m[0][j] + c.J[i][1] * c.Sigma_c.m[1][j] +
                 c.J[i][2] * c.Sigma_c.m[2][j];
  float vJ[2][3];
  for (int i = 0; i < 2; ++i)
    for (int j = 0; j < 3; ++j) vJ[i][j] = 2.f * (dP[i][0] * JS[0][j] + dP[i][1] * JS[1][j]);
  Mat3 vSc;
  for (int i = 0; i < 3; ++i)
    for (int j = 0; j < 3; ++j)
      vSc.m[i][j] = c.J[0][i] * (dP00 * c.J[0][j] + dP01 * c.J[1][j]) +
                    c.J[1][i] * (dP01 * c.J[0][j] + dP11 * c.J[1][j]);

  // J entries -> camera-space mean (x/z, y/z clamped: no gradient through a clamp)
  v_t.z += -cam.fx / (z * z) * vJ[0][0] - cam.fy / (z * z) * vJ[1][1];
  v_t.z += cam.fx * c.rx / (z * z) * vJ[0][2] + cam.fy * c.ry / (z * z) * vJ[1][2];
  const float v_rx = -cam.fx / z * vJ[0][2], v_ry = -cam.fy / z * vJ[1][2];
  if (!c.clamp_x) {
    v_t.x += v_rx / z;
    v_t.z -= v_rx * c.tc.x / (z * z);
  }
  if (!c.clamp_y) {
    v_t.y += v_ry / z;
    v_t.z -= v_ry * c.tc.y / (z * z);
  }
  v_mean = v_mean + matTvec(cam.R, v_t);
  if (v_cam) camera_vjp(g, cam, c, v, vJ, vSc, v_t, v_rx, v_ry, *v_cam);

  // Sigma_c = W Sigma W^T -> vSigma = W^T vSc W; Sigma = M M^T -> vM = 2 vSigma M
  const Mat3 vSigma = matmul(transpose(cam.R), matmul(vSc, cam.R));
  const Mat3 vM0 = matmul(vSigma, c.M);
  const float sv[3] = {c.s.x, c.s.y, c.s.z};
  Mat3 vR;
  float vs[3] = {0.f, 0.f, 0.f};
  for (int i = 0; i < 3; ++i)
    for (int j = 0; j < 3; ++j) {
      const float vm = 2.f * vM0.m[i][j];
      vR.m[i][j] = vm * sv[j];
      vs[j] += vm * c.R.m[i][j];
    }
  v_log_scale.x += vs[0] * sv[0];
  v_log_scale.y += vs[1] * sv[1];
  v_log_scale.z += vs[2] * sv[2];
  float vqn[4];
  quat_to_rotmat_vjp(c.qn, vR, vqn);
  // q_n = q/|q|: v_q = (v_qn - q_n (q_n . v_qn)) / |q|
  const float d = c.qn[0] * vqn[0] + c.qn[1] * vqn[1] + c.qn[2] * vqn[2] + c.qn[3] * vqn[3];
  for (int i = 0; i < 4; ++i) v_q[i] += (vqn[i] - c.qn[i] * d) / c.qnorm;
}

}  // namespace splatfield
