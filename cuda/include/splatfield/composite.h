// Per-pair math of the rasterizer: a Gaussian's alpha at a pixel (+ VJP and
// the splitting-matrix term), and the front-to-back compositing step shared
// with ray samples of a radiance field (+ its back-to-front VJP).
#pragma once
#include "common.h"

namespace splatfield {

// alpha = min(kAlphaMax, opacity * exp(-0.5 d^T conic d)), d = pixel - mean.
// `G` receives exp(...) for the VJP. The caller skips alpha < kAlphaMin.
// F is float or a CPU lane vector (common.h).
template <typename F>
SF_HD F gaussian_alpha(Sym2 conic, float opacity, F dx, F dy, F& G) {
  const F power = -0.5f * (conic.a * dx * dx + conic.c * dy * dy) - conic.b * dx * dy;
  // Below -40 alpha is far under kAlphaMin anyway; the floor keeps G and every
  // product with it out of the (very slow on CPUs) denormal range.
  G = sf_exp(sf_max(power, F{} - 40.f));
  return sf_min(F{} + kAlphaMax, opacity * G);
}

template <typename F>
struct AlphaGradT {
  F mx, my;   // d/d mean2d
  F a, b, c;  // d/d conic scalars
  F opacity;
};
using AlphaGrad = AlphaGradT<float>;

// Adds v_alpha * d alpha / d(mean2d, conic, opacity) to `acc`. A clamped
// alpha passes no gradient.
template <typename F>
SF_HD void gaussian_alpha_vjp(Sym2 conic, float opacity, F dx, F dy, F G, F v_alpha,
                              AlphaGradT<F>& acc) {
  const F g = opacity * G < kAlphaMax ? v_alpha : F{};
  acc.opacity += g * G;
  const F vp = g * opacity * G;  // d/d power
  // power = -0.5 (a dx^2 + c dy^2) - b dx dy, dx = px - mx
  acc.a += -0.5f * vp * dx * dx;
  acc.c += -0.5f * vp * dy * dy;
  acc.b += -vp * dx * dy;
  acc.mx += vp * (conic.a * dx + conic.b * dy);
  acc.my += vp * (conic.b * dx + conic.c * dy);
}

// Splitting-matrix term (METHODS.md section 2) of one pixel:
// v_alpha * alpha * (C d d^T C - C), as (xx, xy, yy). Zero where alpha is clamped.
template <typename F>
SF_HD void split2d_term(Sym2 conic, float opacity, F dx, F dy, F G, F v_alpha, F* out) {
  const F w = opacity * G < kAlphaMax ? v_alpha * opacity * G : F{};
  const F ux = conic.a * dx + conic.b * dy, uy = conic.b * dx + conic.c * dy;
  out[0] += w * (ux * ux - conic.a);
  out[1] += w * (ux * uy - conic.b);
  out[2] += w * (uy * uy - conic.c);
}

// Front-to-back compositing of C channels. `T` is the transmittance before
// this contribution. Returns false (and changes nothing) when the pixel must
// stop instead: its transmittance would drop to kTransmittanceMin or below.
template <int C>
SF_HD bool composite_step(float alpha, const float* value, float& T, float* accum) {
  const float next_T = T * (1.f - alpha);
  if (next_T <= kTransmittanceMin) return false;
  const float w = alpha * T;
  for (int ch = 0; ch < C; ++ch) accum[ch] += w * value[ch];
  T = next_T;
  return true;
}

// Back-to-front VJP of composite_step for an output
//   out = sum_i value_i alpha_i T_i + T_final * background.
// On entry `T` is the transmittance after this contribution and `behind`
// holds S_i = (sum_{j>i} value_j w_j + T_final bg) / T_{i+1}; on exit both
// describe the state before it. v_out is dL/dout. Returns dL/dalpha and adds
// dL/dvalue into v_value.
template <int C>
SF_HD float composite_step_vjp(float alpha, const float* value, const float* v_out, float& T,
                               float* behind, float* v_value) {
  T = T / (1.f - alpha);
  const float w = alpha * T;
  float v_alpha = 0.f;
  for (int ch = 0; ch < C; ++ch) {
    v_alpha += (value[ch] - behind[ch]) * v_out[ch];
    v_value[ch] += w * v_out[ch];
    behind[ch] = alpha * value[ch] + (1.f - alpha) * behind[ch];
  }
  return v_alpha * T;
}

// The two steps above in branch-free form, for lanes of pixels (F = float or
// a CPU lane vector), with identical arithmetic. A finished lane stores -T
// (T > 0 means still compositing). composite_step_masked returns the weight
// alpha * T of lanes that composited and 0 elsewhere.
template <int C, typename F>
SF_HD F composite_step_masked(F alpha, const float* value, F& T, F* accum) {
  const F next_T = T * (1.f - alpha);
  const auto use = (alpha >= kAlphaMin) & (T > 0.f);
  const auto go = use & (next_T > kTransmittanceMin);
  const auto stop = use & (next_T <= kTransmittanceMin);
  const F w = go ? alpha * T : F{};
  for (int ch = 0; ch < C; ++ch) accum[ch] += w * value[ch];
  T = go ? next_T : (stop ? -T : T);
  return w;
}

// `valid`: lanes where this contribution was composited in the forward pass.
template <int C, typename F, typename Mask>
SF_HD F composite_step_vjp_masked(Mask valid, F alpha, const float* value, const F* v_out, F& T,
                                  F* behind, F* v_value) {
  T = valid ? T / (1.f - alpha) : T;
  const F w = valid ? alpha * T : F{};
  F v_alpha = F{};
  for (int ch = 0; ch < C; ++ch) {
    v_alpha += (value[ch] - behind[ch]) * v_out[ch];
    v_value[ch] += w * v_out[ch];
    behind[ch] = valid ? alpha * value[ch] + (1.f - alpha) * behind[ch] : behind[ch];
  }
  return valid ? v_alpha * T : F{};
}

}  // namespace splatfield
