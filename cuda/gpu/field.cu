// CUDA driver of the radiance-field ops: one thread per sample, ray or touched row running
// the shared bodies of field.h. The interpolation VJP scatters into a dense [N, C] buffer
// with atomics and marks the rows it touched; their gradients are then gathered (rows in
// ascending order, where the CPU driver keeps first-touch order: the sets are the same).
#include "launch.cuh"
#include "ops.h"
#include "splatfield/kernels.h"

namespace splatfield {
namespace {

constexpr int kThreads = 128;

__global__ void grid_sample_fwd_kernel(const GridSampleArgs a) {
  const int64_t m = (int64_t)blockIdx.x * blockDim.x + threadIdx.x;
  if (m >= a.M) return;
  grid_sample_forward_item(a, m);
}

__global__ void grid_sample_bwd_kernel(const GridSampleArgs a, float* dense, uint8_t* touched) {
  const int64_t m = (int64_t)blockIdx.x * blockDim.x + threadIdx.x;
  if (m >= a.M) return;
  int32_t rows[8];
  float w[8];
  if (!grid_corners(a.g, a.index, a.points + 3 * m, rows, w)) return;
  for (int c = 0; c < 8; ++c) {
    if (rows[c] < 0 || rows[c] >= a.N) continue;
    touched[rows[c]] = 1;
    for (int64_t ch = 0; ch < a.C; ++ch)
      atomicAdd(dense + (int64_t)rows[c] * a.C + ch, w[c] * a.v_out[m * a.C + ch]);
  }
}

__global__ void march_kernel(const MarchArgs a, bool write) {
  const int64_t r = (int64_t)blockIdx.x * blockDim.x + threadIdx.x;
  if (r >= a.R) return;
  const int64_t n = march_ray_item(a, r, write);
  if (!write) a.counts[r] = n;
}

__global__ void field_render_kernel(const FieldRenderArgs a) {
  const int64_t r = (int64_t)blockIdx.x * blockDim.x + threadIdx.x;
  if (r >= a.m.R) return;
  field_render_item(a, r);
}

__global__ void sparse_adam_kernel(const SparseAdamArgs a) {
  const int64_t k = (int64_t)blockIdx.x * blockDim.x + threadIdx.x;
  if (k >= a.K) return;
  sparse_adam_item(a, k);
}

}  // namespace

at::Tensor grid_sample_fwd_cuda(const at::Tensor& index, const at::Tensor& table,
                                const at::Tensor& points, at::ArrayRef<double> lo,
                                at::ArrayRef<double> scale) {
  check_cuda_inputs({&index, &points}, table);
  const c10::cuda::CUDAGuard guard(table.device());
  SF_CHECK_INPUT(table, at::kFloat);
  TORCH_CHECK(table.dim() == 2, "table must be [N, C]");
  GridSampleArgs a = make_grid_sample_args(index, table.size(0), table.size(1), points, lo, scale);
  a.table = table.data_ptr<float>();
  at::Tensor out = at::empty({a.M, a.C}, table.options());
  a.out = out.data_ptr<float>();
  if (a.M > 0) {
    grid_sample_fwd_kernel<<<num_blocks(a.M, kThreads), kThreads, 0,
                             c10::cuda::getCurrentCUDAStream()>>>(a);
    C10_CUDA_KERNEL_LAUNCH_CHECK();
  }
  return out;
}

Tensor2 grid_sample_bwd_cuda(const at::Tensor& index, int64_t num_rows, const at::Tensor& points,
                             const at::Tensor& v_out, at::ArrayRef<double> lo,
                             at::ArrayRef<double> scale) {
  check_cuda_inputs({&index, &points}, v_out);
  const c10::cuda::CUDAGuard guard(v_out.device());
  SF_CHECK_INPUT(v_out, at::kFloat);
  TORCH_CHECK(v_out.dim() == 2 && v_out.size(0) == points.size(0), "v_out must be [M, C]");
  GridSampleArgs a = make_grid_sample_args(index, num_rows, v_out.size(1), points, lo, scale);
  a.v_out = v_out.data_ptr<float>();
  at::Tensor dense = at::zeros({num_rows, a.C}, v_out.options());
  at::Tensor touched = at::zeros({num_rows}, v_out.options().dtype(at::kByte));
  if (a.M > 0) {
    grid_sample_bwd_kernel<<<num_blocks(a.M, kThreads), kThreads, 0,
                             c10::cuda::getCurrentCUDAStream()>>>(a, dense.data_ptr<float>(),
                                                                  touched.data_ptr<uint8_t>());
    C10_CUDA_KERNEL_LAUNCH_CHECK();
  }
  at::Tensor rows = touched.nonzero().flatten();
  return {rows, dense.index_select(0, rows)};
}

Tensor3 march_rays_cuda(const at::Tensor& occupancy, const at::Tensor& blocks,
                       int64_t block_shift, const at::Tensor& index,
                        const at::Tensor& density, const at::Tensor& origins,
                        const at::Tensor& dirs, const at::Tensor& jitter, at::ArrayRef<double> lo,
                        at::ArrayRef<double> scale, double near, double far, double step,
                        double interval, double shift, double stop_T) {
  check_cuda_inputs({&occupancy, &blocks, &index, &density, &dirs, &jitter}, origins);
  const c10::cuda::CUDAGuard guard(origins.device());
  MarchArgs a = make_march_args(occupancy, blocks, block_shift, index, density, origins, dirs, jitter, lo, scale, near,
                                far, step, interval, shift, stop_T);
  at::Tensor counts = at::zeros({a.R}, origins.options().dtype(at::kLong));
  a.counts = counts.data_ptr<int64_t>();
  const auto stream = c10::cuda::getCurrentCUDAStream();
  if (a.R > 0) {
    march_kernel<<<num_blocks(a.R, kThreads), kThreads, 0, stream>>>(a, false);
    C10_CUDA_KERNEL_LAUNCH_CHECK();
  }
  Tensor3 samples = alloc_march_samples(a, counts, origins);
  if (a.R > 0 && std::get<1>(samples).numel() > 0) {
    march_kernel<<<num_blocks(a.R, kThreads), kThreads, 0, stream>>>(a, true);
    C10_CUDA_KERNEL_LAUNCH_CHECK();
  }
  return samples;
}

Tensor3 field_render_cuda(const at::Tensor& occupancy, const at::Tensor& blocks,
                          int64_t block_shift, const at::Tensor& index, const at::Tensor& density,
                          const at::Tensor& color, const at::Tensor& origins, const at::Tensor& dirs,
                          const at::Tensor& jitter, const at::Tensor& background,
                          at::ArrayRef<double> lo, at::ArrayRef<double> scale, double near,
                          double far, double step, double interval, double shift,
                          int64_t sh_degree) {
  check_cuda_inputs({&occupancy, &blocks, &index, &density, &color, &dirs, &jitter, &background},
                    origins);
  const c10::cuda::CUDAGuard guard(origins.device());
  FieldRenderArgs a = make_field_render_args(
      make_march_args(occupancy, blocks, block_shift, index, density, origins, dirs, jitter, lo,
                      scale, near, far, step, interval, shift, 0.0),
      color, background, sh_degree);
  Tensor3 outs = alloc_field_render_outputs(a, origins);
  if (a.m.R > 0) {
    field_render_kernel<<<num_blocks(a.m.R, kThreads), kThreads, 0,
                          c10::cuda::getCurrentCUDAStream()>>>(a);
    C10_CUDA_KERNEL_LAUNCH_CHECK();
  }
  return outs;
}

void sparse_adam_cuda(at::Tensor& param, at::Tensor& exp_avg, at::Tensor& exp_avg_sq,
                      const at::Tensor& rows, const at::Tensor& grads, const at::Tensor& lr,
                      double beta1, double beta2, double eps, double bias1, double bias2) {
  check_cuda_inputs({&exp_avg, &exp_avg_sq, &rows, &grads, &lr}, param);
  const c10::cuda::CUDAGuard guard(param.device());
  SparseAdamArgs a = make_sparse_adam_args(param, exp_avg, exp_avg_sq, rows, grads, lr, beta1,
                                           beta2, eps, bias1, bias2);
  if (a.K > 0) {
    sparse_adam_kernel<<<num_blocks(a.K, kThreads), kThreads, 0,
                         c10::cuda::getCurrentCUDAStream()>>>(a);
    C10_CUDA_KERNEL_LAUNCH_CHECK();
  }
}

}  // namespace splatfield
