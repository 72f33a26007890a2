// The cluster-security flags (see cluster_flags.h).
#include "cli/cluster_flags.h"

#include <spdlog/spdlog.h>

#include "common/error.h"
#include "security/cluster_auth.h"
#include "security/cluster_channel.h"

namespace tandem::cli {

void add_cluster_flags(CLI::App* cmd, ClusterFlags* flags) {
  cmd->add_option("--cluster-key-file", flags->key_file,
                  "File holding the cluster's shared secret: peers on the registry, request and KV transfer ports must "
                  "prove it (HMAC-SHA256 challenge-response) before anything else is read. Several keys, one per line, "
                  "rotate it: this process proves the first and accepts any (docs/security.md)");
  cmd->add_flag("--insecure-cluster", flags->insecure,
                "Without --cluster-key-file, let the cluster ports listen on other addresses than loopback (any peer "
                "that reaches them is trusted)");
  cmd->add_option("--cluster-tls-cert", flags->tls_cert,
                  "PEM certificate chain this process presents on the registry, request and KV transfer ports "
                  "(mutual TLS, with --cluster-tls-key and --cluster-tls-ca)");
  cmd->add_option("--cluster-tls-key", flags->tls_key, "PEM private key of --cluster-tls-cert");
  cmd->add_option("--cluster-tls-ca", flags->tls_ca,
                  "PEM CA certificates of the cluster: peers on the cluster ports must present a certificate one of "
                  "them signed");
}

bool is_loopback_host(const std::string& host) { return host == "localhost" || host.rfind("127.", 0) == 0; }

void apply_cluster_flags(const ClusterFlags& flags, const std::vector<std::pair<std::string, std::string>>& binds) {
  const bool tls = !flags.tls_cert.empty() || !flags.tls_key.empty() || !flags.tls_ca.empty();
  if (tls) {
    auto context = security::TlsContext::load({flags.tls_cert, flags.tls_key, flags.tls_ca}, "--cluster-tls");
    if (!context.ok()) throw Error(context.status().message());
    security::set_cluster_tls(std::move(*context));
    spdlog::info("event=cluster_tls_loaded cert={} ca={}", flags.tls_cert, flags.tls_ca);
  }
  if (!flags.key_file.empty()) {
    auto keys = security::load_cluster_keys(flags.key_file);
    if (!keys.ok()) throw Error(keys.status().message());
    // Fingerprints, not keys: during a rotation they show which key each process proves itself with.
    std::string fingerprints;
    for (const auto& key : *keys) fingerprints += (fingerprints.empty() ? "" : ",") + security::key_fingerprint(key);
    spdlog::info("event=cluster_key_loaded file={} keys={} proving={} accepting={}", flags.key_file, keys->size(),
                 security::key_fingerprint(keys->front()), fingerprints);
    security::set_cluster_keys(std::move(*keys));
  }
  // Either authenticates every peer: the key by its challenge, mutual TLS by the cluster CA's signature.
  if (tls || !flags.key_file.empty()) return;
  std::string exposed;
  for (const auto& [flag, host] : binds) {
    if (!is_loopback_host(host)) exposed += (exposed.empty() ? "" : ", ") + flag + " " + (host.empty() ? "\"\"" : host);
  }
  if (!flags.insecure && !exposed.empty()) {
    throw Error(exposed + ": without --cluster-key-file (or --cluster-tls-*) the cluster ports listen on loopback "
                "only; give --cluster-key-file FILE (the same on every process of the cluster), mutual TLS with "
                "--cluster-tls-cert/--cluster-tls-key/--cluster-tls-ca, or --insecure-cluster to let any peer that "
                "reaches them in");
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
  if (!flags.tls_cert.empty()) args.insert(args.end(), {"--cluster-tls-cert", flags.tls_cert});
  if (!flags.tls_key.empty()) args.insert(args.end(), {"--cluster-tls-key", flags.tls_key});
  if (!flags.tls_ca.empty()) args.insert(args.end(), {"--cluster-tls-ca", flags.tls_ca});
  return args;
}

}  // namespace tandem::cli
