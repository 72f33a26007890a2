// TLS, then the cluster key, on each cluster-plane connection (see cluster_channel.h).
#include "security/cluster_channel.h"

#include <mutex>

#include "security/cluster_auth.h"

namespace tandem::security {
namespace {

std::mutex tls_mu;
std::shared_ptr<const TlsContext> process_tls;  // GUARDED_BY(tls_mu)

StatusOr<std::unique_ptr<net::ByteStream>> secure(int fd, const std::string& plane, const std::string& peer, bool acceptor) {
  const char* side = acceptor ? "acceptor" : "dialer";
  std::unique_ptr<net::ByteStream> stream;
  if (auto tls = cluster_tls()) {
    auto secured = TlsStream::handshake(*tls, fd, peer, /*server=*/acceptor, kHandshakeTimeoutMs);
    if (!secured.ok()) return report_auth_failure(plane, peer, side, secured.status());
    stream = std::move(*secured);
  } else {
    stream = std::make_unique<net::PlainStream>(fd, peer);
  }
  if (auto keys = cluster_keys()) {
    TANDEM_RETURN_IF_ERROR(acceptor ? authenticate_acceptor(*stream, *keys, plane, peer)
                                    : authenticate_dialer(*stream, *keys, plane, peer));
  }
  return stream;
}

}  // namespace

std::shared_ptr<const TlsContext> cluster_tls() {
  std::lock_guard<std::mutex> lock(tls_mu);
  return process_tls;
}

void set_cluster_tls(std::shared_ptr<const TlsContext> context) {
  std::lock_guard<std::mutex> lock(tls_mu);
  process_tls = std::move(context);
}

StatusOr<std::unique_ptr<net::ByteStream>> secure_dialed(int fd, const std::string& plane, const std::string& peer) {
  return secure(fd, plane, peer, /*acceptor=*/false);
}

StatusOr<std::unique_ptr<net::ByteStream>> secure_accepted(int fd, const std::string& plane, const std::string& peer) {
  return secure(fd, plane, peer, /*acceptor=*/true);
}

}  // namespace tandem::security
