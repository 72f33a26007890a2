// The cluster-security flags every process of a cluster takes (`frontend`, `worker`, `serve`):
// --cluster-key-file FILE (one key, or several to rotate it) turns on the key's challenge-response on the
// registry, request and KV transfer ports (security/cluster_auth.h); --cluster-tls-cert/--cluster-tls-key/
// --cluster-tls-ca turn on mutual TLS there (security/tls_stream.h). With neither, those ports listen on loopback only unless
// --insecure-cluster is given. Declared once here, applied once at the start of each command.
//
// Ownership: the command owns its ClusterFlags (CLI11 writes into it while parsing).
#pragma once

#include <CLI/CLI.hpp>

#include <string>
#include <utility>
#include <vector>

namespace tandem::cli {

struct ClusterFlags {
  std::string key_file;
  bool insecure = false;
  // Mutual TLS on the cluster planes: all three or none. Apart from the API's --tls-*: the cluster's CA
  // is private to it, and trusting the API's (often public) CA would admit any holder of its certificates.
  std::string tls_cert, tls_key, tls_ca;
};

void add_cluster_flags(CLI::App* cmd, ClusterFlags* flags);

// Loads the key file and makes it the process's cluster key, and the TLS files the process's cluster
// TLS context; without either, checks that every cluster port listens on loopback (each `binds` entry:
// the flag that sets the address, and its value) unless --insecure-cluster, and logs the one
// `event=cluster_unauthenticated` warning. Throws tandem::Error naming the flag: a key file missing,
// empty or too short; a TLS file missing, unreadable or not matching, or one of the three alone; a
// non-loopback address with neither a key nor TLS.
void apply_cluster_flags(const ClusterFlags& flags, const std::vector<std::pair<std::string, std::string>>& binds);

// The same flags for a child process (`tandem serve` hands them to its frontend and workers).
std::vector<std::string> cluster_flag_args(const ClusterFlags& flags);

// True for an address that only this host can reach: 127.0.0.0/8 and "localhost".
bool is_loopback_host(const std::string& host);

}  // namespace tandem::cli
