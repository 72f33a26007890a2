// The cluster-security flags (see cluster_flags.h).
#include "cli/cluster_flags.h"

#include <spdlog/spdlog.h>

#include "common/error.h"
#include "security/cluster_auth.h"

namespace tandem::cli {

void add_cluster_flags(CLI::App* cmd, ClusterFlags* flags) {
  cmd->add_option("--cluster-key-file", flags->key_file,
                  "File holding the cluster's shared secret: peers on the registry, request and KV transfer ports must "
                  "prove it (HMAC-SHA256 challenge-response) before anything else is read");
  cmd->add_flag("--insecure-cluster", flags->insecure,
                "Without --cluster-key-file, let the cluster ports listen on other addresses than loopback (any peer "
                "that reaches them is trusted)");
}

bool is_loopback_host(const std::string& host) { return host == "localhost" || host.rfind("127.", 0) == 0; }

void apply_cluster_flags(const ClusterFlags& flags, const std::vector<std::pair<std::string, std::string>>& binds) {
  if (!flags.key_file.empty()) {
    auto key = security::load_cluster_key(flags.key_file);
    if (!key.ok()) throw Error(key.status().message());
    security::set_cluster_key(std::move(*key));
    spdlog::info("event=cluster_key_loaded file={}", flags.key_file);
    return;
  }
  std::string exposed;
  for (const auto& [flag, host] : binds) {
    if (!is_loopback_host(host)) exposed += (exposed.empty() ? "" : ", ") + flag + " " + (host.empty() ? "\"\"" : host);
  }
  if (!flags.insecure && !exposed.empty()) {
    throw Error(exposed + ": without --cluster-key-file the cluster ports listen on loopback only; give "
                "--cluster-key-file FILE (the same on every process of the cluster), or --insecure-cluster to let any "
                "peer that reaches them in");
  }
  if (flags.insecure && !exposed.empty()) {
    spdlog::warn("event=cluster_unauthenticated listen=\"{}\" reason=\"--insecure-cluster without --cluster-key-file: "
                 "any peer reaching these ports can register, send requests and write KV\"",
                 exposed);
  } else {
    spdlog::warn("event=cluster_unauthenticated listen=loopback reason=\"no --cluster-key-file: the cluster ports "
                 "listen on loopback only and trust every local process\"");
  }
}

std::vector<std::string> cluster_flag_args(const ClusterFlags& flags) {
  std::vector<std::string> args;
  if (!flags.key_file.empty()) args.insert(args.end(), {"--cluster-key-file", flags.key_file});
  if (flags.insecure) args.push_back("--insecure-cluster");
  return args;
}

}  // namespace tandem::cli
