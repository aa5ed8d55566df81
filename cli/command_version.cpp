#include <cstdio>

#include "core/cuda_backend.h"
#include "core/tensor.h"
#include "cli/commands.h"

namespace tstl {

int command_version(const Args&) {
  std::printf("tstl 0.1.0\nCPU backend: yes (OpenBLAS, OpenMP)\nCUDA backend: %s\n",
              !cuda_compiled() ? "not compiled" : cuda_available() ? "compiled, device present"
                                                                     : "compiled, no device present");
  if (cuda_compiled()) std::printf("CUDA libraries: %s\n", cuda::library_versions().c_str());
  return 0;
}

}  // namespace tstl
