// Fuzz target: the safetensors header parser, on a file (a memfd) holding the input. A corrupt file
// must be refused with tandem::Error naming it; every entry accepted must lie inside the file.
#include <sys/mman.h>
#include <unistd.h>

#include <cstddef>
#include <cstdint>
#include <string>

#include "common/error.h"
#include "model/safetensors.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  int fd = memfd_create("safetensors_fuzz", MFD_CLOEXEC);
  if (fd < 0) __builtin_trap();
  if (size > 0 && write(fd, data, size) != static_cast<ssize_t>(size)) __builtin_trap();
  try {
    tandem::model::SafetensorsFile file("/proc/self/fd/" + std::to_string(fd));
    for (const auto& [name, entry] : file.entries()) {
      if (entry.data_end < entry.data_begin || entry.data_end > size) __builtin_trap();
      volatile std::byte sink{};
      if (entry.data_end > entry.data_begin) sink = file.data(entry)[entry.data_end - entry.data_begin - 1];
      (void)sink;
    }
  } catch (const tandem::Error&) {
  }
  close(fd);
  return 0;
}
