// Launch helpers shared by the CUDA drivers of gpu/.
#pragma once
#include <ATen/ATen.h>
#include <c10/cuda/CUDAException.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>

#include <initializer_list>

namespace splatfield {

// Every tensor of an op on the CUDA device of `ref`.
inline void check_cuda_inputs(std::initializer_list<const at::Tensor*> ts, const at::Tensor& ref) {
  TORCH_CHECK(ref.is_cuda(), "splatfield CUDA op called with a non-CUDA tensor");
  for (const at::Tensor* t : ts)
    TORCH_CHECK(t->is_cuda() && t->device() == ref.device(),
                "all tensors must be on the same CUDA device as ", ref.device(), ", got ",
                t->device());
}

// Blocks of `threads` covering n items.
inline unsigned int num_blocks(int64_t n, int threads) {
  return (unsigned int)((n + threads - 1) / threads);
}

}  // namespace splatfield
