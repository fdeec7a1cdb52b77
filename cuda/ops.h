// Host-side glue shared by the CPU and CUDA drivers: shape checks, output
// allocation and packing tensors into the argument structs of kernels.h.
// Everything device-specific lives in cpu/ and gpu/.
#pragma once
#include <ATen/ATen.h>

#include <tuple>

#include "splatfield/kernels.h"

namespace splatfield {

#define SF_CHECK_INPUT(x, dtype)                                                      \
  TORCH_CHECK((x).is_contiguous() && (x).scalar_type() == (dtype), #x " must be a "  \
              "contiguous " #dtype " tensor")

using Tensor7 = std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor,
                           at::Tensor>;
using Tensor6 = std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor>;
using Tensor5 = std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor>;
using Tensor3 = std::tuple<at::Tensor, at::Tensor, at::Tensor>;

inline ProjectArgs make_project_args(const at::Tensor& means, const at::Tensor& quats,
                                     const at::Tensor& log_scales,
                                     const at::Tensor& opacity_logits, const at::Tensor& sh,
                                     const at::Tensor& viewmats, const at::Tensor& Ks,
                                     int64_t width, int64_t height, int64_t sh_degree,
                                     double near_plane, double far_plane, double eps2d,
                                     bool antialiased) {
  for (const at::Tensor* t : {&means, &quats, &log_scales, &opacity_logits, &sh, &viewmats, &Ks})
    SF_CHECK_INPUT(*t, at::kFloat);
  const int64_t N = means.size(0), B = viewmats.size(0);
  TORCH_CHECK(means.dim() == 2 && means.size(1) == 3, "means must be [N, 3]");
  TORCH_CHECK(quats.sizes() == at::IntArrayRef({N, 4}), "quats must be [N, 4]");
  TORCH_CHECK(log_scales.sizes() == at::IntArrayRef({N, 3}), "log_scales must be [N, 3]");
  TORCH_CHECK(opacity_logits.sizes() == at::IntArrayRef({N}), "opacity_logits must be [N]");
  TORCH_CHECK(sh.dim() == 3 && sh.size(0) == N && sh.size(2) == 3, "sh must be [N, K, 3]");
  TORCH_CHECK(sh_degree >= 0 && sh_degree <= 3, "sh_degree must be in 0..3");
  TORCH_CHECK(sh.size(1) >= (sh_degree + 1) * (sh_degree + 1), "sh has too few coefficients");
  TORCH_CHECK(viewmats.dim() == 3 && viewmats.size(1) == 4 && viewmats.size(2) == 4,
              "viewmats must be [B, 4, 4]");
  TORCH_CHECK(Ks.sizes() == at::IntArrayRef({B, 4}), "Ks must be [B, 4]");
  ProjectArgs a{};
  a.means = means.data_ptr<float>();
  a.quats = quats.data_ptr<float>();
  a.log_scales = log_scales.data_ptr<float>();
  a.opacity_logits = opacity_logits.data_ptr<float>();
  a.sh = sh.data_ptr<float>();
  a.viewmats = viewmats.data_ptr<float>();
  a.Ks = Ks.data_ptr<float>();
  a.B = B;
  a.N = N;
  a.K = sh.size(1);
  a.width = (int)width;
  a.height = (int)height;
  a.sh_degree = (int)sh_degree;
  a.near_plane = (float)near_plane;
  a.far_plane = (float)far_plane;
  a.eps2d = (float)eps2d;
  a.antialiased = antialiased;
  return a;
}

inline Tensor6 alloc_project_outputs(const at::Tensor& like, int64_t B, int64_t N) {
  auto f = like.options();
  return {at::empty({B, N, 2}, f), at::empty({B, N, 3}, f), at::empty({B, N}, f),
          at::empty({B, N, 3}, f), at::empty({B, N}, f),
          at::empty({B, N, 2}, f.dtype(at::kInt))};
}

inline void set_project_outputs(ProjectArgs& a, Tensor6& o) {
  a.means2d = std::get<0>(o).data_ptr<float>();
  a.conics = std::get<1>(o).data_ptr<float>();
  a.opacities = std::get<2>(o).data_ptr<float>();
  a.colors = std::get<3>(o).data_ptr<float>();
  a.depths = std::get<4>(o).data_ptr<float>();
  a.radii = std::get<5>(o).data_ptr<int32_t>();
}

// The Gaussians' gradients, and the per-(camera, Gaussian) camera gradients
// ([B, N, kCameraGradSize], zeroed: culled pairs add nothing) or an empty tensor.
inline Tensor6 alloc_project_grads(const at::Tensor& means, const at::Tensor& quats,
                                   const at::Tensor& log_scales,
                                   const at::Tensor& opacity_logits, const at::Tensor& sh,
                                   int64_t B, bool want_camera_grads) {
  const int64_t N = means.size(0);
  return {at::empty_like(means), at::empty_like(quats), at::empty_like(log_scales),
          at::empty_like(opacity_logits), at::empty_like(sh),
          want_camera_grads ? at::zeros({B, N, kCameraGradSize}, means.options())
                            : at::empty({0}, means.options())};
}

// The camera gradients summed over the Gaussians: v_viewmats [B, 4, 4] (the last
// row is constant) and v_Ks [B, 4] (fx fy cx cy); empty when not asked for.
inline Tensor7 finish_project_grads(Tensor6& g, int64_t B) {
  const at::Tensor& partial = std::get<5>(g);
  at::Tensor v_viewmats = at::empty({0}, partial.options()), v_Ks = v_viewmats;
  if (partial.dim() == 3) {
    const at::Tensor sum = partial.sum(1);  // [B, 16]
    v_viewmats = at::zeros({B, 4, 4}, partial.options());
    v_viewmats.narrow(1, 0, 3).narrow(2, 0, 3).copy_(sum.narrow(1, 0, 9).view({B, 3, 3}));
    v_viewmats.select(2, 3).narrow(1, 0, 3).copy_(sum.narrow(1, 9, 3));
    v_Ks = sum.narrow(1, 12, 4).contiguous();
  }
  return {std::get<0>(g), std::get<1>(g), std::get<2>(g), std::get<3>(g), std::get<4>(g),
          v_viewmats, v_Ks};
}

inline void set_project_grads(ProjectArgs& a, const at::Tensor& radii,
                              const at::Tensor& v_means2d, const at::Tensor& v_conics,
                              const at::Tensor& v_opacities, const at::Tensor& v_colors,
                              const at::Tensor& v_depths, Tensor6& g) {
  SF_CHECK_INPUT(radii, at::kInt);
  for (const at::Tensor* t : {&v_means2d, &v_conics, &v_opacities, &v_colors, &v_depths})
    SF_CHECK_INPUT(*t, at::kFloat);
  TORCH_CHECK(radii.numel() == a.B * a.N * 2 && v_means2d.numel() == a.B * a.N * 2 &&
                  v_conics.numel() == a.B * a.N * 3 && v_opacities.numel() == a.B * a.N &&
                  v_colors.numel() == a.B * a.N * 3 && v_depths.numel() == a.B * a.N,
              "projection gradients must be [B, N, ...]");
  a.radii = const_cast<int32_t*>(radii.data_ptr<int32_t>());
  a.v_means2d = v_means2d.data_ptr<float>();
  a.v_conics = v_conics.data_ptr<float>();
  a.v_opacities = v_opacities.data_ptr<float>();
  a.v_colors = v_colors.data_ptr<float>();
  a.v_depths = v_depths.data_ptr<float>();
  a.v_means = std::get<0>(g).data_ptr<float>();
  a.v_quats = std::get<1>(g).data_ptr<float>();
  a.v_log_scales = std::get<2>(g).data_ptr<float>();
  a.v_opacity_logits = std::get<3>(g).data_ptr<float>();
  a.v_sh = std::get<4>(g).data_ptr<float>();
  a.v_cameras = std::get<5>(g).dim() == 3 ? std::get<5>(g).data_ptr<float>() : nullptr;
}

inline CompositeArgs make_composite_args(const at::Tensor& offsets, const at::Tensor& alphas,
                                         const at::Tensor& colors, const at::Tensor& ts,
                                         const at::Tensor& background) {
  SF_CHECK_INPUT(offsets, at::kLong);
  for (const at::Tensor* t : {&alphas, &colors, &ts, &background}) SF_CHECK_INPUT(*t, at::kFloat);
  const int64_t M = alphas.size(0), R = offsets.size(0) - 1;
  TORCH_CHECK(offsets.dim() == 1 && R >= 0, "offsets must be [R + 1]");
  TORCH_CHECK(alphas.dim() == 1 && colors.sizes() == at::IntArrayRef({M, 3}) &&
                  ts.sizes() == at::IntArrayRef({M}),
              "samples must be alphas [M], colors [M, 3], ts [M]");
  TORCH_CHECK(background.sizes() == at::IntArrayRef({R, 3}), "background must be [R, 3]");
  CompositeArgs a{};
  a.offsets = offsets.data_ptr<int64_t>();
  a.alphas = alphas.data_ptr<float>();
  a.colors = colors.data_ptr<float>();
  a.ts = ts.data_ptr<float>();
  a.background = background.data_ptr<float>();
  a.R = R;
  return a;
}

inline Tensor5 alloc_composite_outputs(const at::Tensor& like, int64_t R) {
  auto f = like.options();
  return {at::empty({R, 3}, f), at::empty({R}, f), at::empty({R}, f), at::empty({R}, f),
          at::empty({R}, f.dtype(at::kLong))};
}

inline void set_composite_outputs(CompositeArgs& a, Tensor5& o) {
  a.out_rgb = std::get<0>(o).data_ptr<float>();
  a.out_depth = std::get<1>(o).data_ptr<float>();
  a.out_alpha = std::get<2>(o).data_ptr<float>();
  a.final_T = std::get<3>(o).data_ptr<float>();
  a.last = std::get<4>(o).data_ptr<int64_t>();
}

inline Tensor3 alloc_composite_grads(const at::Tensor& alphas, const at::Tensor& colors,
                                     const at::Tensor& ts) {
  return {at::empty_like(alphas), at::empty_like(colors), at::empty_like(ts)};
}

inline void set_composite_grads(CompositeArgs& a, const at::Tensor& final_T,
                                const at::Tensor& last, const at::Tensor& v_rgb,
                                const at::Tensor& v_depth, const at::Tensor& v_alpha,
                                Tensor3& g) {
  SF_CHECK_INPUT(final_T, at::kFloat);
  SF_CHECK_INPUT(last, at::kLong);
  for (const at::Tensor* t : {&v_rgb, &v_depth, &v_alpha}) SF_CHECK_INPUT(*t, at::kFloat);
  TORCH_CHECK(v_rgb.numel() == 3 * a.R && v_depth.numel() == a.R && v_alpha.numel() == a.R,
              "composite gradients must be [R, ...]");
  a.final_T = const_cast<float*>(final_T.data_ptr<float>());
  a.last = const_cast<int64_t*>(last.data_ptr<int64_t>());
  a.v_rgb = v_rgb.data_ptr<float>();
  a.v_depth = v_depth.data_ptr<float>();
  a.v_alpha = v_alpha.data_ptr<float>();
  a.v_alphas = std::get<0>(g).data_ptr<float>();
  a.v_colors = std::get<1>(g).data_ptr<float>();
  a.v_ts = std::get<2>(g).data_ptr<float>();
}

// ---------------------------------------------------------------------------- field

inline GridGeom make_grid_geom(const at::Tensor& index, at::ArrayRef<double> lo,
                               at::ArrayRef<double> scale) {
  SF_CHECK_INPUT(index, at::kInt);
  TORCH_CHECK(index.dim() == 3 && index.size(0) >= 2 && index.size(1) >= 2 && index.size(2) >= 2,
              "index must be [X, Y, Z] with at least 2 vertices per axis");
  TORCH_CHECK(lo.size() == 3 && scale.size() == 3, "lo and scale must have 3 values");
  GridGeom g{};
  for (int a = 0; a < 3; ++a) {
    TORCH_CHECK(scale[a] > 0, "scale must be positive");
    g.lo[a] = (float)lo[a];
    g.scale[a] = (float)scale[a];
    g.res[a] = (int)index.size(a);
  }
  return g;
}

inline GridSampleArgs make_grid_sample_args(const at::Tensor& index, int64_t num_rows,
                                            int64_t channels, const at::Tensor& points,
                                            at::ArrayRef<double> lo, at::ArrayRef<double> scale) {
  SF_CHECK_INPUT(points, at::kFloat);
  TORCH_CHECK(points.dim() == 2 && points.size(1) == 3, "points must be [M, 3]");
  GridSampleArgs a{};
  a.g = make_grid_geom(index, lo, scale);
  a.index = index.data_ptr<int32_t>();
  a.points = points.data_ptr<float>();
  a.N = num_rows;
  a.C = channels;
  a.M = points.size(0);
  return a;
}

inline MarchArgs make_march_args(const at::Tensor& occupancy, const at::Tensor& blocks,
                                 int64_t block_shift, const at::Tensor& index,
                                 const at::Tensor& density, const at::Tensor& origins,
                                 const at::Tensor& dirs, const at::Tensor& jitter,
                                 at::ArrayRef<double> lo, at::ArrayRef<double> scale, double near,
                                 double far, double step, double interval, double shift,
                                 double stop_T) {
  SF_CHECK_INPUT(occupancy, at::kByte);
  for (const at::Tensor* t : {&density, &origins, &dirs, &jitter}) SF_CHECK_INPUT(*t, at::kFloat);
  MarchArgs a{};
  a.g = make_grid_geom(index, lo, scale);
  const int64_t cells = (int64_t)(a.g.res[0] - 1) * (a.g.res[1] - 1) * (a.g.res[2] - 1);
  TORCH_CHECK(occupancy.numel() == (cells + 7) / 8, "occupancy must hold one bit per cell");
  SF_CHECK_INPUT(blocks, at::kByte);
  TORCH_CHECK(block_shift >= 0 && block_shift < 16, "block_shift must be in [0, 16)");
  const int64_t nblocks = (int64_t)blocks_along(a.g, 0, (int)block_shift) *
                          blocks_along(a.g, 1, (int)block_shift) *
                          blocks_along(a.g, 2, (int)block_shift);
  TORCH_CHECK(blocks.numel() == (nblocks + 7) / 8, "blocks must hold one bit per block");
  TORCH_CHECK(density.dim() == 1, "density must be [N]");
  const int64_t R = origins.size(0);
  TORCH_CHECK(origins.dim() == 2 && origins.size(1) == 3 && dirs.sizes() == origins.sizes() &&
                  jitter.sizes() == at::IntArrayRef({R}),
              "rays must be origins [R, 3], dirs [R, 3], jitter [R]");
  TORCH_CHECK(step > 0, "step must be positive");
  a.occupancy = occupancy.data_ptr<uint8_t>();
  a.blocks = blocks.data_ptr<uint8_t>();
  a.block_shift = (int)block_shift;
  a.index = index.data_ptr<int32_t>();
  a.density = density.data_ptr<float>();
  a.origins = origins.data_ptr<float>();
  a.dirs = dirs.data_ptr<float>();
  a.jitter = jitter.data_ptr<float>();
  a.R = R;
  a.near = (float)near;
  a.far = (float)far;
  a.step = (float)step;
  a.interval = (float)interval;
  a.shift = (float)shift;
  a.stop_T = (float)stop_T;
  return a;
}

inline SparseAdamArgs make_sparse_adam_args(at::Tensor& param, at::Tensor& exp_avg,
                                            at::Tensor& exp_avg_sq, const at::Tensor& rows,
                                            const at::Tensor& grads, const at::Tensor& lr,
                                            double beta1, double beta2, double eps, double bias1,
                                            double bias2) {
  for (const at::Tensor* t : {(const at::Tensor*)&param, (const at::Tensor*)&exp_avg,
                              (const at::Tensor*)&exp_avg_sq, &grads, &lr})
    SF_CHECK_INPUT(*t, at::kFloat);
  SF_CHECK_INPUT(rows, at::kLong);
  TORCH_CHECK(param.dim() == 2 && exp_avg.sizes() == param.sizes() &&
                  exp_avg_sq.sizes() == param.sizes(),
              "param and its moments must be [N, C]");
  const int64_t C = param.size(1), K = rows.numel();
  TORCH_CHECK(grads.sizes() == at::IntArrayRef({K, C}) && lr.numel() == C,
              "grads must be [K, C] and lr [C]");
  SparseAdamArgs a{};
  a.param = param.data_ptr<float>();
  a.exp_avg = exp_avg.data_ptr<float>();
  a.exp_avg_sq = exp_avg_sq.data_ptr<float>();
  a.rows = rows.data_ptr<int64_t>();
  a.grads = grads.data_ptr<float>();
  a.lr = lr.data_ptr<float>();
  a.K = K;
  a.C = C;
  a.beta1 = (float)beta1;
  a.beta2 = (float)beta2;
  a.eps = (float)eps;
  a.bias1 = (float)bias1;
  a.bias2 = (float)bias2;
  return a;
}

using Tensor2 = std::tuple<at::Tensor, at::Tensor>;

// After the marcher's counting pass: offsets [R + 1] from the per-ray counts, and the
// samples' buffers ts [M] and positions [M, 3] for its storing pass, set in `a`.
inline Tensor3 alloc_march_samples(MarchArgs& a, const at::Tensor& counts, const at::Tensor& like) {
  at::Tensor offsets = at::zeros({a.R + 1}, counts.options());
  if (a.R > 0) offsets.slice(0, 1).copy_(at::cumsum(counts, 0));
  const int64_t M = offsets[a.R].item<int64_t>();
  Tensor3 o = {offsets, at::empty({M}, like.options()), at::empty({M, 3}, like.options())};
  a.offsets = offsets.data_ptr<int64_t>();
  a.ts = std::get<1>(o).data_ptr<float>();
  a.positions = std::get<2>(o).data_ptr<float>();
  return o;
}

inline FieldRenderArgs make_field_render_args(MarchArgs m, const at::Tensor& color,
                                              const at::Tensor& background, int64_t sh_degree) {
  SF_CHECK_INPUT(color, at::kFloat);
  SF_CHECK_INPUT(background, at::kFloat);
  TORCH_CHECK(sh_degree >= 0 && sh_degree <= 3, "sh_degree must be in 0..3");
  TORCH_CHECK(color.dim() == 2 && color.size(1) >= 3 * (sh_degree + 1) * (sh_degree + 1),
              "color must be [N, 3 K] with K >= (sh_degree + 1)^2");
  TORCH_CHECK(background.sizes() == at::IntArrayRef({m.R, 3}), "background must be [R, 3]");
  FieldRenderArgs a{};
  a.m = m;
  a.color = color.data_ptr<float>();
  a.C = color.size(1);
  a.sh_degree = (int)sh_degree;
  a.background = background.data_ptr<float>();
  return a;
}

inline Tensor3 alloc_field_render_outputs(FieldRenderArgs& a, const at::Tensor& like) {
  Tensor3 o = {at::empty({a.m.R, 3}, like.options()), at::empty({a.m.R}, like.options()),
               at::empty({a.m.R}, like.options())};
  a.out_rgb = std::get<0>(o).data_ptr<float>();
  a.out_depth = std::get<1>(o).data_ptr<float>();
  a.out_alpha = std::get<2>(o).data_ptr<float>();
  return o;
}

// Outputs of the rasterizer forward that its backward needs again.
// image [B,H,W,3], depth [B,H,W,1], alpha [B,H,W,1], final_T [B,H,W],
// last [B,H,W] (int64, one past the last flat entry composited),
// tile_offsets [B*TY*TX+1] (int64), flat_ids [M] (int32 Gaussian index),
// gauss_offsets [B*N+1] (int64), gauss_entries [M] (int64 flat position of
// each of a Gaussian's tile entries), importance [B,N].
using RasterFwd = std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor,
                             at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor>;

// The six drivers of one device (suffix cpu or cuda), declared once here and
// bound to the schemas of ops.cpp by SF_REGISTER_DRIVERS.
#define SF_DECLARE_DRIVERS(dev)                                                                  \
  Tensor6 project_fwd_##dev(const at::Tensor& means, const at::Tensor& quats,                   \
                            const at::Tensor& log_scales, const at::Tensor& opacity_logits,     \
                            const at::Tensor& sh, const at::Tensor& viewmats,                   \
                            const at::Tensor& Ks, int64_t width, int64_t height,                \
                            int64_t sh_degree, double near_plane, double far_plane,             \
                            double eps2d, bool antialiased);                                    \
  Tensor7 project_bwd_##dev(                                                                     \
      const at::Tensor& means, const at::Tensor& quats, const at::Tensor& log_scales,           \
      const at::Tensor& opacity_logits, const at::Tensor& sh, const at::Tensor& viewmats,       \
      const at::Tensor& Ks, int64_t width, int64_t height, int64_t sh_degree, double near_plane, \
      double far_plane, double eps2d, bool antialiased, const at::Tensor& radii,                \
      const at::Tensor& v_means2d, const at::Tensor& v_conics, const at::Tensor& v_opacities,   \
      const at::Tensor& v_colors, const at::Tensor& v_depths, bool want_camera_grads);          \
  RasterFwd rasterize_fwd_##dev(const at::Tensor& means2d, const at::Tensor& conics,            \
                                const at::Tensor& opacities, const at::Tensor& colors,          \
                                const at::Tensor& depths, const at::Tensor& radii,              \
                                const at::Tensor& background, int64_t width, int64_t height);   \
  Tensor6 rasterize_bwd_##dev(                                                                   \
      const at::Tensor& means2d, const at::Tensor& conics, const at::Tensor& opacities,         \
      const at::Tensor& colors, const at::Tensor& depths, const at::Tensor& background,         \
      int64_t width, int64_t height, const at::Tensor& final_T, const at::Tensor& last,         \
      const at::Tensor& tile_offsets, const at::Tensor& flat_ids,                               \
      const at::Tensor& gauss_offsets, const at::Tensor& gauss_entries,                         \
      const at::Tensor& v_image, const at::Tensor& v_depth, const at::Tensor& v_alpha,          \
      bool want_split2d);                                                                        \
  Tensor5 composite_fwd_##dev(const at::Tensor& offsets, const at::Tensor& alphas,              \
                              const at::Tensor& colors, const at::Tensor& ts,                   \
                              const at::Tensor& background);                                    \
  Tensor3 composite_bwd_##dev(const at::Tensor& offsets, const at::Tensor& alphas,              \
                              const at::Tensor& colors, const at::Tensor& ts,                   \
                              const at::Tensor& background, const at::Tensor& final_T,          \
                              const at::Tensor& last, const at::Tensor& v_rgb,                  \
                              const at::Tensor& v_depth, const at::Tensor& v_alpha);          \
  at::Tensor grid_sample_fwd_##dev(const at::Tensor& index, const at::Tensor& table,            \
                                   const at::Tensor& points, at::ArrayRef<double> lo,           \
                                   at::ArrayRef<double> scale);                                 \
  Tensor2 grid_sample_bwd_##dev(const at::Tensor& index, int64_t num_rows,                       \
                                const at::Tensor& points, const at::Tensor& v_out,               \
                                at::ArrayRef<double> lo, at::ArrayRef<double> scale);           \
  Tensor3 march_rays_##dev(const at::Tensor& occupancy, const at::Tensor& blocks,                \
                           int64_t block_shift, const at::Tensor& index,                        \
                           const at::Tensor& density, const at::Tensor& origins,                \
                           const at::Tensor& dirs, const at::Tensor& jitter,                    \
                           at::ArrayRef<double> lo, at::ArrayRef<double> scale, double near,    \
                           double far, double step, double interval, double shift,              \
                           double stop_T);                                                      \
  Tensor3 field_render_##dev(const at::Tensor& occupancy, const at::Tensor& blocks,               \
                            int64_t block_shift, const at::Tensor& index,                       \
                            const at::Tensor& density, const at::Tensor& color,                 \
                            const at::Tensor& origins, const at::Tensor& dirs,                  \
                            const at::Tensor& jitter, const at::Tensor& background,             \
                            at::ArrayRef<double> lo, at::ArrayRef<double> scale, double near,   \
                            double far, double step, double interval, double shift,             \
                            int64_t sh_degree);                                                 \
  void sparse_adam_##dev(at::Tensor& param, at::Tensor& exp_avg, at::Tensor& exp_avg_sq,        \
                         const at::Tensor& rows, const at::Tensor& grads, const at::Tensor& lr, \
                         double beta1, double beta2, double eps, double bias1, double bias2);

#define SF_REGISTER_DRIVERS(m, dev)                                   \
  m.impl("project_fwd", &splatfield::project_fwd_##dev);              \
  m.impl("project_bwd", &splatfield::project_bwd_##dev);              \
  m.impl("rasterize_fwd", &splatfield::rasterize_fwd_##dev);          \
  m.impl("rasterize_bwd", &splatfield::rasterize_bwd_##dev);          \
  m.impl("composite_fwd", &splatfield::composite_fwd_##dev);          \
  m.impl("composite_bwd", &splatfield::composite_bwd_##dev);         \
  m.impl("grid_sample_fwd", &splatfield::grid_sample_fwd_##dev);     \
  m.impl("grid_sample_bwd", &splatfield::grid_sample_bwd_##dev);     \
  m.impl("march_rays", &splatfield::march_rays_##dev);               \
  m.impl("field_render", &splatfield::field_render_##dev);           \
  m.impl("sparse_adam_", &splatfield::sparse_adam_##dev)

SF_DECLARE_DRIVERS(cpu)

}  // namespace splatfield
