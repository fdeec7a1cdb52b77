// Real spherical harmonics up to degree 3 (the 3DGS basis and sign convention)
// evaluated on a view direction, with the VJP w.r.t. coefficients and direction.
#pragma once
#include "common.h"

namespace splatfield {

constexpr float kSH_C0 = 0.28209479177387814f;
constexpr float kSH_C1 = 0.4886025119029199f;
// Scalars rather than arrays: namespace-scope constexpr arrays are not
// readable from CUDA device code.
constexpr float kSH_C2_0 = 1.0925484305920792f, kSH_C2_1 = -1.0925484305920792f,
                kSH_C2_2 = 0.31539156525252005f, kSH_C2_3 = -1.0925484305920792f,
                kSH_C2_4 = 0.5462742152960396f;
constexpr float kSH_C3_0 = -0.5900435899266435f, kSH_C3_1 = 2.890611442640554f,
                kSH_C3_2 = -0.4570457994644658f, kSH_C3_3 = 0.3731763325901154f,
                kSH_C3_4 = -0.4570457994644658f, kSH_C3_5 = 1.445305721320277f,
                kSH_C3_6 = -0.5900435899266435f;

SF_HD int sh_num_bases(int degree) { return (degree + 1) * (degree + 1); }

// Basis values Y[k] at the unit direction (x, y, z); k < (degree+1)^2.
SF_HD void sh_basis(int degree, float x, float y, float z, float* Y) {
  Y[0] = kSH_C0;
  if (degree < 1) return;
  Y[1] = -kSH_C1 * y;
  Y[2] = kSH_C1 * z;
  Y[3] = -kSH_C1 * x;
  if (degree < 2) return;
  const float xx = x * x, yy = y * y, zz = z * z;
  Y[4] = kSH_C2_0 * x * y;
  Y[5] = kSH_C2_1 * y * z;
  Y[6] = kSH_C2_2 * (2.f * zz - xx - yy);
  Y[7] = kSH_C2_3 * x * z;
  Y[8] = kSH_C2_4 * (xx - yy);
  if (degree < 3) return;
  Y[9] = kSH_C3_0 * y * (3.f * xx - yy);
  Y[10] = kSH_C3_1 * x * y * z;
  Y[11] = kSH_C3_2 * y * (4.f * zz - xx - yy);
  Y[12] = kSH_C3_3 * z * (2.f * zz - 3.f * xx - 3.f * yy);
  Y[13] = kSH_C3_4 * x * (4.f * zz - xx - yy);
  Y[14] = kSH_C3_5 * z * (xx - yy);
  Y[15] = kSH_C3_6 * x * (xx - 3.f * yy);
}

// Gradient of sum_k w[k] * Y_k(x, y, z) w.r.t. (x, y, z), treating the
// polynomial's arguments as free (the caller chains through normalisation).
SF_HD Vec3 sh_basis_grad(int degree, float x, float y, float z, const float* w) {
  Vec3 g = {0.f, 0.f, 0.f};
  if (degree < 1) return g;
  g.y += -kSH_C1 * w[1];
  g.z += kSH_C1 * w[2];
  g.x += -kSH_C1 * w[3];
  if (degree < 2) return g;
  const float xx = x * x, yy = y * y, zz = z * z;
  g.x += kSH_C2_0 * y * w[4];
  g.y += kSH_C2_0 * x * w[4];
  g.y += kSH_C2_1 * z * w[5];
  g.z += kSH_C2_1 * y * w[5];
  g.x += kSH_C2_2 * (-2.f * x) * w[6];
  g.y += kSH_C2_2 * (-2.f * y) * w[6];
  g.z += kSH_C2_2 * (4.f * z) * w[6];
  g.x += kSH_C2_3 * z * w[7];
  g.z += kSH_C2_3 * x * w[7];
  g.x += kSH_C2_4 * (2.f * x) * w[8];
  g.y += kSH_C2_4 * (-2.f * y) * w[8];
  if (degree < 3) return g;
  g.x += kSH_C3_0 * 6.f * x * y * w[9];
  g.y += kSH_C3_0 * (3.f * xx - 3.f * yy) * w[9];
  g.x += kSH_C3_1 * y * z * w[10];
  g.y += kSH_C3_1 * x * z * w[10];
  g.z += kSH_C3_1 * x * y * w[10];
  g.x += kSH_C3_2 * (-2.f * x * y) * w[11];
  g.y += kSH_C3_2 * (4.f * zz - xx - 3.f * yy) * w[11];
  g.z += kSH_C3_2 * (8.f * y * z) * w[11];
  g.x += kSH_C3_3 * (-6.f * x * z) * w[12];
  g.y += kSH_C3_3 * (-6.f * y * z) * w[12];
  g.z += kSH_C3_3 * (6.f * zz - 3.f * xx - 3.f * yy) * w[12];
  g.x += kSH_C3_4 * (4.f * zz - 3.f * xx - yy) * w[13];
  g.y += kSH_C3_4 * (-2.f * x * y) * w[13];
  g.z += kSH_C3_4 * (8.f * x * z) * w[13];
  g.x += kSH_C3_5 * (2.f * x * z) * w[14];
  g.y += kSH_C3_5 * (-2.f * y * z) * w[14];
  g.z += kSH_C3_5 * (xx - yy) * w[14];
  g.x += kSH_C3_6 * (3.f * xx - 3.f * yy) * w[15];
  g.y += kSH_C3_6 * (-6.f * x * y) * w[15];
  return g;
}

// Colour of one Gaussian seen along `view` (mean - camera centre, not
// normalised): rgb = max(sum_k sh[k] * Y_k(view/|view|) + 0.5, 0).
// `sh` points at K x 3 coefficients (k-major, channel inner).
SF_HD Vec3 sh_color(int degree, Vec3 view, const float* sh) {
  float Y[16];
  const float inv = 1.f / sqrtf(fmaxf(dot(view, view), 1e-30f));
  sh_basis(degree, view.x * inv, view.y * inv, view.z * inv, Y);
  float c[3] = {0.5f, 0.5f, 0.5f};
  const int K = sh_num_bases(degree);
  for (int k = 0; k < K; ++k)
    for (int ch = 0; ch < 3; ++ch) c[ch] += Y[k] * sh[3 * k + ch];
  return {fmaxf(c[0], 0.f), fmaxf(c[1], 0.f), fmaxf(c[2], 0.f)};
}

// VJP of sh_color. Writes d/dsh into v_sh (K x 3, overwritten) and returns
// d/dview. Channels clamped at zero pass no gradient.
SF_HD Vec3 sh_color_vjp(int degree, Vec3 view, const float* sh, Vec3 v_rgb, float* v_sh) {
  float Y[16];
  const float n2 = fmaxf(dot(view, view), 1e-30f);
  const float inv = 1.f / sqrtf(n2);
  const Vec3 d = inv * view;
  sh_basis(degree, d.x, d.y, d.z, Y);
  const int K = sh_num_bases(degree);
  float raw[3] = {0.5f, 0.5f, 0.5f};
  for (int k = 0; k < K; ++k)
    for (int ch = 0; ch < 3; ++ch) raw[ch] += Y[k] * sh[3 * k + ch];
  const float v[3] = {raw[0] > 0.f ? v_rgb.x : 0.f, raw[1] > 0.f ? v_rgb.y : 0.f,
                      raw[2] > 0.f ? v_rgb.z : 0.f};
  float w[16];  // d loss / d Y_k
  for (int k = 0; k < K; ++k) {
    w[k] = 0.f;
    for (int ch = 0; ch < 3; ++ch) {
      v_sh[3 * k + ch] = Y[k] * v[ch];
      w[k] += sh[3 * k + ch] * v[ch];
    }
  }
  if (degree < 1) return {0.f, 0.f, 0.f};
  const Vec3 gd = sh_basis_grad(degree, d.x, d.y, d.z, w);
  // d/dview of view/|view| applied to gd: (gd - d (d.gd)) / |view|
  const float dg = dot(d, gd);
  return inv * (gd - dg * d);
}

}  // namespace splatfield
