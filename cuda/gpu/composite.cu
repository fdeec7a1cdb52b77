// CUDA driver for the compositing of packed ray samples: one thread per ray
// running the shared bodies of kernels.h (front to back forward, back to front
// VJP), exactly as the CPU driver does per ray.


#include "launch.cuh"
#include "ops.h"
#include "splatfield/kernels.h"

namespace splatfield {
namespace {

constexpr int kThreads = 128;

__global__ void __launch_bounds__(kThreads) composite_fwd_kernel(const CompositeArgs a) {
  const int64_t r = (int64_t)blockIdx.x * blockDim.x + threadIdx.x;
  if (r >= a.R) return;
  composite_forward_item(a, r);
}

__global__ void __launch_bounds__(kThreads) composite_bwd_kernel(const CompositeArgs a) {
  const int64_t r = (int64_t)blockIdx.x * blockDim.x + threadIdx.x;
  if (r >= a.R) return;
  composite_backward_item(a, r);
}

}  // namespace

Tensor5 composite_fwd_cuda(const at::Tensor& offsets, const at::Tensor& alphas,
                           const at::Tensor& colors, const at::Tensor& ts,
                           const at::Tensor& background) {
  check_cuda_inputs({&offsets, &colors, &ts, &background}, alphas);
  const c10::cuda::CUDAGuard guard(alphas.device());
  CompositeArgs a = make_composite_args(offsets, alphas, colors, ts, background);
  auto outs = alloc_composite_outputs(alphas, a.R);
  set_composite_outputs(a, outs);
  if (a.R > 0) {
    composite_fwd_kernel<<<num_blocks(a.R, kThreads), kThreads, 0, c10::cuda::getCurrentCUDAStream()>>>(
        a);
    C10_CUDA_KERNEL_LAUNCH_CHECK();
  }
  return outs;
}

Tensor3 composite_bwd_cuda(const at::Tensor& offsets, const at::Tensor& alphas,
                           const at::Tensor& colors, const at::Tensor& ts,
                           const at::Tensor& background, const at::Tensor& final_T,
                           const at::Tensor& last, const at::Tensor& v_rgb,
                           const at::Tensor& v_depth, const at::Tensor& v_alpha) {
  check_cuda_inputs({&offsets, &colors, &ts, &background, &final_T, &last, &v_rgb, &v_depth,
                     &v_alpha},
                    alphas);
  const c10::cuda::CUDAGuard guard(alphas.device());
  CompositeArgs a = make_composite_args(offsets, alphas, colors, ts, background);
  auto grads = alloc_composite_grads(alphas, colors, ts);
  set_composite_grads(a, final_T, last, v_rgb, v_depth, v_alpha, grads);
  TORCH_CHECK(final_T.numel() == a.R && last.numel() == a.R, "final_T and last must be [R]");
  if (a.R > 0) {
    composite_bwd_kernel<<<num_blocks(a.R, kThreads), kThreads, 0, c10::cuda::getCurrentCUDAStream()>>>(
        a);
    C10_CUDA_KERNEL_LAUNCH_CHECK();
  }
  return grads;
}

}  // namespace splatfield
