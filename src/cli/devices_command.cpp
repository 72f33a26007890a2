// `tandem devices`: what this build can run on (CPU cores; CUDA devices when built with CUDA).
#include <omp.h>

#include <cstdio>

#include "cli/commands.h"
#ifdef TANDEM_HAVE_CUDA
#include "backend/cuda/toolchain_probe.h"
#endif

namespace tandem::cli {

Runner add_devices_command(CLI::App& app) {
  app.add_subcommand("devices", "List the devices this build can use");
  return []() {
    std::printf("cpu: %d threads\n", omp_get_max_threads());
#ifdef TANDEM_HAVE_CUDA
    std::printf("cuda: %s\n", backend::cuda::probe_cuda().c_str());
#else
    std::printf("cuda: not built (configure with nvcc available and -DTANDEM_CUDA=ON)\n");
#endif
    return 0;
  };
}

}  // namespace tandem::cli
