#include <cstdio>
#include <cstdlib>

#include "common/error.h"

namespace tandem::detail {

void check_failed(const char* condition, const char* file, int line) {
  std::fprintf(stderr, "tandem: internal check failed: %s at %s:%d\n", condition, file, line);
  std::abort();
}

}  // namespace tandem::detail
