// Router thresholds while serving (see router_admin.h).
#include "frontend/router_admin.h"

#include <spdlog/spdlog.h>

#include <cstdint>

namespace tandem::frontend {

using nlohmann::json;

bool apply_threshold(RouterOptions& router, const std::string& name, const std::string& text, const char* source) {
  int* target = name == "max_local_prefill" ? &router.max_local_prefill
                : name == "max_prefill_queue" ? &router.max_prefill_queue
                                              : nullptr;
  int value = -1;
  try {
    size_t used = 0;
    value = std::stoi(text, &used);
    if (used != text.size()) value = -1;
  } catch (const std::exception&) {
    value = -1;
  }
  if (!target || value < 0) {
    spdlog::warn("event=router_config_ignored source={} name={} value=\"{}\" (a non-negative integer for "
                 "max_local_prefill or max_prefill_queue)", source, name, text);
    return false;
  }
  if (*target != value) {
    spdlog::info("event=router_config source={} name={} old={} new={} max_local_prefill={} max_prefill_queue={}", source,
                 name, *target, value, name == "max_local_prefill" ? value : router.max_local_prefill,
                 name == "max_prefill_queue" ? value : router.max_prefill_queue);
    *target = value;
  }
  return true;
}

std::optional<ApiError> check_admin(const HttpRequest& request, const std::string& admin_token) {
  if (!admin_token.empty()) {
    const std::string* auth = request.header("authorization");
    if (!auth || *auth != "Bearer " + admin_token) {
      return ApiError::unauthorized("changing the router needs Authorization: Bearer <admin token>");
    }
  } else if (!request.peer_is_loopback) {
    return ApiError::forbidden("the router is changed from localhost only (or set --admin-token)");
  }
  return std::nullopt;
}

std::optional<ApiError> parse_threshold_changes(const std::string& text, ThresholdChanges* changes) {
  json body = json::parse(text, nullptr, false);
  if (body.is_discarded() || !body.is_object()) return ApiError::bad_request("the body is not a JSON object");
  for (const char* name : {"max_local_prefill", "max_prefill_queue"}) {
    if (!body.contains(name)) continue;
    if (!body[name].is_number_integer() || body[name].get<int64_t>() < 0 || body[name].get<int64_t>() > INT32_MAX) {
      return ApiError::bad_request(std::string("'") + name + "' must be a non-negative integer", name);
    }
    changes->emplace_back(name, std::to_string(body[name].get<int64_t>()));
  }
  return std::nullopt;
}

json thresholds_json(const RouterOptions& router, const std::string& source) {
  json j = {{"max_local_prefill", router.max_local_prefill}, {"max_prefill_queue", router.max_prefill_queue}};
  if (!source.empty()) j["source"] = source;
  return j;
}

}  // namespace tandem::frontend
