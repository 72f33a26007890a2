// The streaming OpenAI client of `tandem bench serve`: one Asio event loop, one coroutine per request,
// kept-alive connections reused, every read timestamped the moment it completes.
#include <utility>  // before Asio's awaitable headers (Boost 1.74 with g++ 12)

#include "loadgen/openai_client.h"

#include <sys/resource.h>
#include <sys/socket.h>
#include <time.h>

#include <boost/asio/co_spawn.hpp>
#include <boost/asio/connect.hpp>
#include <boost/asio/detached.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/redirect_error.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <boost/asio/write.hpp>
#include <nlohmann/json.hpp>

#include <cerrno>
#include <chrono>
#include <cstdlib>
#include <cstring>

#include "loadgen/http_stream.h"

namespace tandem::loadgen {

namespace asio = boost::asio;
using tcp = asio::ip::tcp;
using boost::system::error_code;

int64_t steady_now_ns() {
  return std::chrono::duration_cast<std::chrono::nanoseconds>(std::chrono::steady_clock::now().time_since_epoch())
      .count();
}

namespace {

constexpr size_t kReadBufferBytes = 16 * 1024;

std::chrono::steady_clock::time_point from_ns(int64_t ns) {
  return std::chrono::steady_clock::time_point(std::chrono::nanoseconds(ns));
}

std::string excerpt(std::string_view text, size_t max_chars = 200) {
  std::string out(text.substr(0, max_chars));
  for (char& c : out) if (c == '\n' || c == '\r') c = ' ';
  if (text.size() > max_chars) out += "...";
  return out;
}

// Many requests in flight at an infinite rate need many sockets; lift the soft limit to the hard one.
void raise_open_file_limit() {
  rlimit limit{};
  if (getrlimit(RLIMIT_NOFILE, &limit) == 0 && limit.rlim_cur < limit.rlim_max) {
    limit.rlim_cur = limit.rlim_max;
    setrlimit(RLIMIT_NOFILE, &limit);
  }
}

int64_t clock_ns(clockid_t clock) {
  timespec ts{};
  clock_gettime(clock, &ts);
  return static_cast<int64_t>(ts.tv_sec) * 1'000'000'000 + ts.tv_nsec;
}

// Asks the kernel to stamp received data with its arrival time (SO_TIMESTAMPNS), so a chunk's timestamp
// does not depend on when this thread got round to reading it: on a loaded machine the event loop may be
// busy with other sockets, or descheduled, for milliseconds. Returns false where it is not supported.
bool enable_kernel_timestamps(tcp::socket& sock) {
  int one = 1;
  return setsockopt(sock.native_handle(), SOL_SOCKET, SO_TIMESTAMPNS, &one, sizeof(one)) == 0;
}

struct TimedRead {
  size_t num_bytes = 0;
  int64_t t_ns = 0;  // steady clock: the kernel's arrival time of the newest data read, else "now"
  error_code ec;
};

// Reads what the socket holds (waiting for data if none), with its arrival time.
asio::awaitable<TimedRead> timed_read(tcp::socket& sock, std::vector<char>& buffer) {
  TimedRead result;
  for (;;) {
    iovec iov{buffer.data(), buffer.size()};
    alignas(cmsghdr) char control[CMSG_SPACE(sizeof(timespec)) * 2];
    msghdr msg{};
    msg.msg_iov = &iov;
    msg.msg_iovlen = 1;
    msg.msg_control = control;
    msg.msg_controllen = sizeof(control);
    const ssize_t n = ::recvmsg(sock.native_handle(), &msg, MSG_DONTWAIT);
    if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR)) {
      // Asio re-arms the descriptor when a wait starts, so data that came meanwhile is not missed.
      co_await sock.async_wait(tcp::socket::wait_read, asio::redirect_error(asio::use_awaitable, result.ec));
      if (result.ec) co_return result;
      continue;
    }
    const int64_t mono_now = steady_now_ns();
    result.t_ns = mono_now;
    if (n < 0) {
      result.ec = error_code(errno, boost::system::system_category());
      co_return result;
    }
    if (n == 0) {
      result.ec = asio::error::eof;
      co_return result;
    }
    result.num_bytes = static_cast<size_t>(n);
    for (cmsghdr* c = CMSG_FIRSTHDR(&msg); c != nullptr; c = CMSG_NXTHDR(&msg, c)) {
      if (c->cmsg_level == SOL_SOCKET && c->cmsg_type == SCM_TIMESTAMPNS) {
        timespec ts{};
        std::memcpy(&ts, CMSG_DATA(c), sizeof(ts));
        // The stamp is CLOCK_REALTIME; move it to the monotonic clock through the clocks' current offset
        // (an NTP slew changes that offset by microseconds per second at most).
        const int64_t real_ns = static_cast<int64_t>(ts.tv_sec) * 1'000'000'000 + ts.tv_nsec;
        const int64_t mono_ns = real_ns - (clock_ns(CLOCK_REALTIME) - clock_ns(CLOCK_MONOTONIC));
        // Trust it only when it is plausible: not after now, and not before the request began.
        if (mono_ns <= mono_now && mono_ns > mono_now - 60'000'000'000) result.t_ns = mono_ns;
      }
    }
    co_return result;
  }
}

}  // namespace

struct OpenAIClient::Impl {
  ClientOptions options;
  std::string host;       // as written in the URL (brackets removed for IPv6)
  std::string host_header;
  std::string path_prefix;  // a path in base_url, prepended to the endpoint
  uint16_t port = 80;
  std::vector<tcp::endpoint> endpoints;
  bool chat = false;
  nlohmann::json extra_body;
  std::string auth_header;

  std::string build_request(const BenchRequest& request) const {
    nlohmann::json body;
    body["model"] = options.model;
    if (chat) {
      body["messages"] = nlohmann::json::array({{{"role", "user"}, {"content", request.prompt}}});
      if (request.output_len > 0) body["max_completion_tokens"] = request.output_len;
    } else {
      body["prompt"] = request.prompt;
      if (request.output_len > 0) body["max_tokens"] = request.output_len;
    }
    body["temperature"] = options.temperature;
    body["stream"] = true;
    body["stream_options"] = {{"include_usage", true}};
    if (options.ignore_eos) body["ignore_eos"] = true;
    if (extra_body.is_object()) body.update(extra_body);
    std::string payload = body.dump();
    std::string message = "POST " + path_prefix + options.endpoint + " HTTP/1.1\r\nHost: " + host_header +
                          "\r\nContent-Type: application/json\r\nAccept: text/event-stream\r\n"
                          "User-Agent: tandem-bench\r\n" + auth_header +
                          "Content-Length: " + std::to_string(payload.size()) + "\r\n\r\n";
    message += payload;
    return message;
  }
};

namespace {

using Impl = OpenAIClient::Impl;

struct RunState {
  RunState(asio::io_context& io_context, const Impl& client_impl) : io(io_context), impl(client_impl), slot_timer(io) {}
  asio::io_context& io;
  const Impl& impl;
  const std::vector<BenchRequest>* requests = nullptr;
  std::vector<RequestResult>* results = nullptr;
  std::vector<std::shared_ptr<tcp::socket>> idle;  // kept-alive connections, most recent last
  int32_t max_concurrency = 0;
  int32_t in_flight = 0;
  int32_t completed = 0;
  int32_t failed = 0;
  bool waiting_for_slot = false;
  asio::steady_timer slot_timer;  // the dispatcher sleeps on it while max_concurrency are in flight
};

enum class Exchange { kDone, kRetry };

// Applies one SSE event to the result. Returns false when the event ends the request as failed.
bool apply_event(const Impl& impl, const std::string& data, int64_t t_ns, RequestResult& r, bool& saw_done) {
  if (data == "[DONE]") {
    saw_done = true;
    return true;
  }
  nlohmann::json event = nlohmann::json::parse(data, nullptr, /*allow_exceptions=*/false);
  if (event.is_discarded() || !event.is_object()) {
    r.error = "malformed SSE event (not a JSON object): " + excerpt(data, 80);
    return false;
  }
  if (auto it = event.find("error"); it != event.end() && !it->is_null()) {
    std::string message = it->is_object() && it->contains("message") && (*it)["message"].is_string()
                              ? (*it)["message"].get<std::string>()
                              : it->dump();
    r.error = "server sent an error event: " + excerpt(message);
    return false;
  }
  if (auto it = event.find("choices"); it != event.end() && it->is_array() && !it->empty()) {
    const nlohmann::json& choice = (*it)[0];
    const nlohmann::json* text = nullptr;
    if (impl.chat) {
      if (auto delta = choice.find("delta"); delta != choice.end() && delta->is_object()) {
        for (const char* key : {"content", "reasoning_content", "reasoning"}) {
          auto value = delta->find(key);
          if (value != delta->end() && value->is_string() && !value->get_ref<const std::string&>().empty()) {
            text = &*value;
            break;
          }
        }
      }
    } else if (auto value = choice.find("text"); value != choice.end() && value->is_string()) {
      text = &*value;
    }
    if (text != nullptr && !text->get_ref<const std::string&>().empty()) {
      r.chunk_ns.push_back(t_ns);
      if (impl.options.keep_generated_text) r.generated_text += text->get_ref<const std::string&>();
    }
  }
  if (auto usage = event.find("usage"); usage != event.end() && usage->is_object()) {
    if (auto v = usage->find("prompt_tokens"); v != usage->end() && v->is_number_integer()) {
      r.usage_prompt_tokens = v->get<int32_t>();
    }
    if (auto v = usage->find("completion_tokens"); v != usage->end() && v->is_number_integer()) {
      r.usage_completion_tokens = v->get<int32_t>();
    }
  }
  return true;
}

// One request/response on an open connection. Fills r (error set on failure); returns kRetry only when a
// reused connection turned out closed before any byte came back, so the request can go on a new one.
asio::awaitable<Exchange> exchange(RunState& st, const std::shared_ptr<tcp::socket>& sock, const std::string& message,
                                   bool reused, const std::shared_ptr<bool>& timed_out, RequestResult& r,
                                   bool& reusable) {
  error_code ec;
  reusable = false;
  co_await asio::async_write(*sock, asio::buffer(message), asio::redirect_error(asio::use_awaitable, ec));
  if (ec) {
    if (reused && !*timed_out) co_return Exchange::kRetry;
    r.error = *timed_out ? "timed out sending the request" : "sending the request failed: " + ec.message();
    co_return Exchange::kDone;
  }
  HttpResponseParser http;
  SseParser sse;
  std::string body;
  std::string error_body;
  std::vector<std::string> events;
  std::vector<char> buffer(kReadBufferBytes);
  size_t bytes_read = 0;
  bool saw_done = false;
  int64_t last_read_ns = 0;
  while (!http.complete()) {
    size_t n = 0;
    int64_t t_ns = 0;
    if (st.impl.options.kernel_timestamps) {
      TimedRead read = co_await timed_read(*sock, buffer);
      n = read.num_bytes;
      t_ns = read.t_ns;
      ec = read.ec;
    } else {
      n = co_await sock->async_read_some(asio::buffer(buffer), asio::redirect_error(asio::use_awaitable, ec));
      t_ns = steady_now_ns();
    }
    if (ec) {
      if (*timed_out) {
        r.error = "timed out (--request-timeout)";
        co_return Exchange::kDone;
      }
      if (bytes_read == 0 && reused) co_return Exchange::kRetry;
      Status closed = ec == asio::error::eof ? http.finish_on_close()
                                             : Status::Unavailable("connection error: " + ec.message());
      if (!closed.ok() && !saw_done) {
        r.error = closed.message() + (r.chunk_ns.empty() ? "" : " (after streaming began, no [DONE])");
        co_return Exchange::kDone;
      }
      break;
    }
    last_read_ns = t_ns;
    bytes_read += n;
    body.clear();
    Status parsed = http.feed(std::string_view(buffer.data(), n), body);
    if (!parsed.ok()) {
      r.error = "malformed HTTP response: " + parsed.message();
      co_return Exchange::kDone;
    }
    if (!http.headers_done()) continue;
    r.http_status = http.status_code();
    if (r.http_status != 200) {
      if (error_body.size() < 4096) error_body += body;
      continue;
    }
    events.clear();
    sse.feed(body, events);
    for (const std::string& data : events) {
      if (!apply_event(st.impl, data, t_ns, r, saw_done)) co_return Exchange::kDone;
    }
  }
  if (r.http_status != 200) {
    r.error = "HTTP " + std::to_string(r.http_status) + ": " + excerpt(error_body);
    reusable = http.complete() && http.keep_alive();
    co_return Exchange::kDone;
  }
  std::string tail = sse.take_unterminated();
  if (!tail.empty() && !apply_event(st.impl, tail, last_read_ns, r, saw_done)) co_return Exchange::kDone;
  r.done_ns = last_read_ns;
  if (r.chunk_ns.empty()) {
    r.error = "the stream ended without any text";
    co_return Exchange::kDone;
  }
  r.success = true;
  reusable = http.complete() && http.keep_alive();
  co_return Exchange::kDone;
}

asio::awaitable<void> run_request(RunState& st, size_t index) {
  RequestResult& r = (*st.results)[index];
  const BenchRequest& request = (*st.requests)[index];
  r.prompt_len = request.prompt_len;
  r.output_len = request.output_len;
  const std::string message = st.impl.build_request(request);
  r.start_ns = steady_now_ns();
  auto timed_out = std::make_shared<bool>(false);
  // The deadline covers the whole request, connecting included: it closes the current socket, which ends
  // whatever connect, read or write is pending with an error.
  auto current = std::make_shared<std::weak_ptr<tcp::socket>>();
  asio::steady_timer deadline(st.io);
  deadline.expires_at(from_ns(r.start_ns) + std::chrono::duration_cast<std::chrono::steady_clock::duration>(
                                                std::chrono::duration<double>(st.impl.options.request_timeout_s)));
  deadline.async_wait([current, timed_out](const error_code& wait_ec) {
    if (wait_ec) return;
    *timed_out = true;
    if (auto s = current->lock()) {
      error_code ignored;
      s->close(ignored);
    }
  });
  for (int attempt = 0; attempt < 2; ++attempt) {
    std::shared_ptr<tcp::socket> sock;
    bool reused = false;
    if (!st.idle.empty()) {
      sock = std::move(st.idle.back());
      st.idle.pop_back();
      reused = true;
      *current = sock;
    } else {
      sock = std::make_shared<tcp::socket>(st.io);
      *current = sock;
      error_code ec;
      co_await asio::async_connect(*sock, st.impl.endpoints, asio::redirect_error(asio::use_awaitable, ec));
      if (ec) {
        r.error = *timed_out ? "timed out connecting (--request-timeout)"
                             : "cannot connect to " + st.impl.options.base_url + ": " + ec.message();
        break;
      }
      sock->set_option(tcp::no_delay(true), ec);
      if (st.impl.options.kernel_timestamps) enable_kernel_timestamps(*sock);
    }
    bool reusable = false;
    Exchange outcome = co_await exchange(st, sock, message, reused, timed_out, r, reusable);
    if (outcome == Exchange::kRetry) {
      r.chunk_ns.clear();
      r.generated_text.clear();
      continue;
    }
    if (reusable && !*timed_out) st.idle.push_back(std::move(sock));
    break;
  }
  deadline.cancel();
  if (!r.success && r.error.empty()) r.error = "failed for an unknown reason";
  if (r.done_ns == 0) r.done_ns = steady_now_ns();
  --st.in_flight;
  ++st.completed;
  if (!r.success) ++st.failed;
  if (st.waiting_for_slot) st.slot_timer.cancel();
}

asio::awaitable<void> dispatch(RunState& st, const std::vector<double>& offsets_s, int64_t start_ns) {
  asio::steady_timer timer(st.io);
  error_code ec;
  for (size_t i = 0; i < offsets_s.size(); ++i) {
    const int64_t due_ns = start_ns + static_cast<int64_t>(offsets_s[i] * 1e9);
    if (due_ns > steady_now_ns()) {
      timer.expires_at(from_ns(due_ns));
      co_await timer.async_wait(asio::redirect_error(asio::use_awaitable, ec));
    }
    (*st.results)[i].scheduled_ns = due_ns;
    while (st.max_concurrency > 0 && st.in_flight >= st.max_concurrency) {
      st.waiting_for_slot = true;
      st.slot_timer.expires_at(std::chrono::steady_clock::time_point::max());
      co_await st.slot_timer.async_wait(asio::redirect_error(asio::use_awaitable, ec));
      st.waiting_for_slot = false;
    }
    ++st.in_flight;
    asio::co_spawn(st.io, run_request(st, i), asio::detached);
  }
}

asio::awaitable<void> report_progress(RunState& st, const ProgressFn& progress, int64_t start_ns, int32_t total) {
  asio::steady_timer timer(st.io);
  error_code ec;
  for (;;) {
    if (st.completed >= total) co_return;  // run() reports the end itself
    RunProgress p{total, st.completed, st.failed, st.in_flight, static_cast<double>(steady_now_ns() - start_ns) * 1e-9};
    progress(p);
    timer.expires_after(std::chrono::milliseconds(250));
    co_await timer.async_wait(asio::redirect_error(asio::use_awaitable, ec));
  }
}

// Splits "http://host:port/prefix" into its parts.
Status parse_base_url(const std::string& url, Impl& impl) {
  const std::string scheme = "http://";
  if (url.rfind("https://", 0) == 0) {
    return Status::InvalidArgument("'" + url + "': https is not supported; use http://");
  }
  if (url.rfind(scheme, 0) != 0) {
    return Status::InvalidArgument("'" + url + "' is not an http:// URL (expected e.g. http://127.0.0.1:8000)");
  }
  std::string rest = url.substr(scheme.size());
  size_t slash = rest.find('/');
  std::string authority = rest.substr(0, slash);
  impl.path_prefix = slash == std::string::npos ? "" : rest.substr(slash);
  while (!impl.path_prefix.empty() && impl.path_prefix.back() == '/') impl.path_prefix.pop_back();
  std::string port_text;
  if (!authority.empty() && authority.front() == '[') {
    size_t close = authority.find(']');
    if (close == std::string::npos) return Status::InvalidArgument("'" + url + "': unclosed '[' in the host");
    impl.host = authority.substr(1, close - 1);
    if (close + 1 < authority.size() && authority[close + 1] == ':') port_text = authority.substr(close + 2);
  } else {
    size_t colon = authority.rfind(':');
    impl.host = authority.substr(0, colon);
    if (colon != std::string::npos) port_text = authority.substr(colon + 1);
  }
  if (impl.host.empty()) return Status::InvalidArgument("'" + url + "' has no host");
  if (!port_text.empty()) {
    char* end = nullptr;
    long port = std::strtol(port_text.c_str(), &end, 10);
    if (*end != '\0' || port <= 0 || port > 65535) {
      return Status::InvalidArgument("'" + url + "': bad port '" + port_text + "'");
    }
    impl.port = static_cast<uint16_t>(port);
  }
  impl.host_header = authority;
  return Status::Ok();
}

}  // namespace

OpenAIClient::OpenAIClient(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}
OpenAIClient::~OpenAIClient() = default;

const ClientOptions& OpenAIClient::options() const { return impl_->options; }

StatusOr<std::unique_ptr<OpenAIClient>> OpenAIClient::create(const ClientOptions& options) {
  auto impl = std::make_unique<Impl>();
  impl->options = options;
  TANDEM_RETURN_IF_ERROR(parse_base_url(options.base_url, *impl));
  impl->chat = options.endpoint.find("chat") != std::string::npos;
  if (!options.extra_body_json.empty()) {
    impl->extra_body = nlohmann::json::parse(options.extra_body_json, nullptr, /*allow_exceptions=*/false);
    if (!impl->extra_body.is_object()) {
      return Status::InvalidArgument("'" + options.extra_body_json + "' is not a JSON object");
    }
  }
  if (const char* key = std::getenv("OPENAI_API_KEY"); key != nullptr && *key != '\0') {
    impl->auth_header = std::string("Authorization: Bearer ") + key + "\r\n";
  }
  asio::io_context io;
  tcp::resolver resolver(io);
  error_code ec;
  auto resolved = resolver.resolve(impl->host, std::to_string(impl->port), ec);
  if (ec) return Status::Unavailable("cannot resolve host '" + impl->host + "': " + ec.message());
  for (const auto& entry : resolved) impl->endpoints.push_back(entry.endpoint());
  raise_open_file_limit();
  return std::unique_ptr<OpenAIClient>(new OpenAIClient(std::move(impl)));
}

Status OpenAIClient::check_reachable(double timeout_s) {
  asio::io_context io;
  tcp::socket sock(io);
  error_code result = asio::error::timed_out;
  asio::async_connect(sock, impl_->endpoints, [&](const error_code& ec, const tcp::endpoint&) { result = ec; });
  io.run_for(std::chrono::duration_cast<std::chrono::nanoseconds>(std::chrono::duration<double>(timeout_s)));
  if (result) {
    return Status::Unavailable("cannot connect to " + impl_->options.base_url + ": " +
                               (result == asio::error::timed_out ? std::string("timed out") : result.message()));
  }
  return Status::Ok();
}

StatusOr<std::string> OpenAIClient::get(const std::string& path, double timeout_s) {
  asio::io_context io;
  std::string body;
  Status status = Status::DeadlineExceeded("GET " + path + " timed out");
  bool finished = false;
  asio::co_spawn(
      io,
      [&]() -> asio::awaitable<void> {
        tcp::socket sock(io);
        error_code ec;
        co_await asio::async_connect(sock, impl_->endpoints, asio::redirect_error(asio::use_awaitable, ec));
        if (ec) {
          status = Status::Unavailable("GET " + path + ": " + ec.message());
          finished = true;
          co_return;
        }
        std::string message = "GET " + impl_->path_prefix + path + " HTTP/1.1\r\nHost: " + impl_->host_header +
                              "\r\nUser-Agent: tandem-bench\r\n" + impl_->auth_header + "Connection: close\r\n\r\n";
        co_await asio::async_write(sock, asio::buffer(message), asio::redirect_error(asio::use_awaitable, ec));
        HttpResponseParser http;
        std::vector<char> buffer(kReadBufferBytes);
        while (!ec && !http.complete()) {
          size_t n = co_await sock.async_read_some(asio::buffer(buffer), asio::redirect_error(asio::use_awaitable, ec));
          if (ec) break;
          Status parsed = http.feed(std::string_view(buffer.data(), n), body);
          if (!parsed.ok()) {
            status = parsed;
            finished = true;
            co_return;
          }
        }
        if (ec && ec != asio::error::eof) {
          status = Status::Unavailable("GET " + path + ": " + ec.message());
        } else if (Status closed = http.complete() ? Status::Ok() : http.finish_on_close(); !closed.ok()) {
          status = closed;
        } else if (http.status_code() != 200) {
          status = Status::NotFound("GET " + path + ": HTTP " + std::to_string(http.status_code()));
        } else {
          status = Status::Ok();
        }
        finished = true;
      },
      asio::detached);
  io.run_for(std::chrono::duration_cast<std::chrono::nanoseconds>(std::chrono::duration<double>(timeout_s)));
  if (!finished) return Status::DeadlineExceeded("GET " + path + " timed out");
  if (!status.ok()) return status;
  return body;
}

std::vector<RequestResult> OpenAIClient::run(const std::vector<BenchRequest>& requests,
                                             const std::vector<double>& arrival_offsets_s, int32_t max_concurrency,
                                             const ProgressFn& progress, int64_t& run_start_ns) {
  std::vector<RequestResult> results(requests.size());
  asio::io_context io(1);
  RunState st(io, *impl_);
  st.requests = &requests;
  st.results = &results;
  st.max_concurrency = max_concurrency;
  run_start_ns = steady_now_ns();
  asio::co_spawn(io, dispatch(st, arrival_offsets_s, run_start_ns), asio::detached);
  if (progress) {
    asio::co_spawn(io, report_progress(st, progress, run_start_ns, static_cast<int32_t>(requests.size())),
                   asio::detached);
  }
  io.run();
  if (progress) {
    int64_t end_ns = run_start_ns;
    for (const RequestResult& r : results) end_ns = std::max(end_ns, r.done_ns);
    progress(RunProgress{static_cast<int32_t>(requests.size()), st.completed, st.failed, 0,
                         static_cast<double>(end_ns - run_start_ns) * 1e-9});
  }
  return results;
}

}  // namespace tandem::loadgen
