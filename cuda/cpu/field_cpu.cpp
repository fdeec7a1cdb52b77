// CPU driver of the radiance-field ops: the shared bodies of field.h over ATen's pool.
// The interpolation VJP gathers the rows a batch touched into a compact [K, C] gradient,
// rows ascending: their slots come from a sweep over the table, threads split the channels.
#include <ATen/ATen.h>

#include <algorithm>
#include <vector>

#include "ops.h"
#include "parallel.h"
#include "splatfield/kernels.h"

namespace splatfield {

at::Tensor grid_sample_fwd_cpu(const at::Tensor& index, const at::Tensor& table,
                               const at::Tensor& points, at::ArrayRef<double> lo,
                               at::ArrayRef<double> scale) {
  SF_CHECK_INPUT(table, at::kFloat);
  TORCH_CHECK(table.dim() == 2, "table must be [N, C]");
  GridSampleArgs a = make_grid_sample_args(index, table.size(0), table.size(1), points, lo, scale);
  a.table = table.data_ptr<float>();
  at::Tensor out = at::empty({a.M, a.C}, table.options());
  a.out = out.data_ptr<float>();
  cpu_parallel_for(0, a.M, 1024, [&](int64_t begin, int64_t end) {
    for (int64_t m = begin; m < end; ++m) grid_sample_forward_item(a, m);
  });
  return out;
}

Tensor2 grid_sample_bwd_cpu(const at::Tensor& index, int64_t num_rows, const at::Tensor& points,
                            const at::Tensor& v_out, at::ArrayRef<double> lo,
                            at::ArrayRef<double> scale) {
  SF_CHECK_INPUT(v_out, at::kFloat);
  TORCH_CHECK(v_out.dim() == 2 && v_out.size(0) == points.size(0), "v_out must be [M, C]");
  GridSampleArgs a = make_grid_sample_args(index, num_rows, v_out.size(1), points, lo, scale);
  const int64_t M = a.M, C = a.C;
  // corner rows of every sample, then the touched rows numbered in ascending order (a
  // sweep over the table: the gradient comes out coalesced, sorted and distinct)
  std::vector<int32_t> corner_row(8 * M, -1);
  std::vector<float> weight(8 * M, 0.f);
  std::vector<int32_t> slot_of_row(num_rows, -1);
  cpu_parallel_for(0, M, 1024, [&](int64_t begin, int64_t end) {
    for (int64_t m = begin; m < end; ++m)
      grid_corners(a.g, a.index, a.points + 3 * m, &corner_row[8 * m], &weight[8 * m]);
  });
  for (int64_t i = 0; i < 8 * M; ++i) {
    const int32_t r = corner_row[i];
    if (r < 0) continue;
    TORCH_CHECK(r < num_rows, "index holds row ", r, " of a table of ", num_rows);
    slot_of_row[r] = 0;
  }
  int64_t K = 0;
  for (int64_t r = 0; r < num_rows; ++r)
    if (slot_of_row[r] == 0) slot_of_row[r] = (int32_t)(K++) + 1;  // slot + 1
  at::Tensor rows_t = at::empty({K}, points.options().dtype(at::kLong));
  int64_t* rows = rows_t.data_ptr<int64_t>();
  for (int64_t r = 0; r < num_rows; ++r)
    if (slot_of_row[r] > 0) rows[slot_of_row[r] - 1] = r;
  at::Tensor grads = at::zeros({K, C}, v_out.options());
  float* g = grads.data_ptr<float>();
  const float* v = v_out.data_ptr<float>();
  // threads split the rows (slots): each owns whole rows of the gradient, so no races and
  // every row is fetched by one thread only
  const int64_t chunks = std::min<int64_t>(at::get_num_threads(), std::max<int64_t>(K, 1));
  cpu_parallel_for(0, chunks, 1, [&](int64_t t0, int64_t t1) {
    const int64_t s0 = K * t0 / chunks, s1 = K * t1 / chunks;
    for (int64_t i = 0; i < 8 * M; ++i) {
      const int32_t r = corner_row[i];
      if (r < 0) continue;
      const int64_t s = slot_of_row[r] - 1;
      if (s < s0 || s >= s1) continue;
      const float w = weight[i];
      const float* vm = v + (i / 8) * C;
      float* gs = g + s * C;
      for (int64_t ch = 0; ch < C; ++ch) gs[ch] += w * vm[ch];
    }
  });
  return {rows_t, grads};
}

Tensor3 march_rays_cpu(const at::Tensor& occupancy, const at::Tensor& blocks,
                       int64_t block_shift, const at::Tensor& index,
                       const at::Tensor& density, const at::Tensor& origins, const at::Tensor& dirs,
                       const at::Tensor& jitter, at::ArrayRef<double> lo,
                       at::ArrayRef<double> scale, double near, double far, double step,
                       double interval, double shift, double stop_T) {
  MarchArgs a = make_march_args(occupancy, blocks, block_shift, index, density, origins, dirs, jitter, lo, scale, near,
                                far, step, interval, shift, stop_T);
  at::Tensor counts = at::empty({a.R}, origins.options().dtype(at::kLong));
  a.counts = counts.data_ptr<int64_t>();
  cpu_parallel_for(0, a.R, 64, [&](int64_t begin, int64_t end) {
    for (int64_t r = begin; r < end; ++r) a.counts[r] = march_ray_item(a, r, false);
  });
  Tensor3 samples = alloc_march_samples(a, counts, origins);
  cpu_parallel_for(0, a.R, 64, [&](int64_t begin, int64_t end) {
    for (int64_t r = begin; r < end; ++r) march_ray_item(a, r, true);
  });
  return samples;
}

Tensor3 field_render_cpu(const at::Tensor& occupancy, const at::Tensor& blocks,
                         int64_t block_shift, const at::Tensor& index, const at::Tensor& density,
                         const at::Tensor& color, const at::Tensor& origins, const at::Tensor& dirs,
                         const at::Tensor& jitter, const at::Tensor& background,
                         at::ArrayRef<double> lo, at::ArrayRef<double> scale, double near,
                         double far, double step, double interval, double shift,
                         int64_t sh_degree) {
  FieldRenderArgs a = make_field_render_args(
      make_march_args(occupancy, blocks, block_shift, index, density, origins, dirs, jitter, lo,
                      scale, near, far, step, interval, shift, 0.0),
      color, background, sh_degree);
  Tensor3 outs = alloc_field_render_outputs(a, origins);
  cpu_parallel_for(0, a.m.R, 16, [&](int64_t begin, int64_t end) {
    for (int64_t r = begin; r < end; ++r) field_render_item(a, r);
  });
  return outs;
}

void sparse_adam_cpu(at::Tensor& param, at::Tensor& exp_avg, at::Tensor& exp_avg_sq,
                     const at::Tensor& rows, const at::Tensor& grads, const at::Tensor& lr,
                     double beta1, double beta2, double eps, double bias1, double bias2) {
  SparseAdamArgs a = make_sparse_adam_args(param, exp_avg, exp_avg_sq, rows, grads, lr, beta1,
                                           beta2, eps, bias1, bias2);
  cpu_parallel_for(0, a.K, 2048, [&](int64_t begin, int64_t end) {
    for (int64_t k = begin; k < end; ++k) sparse_adam_item(a, k);
  });
}

}  // namespace splatfield
