// Registers the CUDA drivers of gpu/ for the schemas defined in ops.cpp.
// This is the only TORCH_LIBRARY_IMPL(splatfield, CUDA, ...) block.
#include <torch/library.h>

#include "ops.h"

namespace splatfield {

// gpu/project.cu
Tensor6 project_fwd_cuda(const at::Tensor&, const at::Tensor&, const at::Tensor&,
                         const at::Tensor&, const at::Tensor&, const at::Tensor&,
                         const at::Tensor&, int64_t, int64_t, int64_t, double, double, double,
                         bool);
Tensor5 project_bwd_cuda(const at::Tensor&, const at::Tensor&, const at::Tensor&,
                         const at::Tensor&, const at::Tensor&, const at::Tensor&,
                         const at::Tensor&, int64_t, int64_t, int64_t, double, double, double,
                         bool, const at::Tensor&, const at::Tensor&, const at::Tensor&,
                         const at::Tensor&, const at::Tensor&, const at::Tensor&);
// gpu/rasterize.cu
RasterFwd rasterize_fwd_cuda(const at::Tensor& means2d, const at::Tensor& conics,
                             const at::Tensor& opacities, const at::Tensor& colors,
                             const at::Tensor& depths, const at::Tensor& radii,
                             const at::Tensor& background, int64_t width, int64_t height);
Tensor6 rasterize_bwd_cuda(const at::Tensor& means2d, const at::Tensor& conics,
                           const at::Tensor& opacities, const at::Tensor& colors,
                           const at::Tensor& depths, const at::Tensor& background, int64_t width,
                           int64_t height, const at::Tensor& final_T, const at::Tensor& last,
                           const at::Tensor& tile_offsets, const at::Tensor& flat_ids,
                           const at::Tensor& gauss_offsets, const at::Tensor& gauss_entries,
                           const at::Tensor& v_image, const at::Tensor& v_depth,
                           const at::Tensor& v_alpha, bool want_split2d);
// gpu/composite.cu
Tensor5 composite_fwd_cuda(const at::Tensor&, const at::Tensor&, const at::Tensor&,
                           const at::Tensor&, const at::Tensor&);
Tensor3 composite_bwd_cuda(const at::Tensor&, const at::Tensor&, const at::Tensor&,
                           const at::Tensor&, const at::Tensor&, const at::Tensor&,
                           const at::Tensor&, const at::Tensor&, const at::Tensor&,
                           const at::Tensor&);

}  // namespace splatfield

TORCH_LIBRARY_IMPL(splatfield, CUDA, m) {
  m.impl("project_fwd", &splatfield::project_fwd_cuda);
  m.impl("project_bwd", &splatfield::project_bwd_cuda);
  m.impl("rasterize_fwd", &splatfield::rasterize_fwd_cuda);
  m.impl("rasterize_bwd", &splatfield::rasterize_bwd_cuda);
  m.impl("composite_fwd", &splatfield::composite_fwd_cuda);
  m.impl("composite_bwd", &splatfield::composite_bwd_cuda);
}
