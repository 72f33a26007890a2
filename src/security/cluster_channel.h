// How a connection on a cluster plane (registry, request, KV transfer) is secured before its first
// message: TLS when the process has cluster certificates (--cluster-tls-*, security/tls_stream.h), then,
// inside it, the cluster key's challenge-response when it has a key (--cluster-key-file,
// security/cluster_auth.h); neither, and the plane reads and writes the socket as it is. TLS encrypts and
// checks certificates; the key proves membership of this cluster; each may be used alone.
//
// Both are process-wide: set once at startup (the CLI), before any connection is made or accepted.
// Thread-safety: every function may be called from any thread; set_cluster_tls must not race the others.
#pragma once

#include <memory>
#include <string>

#include "common/byte_stream.h"
#include "common/status.h"
#include "security/tls_stream.h"

namespace tandem::security {

// The process's cluster TLS context, or nullptr (plain TCP on the cluster planes).
std::shared_ptr<const TlsContext> cluster_tls();
// REQUIRES: before any connection; nullptr clears it (tests).
void set_cluster_tls(std::shared_ptr<const TlsContext> context);

// The dialer's and the acceptor's side on a connected blocking socket the caller owns (and closes, after
// the stream): the stream the plane then reads and writes. A peer that fails TLS or the key is logged as
// `event=cluster_auth_failed plane=<plane> ...` (security::report_auth_failure) and the result is
// Unavailable; the caller closes the socket having sent the peer nothing of its own. Each step has
// kHandshakeTimeoutMs, so a silent or slow peer holds the calling thread no longer.
StatusOr<std::unique_ptr<net::ByteStream>> secure_dialed(int fd, const std::string& plane, const std::string& peer);
StatusOr<std::unique_ptr<net::ByteStream>> secure_accepted(int fd, const std::string& plane, const std::string& peer);

}  // namespace tandem::security
