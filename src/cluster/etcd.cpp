// etcd v3 JSON gateway client, lease keeper and prefix watcher (see etcd.h).
#include "cluster/etcd.h"

#include <spdlog/spdlog.h>
#include <unistd.h>

#include <chrono>
#include <cstring>
#include <nlohmann/json.hpp>

#include "common/byte_stream.h"

namespace tandem::cluster {
namespace {

using nlohmann::json;
using Clock = std::chrono::steady_clock;

constexpr char kAlphabet[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

// The gateway writes int64 fields as JSON strings ("revision":"12"); accept numbers too.
int64_t as_int64(const json& j, const char* name) {
  if (!j.is_object() || !j.contains(name)) return 0;
  const json& v = j[name];
  if (v.is_number_integer()) return v.get<int64_t>();
  if (v.is_string()) {
    try {
      return std::stoll(v.get<std::string>());
    } catch (const std::exception&) {
      return 0;
    }
  }
  return 0;
}

std::string b64_field(const json& j, const char* name) {
  if (!j.is_object() || !j.contains(name) || !j[name].is_string()) return "";
  auto decoded = base64_decode(j[name].get<std::string>());
  return decoded.ok() ? *decoded : "";
}

KeyValue kv_from_json(const json& j) {
  KeyValue kv;
  kv.key = b64_field(j, "key");
  kv.value = b64_field(j, "value");
  kv.mod_revision = as_int64(j, "mod_revision");
  kv.lease = as_int64(j, "lease");
  return kv;
}

// Closes the socket when it goes out of scope.
struct Fd {
  int fd = -1;
  ~Fd() {
    if (fd >= 0) ::close(fd);
  }
};

// One connection to an etcd endpoint: the socket, and the stream over it (TLS for etcds://). The
// stream goes before the socket closes (members are destroyed in reverse order).
struct Connection {
  Fd socket;
  std::unique_ptr<net::ByteStream> stream;
};

int milliseconds_left(Clock::time_point deadline) {
  const auto left = std::chrono::duration_cast<std::chrono::milliseconds>(deadline - Clock::now()).count();
  return left > 0 ? static_cast<int>(left) : 0;
}

// A certificate refused by TLS is a setting to fix, not an etcd that is down: InvalidArgument naming
// the flag (so that callers stop rather than retry the next endpoint, and a process fails its start).
// Other failures come back as Unavailable, naming `peer`.
Status tls_failure(const std::string& peer, const Status& s) {
  switch (security::tls_refusal(s)) {
    case security::TlsRefusal::kPeerCertificate:
      return Status::InvalidArgument(peer + ": etcd's certificate failed verification (" + s.message() +
                                     "): give --etcd-ca the CA that signed it (and a certificate that names the host "
                                     "given in --registry)");
    case security::TlsRefusal::kOwnCertificate:
      return Status::InvalidArgument(peer + ": etcd refused this process's client certificate (" + s.message() +
                                     "): give --etcd-cert and --etcd-key, a certificate signed by a CA in etcd's "
                                     "--trusted-ca-file");
    case security::TlsRefusal::kNone:
      break;
  }
  return Status::Unavailable(peer + ": " + s.message());
}

// Dials `ep` and, with a TLS context, does the handshake, checking etcd's certificate against the host
// dialed.
StatusOr<std::unique_ptr<Connection>> open_connection(const net::Endpoint& ep, const EtcdCredentials& credentials,
                                                      int timeout_ms) {
  const std::string peer = "etcd " + ep.to_string();
  auto fd = net::dial(ep.to_string(), timeout_ms);
  if (!fd.ok()) return fd.status();
  auto connection = std::make_unique<Connection>();
  connection->socket.fd = *fd;
  if (credentials.tls == nullptr) {
    connection->stream = std::make_unique<net::PlainStream>(*fd, peer);
  } else {
    auto tls = security::TlsStream::handshake(*credentials.tls, *fd, peer, /*server=*/false, timeout_ms, ep.host);
    if (!tls.ok()) return tls_failure(peer, tls.status());
    connection->stream = std::move(*tls);
  }
  connection->stream->set_timeout(timeout_ms);
  return connection;
}

// `token`: etcd's auth token, sent as the gateway reads it (the Authorization header holds the bare
// token, no "Bearer"); "" sends none.
std::string request_text(const net::Endpoint& ep, const std::string& path, const std::string& body,
                         const std::string& token) {
  return "POST " + path + " HTTP/1.1\r\nHost: " + ep.to_string() + "\r\nContent-Type: application/json\r\n" +
         (token.empty() ? std::string() : "Authorization: " + token + "\r\n") +
         "Connection: close\r\nContent-Length: " + std::to_string(body.size()) + "\r\n\r\n" + body;
}

// Splits "HTTP/1.1 200 OK\r\n...\r\n\r\n" off `raw`: the status code and whether the body is chunked.
bool parse_head(const std::string& raw, size_t* body_start, int* status, bool* chunked) {
  size_t end = raw.find("\r\n\r\n");
  if (end == std::string::npos) return false;
  *body_start = end + 4;
  *status = raw.size() > 12 ? std::atoi(raw.c_str() + 9) : 0;
  std::string head = raw.substr(0, end);
  for (auto& c : head) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  *chunked = head.find("transfer-encoding: chunked") != std::string::npos;
  return true;
}

// Takes whole chunks off the front of `in` (chunked transfer coding) and appends their data to
// `out`. Returns false once the last (zero-size) chunk has been seen.
bool dechunk(std::string& in, std::string& out) {
  while (true) {
    size_t eol = in.find("\r\n");
    if (eol == std::string::npos) return true;
    size_t size = 0;
    try {
      size = std::stoul(in.substr(0, eol), nullptr, 16);
    } catch (const std::exception&) {
      return false;
    }
    if (size == 0) return false;
    // A size past what has arrived waits for more; compared first, as eol + size + 4 wraps for a size
    // near 2^64 and erasing nothing then looped for ever (tests/fuzz/etcd_response_fuzz).
    if (size > in.size() || in.size() < eol + 2 + size + 2) return true;
    out.append(in, eol + 2, size);
    in.erase(0, eol + 2 + size + 2);
  }
}

// An error JSON from the gateway: {"error": "...", "message": "...", "code": N}.
std::string gateway_error(const std::string& body) {
  json j = json::parse(body, nullptr, false);
  if (j.is_object() && j.contains("message") && j["message"].is_string()) return j["message"].get<std::string>();
  return body.substr(0, 200);
}

// gRPC status codes the gateway puts in "code".
constexpr int kGrpcNotFound = 5;
constexpr int kGrpcPermissionDenied = 7;
constexpr int kGrpcUnauthenticated = 16;

// etcd refused the call's token, or wanted one: a new token may make it pass. "user name is empty": no
// token was sent where auth is on; "auth store is old": the token predates a change to users or roles.
bool token_refused(int grpc_code, const std::string& message) {
  return grpc_code == kGrpcUnauthenticated || message.find("invalid auth token") != std::string::npos ||
         message.find("user name is empty") != std::string::npos ||
         message.find("revision of auth store is old") != std::string::npos;
}

}  // namespace

bool etcd_url_uses_tls(const std::string& url) { return url.rfind("etcds://", 0) == 0; }

StatusOr<std::vector<net::Endpoint>> parse_etcd_url(const std::string& url) {
  const std::string scheme = etcd_url_uses_tls(url) ? "etcds://" : "etcd://";
  if (url.rfind(scheme, 0) != 0) return Status::InvalidArgument("'" + url + "' does not start with etcd:// or etcds://");
  std::vector<net::Endpoint> out;
  std::string rest = url.substr(scheme.size());
  size_t pos = 0;
  while (pos <= rest.size()) {
    size_t comma = rest.find(',', pos);
    if (comma == std::string::npos) comma = rest.size();
    std::string part = rest.substr(pos, comma - pos);
    if (!part.empty() && part.back() == '/') part.pop_back();
    auto ep = net::parse_endpoint(part);
    if (!ep.ok()) return Status::InvalidArgument("'" + url + "': " + ep.status().message());
    out.push_back(*ep);
    pos = comma + 1;
  }
  if (out.empty()) return Status::InvalidArgument("'" + url + "' names no etcd endpoint");
  return out;
}

std::string base64_encode(const std::string& bytes) {
  std::string out;
  out.reserve((bytes.size() + 2) / 3 * 4);
  size_t i = 0;
  for (; i + 2 < bytes.size(); i += 3) {
    uint32_t v = (static_cast<uint8_t>(bytes[i]) << 16) | (static_cast<uint8_t>(bytes[i + 1]) << 8) |
                 static_cast<uint8_t>(bytes[i + 2]);
    for (int s = 18; s >= 0; s -= 6) out += kAlphabet[(v >> s) & 63];
  }
  size_t left = bytes.size() - i;
  if (left > 0) {
    uint32_t v = static_cast<uint8_t>(bytes[i]) << 16;
    if (left == 2) v |= static_cast<uint8_t>(bytes[i + 1]) << 8;
    out += kAlphabet[(v >> 18) & 63];
    out += kAlphabet[(v >> 12) & 63];
    out += left == 2 ? kAlphabet[(v >> 6) & 63] : '=';
    out += '=';
  }
  return out;
}

StatusOr<std::string> base64_decode(const std::string& text) {
  std::string out;
  uint32_t v = 0;
  int bits = 0;
  for (char c : text) {
    if (c == '=') break;
    const char* p = std::strchr(kAlphabet, c);
    if (c == '\0' || p == nullptr) return Status::InvalidArgument("not base64: '" + text.substr(0, 40) + "'");
    v = (v << 6) | static_cast<uint32_t>(p - kAlphabet);
    bits += 6;
    if (bits >= 8) {
      bits -= 8;
      out += static_cast<char>((v >> bits) & 0xff);
    }
  }
  return out;
}

std::string prefix_end(const std::string& prefix) {
  std::string end = prefix;
  while (!end.empty()) {
    unsigned char last = static_cast<unsigned char>(end.back());
    if (last < 0xff) {
      end.back() = static_cast<char>(last + 1);
      return end;
    }
    end.pop_back();
  }
  return std::string(1, '\0');  // every key
}

// ---- EtcdClient ---------------------------------------------------------------------------------

EtcdClient::EtcdClient(std::vector<net::Endpoint> endpoints, int timeout_ms)
    : endpoints_(std::move(endpoints)), timeout_ms_(timeout_ms) {}

EtcdClient::EtcdClient(std::vector<net::Endpoint> endpoints, EtcdCredentials credentials, int timeout_ms)
    : endpoints_(std::move(endpoints)), credentials_(std::move(credentials)), timeout_ms_(timeout_ms) {}

StatusOr<std::string> EtcdClient::call_one(const net::Endpoint& ep, const std::string& path, const std::string& body,
                                           const std::string& token, int* grpc_code) {
  const auto deadline = Clock::now() + std::chrono::milliseconds(timeout_ms_);
  auto connection = open_connection(ep, credentials_, timeout_ms_);
  if (!connection.ok()) return connection.status();
  net::ByteStream& stream = *(*connection)->stream;
  const std::string peer = "etcd " + ep.to_string();
  std::string request = request_text(ep, path, body, token);
  Status s = stream.write_full(request.data(), request.size());
  if (!s.ok()) return s;
  std::string raw;
  char buffer[16384];
  while (true) {
    const int left = milliseconds_left(deadline);
    if (left == 0) return Status::Unavailable(peer + ": no answer within " + std::to_string(timeout_ms_) + " ms to " + path);
    auto n = stream.read_some(buffer, sizeof(buffer), left);
    if (!n.ok()) {
      if (n.status().code() == StatusCode::kDeadlineExceeded) {
        return Status::Unavailable(peer + ": no answer within " + std::to_string(timeout_ms_) + " ms to " + path);
      }
      return tls_failure(peer, n.status());
    }
    if (*n == 0) break;  // "Connection: close": the answer ends with the stream
    raw.append(buffer, *n);
  }
  if (raw.empty() && credentials_.tls == nullptr) {
    // etcd's https port closes a plain HTTP request so; an etcd restarting might too, hence no error.
    return Status::Unavailable(peer + ": closed without an answer (if etcd serves https, give --registry etcds://" +
                               ep.to_string() + " and --etcd-ca)");
  }
  size_t body_start = 0;
  int status = 0;
  bool chunked = false;
  if (!parse_head(raw, &body_start, &status, &chunked)) return Status::Unavailable(peer + ": malformed HTTP answer");
  std::string payload = raw.substr(body_start);
  if (chunked) {
    std::string data;
    dechunk(payload, data);
    payload = std::move(data);
  }
  if (status != 200) {
    // A gateway error is the server's answer, not a dead endpoint.
    json j = json::parse(payload, nullptr, false);
    *grpc_code = j.is_object() ? static_cast<int>(as_int64(j, "code")) : 0;
    if (*grpc_code == kGrpcNotFound) return Status::NotFound(gateway_error(payload));
    return Status::Internal(peer + " " + path + ": HTTP " + std::to_string(status) + ": " + gateway_error(payload));
  }
  return payload;
}

StatusOr<std::string> EtcdClient::call_endpoints(const std::string& path, const std::string& body,
                                                 const std::string& token, int* grpc_code) {
  std::string errors;
  const size_t first = preferred_->load();
  for (size_t i = 0; i < endpoints_.size(); ++i) {
    const size_t index = (first + i) % endpoints_.size();
    *grpc_code = 0;
    auto r = call_one(endpoints_[index], path, body, token, grpc_code);
    if (r.ok() || r.status().code() != StatusCode::kUnavailable) {
      preferred_->store(index);
      return r;
    }
    errors += (errors.empty() ? "" : "; ") + r.status().message();
  }
  return Status::Unavailable("no etcd endpoint answered: " + errors);
}

StatusOr<std::string> EtcdClient::call(const std::string& path, const std::string& body) {
  auto token = this->token();
  if (!token.ok()) return token.status();
  int grpc_code = 0;
  auto r = call_endpoints(path, body, *token, &grpc_code);
  if (r.ok() || !token_refused(grpc_code, r.status().message())) return r;
  if (credentials_.user.empty()) {
    return Status::InvalidArgument("etcd requires a user (" + r.status().message() +
                                   "): give --etcd-user and --etcd-password-file");
  }
  // Logged once renewed: while the renewal itself fails (a changed password), the caller's own log
  // says so, once per change of reason, rather than a line per retry here.
  TANDEM_RETURN_IF_ERROR(renew_token(*token));
  spdlog::info("event=etcd_token_refused user={} reason=\"{}\"; took a new one", credentials_.user,
               r.status().message());
  token = this->token();
  if (!token.ok()) return token.status();
  return call_endpoints(path, body, *token, &grpc_code);
}

StatusOr<std::string> EtcdClient::token() {
  if (credentials_.user.empty()) return std::string();
  {
    std::lock_guard<std::mutex> lock(session_->mu);
    if (!session_->token.empty() || session_->auth_off) return session_->token;
  }
  TANDEM_RETURN_IF_ERROR(renew_token(""));
  std::lock_guard<std::mutex> lock(session_->mu);
  return session_->token;
}

Status EtcdClient::authenticate() {
  if (credentials_.user.empty()) return Status::Ok();
  std::string current;
  {
    std::lock_guard<std::mutex> lock(session_->mu);
    current = session_->token;
  }
  return renew_token(current);
}

Status EtcdClient::renew_token(const std::string& refused) {
  std::lock_guard<std::mutex> lock(session_->mu);
  if (session_->token != refused) return Status::Ok();  // another call took a new one meanwhile
  int grpc_code = 0;
  auto r = call_endpoints("/v3/auth/authenticate",
                          json{{"name", credentials_.user}, {"password", credentials_.password}}.dump(), "", &grpc_code);
  if (!r.ok()) {
    // etcd down, or a TLS setting to fix: not a verdict on the user.
    if (r.status().code() == StatusCode::kUnavailable || r.status().code() == StatusCode::kInvalidArgument) return r.status();
    if (r.status().message().find("authentication is not enabled") != std::string::npos) {
      // Calls go without a token; once etcd turns authentication on, its refusal brings us back here.
      if (!session_->auth_off) {
        spdlog::warn("event=etcd_auth_off user={} reason=\"etcd's authentication is off: --etcd-user is not used\"",
                     credentials_.user);
      }
      session_->auth_off = true;
      session_->token.clear();
      return Status::Ok();
    }
    return Status::InvalidArgument("etcd refused user '" + credentials_.user + "' (--etcd-user, --etcd-password-file): " +
                                   r.status().message());
  }
  json j = json::parse(*r, nullptr, false);
  const std::string token = j.is_object() && j.contains("token") && j["token"].is_string() ? j["token"].get<std::string>() : "";
  if (token.empty()) return Status::Internal("etcd authenticated user '" + credentials_.user + "' but gave no token");
  session_->token = token;
  session_->auth_off = false;
  spdlog::info("event=etcd_authenticated user={}", credentials_.user);
  return Status::Ok();
}

Status EtcdClient::check_access(const std::string& prefix) {
  TANDEM_RETURN_IF_ERROR(authenticate());
  int grpc_code = 0;
  auto token = this->token();
  if (!token.ok()) return token.status();
  auto r = call_endpoints("/v3/kv/range",
                          json{{"key", base64_encode(prefix)}, {"range_end", base64_encode(prefix_end(prefix))},
                               {"limit", 1}, {"keys_only", true}}.dump(),
                          *token, &grpc_code);
  if (r.ok() || r.status().code() == StatusCode::kUnavailable || r.status().code() == StatusCode::kInvalidArgument) {
    return r.ok() ? Status::Ok() : r.status();
  }
  if (token_refused(grpc_code, r.status().message()) && credentials_.user.empty()) {
    return Status::InvalidArgument("etcd has authentication on and wants a user: give --etcd-user and --etcd-password-file");
  }
  if (grpc_code == kGrpcPermissionDenied) {
    return Status::InvalidArgument("etcd user '" + credentials_.user + "' (--etcd-user) may not read " + prefix +
                                   ": give its role readwrite on the prefix (etcdctl role grant-permission ROLE "
                                   "readwrite --prefix=true " + prefix + ")");
  }
  return Status::InvalidArgument("etcd refused a read of " + prefix + ": " + r.status().message());
}

StatusOr<int64_t> EtcdClient::grant_lease(int ttl_seconds) {
  auto r = call("/v3/lease/grant", json{{"TTL", ttl_seconds}}.dump());
  if (!r.ok()) return r.status();
  json j = json::parse(*r, nullptr, false);
  int64_t id = as_int64(j, "ID");
  if (id == 0) return Status::Internal("etcd granted no lease: " + r->substr(0, 200));
  return id;
}

StatusOr<int64_t> EtcdClient::keep_alive(int64_t lease_id) {
  // The gateway maps the bidirectional keep-alive stream onto one POST: one request, one answer.
  auto r = call("/v3/lease/keepalive", json{{"ID", std::to_string(lease_id)}}.dump());
  if (!r.ok()) return r.status();
  json j = json::parse(*r, nullptr, false);
  if (j.is_object() && j.contains("result")) j = j["result"];
  return as_int64(j, "TTL");  // absent (0) when the lease is gone
}

Status EtcdClient::revoke(int64_t lease_id) {
  auto r = call("/v3/lease/revoke", json{{"ID", std::to_string(lease_id)}}.dump());
  if (!r.ok() && r.status().code() != StatusCode::kNotFound) return r.status();
  return Status::Ok();
}

Status EtcdClient::put(const std::string& key, const std::string& value, int64_t lease_id) {
  json body = {{"key", base64_encode(key)}, {"value", base64_encode(value)}};
  if (lease_id != 0) body["lease"] = std::to_string(lease_id);
  auto r = call("/v3/kv/put", body.dump());
  return r.ok() ? Status::Ok() : r.status();
}

Status EtcdClient::delete_key(const std::string& key) {
  auto r = call("/v3/kv/deleterange", json{{"key", base64_encode(key)}}.dump());
  return r.ok() ? Status::Ok() : r.status();
}

namespace {
StatusOr<RangeResult> parse_range(const StatusOr<std::string>& r) {
  if (!r.ok()) return r.status();
  json j = json::parse(*r, nullptr, false);
  if (!j.is_object()) return Status::Internal("etcd range: not JSON: " + r->substr(0, 200));
  RangeResult out;
  out.revision = as_int64(j.value("header", json::object()), "revision");
  if (j.contains("kvs")) {
    for (const auto& kv : j["kvs"]) out.kvs.push_back(kv_from_json(kv));
  }
  return out;
}
}  // namespace

StatusOr<RangeResult> EtcdClient::get(const std::string& key) {
  return parse_range(call("/v3/kv/range", json{{"key", base64_encode(key)}}.dump()));
}

StatusOr<RangeResult> EtcdClient::get_prefix(const std::string& prefix) {
  return parse_range(
      call("/v3/kv/range", json{{"key", base64_encode(prefix)}, {"range_end", base64_encode(prefix_end(prefix))}}.dump()));
}

Status EtcdClient::watch_prefix(const std::string& prefix, int64_t start_revision,
                                const std::function<void(const std::vector<WatchEvent>&)>& on_events,
                                const std::atomic<bool>& cancel) {
  auto token = this->token();
  if (!token.ok()) return token.status();
  const net::Endpoint ep = endpoints_[preferred_->load() % endpoints_.size()];
  const std::string peer = "etcd " + ep.to_string();
  auto connection = open_connection(ep, credentials_, timeout_ms_);
  if (!connection.ok()) {
    preferred_->store((preferred_->load() + 1) % endpoints_.size());  // the next attempt tries another
    return connection.status();
  }
  net::ByteStream& stream = *(*connection)->stream;
  json create = {{"key", base64_encode(prefix)}, {"range_end", base64_encode(prefix_end(prefix))}};
  if (start_revision > 0) create["start_revision"] = std::to_string(start_revision);
  std::string request = request_text(ep, "/v3/watch", json{{"create_request", create}}.dump(), *token);
  Status s = stream.write_full(request.data(), request.size());
  if (!s.ok()) return s;
  std::string raw, chunks, lines;
  bool have_head = false, chunked = false;
  char buffer[16384];
  while (!cancel.load()) {
    // Short waits, so that `cancel` is seen within 200 ms; over TLS the stream keeps a record that
    // arrived in part for the next read.
    auto read = stream.read_some(buffer, sizeof(buffer), 200);
    if (!read.ok() && read.status().code() == StatusCode::kDeadlineExceeded) continue;
    if (!read.ok()) return tls_failure(peer, read.status());
    if (*read == 0) return Status::Unavailable(peer + ": the watch stream ended");
    const size_t n = *read;
    if (!have_head) {
      raw.append(buffer, n);
      size_t body_start = 0;
      int status = 0;
      if (!parse_head(raw, &body_start, &status, &chunked)) continue;
      if (status != 200) return Status::Unavailable(peer + ": watch answered HTTP " + std::to_string(status));
      have_head = true;
      chunks = raw.substr(body_start);
    } else {
      chunks.append(buffer, n);
    }
    bool more = true;
    if (chunked) {
      more = dechunk(chunks, lines);
    } else {
      lines += chunks;
      chunks.clear();
    }
    // One JSON message per line.
    size_t eol;
    while ((eol = lines.find('\n')) != std::string::npos) {
      json j = json::parse(lines.substr(0, eol), nullptr, false);
      lines.erase(0, eol + 1);
      if (!j.is_object()) continue;
      if (j.contains("error")) return Status::Unavailable(peer + ": watch error: " + j["error"].dump());
      std::vector<WatchEvent> events;
      // A field of the wrong type makes value() throw: such a message ends the stream like any other
      // malformed answer; the exception used to end the process from the watcher's thread.
      try {
        const json& r = j.value("result", json::object());
        if (r.value("canceled", false)) {
          if (as_int64(r, "compact_revision") > 0) return Status::NotFound("watch revision compacted");
          // A refused token ends up here too ("Unauthenticated desc = ... invalid auth token"); the
          // watcher's next snapshot read takes a new one.
          return Status::Unavailable(peer + ": watch canceled by the server: " + r.value("cancel_reason", ""));
        }
        if (!r.contains("events")) continue;
        for (const auto& e : r["events"]) {
          WatchEvent ev;
          ev.deleted = e.value("type", "") == "DELETE";
          ev.kv = kv_from_json(e.value("kv", json::object()));
          events.push_back(std::move(ev));
        }
      } catch (const json::exception& e) {
        return Status::Unavailable(peer + ": malformed watch message: " + e.what());
      }
      if (!events.empty()) on_events(events);
    }
    if (!more) return Status::Unavailable(peer + ": the watch stream ended");
  }
  return Status::Aborted("watch cancelled");
}

// ---- EtcdLease ----------------------------------------------------------------------------------

EtcdLease::EtcdLease(EtcdClient client, int ttl_seconds, std::map<std::string, std::string> keys)
    : client_(std::move(client)), ttl_seconds_(std::max(1, ttl_seconds)), keys_(std::move(keys)) {
  thread_ = std::thread([this] { loop(); });
}

EtcdLease::~EtcdLease() { stop(false); }

void EtcdLease::update(const std::string& key, const std::string& value) {
  {
    std::lock_guard<std::mutex> lock(mu_);
    keys_[key] = value;
  }
  int64_t lease = lease_id_.load();
  if (lease != 0) {
    Status s = client_.put(key, value, lease);
    if (!s.ok()) spdlog::debug("event=etcd_put_failed key={} reason=\"{}\"", key, s.message());
  }
}

Status EtcdLease::register_all(int64_t lease_id) {
  std::map<std::string, std::string> keys;
  {
    std::lock_guard<std::mutex> lock(mu_);
    keys = keys_;
  }
  for (const auto& [key, value] : keys) {
    Status s = client_.put(key, value, lease_id);
    if (!s.ok()) return Status(s.code(), "put " + key + ": " + s.message());
  }
  return Status::Ok();
}

void EtcdLease::loop() {
  // Keep-alives at a third of the TTL leave two more tries before the lease would expire.
  const auto period = std::chrono::milliseconds(std::max(200, ttl_seconds_ * 1000 / 3));
  const auto retry = std::chrono::milliseconds(std::min<int64_t>(500, period.count()));
  // The failure last logged: a new one is logged when it differs (etcd down, then refusing the
  // password), not on every retry.
  std::string reported;
  while (true) {
    int64_t lease = lease_id_.load();
    bool ok = false;
    if (lease == 0) {
      auto granted = client_.grant_lease(ttl_seconds_);
      const Status registered = granted.ok() ? register_all(*granted) : granted.status();
      if (registered.ok()) {
        lease_id_.store(*granted);
        spdlog::info("event=etcd_registered lease={} ttl_s={}", *granted, ttl_seconds_);
        ok = true;
      } else {
        // A lease granted for keys that could not be put (a refused password, a role without the
        // prefix) would only wait out its TTL: give it back.
        if (granted.ok()) (void)client_.revoke(*granted);
        const char* event = granted.ok() ? "etcd_register_failed" : "etcd_unreachable";
        if (registered.message() != reported) {
          spdlog::warn("event={} reason=\"{}\"", event, registered.message());
          reported = registered.message();
        }
      }
    } else {
      auto ttl = client_.keep_alive(lease);
      if (ttl.ok() && *ttl > 0) {
        ok = true;
      } else if (ttl.ok() || ttl.status().code() == StatusCode::kNotFound) {
        // etcd forgot the lease (down longer than the TTL, or revoked by hand): register anew.
        spdlog::warn("event=etcd_lease_lost lease={}; registering again", lease);
        lease_id_.store(0);
        continue;
      } else if (ttl.status().message() != reported) {
        spdlog::warn("event=etcd_unreachable lease={} reason=\"{}\"", lease, ttl.status().message());
        reported = ttl.status().message();
      }
    }
    if (ok && !reported.empty()) {
      spdlog::info("event=etcd_reachable lease={}", lease_id_.load());
      reported.clear();
    }
    std::unique_lock<std::mutex> lock(mu_);
    if (cv_.wait_for(lock, ok ? period : retry, [&] { return stop_; })) return;
  }
}

void EtcdLease::stop(bool revoke) {
  {
    std::lock_guard<std::mutex> lock(mu_);
    if (stop_ && !thread_.joinable()) return;
    stop_ = true;
  }
  cv_.notify_all();
  if (thread_.joinable()) thread_.join();
  const int64_t lease = lease_id_.exchange(0);
  if (revoke && lease != 0) {
    Status s = client_.revoke(lease);
    if (s.ok()) {
      spdlog::info("event=etcd_lease_revoked lease={}", lease);
    } else {
      spdlog::warn("event=etcd_revoke_failed lease={} reason=\"{}\" (the keys expire with the lease)", lease, s.message());
    }
  }
}

// ---- EtcdWatcher --------------------------------------------------------------------------------

EtcdWatcher::EtcdWatcher(EtcdClient client, std::string prefix, SnapshotHandler on_snapshot, EventsHandler on_events)
    : client_(std::move(client)),
      prefix_(std::move(prefix)),
      on_snapshot_(std::move(on_snapshot)),
      on_events_(std::move(on_events)) {
  thread_ = std::thread([this] { loop(); });
}

EtcdWatcher::~EtcdWatcher() { stop(); }

void EtcdWatcher::stop() {
  stop_.store(true);
  if (thread_.joinable()) thread_.join();
}

void EtcdWatcher::loop() {
  bool reported_down = false;
  while (!stop_.load()) {
    auto snapshot = client_.get_prefix(prefix_);
    if (snapshot.ok()) {
      if (reported_down) spdlog::info("event=etcd_reachable watch={}", prefix_);
      reported_down = false;
      on_snapshot_(snapshot->kvs);
      Status s = client_.watch_prefix(prefix_, snapshot->revision + 1, on_events_, stop_);
      if (stop_.load()) return;
      spdlog::warn("event=etcd_watch_lost watch={} reason=\"{}\"", prefix_, s.message());
    } else if (!reported_down) {
      spdlog::warn("event=etcd_unreachable watch={} reason=\"{}\"; keeping the last known state", prefix_,
                   snapshot.status().message());
      reported_down = true;
    }
    for (int i = 0; i < 5 && !stop_.load(); ++i) std::this_thread::sleep_for(std::chrono::milliseconds(100));
  }
}

}  // namespace tandem::cluster
