// The cluster key's challenge-response (see cluster_auth.h).
#include "security/cluster_auth.h"

#include <arpa/inet.h>
#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <openssl/rand.h>
#include <spdlog/spdlog.h>

#include <cerrno>
#include <chrono>
#include <cstring>
#include <fstream>
#include <map>
#include <mutex>
#include <sstream>

#include "common/byte_stream.h"

namespace tandem::security {
namespace {

std::mutex key_mu;
std::shared_ptr<const ClusterKeys> process_keys;  // GUARDED_BY(key_mu)

constexpr char kServerLabel[] = "tandem-cluster-v1 server";
constexpr char kClientLabel[] = "tandem-cluster-v1 client";

size_t body_bytes(FrameType type) {
  switch (type) {
    case FrameType::kHello:
      return kNonceBytes;
    case FrameType::kChallenge:
      return kNonceBytes + kMacBytes;
    case FrameType::kResponse:
      return kMacBytes;
  }
  return 0;
}

const char* type_name(FrameType type) {
  switch (type) {
    case FrameType::kHello:
      return "hello";
    case FrameType::kChallenge:
      return "challenge";
    case FrameType::kResponse:
      return "response";
  }
  return "?";
}

using Clock = std::chrono::steady_clock;

// Reads exactly `size` bytes before `deadline`: a peer that connects and sends nothing (or a byte at a
// time) holds the handshake no longer than its timeout.
Status read_before(net::ByteStream& stream, uint8_t* data, size_t size, Clock::time_point deadline) {
  const size_t wanted = size;
  while (size > 0) {
    const auto left = std::chrono::duration_cast<std::chrono::milliseconds>(deadline - Clock::now()).count();
    if (left <= 0) return Status::DeadlineExceeded("timed out");
    auto n = stream.read_some(data, size, static_cast<int>(left));
    if (!n.ok()) return n.status();
    // Aborted: the peer left without a byte, as a TCP health check (a kubelet's tcpSocket probe) does.
    if (*n == 0) return size == wanted ? Status::Aborted("closed by the peer before sending anything")
                                       : Status::Unavailable("closed by the peer");
    data += *n;
    size -= *n;
  }
  return Status::Ok();
}

StatusOr<HandshakeFrame> read_frame(net::ByteStream& stream, FrameType expected, Clock::time_point deadline) {
  uint8_t bytes[kFrameHeaderBytes + kNonceBytes + kMacBytes];
  TANDEM_RETURN_IF_ERROR(read_before(stream, bytes, kFrameHeaderBytes, deadline));
  std::string error;
  auto body = parse_frame_header(std::span(bytes, kFrameHeaderBytes), expected, &error);
  if (!body) return Status::InvalidArgument(error);
  TANDEM_RETURN_IF_ERROR(read_before(stream, bytes + kFrameHeaderBytes, *body, deadline));
  return parse_frame(std::span(bytes, kFrameHeaderBytes + *body), expected);
}

Status write_frame(net::ByteStream& stream, const HandshakeFrame& frame) {
  const std::string bytes = serialize_frame(frame);
  return stream.write_full(bytes.data(), bytes.size());
}

std::array<uint8_t, kNonceBytes> fresh_nonce() {
  std::array<uint8_t, kNonceBytes> nonce{};
  if (RAND_bytes(nonce.data(), static_cast<int>(nonce.size())) != 1) {
    // A predictable nonce would make the exchange replayable: better no connection than that.
    throw std::runtime_error("cluster key: OpenSSL's RAND_bytes failed");
  }
  return nonce;
}

bool same_mac(const std::array<uint8_t, kMacBytes>& a, const std::array<uint8_t, kMacBytes>& b) {
  return CRYPTO_memcmp(a.data(), b.data(), kMacBytes) == 0;
}

// Whether `mac` is the peer's proof under any of `keys`. Every key is tried, the match or not, so that
// the time taken does not tell which key (if any) matched.
bool proves_any(const ClusterKeys& keys, const std::array<uint8_t, kMacBytes>& mac, bool server,
                std::span<const uint8_t> client_nonce, std::span<const uint8_t> server_nonce) {
  bool matched = false;
  for (const auto& key : keys) matched |= same_mac(mac, handshake_mac(key, server, client_nonce, server_nonce));
  return matched;
}

Status not_held(const ClusterKeys& keys) {
  return Status::InvalidArgument(keys.size() == 1 ? std::string("the peer does not hold this cluster key")
                                                  : "the peer does not hold any of this process's " +
                                                        std::to_string(keys.size()) + " cluster keys");
}

// Trailing blanks and a CR end no key: editors and `echo` add them.
void trim_trailing_blanks(std::string* text) {
  while (!text->empty() && (text->back() == '\n' || text->back() == '\r' || text->back() == ' ' || text->back() == '\t')) {
    text->pop_back();
  }
}

// A file of text lines, as `openssl rand -hex 32` writes; anything else is a raw binary key.
bool is_text(const std::string& bytes) {
  for (unsigned char c : bytes) {
    if ((c < 0x20 && c != '\n' && c != '\r' && c != '\t') || c == 0x7f) return false;
  }
  return true;
}

// Failures are logged at most once a second per plane and side, with the count of those left out: a
// misconfigured worker redials its frontend at once after each refusal, and one such process must not
// flood the log (nor hide a second peer's failures, whose count still shows).
struct LogWindow {
  Clock::time_point last{};
  int suppressed = 0;
};
std::mutex log_mu;
std::map<std::string, LogWindow> log_windows;  // GUARDED_BY(log_mu), by plane and side

}  // namespace

Status report_auth_failure(const std::string& plane, const std::string& peer, const char* side, const Status& why) {
  if (why.code() == StatusCode::kAborted && std::strcmp(side, "acceptor") == 0) {
    // Connected and left without a byte: nothing was attempted, so no warning (probes do this).
    spdlog::debug("event=cluster_auth_empty_connection plane={} peer={}", plane, peer);
    return Status::Unavailable("connection from " + peer + " (" + plane + ") closed before the handshake");
  }
  int suppressed = -1;
  {
    std::lock_guard<std::mutex> lock(log_mu);
    LogWindow& w = log_windows[plane + "/" + side];
    const auto now = Clock::now();
    if (now - w.last >= std::chrono::seconds(1)) {
      suppressed = w.suppressed;
      w = LogWindow{now, 0};
    } else {
      ++w.suppressed;
    }
  }
  if (suppressed >= 0) {
    spdlog::warn("event=cluster_auth_failed plane={} peer={} side={} reason=\"{}\" suppressed={}", plane, peer, side,
                 why.message(), suppressed);
  }
  return Status::Unavailable("cluster handshake with " + peer + " (" + plane + ") failed: " + why.message());
}


std::shared_ptr<const ClusterKeys> cluster_keys() {
  std::lock_guard<std::mutex> lock(key_mu);
  return process_keys;
}

void set_cluster_keys(ClusterKeys keys) {
  std::lock_guard<std::mutex> lock(key_mu);
  process_keys = keys.empty() ? nullptr : std::make_shared<const ClusterKeys>(std::move(keys));
}

StatusOr<ClusterKeys> load_cluster_keys(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) return Status::InvalidArgument("--cluster-key-file " + path + ": cannot read it: " + std::strerror(errno));
  std::stringstream contents;
  contents << in.rdbuf();
  std::string bytes = contents.str();
  const std::string short_key_hint = " (make one with: openssl rand -hex 32 > " + path + ")";
  ClusterKeys keys;
  if (!is_text(bytes)) {
    trim_trailing_blanks(&bytes);
    if (bytes.size() < kMinKeyBytes) {
      return Status::InvalidArgument("--cluster-key-file " + path + ": the key has " + std::to_string(bytes.size()) +
                                     " bytes, fewer than " + std::to_string(kMinKeyBytes) + short_key_hint);
    }
    keys.push_back(std::move(bytes));
    return keys;
  }
  std::stringstream lines(bytes);
  std::string line;
  for (int number = 1; std::getline(lines, line); ++number) {
    trim_trailing_blanks(&line);
    if (line.empty()) continue;
    if (line.size() < kMinKeyBytes) {
      return Status::InvalidArgument("--cluster-key-file " + path + ": the key on line " + std::to_string(number) +
                                     " has " + std::to_string(line.size()) + " bytes, fewer than " +
                                     std::to_string(kMinKeyBytes) + short_key_hint);
    }
    keys.push_back(std::move(line));
  }
  if (keys.empty()) return Status::InvalidArgument("--cluster-key-file " + path + ": the file is empty");
  return keys;
}

std::string key_fingerprint(const std::string& key) {
  static constexpr char kLabel[] = "tandem-cluster-v1 fingerprint";
  uint8_t mac[EVP_MAX_MD_SIZE];
  unsigned int length = 0;
  if (HMAC(EVP_sha256(), key.data(), static_cast<int>(key.size()), reinterpret_cast<const uint8_t*>(kLabel),
           sizeof(kLabel) - 1, mac, &length) == nullptr) {
    throw std::runtime_error("cluster key: OpenSSL's HMAC-SHA256 failed");
  }
  static constexpr char kHex[] = "0123456789abcdef";
  std::string out;
  for (int i = 0; i < 4; ++i) {
    out += kHex[mac[i] >> 4];
    out += kHex[mac[i] & 15];
  }
  return out;
}

std::optional<size_t> parse_frame_header(std::span<const uint8_t> header, FrameType expected, std::string* error) {
  if (header.size() < kFrameHeaderBytes) {
    *error = "short handshake frame";
    return std::nullopt;
  }
  uint32_t magic;
  std::memcpy(&magic, header.data(), 4);
  if (ntohl(magic) != kHandshakeMagic) {
    *error = "not a cluster handshake (no cluster key on the peer?)";
    return std::nullopt;
  }
  if (header[4] != static_cast<uint8_t>(expected)) {
    *error = "expected a " + std::string(type_name(expected)) + " frame, got type " + std::to_string(header[4]);
    return std::nullopt;
  }
  return body_bytes(expected);
}

StatusOr<HandshakeFrame> parse_frame(std::span<const uint8_t> bytes, FrameType expected) {
  std::string error;
  auto body = parse_frame_header(bytes, expected, &error);
  if (!body) return Status::InvalidArgument(error);
  if (bytes.size() != kFrameHeaderBytes + *body) {
    return Status::InvalidArgument(std::string(type_name(expected)) + " frame of " + std::to_string(bytes.size()) +
                                   " bytes, expected " + std::to_string(kFrameHeaderBytes + *body));
  }
  HandshakeFrame frame;
  frame.type = expected;
  const uint8_t* at = bytes.data() + kFrameHeaderBytes;
  if (expected != FrameType::kResponse) {
    std::memcpy(frame.nonce.data(), at, kNonceBytes);
    at += kNonceBytes;
  }
  if (expected != FrameType::kHello) std::memcpy(frame.mac.data(), at, kMacBytes);
  return frame;
}

std::string serialize_frame(const HandshakeFrame& frame) {
  std::string out(kFrameHeaderBytes, '\0');
  const uint32_t magic = htonl(kHandshakeMagic);
  std::memcpy(out.data(), &magic, 4);
  out[4] = static_cast<char>(frame.type);
  if (frame.type != FrameType::kResponse) out.append(reinterpret_cast<const char*>(frame.nonce.data()), kNonceBytes);
  if (frame.type != FrameType::kHello) out.append(reinterpret_cast<const char*>(frame.mac.data()), kMacBytes);
  return out;
}

std::array<uint8_t, kMacBytes> handshake_mac(const std::string& key, bool server, std::span<const uint8_t> client_nonce,
                                             std::span<const uint8_t> server_nonce) {
  std::string message = server ? kServerLabel : kClientLabel;
  message.append(reinterpret_cast<const char*>(client_nonce.data()), client_nonce.size());
  message.append(reinterpret_cast<const char*>(server_nonce.data()), server_nonce.size());
  std::array<uint8_t, kMacBytes> mac{};
  unsigned int length = 0;
  if (HMAC(EVP_sha256(), key.data(), static_cast<int>(key.size()), reinterpret_cast<const uint8_t*>(message.data()),
           message.size(), mac.data(), &length) == nullptr ||
      length != kMacBytes) {
    throw std::runtime_error("cluster key: OpenSSL's HMAC-SHA256 failed");
  }
  return mac;
}

Status authenticate_dialer(net::ByteStream& stream, const ClusterKeys& keys, const std::string& plane,
                           const std::string& peer, int timeout_ms) {
  if (keys.empty()) return report_auth_failure(plane, peer, "dialer", Status::Internal("no cluster key to prove"));
  const auto deadline = Clock::now() + std::chrono::milliseconds(timeout_ms);
  HandshakeFrame hello;
  hello.type = FrameType::kHello;
  hello.nonce = fresh_nonce();
  if (Status sent = write_frame(stream, hello); !sent.ok()) return report_auth_failure(plane, peer, "dialer", sent);
  auto challenge = read_frame(stream, FrameType::kChallenge, deadline);
  if (!challenge.ok()) return report_auth_failure(plane, peer, "dialer", challenge.status());
  if (!proves_any(keys, challenge->mac, /*server=*/true, hello.nonce, challenge->nonce)) {
    return report_auth_failure(plane, peer, "dialer", not_held(keys));
  }
  HandshakeFrame response;
  response.type = FrameType::kResponse;
  response.mac = handshake_mac(keys.front(), /*server=*/false, hello.nonce, challenge->nonce);
  if (Status sent = write_frame(stream, response); !sent.ok()) return report_auth_failure(plane, peer, "dialer", sent);
  return Status::Ok();
}

Status authenticate_acceptor(net::ByteStream& stream, const ClusterKeys& keys, const std::string& plane,
                             const std::string& peer, int timeout_ms) {
  if (keys.empty()) return report_auth_failure(plane, peer, "acceptor", Status::Internal("no cluster key to prove"));
  const auto deadline = Clock::now() + std::chrono::milliseconds(timeout_ms);
  auto hello = read_frame(stream, FrameType::kHello, deadline);
  if (!hello.ok()) return report_auth_failure(plane, peer, "acceptor", hello.status());
  HandshakeFrame challenge;
  challenge.type = FrameType::kChallenge;
  challenge.nonce = fresh_nonce();
  challenge.mac = handshake_mac(keys.front(), /*server=*/true, hello->nonce, challenge.nonce);
  if (Status sent = write_frame(stream, challenge); !sent.ok()) return report_auth_failure(plane, peer, "acceptor", sent);
  auto response = read_frame(stream, FrameType::kResponse, deadline);
  if (!response.ok()) {
    // Only a peer that left before its hello is a probe; one that leaves after the challenge failed.
    const Status why = response.status().code() == StatusCode::kAborted ? Status::Unavailable("closed by the peer")
                                                                         : response.status();
    return report_auth_failure(plane, peer, "acceptor", why);
  }
  if (!proves_any(keys, response->mac, /*server=*/false, hello->nonce, challenge.nonce)) {
    return report_auth_failure(plane, peer, "acceptor", not_held(keys));
  }
  return Status::Ok();
}

Status authenticate_dialer(int fd, const ClusterKeys& keys, const std::string& plane, const std::string& peer,
                           int timeout_ms) {
  net::PlainStream stream(fd, peer);
  return authenticate_dialer(stream, keys, plane, peer, timeout_ms);
}

Status authenticate_acceptor(int fd, const ClusterKeys& keys, const std::string& plane, const std::string& peer,
                             int timeout_ms) {
  net::PlainStream stream(fd, peer);
  return authenticate_acceptor(stream, keys, plane, peer, timeout_ms);
}

}  // namespace tandem::security
