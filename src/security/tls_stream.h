// Mutual TLS for the cluster planes (--cluster-tls-cert/--cluster-tls-key/--cluster-tls-ca): a TLS 1.3
// context where both ends present a certificate that the cluster's CA signed, and a blocking
// net::ByteStream over OpenSSL, so that the request plane and the TCP KV transfer plane, written for
// blocking sockets, run over TLS unchanged.
//
// The stream drives OpenSSL on a non-blocking socket and waits in poll() outside its lock: the request
// plane reads on one thread while it writes on another, and OpenSSL allows only one call on an SSL
// object at a time, so a blocking SSL_read must not hold the object while the writer waits for it.
// Its socket I/O uses MSG_NOSIGNAL, so a peer that vanishes is an error, not a SIGPIPE.
//
// Peers are checked against the CA only, not a host name: the planes dial addresses that workers
// announce (pod IPs), and every certificate the cluster's CA signed is a member of the cluster.
//
// The same stream also serves as a client of an outside TLS server (etcd over https, --etcd-ca/
// --etcd-cert/--etcd-key): TlsContext::load_client checks the server's certificate against a CA (or
// the system's trust store) and against the host name or IP address dialed, TLS 1.2 or later, and
// presents a client certificate only when given one.
//
// Ownership: a TlsContext is shared (std::shared_ptr) by every stream made from it; a TlsStream
// borrows its socket like every ByteStream. Thread-safety: TlsContext is immutable once loaded; a
// TlsStream as ByteStream says (one reader and one writer at once).
#pragma once

#include <atomic>
#include <memory>
#include <mutex>
#include <string>

#include "common/byte_stream.h"
#include "common/status.h"

struct ssl_st;
struct ssl_ctx_st;

namespace tandem::security {

struct TlsFiles {
  std::string cert;  // PEM certificate chain of this process
  std::string key;   // PEM private key of `cert`
  std::string ca;    // PEM CA certificates that a peer's certificate must chain to
};

// What a client of an outside TLS server is given. Empty `ca`: the system's default trust store.
// `cert` and `key` go together; both empty: no client certificate.
struct TlsClientFiles {
  std::string ca;
  std::string cert;
  std::string key;
};

// Why a TLS connection failed, for callers that tell the user which setting to fix.
enum class TlsRefusal {
  kNone,                   // not a certificate refusal (a network error, a protocol mismatch, ...)
  kPeerCertificate,        // this side's check of the peer's certificate failed (CA, host name, expiry)
  kOwnCertificate,         // the peer refused this side's certificate, or wanted one that was not sent
};
// Which refusal a failed handshake or read reported (they carry StatusCode::kInvalidArgument then).
TlsRefusal tls_refusal(const Status& status);

class TlsContext {
 public:
  // Loads the three files. InvalidArgument naming the flag (flag_prefix + "-cert", "-key", "-ca") and
  // the file when one is missing, unreadable, not PEM, or the key is not the certificate's.
  static StatusOr<std::shared_ptr<const TlsContext>> load(const TlsFiles& files, const std::string& flag_prefix);
  // A client context for an outside server (see the top of this file). InvalidArgument naming the
  // flag (flag_prefix + "-ca", "-cert", "-key") and the file when one is unreadable or not PEM, the key
  // is not the certificate's, or only one of cert and key is given.
  static StatusOr<std::shared_ptr<const TlsContext>> load_client(const TlsClientFiles& files,
                                                                 const std::string& flag_prefix);
  ~TlsContext();
  TlsContext(const TlsContext&) = delete;
  TlsContext& operator=(const TlsContext&) = delete;
  ssl_ctx_st* native() const { return ctx_; }

 private:
  explicit TlsContext(ssl_ctx_st* ctx) : ctx_(ctx) {}
  ssl_ctx_st* const ctx_;
};

class TlsStream final : public net::ByteStream {
 public:
  // The TLS handshake on a connected socket within timeout_ms, as the server (the side that accepted)
  // or the client. The socket is non-blocking from here on. Unavailable saying why (OpenSSL's reason,
  // the certificate check's verdict); Aborted when the peer closed without sending a byte (a TCP
  // health check), DeadlineExceeded when the handshake did not finish in time. On the client side, a
  // certificate refused by either end is InvalidArgument (tls_refusal says which end), here or, in
  // TLS 1.3 where the server judges the client's certificate after the client's handshake is done, at
  // the first read. `server_name` (client side, may be empty): the host name or IP address the server's
  // certificate must name; a host name is also sent as SNI.
  static StatusOr<std::unique_ptr<TlsStream>> handshake(const TlsContext& context, int fd, std::string peer, bool server,
                                                        int timeout_ms, const std::string& server_name = "");
  ~TlsStream() override;

  Status read_full(void* data, size_t size) override;
  Status write_full(const void* data, size_t size) override;
  StatusOr<size_t> read_some(void* data, size_t size, int timeout_ms) override;
  void set_timeout(int timeout_ms) override { timeout_ms_ = timeout_ms; }

 private:
  TlsStream(ssl_st* ssl, int fd, std::string peer, bool server)
      : net::ByteStream(fd, std::move(peer)), ssl_(ssl), server_(server) {}
  // Waits until the socket is ready for `events` (POLLIN/POLLOUT), at most timeout_ms (< 0: no limit).
  Status wait(short events, int timeout_ms);
  // Calls `io` (one SSL_read_ex or SSL_write_ex on the SSL object, under mu_) until it moves bytes:
  // while OpenSSL wants the socket readable or writable, waits for that (each wait up to timeout_ms)
  // outside the lock and calls again. The bytes moved, 0 on the peer's close_notify; Unavailable
  // ("TLS: " + OpenSSL's reason) on an error, the wait's status when a wait fails.
  template <typename Io>
  StatusOr<size_t> call_until_done(Io io, int timeout_ms);
  // set_timeout's limit for read_full/write_full's waits, -1 when there is none.
  int wait_limit() const;

  ssl_st* const ssl_;
  const bool server_;
  std::mutex mu_;  // held around each OpenSSL call on ssl_, never while waiting
  std::atomic<int> timeout_ms_{0};
};

}  // namespace tandem::security
