// Choosing the worker directory by registry mode, and what /health and /v1/models read from any
// directory (see worker_directory.h).
#include "frontend/worker_directory.h"

#include <algorithm>
#include <set>

#include "common/error.h"
#include "frontend/etcd_directory.h"

namespace tandem::frontend {

std::unique_ptr<WorkerDirectory> make_worker_directory(const DirectoryOptions& options, std::shared_ptr<PostGate> gate) {
  auto registry = net::Listener::bind(options.registry_host, options.registry_port);
  if (!registry.ok()) throw Error("--registry-port: " + registry.status().message());
  std::unique_ptr<PrefillQueueDepth> queue;
  if (!options.prefill_queue.empty()) {
    cluster::PrefillQueueOptions q;
    q.url = options.prefill_queue;
    q.cluster_namespace = options.cluster_namespace;
    auto connected = cluster::PrefillQueue::connect(q);
    if (!connected.ok()) throw Error("--prefill-queue: " + connected.status().message());
    queue = std::make_unique<PrefillQueueDepth>(std::move(*connected), gate);
  }
  if (options.etcd.empty()) {
    return std::make_unique<EmbeddedDirectory>(options, std::move(gate), std::move(*registry), std::move(queue));
  }
  return std::make_unique<EtcdDirectory>(options, std::move(gate), std::move(*registry), std::move(queue));
}

std::vector<std::string> served_models(const WorkerDirectory& directory,
                                       const std::vector<std::string>& served_model_name) {
  if (!served_model_name.empty()) {
    // In the order given (the first is the default), without repeats.
    std::vector<std::string> names;
    for (const auto& n : served_model_name) {
      if (std::find(names.begin(), names.end(), n) == names.end()) names.push_back(n);
    }
    return names;
  }
  std::set<std::string> names;
  directory.for_each_worker([&](const WorkerView& w) {
    if (!w.routable || !w.can_decode()) return;
    names.insert(w.info->model());
    names.insert(w.info->model_aliases().begin(), w.info->model_aliases().end());
  });
  return {names.begin(), names.end()};
}

bool serves_model(const rpc::pb::Register& worker, const std::string& model) {
  return worker.model() == model ||
         std::find(worker.model_aliases().begin(), worker.model_aliases().end(), model) != worker.model_aliases().end();
}

bool any_decode_worker(const WorkerDirectory& directory) {
  bool any = false;
  directory.for_each_worker([&](const WorkerView& w) { any = any || (w.routable && w.can_decode()); });
  return any;
}

const char* role_label(rpc::pb::Role role) {
  switch (role) {
    case rpc::pb::ROLE_PREFILL: return "prefill";
    case rpc::pb::ROLE_DECODE: return "decode";
    case rpc::pb::ROLE_BOTH: return "both";
    default: return "unknown";
  }
}

}  // namespace tandem::frontend
