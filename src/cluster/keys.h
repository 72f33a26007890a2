// Where cluster mode keeps its state in etcd. Every key of one cluster lives under
// /tandem/<namespace>/:
//   workers/<role>/<worker id>   a worker's record (JSON), under the worker's lease
//   kv/<worker id>               a decode worker's KV descriptor, under the same lease
//   disagg/<threshold name>      the frontends' conditional-disaggregation thresholds
// Frontends and workers both build keys from here, so the two sides cannot drift apart.
#pragma once

#include <string>

namespace tandem::cluster {

inline std::string key_prefix(const std::string& cluster_namespace) { return "/tandem/" + cluster_namespace + "/"; }

}  // namespace tandem::cluster
