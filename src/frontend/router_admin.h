// The router thresholds while serving (--max-local-prefill, --max-prefill-queue): the admin
// endpoint's checks and body (GET/POST /v1/tandem/router), and applying a threshold from it or from
// the registry (etcd's disagg/ keys). Thread-safety: free functions over values.
#pragma once

#include <nlohmann/json.hpp>

#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "frontend/http.h"
#include "frontend/openai.h"
#include "frontend/router.h"

namespace tandem::frontend {

// Sets one threshold by name ("max_local_prefill", "max_prefill_queue") from text; logs
// event=router_config when it changes and event=router_config_ignored (returning false) for an
// unknown name or a value that is not a non-negative integer. `source`: "admin", "etcd".
bool apply_threshold(RouterOptions& router, const std::string& name, const std::string& text, const char* source);

// Who may change the thresholds: with an admin token, a request carrying "Authorization: Bearer
// <token>"; without one, loopback clients only. nullopt when allowed.
std::optional<ApiError> check_admin(const HttpRequest& request, const std::string& admin_token);

// The thresholds a POST body changes, or the error (400) naming the bad one.
std::optional<ApiError> parse_threshold_changes(const std::string& body, ThresholdChanges* changes);

// The GET body: both thresholds, and `source` (where they are shared) when not empty.
nlohmann::json thresholds_json(const RouterOptions& router, const std::string& source);

}  // namespace tandem::frontend
