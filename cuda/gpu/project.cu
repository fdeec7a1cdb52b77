// CUDA driver for the projection: the shared per-item bodies of kernels.h,
// one thread per (camera, Gaussian) forward and one thread per Gaussian
// backward (each thread loops over the cameras, so no atomics are needed and
// the sums run in the same order as on the CPU).


#include "launch.cuh"
#include "ops.h"
#include "splatfield/kernels.h"

namespace splatfield {
namespace {

constexpr int kThreads = 128;

__global__ void __launch_bounds__(kThreads) project_fwd_kernel(const ProjectArgs a) {
  const int64_t i = (int64_t)blockIdx.x * blockDim.x + threadIdx.x;
  if (i >= a.B * a.N) return;
  project_forward_item(a, i / a.N, i % a.N);
}

__global__ void __launch_bounds__(kThreads) project_bwd_kernel(const ProjectArgs a) {
  const int64_t n = (int64_t)blockIdx.x * blockDim.x + threadIdx.x;
  if (n >= a.N) return;
  project_backward_item(a, n);
}

}  // namespace

Tensor6 project_fwd_cuda(
    const at::Tensor& means, const at::Tensor& quats, const at::Tensor& log_scales,
    const at::Tensor& opacity_logits, const at::Tensor& sh, const at::Tensor& viewmats,
    const at::Tensor& Ks, int64_t width, int64_t height, int64_t sh_degree, double near_plane,
    double far_plane, double eps2d, bool antialiased) {
  check_cuda_inputs({&quats, &log_scales, &opacity_logits, &sh, &viewmats, &Ks}, means);
  const c10::cuda::CUDAGuard guard(means.device());
  ProjectArgs a = make_project_args(means, quats, log_scales, opacity_logits, sh, viewmats, Ks,
                                    width, height, sh_degree, near_plane, far_plane, eps2d,
                                    antialiased);
  auto outs = alloc_project_outputs(means, a.B, a.N);
  set_project_outputs(a, outs);
  const int64_t items = a.B * a.N;
  if (items > 0) {
    project_fwd_kernel<<<num_blocks(items, kThreads), kThreads, 0, c10::cuda::getCurrentCUDAStream()>>>(a);
    C10_CUDA_KERNEL_LAUNCH_CHECK();
  }
  return outs;
}

Tensor7 project_bwd_cuda(
    const at::Tensor& means, const at::Tensor& quats, const at::Tensor& log_scales,
    const at::Tensor& opacity_logits, const at::Tensor& sh, const at::Tensor& viewmats,
    const at::Tensor& Ks, int64_t width, int64_t height, int64_t sh_degree, double near_plane,
    double far_plane, double eps2d, bool antialiased, const at::Tensor& radii,
    const at::Tensor& v_means2d, const at::Tensor& v_conics, const at::Tensor& v_opacities,
    const at::Tensor& v_colors, const at::Tensor& v_depths, bool want_camera_grads) {
  check_cuda_inputs({&quats, &log_scales, &opacity_logits, &sh, &viewmats, &Ks, &radii,
                     &v_means2d, &v_conics, &v_opacities, &v_colors, &v_depths},
                    means);
  const c10::cuda::CUDAGuard guard(means.device());
  ProjectArgs a = make_project_args(means, quats, log_scales, opacity_logits, sh, viewmats, Ks,
                                    width, height, sh_degree, near_plane, far_plane, eps2d,
                                    antialiased);
  auto grads = alloc_project_grads(means, quats, log_scales, opacity_logits, sh, a.B,
                                   want_camera_grads);
  set_project_grads(a, radii, v_means2d, v_conics, v_opacities, v_colors, v_depths, grads);
  if (a.N > 0) {
    project_bwd_kernel<<<num_blocks(a.N, kThreads), kThreads, 0, c10::cuda::getCurrentCUDAStream()>>>(a);
    C10_CUDA_KERNEL_LAUNCH_CHECK();
  }
  return finish_project_grads(grads, a.B);
}

}  // namespace splatfield
