// Mutual TLS for the cluster planes, and TLS to outside servers, over OpenSSL 3 (see tls_stream.h).
#include "security/tls_stream.h"

#include <arpa/inet.h>
#include <fcntl.h>
#include <openssl/err.h>
#include <openssl/ssl.h>
#include <openssl/x509.h>
#include <openssl/x509v3.h>
#include <poll.h>
#include <sys/socket.h>

#include <cerrno>
#include <chrono>
#include <cstdint>
#include <cstring>
#include <fstream>

namespace tandem::security {
namespace {

using Clock = std::chrono::steady_clock;

// The reason of OpenSSL's oldest queued error ("certificate verify failed", "wrong version number"),
// else `fallback`; the queue is emptied, as it is per thread and would otherwise leak into the next call.
// `error_code` (optional) gets that error's code, 0 when there was none.
std::string openssl_reason(const std::string& fallback, unsigned long* error_code = nullptr) {
  const unsigned long code = ERR_get_error();
  ERR_clear_error();
  if (error_code != nullptr) *error_code = code;
  if (code == 0) return fallback;
  const char* reason = ERR_reason_error_string(code);
  if (reason != nullptr) return reason;
  char text[256];
  ERR_error_string_n(code, text, sizeof(text));
  return text;
}

// A socket BIO of our own: OpenSSL's writes with write(2), which raises SIGPIPE when the peer has gone;
// send(2) with MSG_NOSIGNAL turns that into an error, as net::write_full does for plain TCP.
int bio_write(BIO* bio, const char* data, int size) {
  const int fd = static_cast<int>(reinterpret_cast<intptr_t>(BIO_get_data(bio)));
  BIO_clear_retry_flags(bio);
  const ssize_t n = ::send(fd, data, static_cast<size_t>(size), MSG_NOSIGNAL);
  if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR)) BIO_set_retry_write(bio);
  return static_cast<int>(n);
}

int bio_read(BIO* bio, char* data, int size) {
  const int fd = static_cast<int>(reinterpret_cast<intptr_t>(BIO_get_data(bio)));
  BIO_clear_retry_flags(bio);
  const ssize_t n = ::recv(fd, data, static_cast<size_t>(size), 0);
  if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR)) BIO_set_retry_read(bio);
  return static_cast<int>(n);
}

long bio_ctrl(BIO*, int command, long, void*) { return command == BIO_CTRL_FLUSH ? 1 : 0; }

const BIO_METHOD* socket_method() {
  static BIO_METHOD* method = [] {
    BIO_METHOD* m = BIO_meth_new(BIO_get_new_index() | BIO_TYPE_SOURCE_SINK, "tandem socket");
    if (m == nullptr || BIO_meth_set_write(m, bio_write) != 1 || BIO_meth_set_read(m, bio_read) != 1 ||
        BIO_meth_set_ctrl(m, bio_ctrl) != 1) {
      throw std::runtime_error("TLS: OpenSSL could not make a BIO method");
    }
    return m;
  }();
  return method;
}

// The words tls_refusal() looks for: each refusal is reported with one of them, by this file only.
constexpr char kPeerCertificateRefused[] = "the peer's certificate failed verification: ";
constexpr char kOwnCertificateRefused[] = "the peer refused this side's certificate (or wanted one): ";

// An alert from the peer saying that it refused the certificate this side sent, or that it wanted one
// (TLS 1.3's certificate_required; TLS 1.2 servers send bad_certificate), RFC 8446 §6.2.
bool own_certificate_refused(unsigned long code) {
  if (code == 0 || ERR_GET_LIB(code) != ERR_LIB_SSL) return false;
  switch (ERR_GET_REASON(code)) {
    case SSL_R_SSLV3_ALERT_BAD_CERTIFICATE:
    case SSL_R_SSLV3_ALERT_UNSUPPORTED_CERTIFICATE:
    case SSL_R_SSLV3_ALERT_CERTIFICATE_REVOKED:
    case SSL_R_SSLV3_ALERT_CERTIFICATE_EXPIRED:
    case SSL_R_SSLV3_ALERT_CERTIFICATE_UNKNOWN:
    case SSL_R_TLSV1_ALERT_UNKNOWN_CA:
    case SSL_R_TLSV1_ALERT_ACCESS_DENIED:
    case SSL_R_TLSV13_ALERT_CERTIFICATE_REQUIRED:
      return true;
    default:
      return false;
  }
}

// Whether `name` is an IP address (checked against the certificate's IP SANs rather than DNS names).
bool is_ip_address(const std::string& name) {
  unsigned char address[sizeof(in6_addr)];
  return inet_pton(AF_INET, name.c_str(), address) == 1 || inet_pton(AF_INET6, name.c_str(), address) == 1;
}

int milliseconds_left(Clock::time_point deadline) {
  const auto left = std::chrono::duration_cast<std::chrono::milliseconds>(deadline - Clock::now()).count();
  return left > 0 ? static_cast<int>(left) : 0;
}

// A file a flag named that OpenSSL would not take, with OpenSSL's reason.
Status file_refused(const std::string& flag, const std::string& file, const std::string& what) {
  return Status::InvalidArgument(flag + " " + file + ": " + openssl_reason(what));
}

// The certificate (chain) and private key this side presents; the key must match the certificate.
Status use_certificate(SSL_CTX* ctx, const std::string& cert_flag, const std::string& cert, const std::string& key_flag,
                       const std::string& key) {
  if (SSL_CTX_use_certificate_chain_file(ctx, cert.c_str()) != 1) return file_refused(cert_flag, cert, "not a PEM certificate");
  if (SSL_CTX_use_PrivateKey_file(ctx, key.c_str(), SSL_FILETYPE_PEM) != 1) {
    return file_refused(key_flag, key, "not a PEM private key");
  }
  if (SSL_CTX_check_private_key(ctx) != 1) return file_refused(key_flag, key, "does not match the certificate of " + cert_flag);
  return Status::Ok();
}

// The CA whose signature a peer's certificate must carry.
Status trust_ca(SSL_CTX* ctx, const std::string& ca_flag, const std::string& ca) {
  if (SSL_CTX_load_verify_locations(ctx, ca.c_str(), nullptr) != 1) return file_refused(ca_flag, ca, "no PEM CA certificate in it");
  return Status::Ok();
}

}  // namespace

StatusOr<std::shared_ptr<const TlsContext>> TlsContext::load(const TlsFiles& files, const std::string& flag_prefix) {
  const std::pair<std::string, std::string> named[] = {
      {flag_prefix + "-cert", files.cert}, {flag_prefix + "-key", files.key}, {flag_prefix + "-ca", files.ca}};
  for (const auto& [flag, file] : named) {
    if (file.empty()) {
      return Status::InvalidArgument(flag_prefix + "-cert, " + flag_prefix + "-key and " + flag_prefix +
                                     "-ca go together (mutual TLS: every process presents a certificate and checks its "
                                     "peer's against the CA); " + flag + " is missing");
    }
    if (!std::ifstream(file)) return Status::InvalidArgument(flag + " " + file + ": cannot read it: " + std::strerror(errno));
  }
  ERR_clear_error();
  SSL_CTX* ctx = SSL_CTX_new(TLS_method());
  if (ctx == nullptr) return Status::Internal("TLS: " + openssl_reason("SSL_CTX_new failed"));
  auto context = std::shared_ptr<TlsContext>(new TlsContext(ctx));
  TANDEM_RETURN_IF_ERROR(use_certificate(ctx, named[0].first, files.cert, named[1].first, files.key));
  TANDEM_RETURN_IF_ERROR(trust_ca(ctx, named[2].first, files.ca));
  // Both ends are Tandem: TLS 1.3 only (no renegotiation, one handshake round trip); each side presents
  // its certificate and requires the other's.
  SSL_CTX_set_min_proto_version(ctx, TLS1_3_VERSION);
  SSL_CTX_set_verify(ctx, SSL_VERIFY_PEER | SSL_VERIFY_FAIL_IF_NO_PEER_CERT, nullptr);
  // Connections live long and are pooled: no tickets (bytes an idle pooled connection would hold unread)
  // and no session cache.
  SSL_CTX_set_num_tickets(ctx, 0);
  SSL_CTX_set_session_cache_mode(ctx, SSL_SESS_CACHE_OFF);
  // Every message on these planes is length-framed, so a peer that closes without close_notify is an
  // ordinary end of stream (the framing catches a truncation), as on plain TCP.
  SSL_CTX_set_options(ctx, SSL_OP_IGNORE_UNEXPECTED_EOF);
  SSL_CTX_set_mode(ctx, SSL_MODE_ENABLE_PARTIAL_WRITE | SSL_MODE_ACCEPT_MOVING_WRITE_BUFFER);
  return std::shared_ptr<const TlsContext>(std::move(context));
}

StatusOr<std::shared_ptr<const TlsContext>> TlsContext::load_client(const TlsClientFiles& files,
                                                                     const std::string& flag_prefix) {
  const std::string ca_flag = flag_prefix + "-ca", cert_flag = flag_prefix + "-cert", key_flag = flag_prefix + "-key";
  if (files.cert.empty() != files.key.empty()) {
    return Status::InvalidArgument(cert_flag + " and " + key_flag + " go together (a client certificate and its private "
                                   "key); " + (files.cert.empty() ? cert_flag : key_flag) + " is missing");
  }
  const std::pair<std::string, std::string> named[] = {{ca_flag, files.ca}, {cert_flag, files.cert}, {key_flag, files.key}};
  for (const auto& [flag, file] : named) {
    if (!file.empty() && !std::ifstream(file)) {
      return Status::InvalidArgument(flag + " " + file + ": cannot read it: " + std::strerror(errno));
    }
  }
  ERR_clear_error();
  SSL_CTX* ctx = SSL_CTX_new(TLS_client_method());
  if (ctx == nullptr) return Status::Internal("TLS: " + openssl_reason("SSL_CTX_new failed"));
  auto context = std::shared_ptr<TlsContext>(new TlsContext(ctx));
  if (!files.cert.empty()) TANDEM_RETURN_IF_ERROR(use_certificate(ctx, cert_flag, files.cert, key_flag, files.key));
  if (!files.ca.empty()) {
    TANDEM_RETURN_IF_ERROR(trust_ca(ctx, ca_flag, files.ca));
  } else if (SSL_CTX_set_default_verify_paths(ctx) != 1) {
    return Status::InvalidArgument("TLS: the system's trust store could not be loaded (" +
                                   openssl_reason("no default verify paths") + "); give " + ca_flag);
  }
  // Outside servers (etcd) speak TLS 1.2 as well as 1.3; nothing older.
  SSL_CTX_set_min_proto_version(ctx, TLS1_2_VERSION);
  SSL_CTX_set_verify(ctx, SSL_VERIFY_PEER, nullptr);
  SSL_CTX_set_mode(ctx, SSL_MODE_ENABLE_PARTIAL_WRITE | SSL_MODE_ACCEPT_MOVING_WRITE_BUFFER);
  return std::shared_ptr<const TlsContext>(std::move(context));
}

TlsContext::~TlsContext() { SSL_CTX_free(ctx_); }

TlsRefusal tls_refusal(const Status& status) {
  if (status.code() != StatusCode::kInvalidArgument) return TlsRefusal::kNone;
  if (status.message().find(kPeerCertificateRefused) != std::string::npos) return TlsRefusal::kPeerCertificate;
  if (status.message().find(kOwnCertificateRefused) != std::string::npos) return TlsRefusal::kOwnCertificate;
  return TlsRefusal::kNone;
}

StatusOr<std::unique_ptr<TlsStream>> TlsStream::handshake(const TlsContext& context, int fd, std::string peer,
                                                          bool server, int timeout_ms, const std::string& server_name) {
  const auto deadline = Clock::now() + std::chrono::milliseconds(timeout_ms);
  if (server) {
    // A peer that connects and leaves without a byte (a TCP health check) is not a failed handshake.
    pollfd p{fd, POLLIN, 0};
    int rc;
    while ((rc = ::poll(&p, 1, milliseconds_left(deadline))) < 0 && errno == EINTR) {
    }
    if (rc == 0) return Status::DeadlineExceeded("TLS handshake timed out");
    char byte;
    ssize_t n;
    while ((n = ::recv(fd, &byte, 1, MSG_PEEK)) < 0 && errno == EINTR) {
    }
    if (n == 0) return Status::Aborted("closed by the peer before sending anything");
  }
  const int flags = fcntl(fd, F_GETFL, 0);
  fcntl(fd, F_SETFL, flags | O_NONBLOCK);
  ERR_clear_error();
  SSL* ssl = SSL_new(context.native());
  BIO* bio = ssl == nullptr ? nullptr : BIO_new(socket_method());
  if (bio == nullptr) {
    SSL_free(ssl);
    return Status::Internal("TLS: " + openssl_reason("SSL_new failed"));
  }
  BIO_set_data(bio, reinterpret_cast<void*>(static_cast<intptr_t>(fd)));
  BIO_set_init(bio, 1);
  SSL_set_bio(ssl, bio, bio);  // the SSL owns the BIO from here
  std::unique_ptr<TlsStream> stream(new TlsStream(ssl, fd, std::move(peer), server));
  if (!server && !server_name.empty()) {
    // The certificate must name what was dialed: an IP address against its IP SANs, a host name against
    // its DNS names (and sent as SNI, which RFC 6066 §3 allows for host names only).
    const std::string name =
        server_name.size() > 2 && server_name.front() == '[' ? server_name.substr(1, server_name.size() - 2) : server_name;
    const bool named = is_ip_address(name)
                           ? X509_VERIFY_PARAM_set1_ip_asc(SSL_get0_param(ssl), name.c_str()) == 1
                           : SSL_set_tlsext_host_name(ssl, name.c_str()) == 1 && SSL_set1_host(ssl, name.c_str()) == 1;
    if (!named) return Status::Internal("TLS: " + openssl_reason("cannot check the server's name '" + name + "'"));
  }
  while (true) {
    const int rc = server ? SSL_accept(ssl) : SSL_connect(ssl);
    if (rc == 1) break;
    const int error = SSL_get_error(ssl, rc);
    if (error == SSL_ERROR_WANT_READ || error == SSL_ERROR_WANT_WRITE) {
      const int left = milliseconds_left(deadline);
      if (left == 0) return Status::DeadlineExceeded("TLS handshake timed out");
      Status ready = stream->wait(error == SSL_ERROR_WANT_READ ? POLLIN : POLLOUT, left);
      if (ready.code() == StatusCode::kDeadlineExceeded) return Status::DeadlineExceeded("TLS handshake timed out");
      TANDEM_RETURN_IF_ERROR(ready);
      continue;
    }
    // The certificate check's own verdict says more than the alert it caused ("unable to get local
    // issuer certificate" rather than "certificate verify failed").
    const long verify = SSL_get_verify_result(ssl);
    std::string why = error == SSL_ERROR_SYSCALL && errno != 0 ? std::string(std::strerror(errno)) : std::string();
    unsigned long code = 0;
    why = openssl_reason(why.empty() ? "closed by the peer" : why, &code);
    if (!server && verify != X509_V_OK) {
      return Status::InvalidArgument("TLS handshake: " + std::string(kPeerCertificateRefused) +
                                     X509_verify_cert_error_string(verify) + " (" + why + ")");
    }
    if (!server && own_certificate_refused(code)) {
      return Status::InvalidArgument("TLS handshake: " + std::string(kOwnCertificateRefused) + why);
    }
    if (verify != X509_V_OK) why += " (" + std::string(X509_verify_cert_error_string(verify)) + ")";
    return Status::Unavailable("TLS handshake: " + why);
  }
  return stream;
}

TlsStream::~TlsStream() { SSL_free(ssl_); }

int TlsStream::wait_limit() const {
  const int limit = timeout_ms_.load();
  return limit > 0 ? limit : -1;
}

Status TlsStream::wait(short events, int timeout_ms) {
  pollfd p{fd_, events, 0};
  while (true) {
    const int rc = ::poll(&p, 1, timeout_ms < 0 ? -1 : timeout_ms);
    if (rc > 0) return Status::Ok();  // readable, writable, or hung up: the next OpenSSL call says which
    if (rc == 0) return Status::DeadlineExceeded("timed out");
    if (errno != EINTR) return Status::Unavailable(std::string("poll: ") + std::strerror(errno));
  }
}

template <typename Io>
StatusOr<size_t> TlsStream::call_until_done(Io io, int timeout_ms) {
  while (true) {
    size_t moved = 0;
    int error = SSL_ERROR_NONE;
    std::string why;
    unsigned long code = 0;
    {
      std::lock_guard<std::mutex> lock(mu_);
      errno = 0;
      if (io(ssl_, &moved) != 1) {
        error = SSL_get_error(ssl_, 0);
        if (error != SSL_ERROR_WANT_READ && error != SSL_ERROR_WANT_WRITE) {
          why = openssl_reason(errno != 0 ? std::strerror(errno) : "connection lost", &code);
        } else {
          ERR_clear_error();
        }
      }
    }
    switch (error) {
      case SSL_ERROR_NONE:
        return moved;
      case SSL_ERROR_ZERO_RETURN:
        return size_t{0};
      case SSL_ERROR_WANT_READ:
      case SSL_ERROR_WANT_WRITE:
        TANDEM_RETURN_IF_ERROR(wait(error == SSL_ERROR_WANT_READ ? POLLIN : POLLOUT, timeout_ms));
        continue;
      default:
        // TLS 1.3: a server judges the client's certificate after the client's handshake has finished,
        // so its refusal arrives here, at the first read.
        if (!server_ && own_certificate_refused(code)) {
          return Status::InvalidArgument("TLS: " + std::string(kOwnCertificateRefused) + why);
        }
        return Status::Unavailable("TLS: " + why);
    }
  }
}

StatusOr<size_t> TlsStream::read_some(void* data, size_t size, int timeout_ms) {
  return call_until_done([&](ssl_st* ssl, size_t* got) { return SSL_read_ex(ssl, data, size, got); }, timeout_ms);
}

Status TlsStream::read_full(void* data, size_t size) {
  auto* at = static_cast<char*>(data);
  while (size > 0) {
    auto got = read_some(at, size, wait_limit());
    if (!got.ok()) return Status::Unavailable("connection to " + peer_ + " lost: " + got.status().message());
    if (*got == 0) return Status::Unavailable("connection to " + peer_ + " closed by peer");
    at += *got;
    size -= *got;
  }
  return Status::Ok();
}

Status TlsStream::write_full(const void* data, size_t size) {
  const auto* at = static_cast<const char*>(data);
  while (size > 0) {
    auto written =
        call_until_done([&](ssl_st* ssl, size_t* n) { return SSL_write_ex(ssl, at, size, n); }, wait_limit());
    if (!written.ok()) return Status::Unavailable("connection to " + peer_ + " lost: " + written.status().message());
    // SSL_write_ex moves at least a byte when it succeeds: 0 is the peer's close_notify.
    if (*written == 0) return Status::Unavailable("connection to " + peer_ + " lost: TLS: connection lost");
    at += *written;
    size -= *written;
  }
  return Status::Ok();
}

}  // namespace tandem::security
