// Registers the CUDA drivers of gpu/ for the schemas defined in ops.cpp.
// This is the only TORCH_LIBRARY_IMPL(splatfield, CUDA, ...) block.
#include <torch/library.h>

#include "ops.h"

namespace splatfield {
SF_DECLARE_DRIVERS(cuda)
}  // namespace splatfield

TORCH_LIBRARY_IMPL(splatfield, CUDA, m) { SF_REGISTER_DRIVERS(m, cuda); }
