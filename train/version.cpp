#include <cstdio>

#include "core/tensor.h"
#include "train/commands.h"

namespace tstl {

int command_version(const Args&) {
  std::printf("tstl 0.1.0\nCPU backend: yes (OpenBLAS, OpenMP)\nCUDA backend: %s\n",
              !cuda_compiled() ? "not compiled" : cuda_available() ? "compiled, device present"
                                                                     : "compiled, no device present");
  return 0;
}

}  // namespace tstl
