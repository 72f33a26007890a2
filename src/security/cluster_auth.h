// The cluster key (--cluster-key-file): a mutual challenge-response that every connection on the
// registry, request and KV transfer planes runs before any message is read, so that only processes
// holding the key can register as workers, send requests to a worker or write into its KV blocks.
//
// The exchange, dialer C and acceptor S, each frame "TCA1" | type u8 | fixed-size body:
//   C -> S  hello      nonce_c[32]
//   S -> C  challenge  nonce_s[32] | HMAC-SHA256(key, "tandem-cluster-v1 server" | nonce_c | nonce_s)
//   C -> S  response   HMAC-SHA256(key, "tandem-cluster-v1 client" | nonce_c | nonce_s)
// Each side proves the key over a nonce the other chose fresh, so a recorded exchange replays nowhere;
// the two labels keep S's proof from being reflected back to S as C's. The key never crosses the wire.
// The acceptor sends nothing but its challenge before the dialer has proven the key, and a failed peer
// is dropped with one `event=cluster_auth_failed` line. The first word of a hello, read as a request
// plane length prefix, is over that plane's frame limit, so a keyless peer refuses a keyed one too.
//
// A process may hold several keys (the key file's lines): it proves itself with the first and accepts a
// peer that proves any of them, so that the key can be rotated by rolling restarts without the cluster
// ever splitting (docs/security.md, "Rotating the cluster key"). Each side checks the other's proof
// against every key it holds; the exchange on the wire is the same as with one key.
//
// The keys are process-wide: set once at startup (the CLI), before any connection is made or accepted.
// Thread-safety: every function may be called from any thread; set_cluster_keys must not race the others.
#pragma once

#include <array>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <vector>

#include "common/byte_stream.h"
#include "common/status.h"

namespace tandem::security {

// The keys a process holds, the one it proves itself with first. Never empty where it is used.
using ClusterKeys = std::vector<std::string>;

// The process's cluster keys, or nullptr when it has none (the planes then run no handshake).
std::shared_ptr<const ClusterKeys> cluster_keys();
// REQUIRES: before any connection; an empty list clears them (tests).
void set_cluster_keys(ClusterKeys keys);

// Reads the key file: one key per line, trailing blanks (and the line's CR) dropped, blank lines
// skipped; the first line is the key this process proves itself with. A file with bytes that are not
// text (a raw binary key) is one key, its trailing newline and blanks dropped, as before key lists.
// InvalidArgument naming the file (and the line) when it cannot be read, holds no key, or a key has
// fewer than kMinKeyBytes bytes.
StatusOr<ClusterKeys> load_cluster_keys(const std::string& path);
constexpr size_t kMinKeyBytes = 16;

// A short name for a key that logs may show (8 hex digits of HMAC-SHA256(key, "tandem-cluster-v1
// fingerprint")): which key each process proves itself with, during a rotation, without the key.
std::string key_fingerprint(const std::string& key);

constexpr uint32_t kHandshakeMagic = 0x54434131;  // "TCA1"
constexpr size_t kNonceBytes = 32;
constexpr size_t kMacBytes = 32;
constexpr size_t kFrameHeaderBytes = 5;  // magic + type
constexpr int kHandshakeTimeoutMs = 5000;

enum class FrameType : uint8_t { kHello = 1, kChallenge = 2, kResponse = 3 };

struct HandshakeFrame {
  FrameType type = FrameType::kHello;
  std::array<uint8_t, kNonceBytes> nonce{};  // hello, challenge
  std::array<uint8_t, kMacBytes> mac{};      // challenge, response
};

// The body size a frame header announces, or nullopt (with *error set) when the header is not a
// handshake frame of the expected type: the reader then drops the peer without reading further.
std::optional<size_t> parse_frame_header(std::span<const uint8_t> header, FrameType expected, std::string* error);
// A whole frame (header and body) of the expected type; InvalidArgument saying what is wrong.
StatusOr<HandshakeFrame> parse_frame(std::span<const uint8_t> bytes, FrameType expected);
std::string serialize_frame(const HandshakeFrame& frame);

// HMAC-SHA256(key, label | nonce_c | nonce_s), label "tandem-cluster-v1 server" or "... client".
std::array<uint8_t, kMacBytes> handshake_mac(const std::string& key, bool server, std::span<const uint8_t> client_nonce,
                                             std::span<const uint8_t> server_nonce);

// The two sides over a stream (plain or TLS, security/cluster_channel.h), each within timeout_ms. Each
// proves keys.front() and checks the peer's proof against every key in `keys`. REQUIRES: keys not empty.
// Ok once the peer has proven one of `keys`; otherwise Unavailable (the caller closes the socket, as
// after any lost connection) and one `event=cluster_auth_failed plane=<plane> peer=<peer> side=...
// reason=... suppressed=N` warning is logged (report_auth_failure).
Status authenticate_dialer(net::ByteStream& stream, const ClusterKeys& keys, const std::string& plane,
                           const std::string& peer, int timeout_ms = kHandshakeTimeoutMs);
Status authenticate_acceptor(net::ByteStream& stream, const ClusterKeys& keys, const std::string& plane,
                             const std::string& peer, int timeout_ms = kHandshakeTimeoutMs);
// The same on a connected blocking socket the caller owns, without TLS (tests, fuzz targets).
Status authenticate_dialer(int fd, const ClusterKeys& keys, const std::string& plane, const std::string& peer,
                           int timeout_ms = kHandshakeTimeoutMs);
Status authenticate_acceptor(int fd, const ClusterKeys& keys, const std::string& plane, const std::string& peer,
                             int timeout_ms = kHandshakeTimeoutMs);

// Logs a peer refused by the cluster key or by TLS: one `event=cluster_auth_failed` warning, at most one
// a second per plane and side (N counts those left out), none for an acceptor's peer that left without
// a byte (`why` Aborted: a TCP health check). Returns the Unavailable status to hand on.
Status report_auth_failure(const std::string& plane, const std::string& peer, const char* side, const Status& why);

}  // namespace tandem::security
