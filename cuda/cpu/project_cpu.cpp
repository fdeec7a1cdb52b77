// CPU driver for the projection and the ray-sample compositing: the shared
// per-item bodies of kernels.h scheduled over ATen's thread pool.
#include <ATen/ATen.h>
#include <ATen/Parallel.h>

#include "ops.h"
#include "parallel.h"
#include "splatfield/kernels.h"

namespace splatfield {

Tensor6 project_fwd_cpu(
    const at::Tensor& means, const at::Tensor& quats, const at::Tensor& log_scales,
    const at::Tensor& opacity_logits, const at::Tensor& sh, const at::Tensor& viewmats,
    const at::Tensor& Ks, int64_t width, int64_t height, int64_t sh_degree, double near_plane,
    double far_plane, double eps2d, bool antialiased) {
  ProjectArgs a = make_project_args(means, quats, log_scales, opacity_logits, sh, viewmats, Ks,
                                    width, height, sh_degree, near_plane, far_plane, eps2d,
                                    antialiased);
  auto outs = alloc_project_outputs(means, a.B, a.N);
  set_project_outputs(a, outs);
  const int64_t B = a.B, N = a.N;
  cpu_parallel_for(0, B * N, 1024, [&](int64_t begin, int64_t end) {
    for (int64_t i = begin; i < end; ++i) project_forward_item(a, i / N, i % N);
  });
  return outs;
}

Tensor7 project_bwd_cpu(
    const at::Tensor& means, const at::Tensor& quats, const at::Tensor& log_scales,
    const at::Tensor& opacity_logits, const at::Tensor& sh, const at::Tensor& viewmats,
    const at::Tensor& Ks, int64_t width, int64_t height, int64_t sh_degree, double near_plane,
    double far_plane, double eps2d, bool antialiased, const at::Tensor& radii,
    const at::Tensor& v_means2d, const at::Tensor& v_conics, const at::Tensor& v_opacities,
    const at::Tensor& v_colors, const at::Tensor& v_depths, bool want_camera_grads) {
  ProjectArgs a = make_project_args(means, quats, log_scales, opacity_logits, sh, viewmats, Ks,
                                    width, height, sh_degree, near_plane, far_plane, eps2d,
                                    antialiased);
  auto grads = alloc_project_grads(means, quats, log_scales, opacity_logits, sh, a.B,
                                   want_camera_grads);
  set_project_grads(a, radii, v_means2d, v_conics, v_opacities, v_colors, v_depths, grads);
  cpu_parallel_for(0, a.N, 512, [&](int64_t begin, int64_t end) {
    for (int64_t n = begin; n < end; ++n) project_backward_item(a, n);
  });
  return finish_project_grads(grads, a.B);
}

Tensor5 composite_fwd_cpu(
    const at::Tensor& offsets, const at::Tensor& alphas, const at::Tensor& colors,
    const at::Tensor& ts, const at::Tensor& background) {
  CompositeArgs a = make_composite_args(offsets, alphas, colors, ts, background);
  auto outs = alloc_composite_outputs(alphas, a.R);
  set_composite_outputs(a, outs);
  cpu_parallel_for(0, a.R, 256, [&](int64_t begin, int64_t end) {
    for (int64_t r = begin; r < end; ++r) composite_forward_item(a, r);
  });
  return outs;
}

Tensor3 composite_bwd_cpu(
    const at::Tensor& offsets, const at::Tensor& alphas, const at::Tensor& colors,
    const at::Tensor& ts, const at::Tensor& background, const at::Tensor& final_T,
    const at::Tensor& last, const at::Tensor& v_rgb, const at::Tensor& v_depth,
    const at::Tensor& v_alpha) {
  CompositeArgs a = make_composite_args(offsets, alphas, colors, ts, background);
  auto grads = alloc_composite_grads(alphas, colors, ts);
  set_composite_grads(a, final_T, last, v_rgb, v_depth, v_alpha, grads);
  cpu_parallel_for(0, a.R, 256, [&](int64_t begin, int64_t end) {
    for (int64_t r = begin; r < end; ++r) composite_backward_item(a, r);
  });
  return grads;
}

}  // namespace splatfield
