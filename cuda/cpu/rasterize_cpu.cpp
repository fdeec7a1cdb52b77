// CPU driver of the tile rasterizer.
//
// Binning: Gaussians are visited in depth order per camera and appended to
// the tiles their footprint box overlaps, so every tile's list is already
// sorted front to back (no per-tile sort). Each (Gaussian, tile) entry also
// records where it landed, so per-entry results can be reduced per Gaussian
// deterministically, without atomics.
//
// Tiles: a thread owns a 16x16 tile and, for each Gaussian of the tile's list,
// evaluates the tile rows its ellipse reaches, a row being one SIMD register of
// pixels (16 with AVX-512, else 2 x 8 with the columns it reaches). The
// per-pixel math is the templated code of composite.h, branch-free on lanes.
// Tiles are handed out largest first from an atomic counter to balance threads.
#include <ATen/ATen.h>
#include <ATen/Parallel.h>

#include <algorithm>
#include <atomic>
#include <numeric>
#include <type_traits>
#include <vector>

#include "ops.h"
#include "parallel.h"
#include "splatfield/composite.h"

namespace splatfield {
namespace {

constexpr int kGradFields = 13;  // mean2d(2) conic(3) opacity rgb(3) depth split2d(3)

// Working memory reused across calls by the calling thread. Fresh large
// allocations come from mmap and are paid again in page faults on every call,
// which costs 10-15% of a render here. Contents are never assumed: every call
// writes what it reads.
template <typename T>
T* scratch(int slot, int64_t n) {
  thread_local std::vector<T> buffers[8];
  std::vector<T>& b = buffers[slot];
  if ((int64_t)b.size() < n) b.resize(n);
  return b.data();
}

struct Bins {
  int64_t tiles_x, tiles_y, num_tiles;  // num_tiles counts all cameras
  at::Tensor tile_offsets, flat_ids, gauss_offsets, gauss_entries;
};

struct View {
  const float *means2d, *conics, *opacities, *colors, *depths;
};

// Inclusive pixel range covered by [c - r, c + r] on pixel centres, clamped.
inline void pixel_range(float c, int r, int size, int& lo, int& hi) {
  lo = std::max(0, (int)floorf(c - (float)r - 0.5f));
  hi = std::min(size - 1, (int)ceilf(c + (float)r - 0.5f));
}

// Indices 0..N-1 sorted by depth, ties by index: a stable LSD radix sort on
// the bits of the (positive) depths, three 11-bit digits.
void depth_order(const float* depth, int64_t N, int32_t* out) {
  uint32_t* key = scratch<uint32_t>(0, N);
  uint32_t* key2 = scratch<uint32_t>(1, N);
  int32_t* order = out;
  int32_t* tmp = scratch<int32_t>(2, N);
  for (int64_t i = 0; i < N; ++i) {
    uint32_t k;
    __builtin_memcpy(&k, &depth[i], 4);
    key[i] = k;
    order[i] = (int32_t)i;
  }
  for (int shift = 0; shift < 32; shift += 11) {
    int64_t count[2049] = {};
    for (int64_t i = 0; i < N; ++i) ++count[((key[i] >> shift) & 2047) + 1];
    for (int d = 0; d < 2048; ++d) count[d + 1] += count[d];
    for (int64_t i = 0; i < N; ++i) {
      const int64_t pos = count[(key[i] >> shift) & 2047]++;
      key2[pos] = key[i];
      tmp[pos] = order[i];
    }
    std::swap(key, key2);
    std::swap(order, tmp);
  }
  if (order != out) std::copy(order, order + N, out);
}

Bins bin_gaussians(const at::Tensor& means2d, const at::Tensor& radii, const at::Tensor& depths,
                   int64_t width, int64_t height) {
  const int64_t B = means2d.size(0), N = means2d.size(1);
  Bins bins;
  bins.tiles_x = (width + kTile - 1) / kTile;
  bins.tiles_y = (height + kTile - 1) / kTile;
  const int64_t T = bins.tiles_x * bins.tiles_y;
  bins.num_tiles = B * T;
  const float* m2 = means2d.data_ptr<float>();
  const int32_t* rad = radii.data_ptr<int32_t>();
  const float* dep = depths.data_ptr<float>();

  // Tile rectangle of every (camera, Gaussian); empty when culled.
  int32_t* rect = scratch<int32_t>(3, 4 * B * N);
  int64_t* counts = scratch<int64_t>(0, B * N);
  cpu_parallel_for(0, B * N, 4096, [&](int64_t begin, int64_t end) {
    for (int64_t i = begin; i < end; ++i) {
      int32_t* r = &rect[4 * i];
      r[0] = r[1] = r[2] = r[3] = 0;
      counts[i] = 0;
      if (rad[2 * i] <= 0 || rad[2 * i + 1] <= 0) continue;
      int x0, x1, y0, y1;
      pixel_range(m2[2 * i], rad[2 * i], (int)width, x0, x1);
      pixel_range(m2[2 * i + 1], rad[2 * i + 1], (int)height, y0, y1);
      if (x0 > x1 || y0 > y1) continue;
      r[0] = x0 / kTile;
      r[1] = x1 / kTile + 1;
      r[2] = y0 / kTile;
      r[3] = y1 / kTile + 1;
      counts[i] = (int64_t)(r[1] - r[0]) * (r[3] - r[2]);
    }
  });
  // counts -> exclusive offsets (in place, shifted by one)
  bins.gauss_offsets = at::empty({B * N + 1}, at::kLong);
  int64_t* goff = bins.gauss_offsets.data_ptr<int64_t>();
  goff[0] = 0;
  for (int64_t i = 0; i < B * N; ++i) goff[i + 1] = goff[i] + counts[i];
  const int64_t M = goff[B * N];

  bins.tile_offsets = at::zeros({bins.num_tiles + 1}, at::kLong);
  bins.flat_ids = at::empty({M}, at::kInt);
  bins.gauss_entries = at::empty({M}, at::kLong);
  int64_t* toff = bins.tile_offsets.data_ptr<int64_t>();
  int32_t* ids = bins.flat_ids.data_ptr<int32_t>();
  int64_t* gent = bins.gauss_entries.data_ptr<int64_t>();

  // Depth order per camera, then a stable counting sort of the entries into
  // tiles: thread t takes a contiguous run of the depth order, counts its
  // entries per tile, and writes them after those of threads < t, so each
  // tile's list stays sorted front to back.
  const int64_t threads = std::max<int64_t>(1, at::get_num_threads());
  int64_t* hist = scratch<int64_t>(1, threads * bins.num_tiles);
  int32_t* order = scratch<int32_t>(4, N);
  for (int64_t b = 0; b < B; ++b) {
    depth_order(dep + b * N, N, order);
    const int64_t chunk = (N + threads - 1) / threads;
    auto for_each_chunk = [&](auto&& fn) {
      cpu_parallel_for(0, threads, 1, [&](int64_t t0, int64_t t1) {
        for (int64_t t = t0; t < t1; ++t) fn(t, t * chunk, std::min(N, (t + 1) * chunk));
      });
    };
    std::fill(hist, hist + threads * bins.num_tiles, 0);
    for_each_chunk([&](int64_t t, int64_t lo, int64_t hi) {
      int64_t* h = &hist[t * bins.num_tiles];
      for (int64_t j = lo; j < hi; ++j) {
        const int32_t* r = &rect[4 * (b * N + order[j])];
        for (int ty = r[2]; ty < r[3]; ++ty)
          for (int tx = r[0]; tx < r[1]; ++tx) ++h[b * T + ty * bins.tiles_x + tx];
      }
    });
    // cursor of (thread, tile) = tile start + entries of earlier threads in that tile
    for (int64_t tile = b * T; tile < (b + 1) * T; ++tile) {
      int64_t sum = 0;
      for (int64_t t = 0; t < threads; ++t) {
        const int64_t c = hist[t * bins.num_tiles + tile];
        hist[t * bins.num_tiles + tile] = sum;
        sum += c;
      }
      toff[tile + 1] = sum;
    }
    for (int64_t tile = b * T; tile < (b + 1) * T; ++tile) toff[tile + 1] += toff[tile];
    for_each_chunk([&](int64_t t, int64_t lo, int64_t hi) {
      int64_t* cur = &hist[t * bins.num_tiles];
      for (int64_t j = lo; j < hi; ++j) {
        const int32_t n = order[j];
        const int64_t i = b * N + n;
        const int32_t* r = &rect[4 * i];
        int64_t e = goff[i];
        for (int ty = r[2]; ty < r[3]; ++ty)
          for (int tx = r[0]; tx < r[1]; ++tx) {
            const int64_t tile = b * T + ty * bins.tiles_x + tx;
            const int64_t pos = toff[tile] + cur[tile]++;
            ids[pos] = n;
            gent[e++] = pos;
          }
      }
    });
  }
  return bins;
}

// Tiles in decreasing order of work, handed to threads through an atomic counter.
template <typename F>
void for_each_tile(const int64_t* toff, int64_t num_tiles, F&& fn) {
  std::vector<int64_t> order(num_tiles);
  std::iota(order.begin(), order.end(), 0);
  std::sort(order.begin(), order.end(), [toff](int64_t a, int64_t b) {
    return toff[a + 1] - toff[a] > toff[b + 1] - toff[b];
  });
  std::atomic<int64_t> next{0};
  const int64_t threads = std::min<int64_t>(at::get_num_threads(), std::max<int64_t>(num_tiles, 1));
  cpu_parallel_for(0, threads, 1, [&](int64_t, int64_t) {
    for (int64_t k; (k = next.fetch_add(1)) < num_tiles;) fn(order[k]);
  });
}

struct TileGeom {
  int64_t b;
  int x0, y0, w, h;
};

inline TileGeom tile_geom(int64_t tile, const Bins& bins, int64_t width, int64_t height) {
  const int64_t T = bins.tiles_x * bins.tiles_y;
  TileGeom g;
  g.b = tile / T;
  const int64_t t = tile % T;
  g.x0 = (int)(t % bins.tiles_x) * kTile;
  g.y0 = (int)(t / bins.tiles_x) * kTile;
  g.w = std::min<int>(kTile, (int)width - g.x0);
  g.h = std::min<int>(kTile, (int)height - g.y0);
  return g;
}

// One (camera, Gaussian) as the tile loops read it, packed once so an entry
// costs one cache line, with the constants of its row spans precomputed.
struct alignas(64) Splat {  // one cache line
  Vec2 mean;
  Sym2 conic;
  float opacity;
  float value[5];  // rgb, depth, 1 (alpha channel)
  float K;         // alpha >= kAlphaMin  <=>  d^T conic d <= K
  float half_h;    // vertical half-extent of the ellipse d^T conic d <= K
  float half_w;    // horizontal half-extent (padded like half_h)
};

const Splat* pack_splats(const View& v, int64_t count) {
  Splat* out = scratch<Splat>(0, count);
  cpu_parallel_for(0, count, 4096, [&](int64_t begin, int64_t end) {
    for (int64_t i = begin; i < end; ++i) {
      Splat& s = out[i];
      s.mean = {v.means2d[2 * i], v.means2d[2 * i + 1]};
      s.conic = {v.conics[3 * i], v.conics[3 * i + 1], v.conics[3 * i + 2]};
      s.opacity = v.opacities[i];
      s.value[0] = v.colors[3 * i];
      s.value[1] = v.colors[3 * i + 1];
      s.value[2] = v.colors[3 * i + 2];
      s.value[3] = v.depths[i];
      s.value[4] = 1.f;
      s.K = s.opacity > 0.f ? 2.f * logf(s.opacity / kAlphaMin) : -1.f;
      // Extents of the ellipse d^T conic d <= K: sqrt(K * cov_yy), sqrt(K * cov_xx).
      const float det = s.conic.a * s.conic.c - s.conic.b * s.conic.b;
      s.half_h = sqrtf(fmaxf(s.K, 0.f) * s.conic.a / fmaxf(det, 1e-30f));
      const float hw = sqrtf(fmaxf(s.K, 0.f) * s.conic.c / fmaxf(det, 1e-30f)) * 1.0001f + 1e-3f;
      s.half_w = isfinite(hw) ? hw : 1e30f;
    }
  });
  return out;
}

// Lane vectors: one register of the widest float SIMD the target has (GCC
// splits wider vectors into slow element-wise code).
#if defined(__AVX512F__)
using VF = f16;
using VI = i16;
#else
using VF = f8;
using VI = i8;
#endif
constexpr int kLanes = sizeof(VF) / sizeof(float);  // pixels per lane vector
constexpr int kVecs = kTile / kLanes;     // lane vectors per tile row

// Marks the row vectors that still have a compositing pixel (T > 0); returns
// whether any does.
inline bool refresh_live(const VF (&T)[kTile][kVecs], bool (&live)[kTile][kVecs]) {
  bool any = false;
  for (int r = 0; r < kTile; ++r)
    for (int v = 0; v < kVecs; ++v) {
      bool l = false;
      for (int i = 0; i < kLanes; ++i) l |= T[r][v][i] > 0.f;
      live[r][v] = l;
      any |= l;
    }
  return any;
}

constexpr int kPrefetch = 4;  // entries ahead

inline float hsum(VF v) {  // fixed order, so results are deterministic
  float s = 0.f;
  for (int i = 0; i < kLanes; ++i) s += v[i];
  return s;
}

// Calls fn(row, vec, dx, dy) for every lane vector of the tile that the splat
// may reach; dx, dy are pixel centre minus mean. The exact alpha test is the
// caller's.
template <typename Fn>
inline void for_each_covered_vector(const Splat& s, const TileGeom& g, Fn&& fn) {
  int ylo = g.y0, yhi = g.y0 + g.h - 1;
  if (isfinite(s.half_h)) {
    ylo = std::max(ylo, (int)floorf(s.mean.y - s.half_h * 1.0001f - 1e-3f - 0.5f));
    yhi = std::min(yhi, (int)ceilf(s.mean.y + s.half_h * 1.0001f + 1e-3f - 0.5f));
  }
  // Columns the footprint box reaches (with kVecs > 1, only those vectors).
  const int v0 = std::max(0, (int)floorf(s.mean.x - s.half_w - 0.5f) - g.x0) / kLanes;
  const int v1 = std::min(kTile - 1, std::max(0, (int)ceilf(s.mean.x + s.half_w - 0.5f) - g.x0)) / kLanes;
  VF dx[kVecs];
  for (int v = 0; v < kVecs; ++v)
    for (int i = 0; i < kLanes; ++i) dx[v][i] = (float)(g.x0 + v * kLanes + i) + 0.5f - s.mean.x;
  for (int py = ylo; py <= yhi; ++py) {
    const VF dy = VF{} + ((float)py + 0.5f - s.mean.y);
    for (int v = v0; v <= v1; ++v) fn(py - g.y0, v, dx[v], dy);
  }
}

static_assert(sizeof(Splat) == 64, "a splat is one cache line");

}  // namespace

RasterFwd rasterize_fwd_cpu(const at::Tensor& means2d, const at::Tensor& conics,
                            const at::Tensor& opacities, const at::Tensor& colors,
                            const at::Tensor& depths, const at::Tensor& radii,
                            const at::Tensor& background, int64_t width, int64_t height) {
  for (const at::Tensor* t : {&means2d, &conics, &opacities, &colors, &depths, &background})
    SF_CHECK_INPUT(*t, at::kFloat);
  SF_CHECK_INPUT(radii, at::kInt);
  const int64_t B = means2d.size(0), N = means2d.size(1);
  TORCH_CHECK(background.sizes() == at::IntArrayRef({B, 3}), "background must be [B, 3]");
  const Bins bins = bin_gaussians(means2d, radii, depths, width, height);
  const int64_t M = bins.flat_ids.numel();

  auto f = means2d.options();
  at::Tensor image = at::empty({B, height, width, 3}, f);
  at::Tensor depth = at::empty({B, height, width, 1}, f);
  at::Tensor alpha = at::empty({B, height, width, 1}, f);
  at::Tensor final_T = at::empty({B, height, width}, f);
  at::Tensor last = at::empty({B, height, width}, f.dtype(at::kLong));
  float* imp_p = scratch<float>(0, M);  // per entry; every entry is written

  const View v{means2d.data_ptr<float>(), conics.data_ptr<float>(), opacities.data_ptr<float>(),
               colors.data_ptr<float>(), depths.data_ptr<float>()};
  const Splat* splats = pack_splats(v, B * N);
  const int64_t* toff = bins.tile_offsets.data_ptr<int64_t>();
  const int32_t* ids = bins.flat_ids.data_ptr<int32_t>();
  const float* bg = background.data_ptr<float>();
  float* img_p = image.data_ptr<float>();
  float* dep_p = depth.data_ptr<float>();
  float* alp_p = alpha.data_ptr<float>();
  float* T_p = final_T.data_ptr<float>();
  int64_t* last_p = last.data_ptr<int64_t>();

  for_each_tile(toff, bins.num_tiles, [&](int64_t tile) {
    const TileGeom g = tile_geom(tile, bins, width, height);
    const int64_t start = toff[tile];
    // Lane state of the tile's pixels; lanes outside the image start finished (T < 0).
    VF T[kTile][kVecs], acc[5][kTile][kVecs];
    VI lst[kTile][kVecs];  // one past the last composited entry, relative to `start`
    for (int r = 0; r < kTile; ++r)
      for (int v = 0; v < kVecs; ++v) {
        for (int i = 0; i < kLanes; ++i)
          T[r][v][i] = (r < g.h && v * kLanes + i < g.w) ? 1.f : -1.f;
        for (int ch = 0; ch < 5; ++ch) acc[ch][r][v] = VF{};
        lst[r][v] = VI{};
      }
    // Row vectors with unfinished pixels, refreshed every 16 entries: a rarely
    // changing flag is a well-predicted branch, unlike a per-row lane test.
    bool live[kTile][kVecs];
    for (int64_t k = start; k < toff[tile + 1]; ++k) {
      if (((k - start) & 15) == 0 && !refresh_live(T, live)) {
        std::fill(imp_p + k, imp_p + toff[tile + 1], 0.f);  // entries no pixel reached
        break;
      }
      // Entries are depth-sorted, so their Gaussians are scattered in memory.
      if (k + kPrefetch < toff[tile + 1]) __builtin_prefetch(&splats[g.b * N + ids[k + kPrefetch]]);
      const Splat& s = splats[g.b * N + ids[k]];
      const VI next = VI{} + (int)(k - start + 1);
      VF importance = VF{};
      for_each_covered_vector(s, g, [&](int r, int vi, VF dx, VF dy) {
        if (!live[r][vi]) return;
        VF G;
        const VF a = gaussian_alpha(s.conic, s.opacity, dx, dy, G);
        VF px_acc[5] = {acc[0][r][vi], acc[1][r][vi], acc[2][r][vi], acc[3][r][vi], acc[4][r][vi]};
        const VF w = composite_step_masked<5>(a, s.value, T[r][vi], px_acc);
        for (int ch = 0; ch < 5; ++ch) acc[ch][r][vi] = px_acc[ch];
        lst[r][vi] = w > 0.f ? next : lst[r][vi];
        importance += w;
      });
      imp_p[k] = hsum(importance);
    }
    for (int py = 0; py < g.h; ++py)
      for (int px = 0; px < g.w; ++px) {
        const int r = py, vi = px / kLanes, i = px % kLanes;
        const int64_t o = (g.b * height + g.y0 + py) * width + g.x0 + px;
        const float Tp = fabsf(T[r][vi][i]);
        for (int ch = 0; ch < 3; ++ch) img_p[3 * o + ch] = acc[ch][r][vi][i] + Tp * bg[3 * g.b + ch];
        dep_p[o] = acc[3][r][vi][i];
        alp_p[o] = acc[4][r][vi][i];
        T_p[o] = Tp;
        last_p[o] = start + lst[r][vi][i];
      }
  });

  // Per-entry importance -> per (camera, Gaussian), in a fixed order.
  at::Tensor importance = at::empty({B, N}, f);
  float* imp_out = importance.data_ptr<float>();
  const int64_t* goff = bins.gauss_offsets.data_ptr<int64_t>();
  const int64_t* gent = bins.gauss_entries.data_ptr<int64_t>();
  cpu_parallel_for(0, B * N, 4096, [&](int64_t begin, int64_t end) {
    for (int64_t i = begin; i < end; ++i) {
      float sum = 0.f;
      for (int64_t e = goff[i]; e < goff[i + 1]; ++e) sum += imp_p[gent[e]];
      imp_out[i] = sum;
    }
  });
  return {image,          depth,          alpha,           final_T,
          last,           bins.tile_offsets, bins.flat_ids, bins.gauss_offsets,
          bins.gauss_entries, importance};
}

Tensor6 rasterize_bwd_cpu(const at::Tensor& means2d, const at::Tensor& conics,
                          const at::Tensor& opacities, const at::Tensor& colors,
                          const at::Tensor& depths, const at::Tensor& background, int64_t width,
                          int64_t height, const at::Tensor& final_T, const at::Tensor& last,
                          const at::Tensor& tile_offsets, const at::Tensor& flat_ids,
                          const at::Tensor& gauss_offsets, const at::Tensor& gauss_entries,
                          const at::Tensor& v_image, const at::Tensor& v_depth,
                          const at::Tensor& v_alpha, bool want_split2d) {
  for (const at::Tensor* t : {&means2d, &conics, &opacities, &colors, &depths, &background,
                              &final_T, &v_image, &v_depth, &v_alpha})
    SF_CHECK_INPUT(*t, at::kFloat);
  const int64_t B = means2d.size(0), N = means2d.size(1);
  TORCH_CHECK(v_image.numel() == B * height * width * 3 && v_depth.numel() == B * height * width &&
                  v_alpha.numel() == B * height * width,
              "image gradients must be [B, H, W, ...]");
  Bins bins;
  bins.tiles_x = (width + kTile - 1) / kTile;
  bins.tiles_y = (height + kTile - 1) / kTile;
  bins.num_tiles = B * bins.tiles_x * bins.tiles_y;
  const int64_t M = flat_ids.numel();
  float* eg = scratch<float>(1, M * kGradFields);  // per entry; every entry is written

  const View v{means2d.data_ptr<float>(), conics.data_ptr<float>(), opacities.data_ptr<float>(),
               colors.data_ptr<float>(), depths.data_ptr<float>()};
  const Splat* splats = pack_splats(v, B * N);
  const int64_t* toff = tile_offsets.data_ptr<int64_t>();
  const int32_t* ids = flat_ids.data_ptr<int32_t>();
  const float* bg = background.data_ptr<float>();
  const float* T_p = final_T.data_ptr<float>();
  const int64_t* last_p = last.data_ptr<int64_t>();
  const float* vimg = v_image.data_ptr<float>();
  const float* vdep = v_depth.data_ptr<float>();
  const float* valp = v_alpha.data_ptr<float>();

  // A loss on RGB alone (the usual training case) leaves the depth and alpha
  // gradients exactly zero: composite 3 channels instead of 5 then.
  const bool aux = v_depth.ne(0).any().item<bool>() || v_alpha.ne(0).any().item<bool>();
  auto backward_tile = [&](auto channels, int64_t tile) {
    constexpr int C = decltype(channels)::value;
    const TileGeom g = tile_geom(tile, bins, width, height);
    const int64_t start = toff[tile];
    VF T[kTile][kVecs], behind[5][kTile][kVecs], vout[5][kTile][kVecs];
    VI lst[kTile][kVecs];  // relative to `start`; 0 for pixels outside the image
    int64_t kmax = start;
    for (int r = 0; r < kTile; ++r)
      for (int vi = 0; vi < kVecs; ++vi)
        for (int i = 0; i < kLanes; ++i) {
          const int px = vi * kLanes + i;
          const bool inside = r < g.h && px < g.w;
          const int64_t o = (g.b * height + g.y0 + r) * width + g.x0 + px;
          T[r][vi][i] = inside ? T_p[o] : 1.f;
          lst[r][vi][i] = inside ? (int)(last_p[o] - start) : 0;
          if (inside) kmax = std::max(kmax, last_p[o]);
          for (int ch = 0; ch < 3; ++ch) {
            behind[ch][r][vi][i] = bg[3 * g.b + ch];
            vout[ch][r][vi][i] = inside ? vimg[3 * o + ch] : 0.f;
          }
          behind[3][r][vi][i] = behind[4][r][vi][i] = 0.f;
          vout[3][r][vi][i] = inside ? vdep[o] : 0.f;
          vout[4][r][vi][i] = inside ? valp[o] : 0.f;
        }
    int row_last[kTile][kVecs];  // latest entry any pixel of the row vector composited
    for (int r = 0; r < kTile; ++r)
      for (int vi = 0; vi < kVecs; ++vi) {
        row_last[r][vi] = 0;
        for (int i = 0; i < kLanes; ++i) row_last[r][vi] = std::max(row_last[r][vi], lst[r][vi][i]);
      }
    std::fill(eg + kGradFields * kmax, eg + kGradFields * toff[tile + 1], 0.f);  // never composited
    for (int64_t k = kmax - 1; k >= start; --k) {
      const int k_rel = (int)(k - start);
      if (k - kPrefetch >= start) __builtin_prefetch(&splats[g.b * N + ids[k - kPrefetch]]);
      const Splat& s = splats[g.b * N + ids[k]];
      const VI rel = VI{} + (int)(k - start);
      AlphaGradT<VF> ag{VF{}, VF{}, VF{}, VF{}, VF{}, VF{}};
      VF v_val[5] = {VF{}, VF{}, VF{}, VF{}, VF{}};
      VF split[3] = {VF{}, VF{}, VF{}};
      for_each_covered_vector(s, g, [&](int r, int vi, VF dx, VF dy) {
        if (k_rel >= row_last[r][vi]) return;
        VF G;
        const VF a = gaussian_alpha(s.conic, s.opacity, dx, dy, G);
        const VI valid = (rel < lst[r][vi]) & (a >= kAlphaMin);
        VF bh[5], vo[5];
        for (int ch = 0; ch < 5; ++ch) {
          bh[ch] = behind[ch][r][vi];
          vo[ch] = vout[ch][r][vi];
        }
        const VF va = composite_step_vjp_masked<C>(valid, a, s.value, vo, T[r][vi], bh, v_val);
        for (int ch = 0; ch < 5; ++ch) behind[ch][r][vi] = bh[ch];
        gaussian_alpha_vjp(s.conic, s.opacity, dx, dy, G, va, ag);
        if (want_split2d) split2d_term(s.conic, s.opacity, dx, dy, G, va, split);
      });
      float* out = eg + kGradFields * k;
      const VF vals[kGradFields] = {ag.mx,    ag.my,    ag.a,     ag.b,     ag.c,
                                    ag.opacity, v_val[0], v_val[1], v_val[2], v_val[3],
                                    split[0], split[1], split[2]};
      for (int j = 0; j < kGradFields; ++j) out[j] = hsum(vals[j]);
    }
  };
  for_each_tile(toff, bins.num_tiles, [&](int64_t tile) {
    if (aux)
      backward_tile(std::integral_constant<int, 5>{}, tile);
    else
      backward_tile(std::integral_constant<int, 3>{}, tile);
  });

  auto f = means2d.options();
  at::Tensor v_means2d = at::empty({B, N, 2}, f), v_conics = at::empty({B, N, 3}, f);
  at::Tensor v_opac = at::empty({B, N}, f), v_colors = at::empty({B, N, 3}, f);
  at::Tensor v_depths = at::empty({B, N}, f), split2d = at::empty({B, N, 3}, f);
  float *o_m = v_means2d.data_ptr<float>(), *o_c = v_conics.data_ptr<float>();
  float *o_o = v_opac.data_ptr<float>(), *o_col = v_colors.data_ptr<float>();
  float *o_d = v_depths.data_ptr<float>(), *o_s = split2d.data_ptr<float>();
  const int64_t* goff = gauss_offsets.data_ptr<int64_t>();
  const int64_t* gent = gauss_entries.data_ptr<int64_t>();
  cpu_parallel_for(0, B * N, 2048, [&](int64_t begin, int64_t end) {
    for (int64_t i = begin; i < end; ++i) {
      float sum[kGradFields] = {};
      for (int64_t e = goff[i]; e < goff[i + 1]; ++e) {
        const float* src = eg + kGradFields * gent[e];
        for (int j = 0; j < kGradFields; ++j) sum[j] += src[j];
      }
      o_m[2 * i] = sum[0];
      o_m[2 * i + 1] = sum[1];
      for (int j = 0; j < 3; ++j) o_c[3 * i + j] = sum[2 + j];
      o_o[i] = sum[5];
      for (int j = 0; j < 3; ++j) o_col[3 * i + j] = sum[6 + j];
      o_d[i] = sum[9];
      for (int j = 0; j < 3; ++j) o_s[3 * i + j] = sum[10 + j];
    }
  });
  return {v_means2d, v_conics, v_opac, v_colors, v_depths, split2d};
}

}  // namespace splatfield
