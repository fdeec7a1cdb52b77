// Radiance-field math shared by the CPU and CUDA drivers: trilinear interpolation of a
// sparse vertex grid (forward and VJP), ray marching through the occupancy bitfield with
// the density evaluated on the way, and the lazy Adam update of the grid rows a step
// touched. The drivers only decide how items are scheduled.
//
// The grid: vertices (i, j, k), 0 <= i < res[0] ..., at lo + (i, j, k) / scale; `index`
// [res0, res1, res2] int32 maps a vertex to its row of a table [N, C], or -1 (no row: the
// vertex contributes nothing). Cells are the (res-1)^3 boxes between vertices; the
// occupancy bitfield has one bit per cell (bit c of byte c >> 3), set where a sample may
// reach alpha >= kAlphaMin.
#pragma once
#include <stdint.h>

#include "common.h"
#include "composite.h"
#include "sh.h"

namespace splatfield {

struct GridGeom {
  float lo[3];     // world position of vertex (0, 0, 0)
  float scale[3];  // vertices per world unit: (res - 1) / (hi - lo)
  int res[3];      // vertices per axis (>= 2)
};

SF_HD int64_t grid_vertex(const GridGeom& g, int i, int j, int k) {
  return ((int64_t)i * g.res[1] + j) * g.res[2] + k;
}

// The 8 corner rows and trilinear weights of position p (clamped into the grid).
// Corner c = (dx, dy, dz) bits (dx << 2 | dy << 1 | dz). Returns false for a
// non-finite position (no corners).
SF_HD bool grid_corners(const GridGeom& g, const int32_t* index, const float* p, int32_t rows[8],
                        float w[8]) {
  int i0[3];
  float f[3];
  for (int a = 0; a < 3; ++a) {
    if (!isfinite(p[a])) return false;
    float u = (p[a] - g.lo[a]) * g.scale[a];
    u = fminf(fmaxf(u, 0.f), (float)(g.res[a] - 1));
    int i = (int)floorf(u);
    if (i > g.res[a] - 2) i = g.res[a] - 2;
    i0[a] = i;
    f[a] = u - (float)i;
  }
  for (int c = 0; c < 8; ++c) {
    const int dx = (c >> 2) & 1, dy = (c >> 1) & 1, dz = c & 1;
    rows[c] = index[grid_vertex(g, i0[0] + dx, i0[1] + dy, i0[2] + dz)];
    w[c] = (dx ? f[0] : 1.f - f[0]) * (dy ? f[1] : 1.f - f[1]) * (dz ? f[2] : 1.f - f[2]);
  }
  return true;
}

// softplus(x) = log(1 + e^x), the density activation, stable for large |x|.
SF_HD float softplus(float x) { return x > 20.f ? x : log1pf(expf(x)); }

// alpha of a sample whose raw (interpolated) density is `raw`: 1 - exp(-softplus(raw +
// shift) * interval), `interval` the sample's length in the density's unit of length.
SF_HD float field_alpha(float raw, float shift, float interval) {
  return -expm1f(-softplus(raw + shift) * interval);
}

// ------------------------------------------------------------------ interpolation

struct GridSampleArgs {
  GridGeom g;
  const int32_t* index;  // [res0, res1, res2]
  const float* table;    // [N, C]
  const float* points;   // [M, 3]
  int64_t N, C, M;
  float* out;            // [M, C]
  const float* v_out;    // [M, C] (VJP)
};

SF_HD void grid_sample_forward_item(const GridSampleArgs& a, int64_t m) {
  float* o = a.out + m * a.C;
  for (int64_t ch = 0; ch < a.C; ++ch) o[ch] = 0.f;
  int32_t rows[8];
  float w[8];
  if (!grid_corners(a.g, a.index, a.points + 3 * m, rows, w)) return;
  for (int c = 0; c < 8; ++c) {
    if (rows[c] < 0) continue;
    const float* t = a.table + (int64_t)rows[c] * a.C;
    for (int64_t ch = 0; ch < a.C; ++ch) o[ch] += w[c] * t[ch];
  }
}

// ------------------------------------------------------------------ marching

struct MarchArgs {
  GridGeom g;
  const uint8_t* occupancy;  // bits over the (res-1)^3 cells
  const uint8_t* blocks;     // bits over blocks of 2^block_shift cells per axis: any cell occupied
  int block_shift;
  const int32_t* index;      // [res0, res1, res2]
  const float* density;      // [N] raw density per row
  const float* origins;      // [R, 3]
  const float* dirs;         // [R, 3] unit
  const float* jitter;       // [R] in [0, 1): offset of the first sample, in steps
  int64_t R;
  float near, far, step, interval, shift;  // step: world units; interval: density units
  float stop_T;  // a ray stops once its transmittance is at or below this
  // pass 1 writes counts [R]; pass 2 reads offsets [R + 1] and writes the samples
  int64_t* counts;
  const int64_t* offsets;
  float* ts;         // [M]
  float* positions;  // [M, 3]
};

// The ray's extent inside the grid's box and [near, far]; false when it misses.
SF_HD bool ray_box(const GridGeom& g, const float* o, const float* d, float near, float far,
                   float& t0, float& t1) {
  t0 = near;
  t1 = far;
  for (int a = 0; a < 3; ++a) {
    const float lo = g.lo[a], hi = g.lo[a] + (float)(g.res[a] - 1) / g.scale[a];
    if (fabsf(d[a]) < 1e-12f) {
      if (o[a] < lo || o[a] > hi) return false;
      continue;
    }
    const float inv = 1.f / d[a];
    float ta = (lo - o[a]) * inv, tb = (hi - o[a]) * inv;
    if (ta > tb) {
      const float s = ta;
      ta = tb;
      tb = s;
    }
    t0 = fmaxf(t0, ta);
    t1 = fminf(t1, tb);
  }
  return t0 < t1;
}

SF_HD void cell_of(const GridGeom& g, const float* p, int i[3]) {
  for (int a = 0; a < 3; ++a) {
    const float u = (p[a] - g.lo[a]) * g.scale[a];
    int c = (int)floorf(u);
    if (c < 0) c = 0;
    if (c > g.res[a] - 2) c = g.res[a] - 2;
    i[a] = c;
  }
}

SF_HD bool bit_set(const uint8_t* bits, int64_t i) { return (bits[i >> 3] >> (i & 7)) & 1; }

// Blocks per axis: ceil(cells / 2^shift).
SF_HD int blocks_along(const GridGeom& g, int a, int shift) {
  return ((g.res[a] - 1) + (1 << shift) - 1) >> shift;
}

// Where a ray (origin o, direction d) leaves the block holding cell i.
SF_HD float block_exit(const GridGeom& g, const int i[3], int shift, const float* o, const float* d) {
  float t = 3.0e38f;
  for (int a = 0; a < 3; ++a) {
    if (fabsf(d[a]) < 1e-12f) continue;
    const int b = i[a] >> shift;
    const float side = (float)((d[a] > 0 ? b + 1 : b) << shift);
    t = fminf(t, (g.lo[a] + side / g.scale[a] - o[a]) / d[a]);
  }
  return t;
}

// Marches ray r at fixed steps from its entry (plus jitter) and calls visit(t, p, alpha,
// corner rows, corner weights) for the samples in occupied cells whose alpha reaches kAlphaMin (the compositing skips
// the others), until visit returns false. Empty blocks of cells are crossed in one go.
template <class Visit>
SF_HD void march_ray(const MarchArgs& a, int64_t r, Visit& visit) {
  const float* o = a.origins + 3 * r;
  const float* d = a.dirs + 3 * r;
  float t0, t1;
  if (!finite3({o[0], o[1], o[2]}) || !finite3({d[0], d[1], d[2]}) ||
      !ray_box(a.g, o, d, a.near, a.far, t0, t1))
    return;
  for (int64_t k = 0;; ++k) {
    const float t = t0 + ((float)k + a.jitter[r]) * a.step;
    if (!(t < t1)) break;
    const float p[3] = {o[0] + t * d[0], o[1] + t * d[1], o[2] + t * d[2]};
    int c[3];
    cell_of(a.g, p, c);
    if (!bit_set(a.occupancy, ((int64_t)c[0] * (a.g.res[1] - 1) + c[1]) * (a.g.res[2] - 1) + c[2])) {
      const int s = a.block_shift;
      const int64_t block =
          ((int64_t)(c[0] >> s) * blocks_along(a.g, 1, s) + (c[1] >> s)) * blocks_along(a.g, 2, s) +
          (c[2] >> s);
      if (!bit_set(a.blocks, block)) {
        // an empty block: on to the first sample past its exit (a thousandth of a step early,
        // so rounding never skips a sample of the next block)
        const float k_exit = (block_exit(a.g, c, s, o, d) - t0) / a.step - a.jitter[r] - 1e-3f;
        const float k_next = ceilf(k_exit);
        if (k_next > (float)(k + 1)) {
          // jump only if the last skipped sample is still in this block by the loop's own
          // arithmetic (a ray grazing a block face gets its exit wrong by more than the
          // margin; positions are monotone in k, so the samples in between are inside too)
          const int64_t kn = (int64_t)k_next;
          const float tl = t0 + ((float)(kn - 1) + a.jitter[r]) * a.step;
          const float pl[3] = {o[0] + tl * d[0], o[1] + tl * d[1], o[2] + tl * d[2]};
          int cl[3];
          cell_of(a.g, pl, cl);
          if ((cl[0] >> s) == (c[0] >> s) && (cl[1] >> s) == (c[1] >> s) && (cl[2] >> s) == (c[2] >> s))
            k = kn - 1;
        }
      }
      continue;
    }
    int32_t rows[8];
    float w[8];
    grid_corners(a.g, a.index, p, rows, w);
    float raw = 0.f;
    for (int v = 0; v < 8; ++v)
      if (rows[v] >= 0) raw += w[v] * a.density[rows[v]];
    const float alpha = field_alpha(raw, a.shift, a.interval);
    if (!(alpha >= kAlphaMin)) continue;
    if (!visit(t, p, alpha, rows, w)) break;
  }
}

// Counts (pass 1) or stores at offsets[r] (pass 2) a ray's samples, until its
// transmittance falls to stop_T.
struct StoreSamples {
  const MarchArgs* a;
  int64_t base, n;
  bool write;
  float T;
  SF_HD bool operator()(float t, const float* p, float alpha, const int32_t*, const float*) {
    if (write) {
      a->ts[base + n] = t;
      for (int k = 0; k < 3; ++k) a->positions[3 * (base + n) + k] = p[k];
    }
    ++n;
    T *= 1.f - fminf(alpha, kAlphaMax);
    return T > a->stop_T;
  }
};

SF_HD int64_t march_ray_item(const MarchArgs& a, int64_t r, bool write) {
  StoreSamples store{&a, write ? a.offsets[r] : 0, 0, write, 1.f};
  march_ray(a, r, store);
  return store.n;
}

// ------------------------------------------------------------------ fused rendering

// Colour of a sample: sigmoid(sum_k Y_k c_k), Y the SH basis of the ray's direction and
// c the coefficients (channel c of coefficient k at 3 k + c of a row of C) trilinear from
// the sample's corner rows and weights.
SF_HD Vec3 field_color(const float* color, int64_t C, int nb, const float* Y, const int32_t* rows,
                       const float* w) {
  float sum[3] = {0.f, 0.f, 0.f};
  for (int c = 0; c < 8; ++c) {
    if (rows[c] < 0) continue;
    const float* row = color + (int64_t)rows[c] * C;
    for (int k = 0; k < nb; ++k) {
      const float wy = w[c] * Y[k];
      sum[0] += wy * row[3 * k];
      sum[1] += wy * row[3 * k + 1];
      sum[2] += wy * row[3 * k + 2];
    }
  }
  return {1.f / (1.f + expf(-sum[0])), 1.f / (1.f + expf(-sum[1])), 1.f / (1.f + expf(-sum[2]))};
}

// A whole ray at once, forward only (views, evaluation): march, shade and composite with
// the compositing step of composite.h, stopping where the compositing stops.
struct FieldRenderArgs {
  MarchArgs m;
  const float* color;       // [N, C]
  int64_t C;
  int sh_degree;
  const float* background;  // [R, 3]
  float *out_rgb, *out_depth, *out_alpha;  // [R, 3], [R], [R]
};

struct ShadeAndComposite {
  const FieldRenderArgs* a;
  float Y[16];  // the SH basis of the ray's direction (one per ray)
  float T;
  float acc[5];
  SF_HD bool operator()(float t, const float*, float alpha, const int32_t* rows, const float* w) {
    const Vec3 rgb = field_color(a->color, a->C, sh_num_bases(a->sh_degree), Y, rows, w);
    const float v[5] = {rgb.x, rgb.y, rgb.z, t, 1.f};
    return composite_step<5>(fminf(kAlphaMax, alpha), v, T, acc);
  }
};

SF_HD void field_render_item(const FieldRenderArgs& a, int64_t r) {
  ShadeAndComposite shade{&a, {}, 1.f, {0.f, 0.f, 0.f, 0.f, 0.f}};
  const float* d = a.m.dirs + 3 * r;
  sh_basis(a.sh_degree, d[0], d[1], d[2], shade.Y);
  march_ray(a.m, r, shade);
  for (int ch = 0; ch < 3; ++ch)
    a.out_rgb[3 * r + ch] = shade.acc[ch] + shade.T * a.background[3 * r + ch];
  a.out_depth[r] = shade.acc[3];
  a.out_alpha[r] = shade.acc[4];
}

// ------------------------------------------------------------------ optimizer

// Adam on the rows a step touched (lazy: untouched rows keep their moments), with one
// learning rate per channel and the bias corrections of the global step.
struct SparseAdamArgs {
  float* param;     // [N, C]
  float* exp_avg;   // [N, C]
  float* exp_avg_sq;  // [N, C]
  const int64_t* rows;  // [K] distinct
  const float* grads;   // [K, C]
  const float* lr;      // [C]
  int64_t K, C;
  float beta1, beta2, eps, bias1, bias2;  // bias_i = 1 - beta_i^step
};

SF_HD void sparse_adam_item(const SparseAdamArgs& a, int64_t k) {
  const int64_t base = a.rows[k] * a.C;
  for (int64_t ch = 0; ch < a.C; ++ch) {
    const float g = a.grads[k * a.C + ch];
    if (!isfinite(g)) continue;
    float& m = a.exp_avg[base + ch];
    float& v = a.exp_avg_sq[base + ch];
    m = a.beta1 * m + (1.f - a.beta1) * g;
    v = a.beta2 * v + (1.f - a.beta2) * g * g;
    a.param[base + ch] -= a.lr[ch] * (m / a.bias1) / (sqrtf(v / a.bias2) + a.eps);
  }
}

}  // namespace splatfield
