// CUDA driver of the tile rasterizer. Same algorithm and outputs as
// cpu/rasterize_cpu.cpp, scheduled for a GPU:
//
// Binning: one thread per (camera, Gaussian) computes its tile rectangle with
// the CPU's pixel_range rule; an exclusive scan of the counts gives
// gauss_offsets; every (Gaussian, tile) entry is emitted in (camera, Gaussian,
// tile row, tile column) order with the 64-bit key
//   (global tile id << 32) | order-preserving bits of the depth
// and a stable radix sort (cub) orders every tile front to back with ties
// broken by Gaussian index, exactly the CPU's order. gauss_entries is the
// inverse of the sort permutation; tile_offsets are lower bounds of the tile
// ids in the sorted keys.
//
// Rasterization: one 16x16 block per tile, one thread per pixel, the tile's
// entries staged through shared memory in batches of 256. Every pixel applies
// the CPU's per-pixel rule to every entry (the CPU only skips pixels that
// cannot pass the exact alpha test). Per-entry sums over pixels (importance
// in the forward, the 13 gradient fields in the backward) are reduced within
// each warp and added with one atomicAdd per warp, then gathered per Gaussian
// through gauss_offsets/gauss_entries in the CPU's order.

#include <cub/device/device_radix_sort.cuh>
#include <limits>

#include "launch.cuh"
#include "ops.h"
#include "splatfield/composite.h"

namespace splatfield {
namespace {

constexpr int kPix = kTile * kTile;  // threads of a tile block, entries per batch
constexpr int kGradFields = 13;      // mean2d(2) conic(3) opacity rgb(3) depth split2d(3)
constexpr int kThreads = 256;        // 1D kernels
constexpr unsigned kFullMask = 0xffffffffu;

__device__ __forceinline__ int64_t global_index() {
  return (int64_t)blockIdx.x * blockDim.x + threadIdx.x;
}

__device__ __forceinline__ int64_t min64(int64_t x, int64_t y) { return x < y ? x : y; }

__device__ __forceinline__ float warp_sum(float v) {
#pragma unroll
  for (int off = 16; off > 0; off >>= 1) v += __shfl_down_sync(kFullMask, v, off);
  return v;  // complete in lane 0
}

// Inclusive pixel range covered by [c - r, c + r] on pixel centres, clamped
// (the CPU driver's pixel_range, verbatim).
__device__ __forceinline__ void pixel_range(float c, int r, int size, int& lo, int& hi) {
  lo = max(0, (int)floorf(c - (float)r - 0.5f));
  hi = min(size - 1, (int)ceilf(c + (float)r - 0.5f));
}

// Monotonic map of a float to uint32 (a < b  <=>  key(a) < key(b) for non-NaN
// floats; -0 and +0 map to the same key, as they compare equal on the CPU).
__device__ __forceinline__ uint32_t depth_key(float d) {
  const uint32_t u = d == 0.f ? 0u : __float_as_uint(d);
  return (u & 0x80000000u) ? ~u : (u | 0x80000000u);
}

// ---------------------------------------------------------------- binning

// Tile rectangle [x0, x1) x [y0, y1) (in tiles) and entry count of every
// (camera, Gaussian); empty when culled or off the image.
__global__ void __launch_bounds__(kThreads)
    count_tiles_kernel(int64_t BN, const float* __restrict__ means2d,
                       const int32_t* __restrict__ radii, int width, int height,
                       int4* __restrict__ rects, int64_t* __restrict__ counts) {
  const int64_t i = global_index();
  if (i >= BN) return;
  int4 r = make_int4(0, 0, 0, 0);
  int64_t count = 0;
  if (radii[2 * i] > 0 && radii[2 * i + 1] > 0) {
    int x0, x1, y0, y1;
    pixel_range(means2d[2 * i], radii[2 * i], width, x0, x1);
    pixel_range(means2d[2 * i + 1], radii[2 * i + 1], height, y0, y1);
    if (x0 <= x1 && y0 <= y1) {
      r = make_int4(x0 / kTile, x1 / kTile + 1, y0 / kTile, y1 / kTile + 1);
      count = (int64_t)(r.y - r.x) * (r.w - r.z);
    }
  }
  rects[i] = r;
  counts[i] = count;
}

// Entries of (camera, Gaussian) i at [gauss_offsets[i], gauss_offsets[i+1]),
// tile rows outer and columns inner (the CPU's order of gauss_entries).
__global__ void __launch_bounds__(kThreads)
    emit_entries_kernel(int64_t BN, int64_t N, const int4* __restrict__ rects,
                        const int64_t* __restrict__ gauss_offsets,
                        const float* __restrict__ depths, int64_t tiles_per_cam, int tiles_x,
                        uint64_t* __restrict__ keys, int64_t* __restrict__ vals,
                        int32_t* __restrict__ entry_gauss) {
  const int64_t i = global_index();
  if (i >= BN) return;
  const int4 r = rects[i];
  const int64_t b = i / N;
  const int32_t n = (int32_t)(i % N);
  const uint64_t dkey = depth_key(depths[i]);
  int64_t e = gauss_offsets[i];
  for (int ty = r.z; ty < r.w; ++ty)
    for (int tx = r.x; tx < r.y; ++tx) {
      const uint64_t tile = (uint64_t)(b * tiles_per_cam + (int64_t)ty * tiles_x + tx);
      keys[e] = (tile << 32) | dkey;
      vals[e] = e;
      entry_gauss[e] = n;
      ++e;
    }
}

// After the sort: flat_ids[pos] = Gaussian of the entry landing at pos, and
// gauss_entries[e] = pos (inverse permutation).
__global__ void __launch_bounds__(kThreads)
    scatter_entries_kernel(int64_t M, const int64_t* __restrict__ sorted_vals,
                           const int32_t* __restrict__ entry_gauss, int32_t* __restrict__ flat_ids,
                           int64_t* __restrict__ gauss_entries) {
  const int64_t pos = global_index();
  if (pos >= M) return;
  const int64_t e = sorted_vals[pos];
  flat_ids[pos] = entry_gauss[e];
  gauss_entries[e] = pos;
}

// tile_offsets[t] = first sorted position whose tile is >= t, t in [0, num_tiles].
__global__ void __launch_bounds__(kThreads)
    tile_offsets_kernel(int64_t num_tiles, int64_t M, const uint64_t* __restrict__ sorted_keys,
                        int64_t* __restrict__ tile_offsets) {
  const int64_t t = global_index();
  if (t > num_tiles) return;
  int64_t lo = 0, hi = M;
  while (lo < hi) {
    const int64_t mid = lo + (hi - lo) / 2;
    if ((int64_t)(sorted_keys[mid] >> 32) < t)
      lo = mid + 1;
    else
      hi = mid;
  }
  tile_offsets[t] = lo;
}

// ---------------------------------------------------------- rasterization

struct TileArgs {
  const float *means2d, *conics, *opacities, *colors, *depths, *background;
  const int64_t* tile_offsets;
  const int32_t* flat_ids;
  int64_t N, tiles_per_cam;
  int width, height, tiles_x;
};

struct FwdOut {
  float *image, *depth, *alpha, *final_T;
  int64_t* last;
  float* entry_importance;  // [M]
};

struct BwdIn {
  const float* final_T;
  const int64_t* last;
  const float *v_image, *v_depth, *v_alpha;
  float* entry_grads;  // [M, kGradFields]
  bool want_split2d;
};

struct TilePixel {
  int64_t b, start, end, o;  // camera, entry range, flat pixel index (b, y, x)
  int tid, lane;
  bool inside;
  float fx, fy;  // pixel centre
};

__device__ __forceinline__ TilePixel tile_pixel(const TileArgs& a) {
  TilePixel p;
  const int64_t tile = blockIdx.x;
  p.b = tile / a.tiles_per_cam;
  const int64_t t = tile % a.tiles_per_cam;
  const int px = (int)(t % a.tiles_x) * kTile + (int)threadIdx.x;
  const int py = (int)(t / a.tiles_x) * kTile + (int)threadIdx.y;
  p.tid = (int)threadIdx.y * kTile + (int)threadIdx.x;
  p.lane = p.tid & 31;
  p.inside = px < a.width && py < a.height;
  p.o = (p.b * a.height + py) * a.width + px;
  p.start = a.tile_offsets[tile];
  p.end = a.tile_offsets[tile + 1];
  p.fx = (float)px + 0.5f;
  p.fy = (float)py + 0.5f;
  return p;
}

// One tile entry staged in shared memory.
struct SplatBatch {
  float2 mean[kPix];
  float4 conic_opacity[kPix];  // a, b, c, opacity
  float4 rgbd[kPix];           // r, g, b, depth
};

__device__ __forceinline__ void stage_splat(const TileArgs& a, int64_t b, int64_t k,
                                            SplatBatch& s, int slot) {
  const int64_t g = b * a.N + a.flat_ids[k];
  s.mean[slot] = make_float2(a.means2d[2 * g], a.means2d[2 * g + 1]);
  s.conic_opacity[slot] =
      make_float4(a.conics[3 * g], a.conics[3 * g + 1], a.conics[3 * g + 2], a.opacities[g]);
  s.rgbd[slot] =
      make_float4(a.colors[3 * g], a.colors[3 * g + 1], a.colors[3 * g + 2], a.depths[g]);
}

__global__ void __launch_bounds__(kPix)
    rasterize_fwd_kernel(const TileArgs a, const FwdOut out) {
  __shared__ SplatBatch s;
  const TilePixel p = tile_pixel(a);
  float T = 1.f, acc[5] = {0.f, 0.f, 0.f, 0.f, 0.f};
  int64_t last = p.start;
  bool done = !p.inside;  // pixels outside the image count as finished

  for (int64_t base = p.start; base < p.end; base += kPix) {
    // Also the barrier that lets the previous batch be overwritten.
    if (__syncthreads_count(done) == kPix) break;
    const int count = (int)min64(kPix, p.end - base);
    if (p.tid < count) stage_splat(a, p.b, base + p.tid, s, p.tid);
    __syncthreads();
    for (int j = 0; j < count; ++j) {
      float contribution = 0.f;
      if (!done) {
        const float2 mean = s.mean[j];
        const float4 co = s.conic_opacity[j];
        const float dx = p.fx - mean.x, dy = p.fy - mean.y;
        float G;
        const float alpha = gaussian_alpha(Sym2{co.x, co.y, co.z}, co.w, dx, dy, G);
        if (alpha >= kAlphaMin) {
          const float4 c = s.rgbd[j];
          const float value[5] = {c.x, c.y, c.z, c.w, 1.f};
          const float T0 = T;
          if (!composite_step<5>(alpha, value, T, acc)) {
            done = true;
          } else {
            contribution = alpha * T0;
            last = base + j + 1;
          }
        }
      }
      if (__any_sync(kFullMask, contribution != 0.f)) {
        const float sum = warp_sum(contribution);
        if (p.lane == 0) atomicAdd(out.entry_importance + base + j, sum);
      }
    }
  }

  if (!p.inside) return;
  const float* bg = a.background + 3 * p.b;
  for (int ch = 0; ch < 3; ++ch) out.image[3 * p.o + ch] = acc[ch] + T * bg[ch];
  out.depth[p.o] = acc[3];
  out.alpha[p.o] = acc[4];
  out.final_T[p.o] = T;
  out.last[p.o] = last;
}

__global__ void __launch_bounds__(kPix)
    rasterize_bwd_kernel(const TileArgs a, const BwdIn in) {
  __shared__ SplatBatch s;
  __shared__ unsigned long long s_kmax;
  const TilePixel p = tile_pixel(a);
  float T = 1.f, behind[5] = {0.f, 0.f, 0.f, 0.f, 0.f}, v_out[5] = {0.f, 0.f, 0.f, 0.f, 0.f};
  int64_t last = p.start;  // pixels outside the image take nothing
  if (p.inside) {
    T = in.final_T[p.o];
    last = min64(in.last[p.o], p.end);
    for (int ch = 0; ch < 3; ++ch) {
      behind[ch] = a.background[3 * p.b + ch];
      v_out[ch] = in.v_image[3 * p.o + ch];
    }
    v_out[3] = in.v_depth[p.o];
    v_out[4] = in.v_alpha[p.o];
  }
  if (p.tid == 0) s_kmax = (unsigned long long)p.start;
  __syncthreads();
  if (p.inside && last > p.start) atomicMax(&s_kmax, (unsigned long long)last);
  __syncthreads();
  const int64_t kmax = (int64_t)s_kmax;
  const bool split = in.want_split2d;

  // Back to front, in batches ending at hi (exclusive).
  for (int64_t hi = kmax; hi > p.start; hi -= kPix) {
    const int count = (int)min64(kPix, hi - p.start);
    __syncthreads();  // the previous batch is consumed
    if (p.tid < count) stage_splat(a, p.b, hi - 1 - p.tid, s, p.tid);
    __syncthreads();
    for (int j = 0; j < count; ++j) {
      const int64_t k = hi - 1 - j;
      float g[kGradFields];
#pragma unroll
      for (int f = 0; f < kGradFields; ++f) g[f] = 0.f;
      bool hit = false;
      if (k < last) {  // false outside the image
        const float2 mean = s.mean[j];
        const float4 co = s.conic_opacity[j];
        const Sym2 conic{co.x, co.y, co.z};
        const float dx = p.fx - mean.x, dy = p.fy - mean.y;
        float G;
        const float alpha = gaussian_alpha(conic, co.w, dx, dy, G);
        if (alpha >= kAlphaMin) {
          hit = true;
          const float4 c = s.rgbd[j];
          const float value[5] = {c.x, c.y, c.z, c.w, 1.f};
          float v_val[5] = {0.f, 0.f, 0.f, 0.f, 0.f};
          const float va = composite_step_vjp<5>(alpha, value, v_out, T, behind, v_val);
          AlphaGrad ag{0.f, 0.f, 0.f, 0.f, 0.f, 0.f};
          gaussian_alpha_vjp(conic, co.w, dx, dy, G, va, ag);
          float sp[3] = {0.f, 0.f, 0.f};
          if (split) split2d_term(conic, co.w, dx, dy, G, va, sp);
          g[0] = ag.mx;
          g[1] = ag.my;
          g[2] = ag.a;
          g[3] = ag.b;
          g[4] = ag.c;
          g[5] = ag.opacity;
          g[6] = v_val[0];
          g[7] = v_val[1];
          g[8] = v_val[2];
          g[9] = v_val[3];
          g[10] = sp[0];
          g[11] = sp[1];
          g[12] = sp[2];
        }
      }
      if (__any_sync(kFullMask, hit)) {
        float* dst = in.entry_grads + kGradFields * k;
#pragma unroll
        for (int f = 0; f < kGradFields; ++f) {
          if (f >= 10 && !split) break;
          const float sum = warp_sum(g[f]);
          if (p.lane == 0) atomicAdd(dst + f, sum);
        }
      }
    }
  }
}

// ------------------------------------------------ per-Gaussian reductions

__global__ void __launch_bounds__(kThreads)
    gather_importance_kernel(int64_t BN, const int64_t* __restrict__ gauss_offsets,
                             const int64_t* __restrict__ gauss_entries,
                             const float* __restrict__ entry_importance,
                             float* __restrict__ importance) {
  const int64_t i = global_index();
  if (i >= BN) return;
  float sum = 0.f;
  for (int64_t e = gauss_offsets[i]; e < gauss_offsets[i + 1]; ++e)
    sum += entry_importance[gauss_entries[e]];
  importance[i] = sum;
}

struct BwdOut {
  float *v_means2d, *v_conics, *v_opacities, *v_colors, *v_depths, *split2d;
};

__global__ void __launch_bounds__(kThreads)
    gather_grads_kernel(int64_t BN, const int64_t* __restrict__ gauss_offsets,
                        const int64_t* __restrict__ gauss_entries,
                        const float* __restrict__ entry_grads, const BwdOut o) {
  const int64_t i = global_index();
  if (i >= BN) return;
  float sum[kGradFields];
#pragma unroll
  for (int j = 0; j < kGradFields; ++j) sum[j] = 0.f;
  for (int64_t e = gauss_offsets[i]; e < gauss_offsets[i + 1]; ++e) {
    const float* src = entry_grads + kGradFields * gauss_entries[e];
#pragma unroll
    for (int j = 0; j < kGradFields; ++j) sum[j] += src[j];
  }
  o.v_means2d[2 * i] = sum[0];
  o.v_means2d[2 * i + 1] = sum[1];
  for (int j = 0; j < 3; ++j) o.v_conics[3 * i + j] = sum[2 + j];
  o.v_opacities[i] = sum[5];
  for (int j = 0; j < 3; ++j) o.v_colors[3 * i + j] = sum[6 + j];
  o.v_depths[i] = sum[9];
  for (int j = 0; j < 3; ++j) o.split2d[3 * i + j] = sum[10 + j];
}

void check_gaussians_2d(const at::Tensor& means2d, const at::Tensor& conics,
                        const at::Tensor& opacities, const at::Tensor& colors,
                        const at::Tensor& depths, const at::Tensor& background) {
  for (const at::Tensor* t : {&means2d, &conics, &opacities, &colors, &depths, &background})
    SF_CHECK_INPUT(*t, at::kFloat);
  TORCH_CHECK(means2d.dim() == 3 && means2d.size(2) == 2, "means2d must be [B, N, 2]");
  const int64_t B = means2d.size(0), N = means2d.size(1);
  TORCH_CHECK(conics.sizes() == at::IntArrayRef({B, N, 3}), "conics must be [B, N, 3]");
  TORCH_CHECK(opacities.sizes() == at::IntArrayRef({B, N}), "opacities must be [B, N]");
  TORCH_CHECK(colors.sizes() == at::IntArrayRef({B, N, 3}), "colors must be [B, N, 3]");
  TORCH_CHECK(depths.sizes() == at::IntArrayRef({B, N}), "depths must be [B, N]");
  TORCH_CHECK(background.sizes() == at::IntArrayRef({B, 3}), "background must be [B, 3]");
}

TileArgs make_tile_args(const at::Tensor& means2d, const at::Tensor& conics,
                        const at::Tensor& opacities, const at::Tensor& colors,
                        const at::Tensor& depths, const at::Tensor& background,
                        const at::Tensor& tile_offsets, const at::Tensor& flat_ids,
                        int64_t width, int64_t height) {
  TileArgs a;
  a.means2d = means2d.data_ptr<float>();
  a.conics = conics.data_ptr<float>();
  a.opacities = opacities.data_ptr<float>();
  a.colors = colors.data_ptr<float>();
  a.depths = depths.data_ptr<float>();
  a.background = background.data_ptr<float>();
  a.tile_offsets = tile_offsets.data_ptr<int64_t>();
  a.flat_ids = flat_ids.data_ptr<int32_t>();
  a.N = means2d.size(1);
  a.width = (int)width;
  a.height = (int)height;
  a.tiles_x = (int)((width + kTile - 1) / kTile);
  a.tiles_per_cam = a.tiles_x * ((height + kTile - 1) / kTile);
  return a;
}

}  // namespace

RasterFwd rasterize_fwd_cuda(const at::Tensor& means2d, const at::Tensor& conics,
                             const at::Tensor& opacities, const at::Tensor& colors,
                             const at::Tensor& depths, const at::Tensor& radii,
                             const at::Tensor& background, int64_t width, int64_t height) {
  check_cuda_inputs({&conics, &opacities, &colors, &depths, &radii, &background}, means2d);
  check_gaussians_2d(means2d, conics, opacities, colors, depths, background);
  SF_CHECK_INPUT(radii, at::kInt);
  TORCH_CHECK(width >= 0 && height >= 0 && width < (1 << 30) && height < (1 << 30),
              "invalid image size");
  const int64_t B = means2d.size(0), N = means2d.size(1), BN = B * N;
  TORCH_CHECK(radii.sizes() == at::IntArrayRef({B, N, 2}), "radii must be [B, N, 2]");
  TORCH_CHECK(N <= std::numeric_limits<int32_t>::max(), "too many Gaussians");
  const c10::cuda::CUDAGuard guard(means2d.device());
  cudaStream_t stream = c10::cuda::getCurrentCUDAStream();

  const int64_t tiles_x = (width + kTile - 1) / kTile, tiles_y = (height + kTile - 1) / kTile;
  const int64_t tiles_per_cam = tiles_x * tiles_y, num_tiles = B * tiles_per_cam;
  TORCH_CHECK(num_tiles < (int64_t{1} << 31), "too many tiles");
  const auto f = means2d.options();
  const auto l = f.dtype(at::kLong);

  // Tile rectangles, counts and their exclusive scan.
  at::Tensor gauss_offsets = at::zeros({BN + 1}, l);
  at::Tensor rects;
  int64_t M = 0;
  if (BN > 0) {
    rects = at::empty({BN, 4}, f.dtype(at::kInt));
    at::Tensor counts = at::empty({BN}, l);
    count_tiles_kernel<<<num_blocks(BN, kThreads), kThreads, 0, stream>>>(
        BN, means2d.data_ptr<float>(), radii.data_ptr<int32_t>(), (int)width, (int)height,
        reinterpret_cast<int4*>(rects.data_ptr<int32_t>()), counts.data_ptr<int64_t>());
    C10_CUDA_KERNEL_LAUNCH_CHECK();
    gauss_offsets.narrow(0, 1, BN).copy_(at::cumsum(counts, 0));
    M = gauss_offsets[BN].item<int64_t>();
  }

  at::Tensor tile_offsets = at::empty({num_tiles + 1}, l);
  at::Tensor flat_ids = at::empty({M}, f.dtype(at::kInt));
  at::Tensor gauss_entries = at::empty({M}, l);
  at::Tensor sorted_keys;  // stays alive until tile_offsets are computed
  if (M > 0) {
    at::Tensor keys = at::empty({M}, l), keys_alt = at::empty({M}, l);
    at::Tensor vals = at::empty({M}, l), vals_alt = at::empty({M}, l);
    at::Tensor entry_gauss = at::empty({M}, f.dtype(at::kInt));
    uint64_t* keys_p = reinterpret_cast<uint64_t*>(keys.data_ptr<int64_t>());
    emit_entries_kernel<<<num_blocks(BN, kThreads), kThreads, 0, stream>>>(
        BN, N, reinterpret_cast<const int4*>(rects.data_ptr<int32_t>()),
        gauss_offsets.data_ptr<int64_t>(), depths.data_ptr<float>(), tiles_per_cam,
        (int)tiles_x, keys_p, vals.data_ptr<int64_t>(), entry_gauss.data_ptr<int32_t>());
    C10_CUDA_KERNEL_LAUNCH_CHECK();

    // Stable LSD radix sort on the depth bits and as many tile bits as needed.
    int tile_bits = 0;
    while ((int64_t{1} << tile_bits) < num_tiles) ++tile_bits;
    const int end_bit = 32 + tile_bits;
    cub::DoubleBuffer<uint64_t> key_buf(keys_p,
                                        reinterpret_cast<uint64_t*>(keys_alt.data_ptr<int64_t>()));
    cub::DoubleBuffer<int64_t> val_buf(vals.data_ptr<int64_t>(), vals_alt.data_ptr<int64_t>());
    size_t temp_bytes = 0;
    C10_CUDA_CHECK(cub::DeviceRadixSort::SortPairs(nullptr, temp_bytes, key_buf, val_buf, M, 0,
                                                   end_bit, stream));
    at::Tensor temp = at::empty({(int64_t)temp_bytes + 1}, f.dtype(at::kByte));
    C10_CUDA_CHECK(cub::DeviceRadixSort::SortPairs(temp.data_ptr(), temp_bytes, key_buf, val_buf,
                                                   M, 0, end_bit, stream));
    const bool keys_in_alt = key_buf.Current() != keys_p;
    sorted_keys = keys_in_alt ? keys_alt : keys;
    at::Tensor sorted_vals = val_buf.Current() == vals.data_ptr<int64_t>() ? vals : vals_alt;

    scatter_entries_kernel<<<num_blocks(M, kThreads), kThreads, 0, stream>>>(
        M, sorted_vals.data_ptr<int64_t>(), entry_gauss.data_ptr<int32_t>(),
        flat_ids.data_ptr<int32_t>(), gauss_entries.data_ptr<int64_t>());
    C10_CUDA_KERNEL_LAUNCH_CHECK();
  }
  tile_offsets_kernel<<<num_blocks(num_tiles + 1, kThreads), kThreads, 0, stream>>>(
      num_tiles, M,
      M > 0 ? reinterpret_cast<const uint64_t*>(sorted_keys.data_ptr<int64_t>()) : nullptr,
      tile_offsets.data_ptr<int64_t>());
  C10_CUDA_KERNEL_LAUNCH_CHECK();

  at::Tensor image = at::empty({B, height, width, 3}, f);
  at::Tensor depth = at::empty({B, height, width, 1}, f);
  at::Tensor alpha = at::empty({B, height, width, 1}, f);
  at::Tensor final_T = at::empty({B, height, width}, f);
  at::Tensor last = at::empty({B, height, width}, l);
  at::Tensor entry_importance = at::zeros({M}, f);
  if (num_tiles > 0) {
    const TileArgs a = make_tile_args(means2d, conics, opacities, colors, depths, background,
                                      tile_offsets, flat_ids, width, height);
    FwdOut out;
    out.image = image.data_ptr<float>();
    out.depth = depth.data_ptr<float>();
    out.alpha = alpha.data_ptr<float>();
    out.final_T = final_T.data_ptr<float>();
    out.last = last.data_ptr<int64_t>();
    out.entry_importance = entry_importance.data_ptr<float>();
    rasterize_fwd_kernel<<<(unsigned int)num_tiles, dim3(kTile, kTile), 0, stream>>>(a, out);
    C10_CUDA_KERNEL_LAUNCH_CHECK();
  }

  at::Tensor importance = at::empty({B, N}, f);
  if (BN > 0) {
    gather_importance_kernel<<<num_blocks(BN, kThreads), kThreads, 0, stream>>>(
        BN, gauss_offsets.data_ptr<int64_t>(), gauss_entries.data_ptr<int64_t>(),
        entry_importance.data_ptr<float>(), importance.data_ptr<float>());
    C10_CUDA_KERNEL_LAUNCH_CHECK();
  }
  return {image,        depth,    alpha,         final_T,       last,
          tile_offsets, flat_ids, gauss_offsets, gauss_entries, importance};
}

Tensor6 rasterize_bwd_cuda(const at::Tensor& means2d, const at::Tensor& conics,
                           const at::Tensor& opacities, const at::Tensor& colors,
                           const at::Tensor& depths, const at::Tensor& background, int64_t width,
                           int64_t height, const at::Tensor& final_T, const at::Tensor& last,
                           const at::Tensor& tile_offsets, const at::Tensor& flat_ids,
                           const at::Tensor& gauss_offsets, const at::Tensor& gauss_entries,
                           const at::Tensor& v_image, const at::Tensor& v_depth,
                           const at::Tensor& v_alpha, bool want_split2d) {
  check_cuda_inputs({&conics, &opacities, &colors, &depths, &background, &final_T, &last,
                     &tile_offsets, &flat_ids, &gauss_offsets, &gauss_entries, &v_image,
                     &v_depth, &v_alpha},
                    means2d);
  check_gaussians_2d(means2d, conics, opacities, colors, depths, background);
  for (const at::Tensor* t : {&final_T, &v_image, &v_depth, &v_alpha})
    SF_CHECK_INPUT(*t, at::kFloat);
  for (const at::Tensor* t : {&last, &tile_offsets, &gauss_offsets, &gauss_entries})
    SF_CHECK_INPUT(*t, at::kLong);
  SF_CHECK_INPUT(flat_ids, at::kInt);
  const int64_t B = means2d.size(0), N = means2d.size(1), BN = B * N;
  const int64_t pixels = B * height * width;
  TORCH_CHECK(v_image.numel() == 3 * pixels && v_depth.numel() == pixels &&
                  v_alpha.numel() == pixels,
              "image gradients must be [B, H, W, ...]");
  TORCH_CHECK(final_T.numel() == pixels && last.numel() == pixels,
              "final_T and last must be [B, H, W]");
  const int64_t tiles_x = (width + kTile - 1) / kTile, tiles_y = (height + kTile - 1) / kTile;
  const int64_t num_tiles = B * tiles_x * tiles_y;
  const int64_t M = flat_ids.numel();
  TORCH_CHECK(tile_offsets.numel() == num_tiles + 1, "tile_offsets must be [B*TY*TX + 1]");
  TORCH_CHECK(gauss_offsets.numel() == BN + 1, "gauss_offsets must be [B*N + 1]");
  TORCH_CHECK(gauss_entries.numel() == M, "gauss_entries must be [M]");
  const c10::cuda::CUDAGuard guard(means2d.device());
  cudaStream_t stream = c10::cuda::getCurrentCUDAStream();
  const auto f = means2d.options();

  at::Tensor entry_grads = at::zeros({M, kGradFields}, f);
  if (M > 0 && num_tiles > 0) {
    const TileArgs a = make_tile_args(means2d, conics, opacities, colors, depths, background,
                                      tile_offsets, flat_ids, width, height);
    BwdIn in;
    in.final_T = final_T.data_ptr<float>();
    in.last = last.data_ptr<int64_t>();
    in.v_image = v_image.data_ptr<float>();
    in.v_depth = v_depth.data_ptr<float>();
    in.v_alpha = v_alpha.data_ptr<float>();
    in.entry_grads = entry_grads.data_ptr<float>();
    in.want_split2d = want_split2d;
    rasterize_bwd_kernel<<<(unsigned int)num_tiles, dim3(kTile, kTile), 0, stream>>>(a, in);
    C10_CUDA_KERNEL_LAUNCH_CHECK();
  }

  at::Tensor v_means2d = at::empty({B, N, 2}, f), v_conics = at::empty({B, N, 3}, f);
  at::Tensor v_opac = at::empty({B, N}, f), v_colors = at::empty({B, N, 3}, f);
  at::Tensor v_depths = at::empty({B, N}, f), split2d = at::empty({B, N, 3}, f);
  if (BN > 0) {
    BwdOut o;
    o.v_means2d = v_means2d.data_ptr<float>();
    o.v_conics = v_conics.data_ptr<float>();
    o.v_opacities = v_opac.data_ptr<float>();
    o.v_colors = v_colors.data_ptr<float>();
    o.v_depths = v_depths.data_ptr<float>();
    o.split2d = split2d.data_ptr<float>();
    gather_grads_kernel<<<num_blocks(BN, kThreads), kThreads, 0, stream>>>(
        BN, gauss_offsets.data_ptr<int64_t>(), gauss_entries.data_ptr<int64_t>(),
        entry_grads.data_ptr<float>(), o);
    C10_CUDA_KERNEL_LAUNCH_CHECK();
  }
  return {v_means2d, v_conics, v_opac, v_colors, v_depths, split2d};
}

}  // namespace splatfield
