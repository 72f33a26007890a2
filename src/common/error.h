// Startup and configuration errors: thrown with a message a user can act on (which file, which flag,
// which tensor), caught once in main and printed without noise (STYLE.md "Errors").
#pragma once

#include <stdexcept>
#include <string>

#include "common/status.h"

namespace tandem {

class Error : public std::runtime_error {
 public:
  explicit Error(const std::string& message) : std::runtime_error(message) {}
};

// Throws Error(status.message()) when status is not OK; for startup code that consumes Status APIs.
inline void throw_if_error(const Status& status) {
  if (!status.ok()) throw Error(status.message());
}

}  // namespace tandem

// An invariant of our own code (never user input): stays on in release builds, cheap checks only.
#define TANDEM_CHECK(cond)                                                                  \
  do {                                                                                      \
    if (!(cond)) ::tandem::detail::check_failed(#cond, __FILE__, __LINE__);                 \
  } while (0)

namespace tandem::detail {
[[noreturn]] void check_failed(const char* condition, const char* file, int line);
}
