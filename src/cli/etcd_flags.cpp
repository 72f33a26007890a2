// The etcd credentials flags (see etcd_flags.h).
#include "cli/etcd_flags.h"

#include <spdlog/spdlog.h>

#include <cerrno>
#include <cstring>
#include <fstream>
#include <sstream>

#include "common/error.h"

namespace tandem::cli {

void add_etcd_flags(CLI::App* cmd, EtcdFlags* flags) {
  cmd->add_option("--etcd-user", flags->user,
                  "etcd user, for an etcd with authentication on (with --etcd-password-file; docs/security.md)");
  cmd->add_option("--etcd-password-file", flags->password_file,
                  "File holding the password of --etcd-user (a trailing newline is not part of it)");
  cmd->add_option("--etcd-ca", flags->ca,
                  "With --registry etcds://: PEM CA that signed etcd's certificate (default: the system's trust store)");
  cmd->add_option("--etcd-cert", flags->cert,
                  "With --registry etcds://: PEM client certificate for an etcd with --client-cert-auth (with --etcd-key)");
  cmd->add_option("--etcd-key", flags->key, "PEM private key of --etcd-cert");
}

namespace {

// The TLS context for etcds://, nullptr for etcd://; the TLS flags without etcds:// are an error.
std::shared_ptr<const security::TlsContext> load_etcd_tls(const EtcdFlags& flags, const std::string& registry) {
  if (!cluster::etcd_url_uses_tls(registry)) {
    for (const auto& [flag, value] : {std::pair<const char*, const std::string&>{"--etcd-ca", flags.ca},
                                      {"--etcd-cert", flags.cert}, {"--etcd-key", flags.key}}) {
      if (!value.empty()) throw Error(std::string(flag) + ": only with --registry etcds://... (etcd over TLS)");
    }
    return nullptr;
  }
  auto context = security::TlsContext::load_client({flags.ca, flags.cert, flags.key}, "--etcd");
  if (!context.ok()) throw Error(context.status().message());
  return *context;
}

}  // namespace

cluster::EtcdCredentials load_etcd_credentials(const EtcdFlags& flags, const std::string& registry) {
  // etcd:// (and etcds://, its TLS form).
  const bool etcd = registry.rfind("etcd://", 0) == 0 || registry.rfind("etcds://", 0) == 0;
  // Checked before anything prints the URL: user:password@host would show in the process list too.
  if (etcd && registry.find('@') != std::string::npos) {
    throw Error("--registry: credentials in the URL are not accepted (the process list shows them); give "
                "--etcd-user NAME and --etcd-password-file FILE");
  }
  std::shared_ptr<const security::TlsContext> tls = load_etcd_tls(flags, registry);
  if (flags.user.empty() && flags.password_file.empty()) return {"", "", tls};
  if (!etcd) throw Error(std::string(flags.user.empty() ? "--etcd-password-file" : "--etcd-user") +
                         ": only with --registry etcd://...");
  if (flags.user.empty()) throw Error("--etcd-password-file: give --etcd-user too");
  if (flags.password_file.empty()) throw Error("--etcd-user: give --etcd-password-file FILE too (the password is read from a file)");
  std::ifstream in(flags.password_file, std::ios::binary);
  if (!in) throw Error("--etcd-password-file " + flags.password_file + ": cannot read it: " + std::strerror(errno));
  std::stringstream contents;
  contents << in.rdbuf();
  std::string password = contents.str();
  // `echo pw > file` adds a newline that is not part of the password; other blanks may be.
  while (!password.empty() && (password.back() == '\n' || password.back() == '\r')) password.pop_back();
  if (password.empty()) throw Error("--etcd-password-file " + flags.password_file + ": the file is empty");
  return {flags.user, password, tls};
}

void check_etcd_access(const std::vector<net::Endpoint>& endpoints, const cluster::EtcdCredentials& credentials,
                       const std::string& prefix) {
  Status s = cluster::EtcdClient(endpoints, credentials).check_access(prefix);
  if (s.ok()) return;
  if (s.code() == StatusCode::kUnavailable) {
    spdlog::warn("event=etcd_unreachable reason=\"{}\"; starting anyway: registration and discovery begin when etcd "
                 "answers",
                 s.message());
    return;
  }
  throw Error(s.message());
}

}  // namespace tandem::cli
