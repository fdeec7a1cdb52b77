// Operator schemas of the splatfield library and their CPU implementations.
// The CUDA implementations register themselves from gpu/ when that is built.
// Autograd is attached in Python (splatfield.render._autograd).
#include <torch/library.h>

#include "ops.h"
#include "cpu/parallel.h"

namespace {
// Sets flush-to-zero / denormals-are-zero on the calling thread and on every thread of
// ATen's pool (each runs one chunk), so torch's own CPU ops (e.g. Adam) skip denormals too.
bool set_flush_denormals(bool enable) {
#ifdef SF_HAVE_MXCSR
  const auto apply = [enable] {
    const unsigned csr = _mm_getcsr();
    _mm_setcsr(enable ? (csr | 0x8040u) : (csr & ~0x8040u));
  };
  apply();
  at::parallel_for(0, at::get_num_threads(), 1, [&](int64_t, int64_t) { apply(); });
  return true;
#else
  (void)enable;
  return false;
#endif
}
}  // namespace

TORCH_LIBRARY(splatfield, m) {
  m.def("set_flush_denormals(bool enable) -> bool", &set_flush_denormals);
  m.def(
      "project_fwd(Tensor means, Tensor quats, Tensor log_scales, Tensor opacity_logits, "
      "Tensor sh, Tensor viewmats, Tensor Ks, int width, int height, int sh_degree, "
      "float near_plane, float far_plane, float eps2d, bool antialiased) -> "
      "(Tensor, Tensor, Tensor, Tensor, Tensor, Tensor)");
  m.def(
      "project_bwd(Tensor means, Tensor quats, Tensor log_scales, Tensor opacity_logits, "
      "Tensor sh, Tensor viewmats, Tensor Ks, int width, int height, int sh_degree, "
      "float near_plane, float far_plane, float eps2d, bool antialiased, Tensor radii, "
      "Tensor v_means2d, Tensor v_conics, Tensor v_opacities, Tensor v_colors, "
      "Tensor v_depths, bool want_camera_grads) -> "
      "(Tensor, Tensor, Tensor, Tensor, Tensor, Tensor, Tensor)");
  m.def(
      "rasterize_fwd(Tensor means2d, Tensor conics, Tensor opacities, Tensor colors, "
      "Tensor depths, Tensor radii, Tensor background, int width, int height) -> "
      "(Tensor, Tensor, Tensor, Tensor, Tensor, Tensor, Tensor, Tensor, Tensor, Tensor)");
  m.def(
      "rasterize_bwd(Tensor means2d, Tensor conics, Tensor opacities, Tensor colors, "
      "Tensor depths, Tensor background, int width, int height, Tensor final_T, Tensor last, "
      "Tensor tile_offsets, Tensor flat_ids, Tensor gauss_offsets, Tensor gauss_entries, "
      "Tensor v_image, Tensor v_depth, Tensor v_alpha, bool want_split2d) -> "
      "(Tensor, Tensor, Tensor, Tensor, Tensor, Tensor)");
  m.def(
      "composite_fwd(Tensor offsets, Tensor alphas, Tensor colors, Tensor ts, "
      "Tensor background) -> (Tensor, Tensor, Tensor, Tensor, Tensor)");
  m.def(
      "composite_bwd(Tensor offsets, Tensor alphas, Tensor colors, Tensor ts, "
      "Tensor background, Tensor final_T, Tensor last, Tensor v_rgb, Tensor v_depth, "
      "Tensor v_alpha) -> (Tensor, Tensor, Tensor)");
  m.def(
      "grid_sample_fwd(Tensor index, Tensor table, Tensor points, float[] lo, float[] scale) "
      "-> Tensor");
  m.def(
      "grid_sample_bwd(Tensor index, int num_rows, Tensor points, Tensor v_out, float[] lo, "
      "float[] scale) -> (Tensor, Tensor)");
  m.def(
      "march_rays(Tensor occupancy, Tensor blocks, int block_shift, Tensor index, "
      "Tensor density, Tensor origins, Tensor dirs, "
      "Tensor jitter, float[] lo, float[] scale, float near, float far, float step, "
      "float interval, float shift, float stop_T) -> (Tensor, Tensor, Tensor)");
  m.def(
      "field_render(Tensor occupancy, Tensor blocks, int block_shift, Tensor index, "
      "Tensor density, Tensor color, Tensor origins, Tensor dirs, Tensor jitter, "
      "Tensor background, float[] lo, float[] scale, float near, float far, float step, "
      "float interval, float shift, int sh_degree) -> (Tensor, Tensor, Tensor)");
  m.def(
      "sparse_adam_(Tensor(a!) param, Tensor(b!) exp_avg, Tensor(c!) exp_avg_sq, Tensor rows, "
      "Tensor grads, Tensor lr, float beta1, float beta2, float eps, float bias1, "
      "float bias2) -> ()");
}

TORCH_LIBRARY_IMPL(splatfield, CPU, m) { SF_REGISTER_DRIVERS(m, cpu); }
