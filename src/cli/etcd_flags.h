// The etcd credentials flags of the processes that take `--registry etcd://...` (`frontend`, `worker`):
// --etcd-user NAME and --etcd-password-file FILE, for an etcd with authentication on. The password is
// read from a file, never given on the command line (where the process list shows it); credentials in
// the --registry URL are refused for the same reason. With `--registry etcds://...` (TLS): --etcd-ca
// FILE (the CA that signed etcd's certificate; default: the system's trust store), --etcd-cert FILE and
// --etcd-key FILE (a client certificate, for an etcd started with --client-cert-auth).
//
// Ownership: the command owns its EtcdFlags (CLI11 writes into it while parsing).
#pragma once

#include <CLI/CLI.hpp>

#include <string>
#include <vector>

#include "cluster/etcd.h"

namespace tandem::cli {

struct EtcdFlags {
  std::string user;
  std::string password_file;
  std::string ca;    // --etcd-ca
  std::string cert;  // --etcd-cert
  std::string key;   // --etcd-key
};

void add_etcd_flags(CLI::App* cmd, EtcdFlags* flags);

// The credentials the flags give (no user without --etcd-user; a TLS context for an etcds:// `registry`).
// Throws tandem::Error naming the flag: one of --etcd-user/--etcd-password-file without the other,
// either without an etcd:// or etcds:// `registry`, a password file that cannot be read or is empty, a
// `registry` URL with user:password@ in it; --etcd-ca/--etcd-cert/--etcd-key without etcds://, one of
// --etcd-cert/--etcd-key without the other, a file that cannot be read or is not PEM, a key that is
// not the certificate's.
cluster::EtcdCredentials load_etcd_credentials(const EtcdFlags& flags, const std::string& registry);

// At start: whether etcd lets these credentials read `prefix` (the namespace's keys). Throws
// tandem::Error, naming the flags, when etcd refuses them: a wrong password fails the start rather
// than leaving a process that never registers. When etcd does not answer, logs one warning and
// returns: the process starts and registers once etcd is up, as without credentials.
void check_etcd_access(const std::vector<net::Endpoint>& endpoints, const cluster::EtcdCredentials& credentials,
                       const std::string& prefix);

}  // namespace tandem::cli
