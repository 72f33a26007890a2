// Logging: spdlog, one line per event with key=value fields (STYLE.md "Logs and metrics").
// Library code logs through spdlog's default logger; init_logging() configures it once per process.
#pragma once

#include <string_view>

namespace tandem {

// level: trace|debug|info|warn|error|off. Logs go to stderr so stdout stays for command output.
void init_logging(std::string_view level);

}  // namespace tandem
