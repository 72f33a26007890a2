#include "common/logging.h"

#include <spdlog/sinks/stdout_color_sinks.h>
#include <spdlog/spdlog.h>

#include <string>

#include "common/error.h"

namespace tandem {

void init_logging(std::string_view level) {
  auto logger = spdlog::stderr_color_mt("tandem");
  logger->set_pattern("%Y-%m-%dT%H:%M:%S.%e %^%l%$ %v");
  auto parsed = spdlog::level::from_str(std::string(level));
  if (parsed == spdlog::level::off && level != "off") {
    throw Error("--log-level: unknown level '" + std::string(level) +
                "' (use trace, debug, info, warn, error or off)");
  }
  logger->set_level(parsed);
  spdlog::set_default_logger(logger);
}

}  // namespace tandem
