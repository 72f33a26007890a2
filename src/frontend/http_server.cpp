// Asynchronous HTTP/1.1 server on Boost.Beast with C++20 coroutines (see http.h). One coroutine per
// connection: read a request, hand it to the handler, then pump whatever the handler queues on the
// exchange (a whole response, or SSE chunks) to the socket, while a pending one-byte read notices a
// client that goes away mid-response. The limits of HttpServerOptions are enforced here: header and
// body sizes (431, 413), the header and idle timeouts, and the number of open connections (503).
// With a certificate (HttpServerOptions::tls) every connection is HTTPS: the same session over a
// Beast TLS stream, after a handshake bounded by the header timeout.
#include <utility>  // before Asio's awaitable headers (Boost 1.74 with g++ 12)

#include <boost/asio/co_spawn.hpp>
#include <boost/asio/detached.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/post.hpp>
#include <boost/asio/redirect_error.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <boost/asio/ssl.hpp>
#include <boost/asio/write.hpp>
#include <boost/beast/core.hpp>
#include <boost/beast/http.hpp>
#include <boost/beast/ssl.hpp>

#include <spdlog/spdlog.h>
#include <sys/resource.h>

#include <algorithm>
#include <cstdint>
#include <deque>
#include <optional>
#include <type_traits>

#include "common/error.h"
#include "frontend/http.h"
#include "frontend/http_parser.h"

namespace tandem::frontend {
namespace {

namespace asio = boost::asio;
namespace beast = boost::beast;
namespace http = beast::http;
using tcp = asio::ip::tcp;
using asio::awaitable;
using asio::redirect_error;
using asio::use_awaitable;
using TlsStream = beast::ssl_stream<beast::tcp_stream>;

template <class Stream>
constexpr bool kIsTls = std::is_same_v<Stream, TlsStream>;

// The TCP stream under a plain or TLS stream: timeouts, the peer's address, cancel and close.
beast::tcp_stream& tcp_layer(beast::tcp_stream& stream) { return stream; }
beast::tcp_stream& tcp_layer(TlsStream& stream) { return stream.next_layer(); }

struct Item {
  enum Kind { kWhole, kHead, kData, kEnd } kind;
  int status = 200;
  std::string content_type;
  std::string body;
  HttpHeaders headers;
};

class Exchange : public HttpExchange {
 public:
  Exchange(HttpRequest request, size_t max_queued_bytes)
      : request_(std::move(request)), max_queued_bytes_(max_queued_bytes) {}
  const HttpRequest& request() const override { return request_; }
  void respond(int status, const std::string& content_type, std::string body, const HttpHeaders& headers) override {
    if (closed_) return;
    closed_ = true;
    items.push_back({Item::kWhole, status, content_type, std::move(body), headers});
    notify();
  }
  void start_stream(int status, const std::string& content_type, const HttpHeaders& headers) override {
    if (closed_) return;
    items.push_back({Item::kHead, status, content_type, {}, headers});
    notify();
  }
  void write(std::string data) override {
    if (closed_ || data.empty() || overflowed) return;
    queued_bytes += data.size();
    if (queued_bytes > max_queued_bytes_) {
      // The response is cut here: what is queued is dropped and end() adds nothing. The session, not
      // this call, reports the client gone: the producer must not have its gone-callback run inside
      // its own write.
      overflowed = true;
      closed_ = true;
      items.clear();
      queued_bytes = 0;
    } else {
      items.push_back({Item::kData, 0, {}, std::move(data), {}});
    }
    notify();
  }
  void end() override {
    if (closed_) return;
    closed_ = true;
    items.push_back({Item::kEnd, 0, {}, {}, {}});
    notify();
  }
  void on_client_gone(std::function<void()> callback) override {
    if (gone_) {
      callback();
    } else {
      gone_callback_ = std::move(callback);
    }
  }
  bool client_gone() const override { return gone_; }

  void mark_gone() {
    if (gone_ || written_) return;
    gone_ = true;
    notify();
    if (gone_callback_) {
      auto callback = std::move(gone_callback_);
      gone_callback_ = nullptr;
      callback();
    }
  }
  void notify() {
    if (wake) wake->cancel();
  }

  std::deque<Item> items;
  size_t queued_bytes = 0;             // stream data in `items`, not yet handed to the socket
  bool overflowed = false;             // queued_bytes went past the limit: the session drops the client
  asio::steady_timer* wake = nullptr;  // the session's timer while it serves this exchange
  bool written_ = false;               // the whole response is on the wire

 private:
  HttpRequest request_;
  size_t max_queued_bytes_;
  bool closed_ = false;  // respond() or end() was called
  bool gone_ = false;
  std::function<void()> gone_callback_;
};

class IoExecutor : public Executor {
 public:
  explicit IoExecutor(asio::io_context& io) : io_(io) {}
  void post(std::function<void()> fn) override { asio::post(io_, std::move(fn)); }
  void post_after(int delay_ms, std::function<void()> fn) override {
    auto timer = std::make_shared<asio::steady_timer>(io_, std::chrono::milliseconds(delay_ms));
    timer->async_wait([timer, fn = std::move(fn)](const boost::system::error_code&) { fn(); });
  }

 private:
  asio::io_context& io_;
};

}  // namespace

struct HttpServer::Impl {
  HttpServerOptions options;
  HttpHandler handler;
  HttpServerHooks hooks;
  // Before `io`: the sessions' frames, destroyed with it, decrement these.
  int connections = 0;  // sessions open
  int refusing = 0;     // connections being answered 503 over max_connections
  std::optional<asio::ssl::context> tls;  // set: every connection is HTTPS
  asio::io_context io{1};
  tcp::acceptor acceptor{io};
  IoExecutor executor{io};

  // The most connections refused with an answer at once; beyond it a flood is closed unanswered.
  static constexpr int kMaxRefusing = 256;

  void limit_hit(const char* reason) {
    spdlog::debug("event=http_limit reason={}", reason);
    if (hooks.on_limit) hooks.on_limit(reason);
  }

  // progress_timeout_ms > 0: the write fails when the client takes none of it for that long (the
  // deadline restarts with each piece the socket accepts, so a large reply to a slow but reading
  // client goes through); 0: the caller's deadline on `stream` applies to the whole write.
  template <class Stream>
  awaitable<void> write_whole(Stream& stream, const Item& item, bool keep_alive,
                              boost::system::error_code& ec, int progress_timeout_ms = 0) {
    http::response<http::string_body> res{static_cast<http::status>(item.status), 11};
    res.set(http::field::server, "tandem");
    res.set(http::field::content_type, item.content_type);
    for (const auto& [name, value] : item.headers) res.set(name, value);
    res.keep_alive(keep_alive);
    res.body() = item.body;
    res.prepare_payload();
    if (progress_timeout_ms <= 0) {
      co_await http::async_write(stream, res, redirect_error(use_awaitable, ec));
      co_return;
    }
    http::response_serializer<http::string_body> serializer{res};
    ec = {};
    while (!ec && !serializer.is_done()) {
      tcp_layer(stream).expires_after(std::chrono::milliseconds(progress_timeout_ms));
      co_await http::async_write_some(stream, serializer, redirect_error(use_awaitable, ec));
    }
  }

  // Writes `data` whole, failing when the client takes none of it for progress_timeout_ms.
  template <class Stream>
  awaitable<void> write_data(Stream& stream, const std::string& data, boost::system::error_code& ec,
                             int progress_timeout_ms) {
    size_t written = 0;
    ec = {};
    while (!ec && written < data.size()) {
      tcp_layer(stream).expires_after(std::chrono::milliseconds(progress_timeout_ms));
      written += co_await stream.async_write_some(asio::buffer(data.data() + written, data.size() - written),
                                                  redirect_error(use_awaitable, ec));
    }
  }

  // Answers an error the server decides by itself (hooks.refusal) without reading the request on,
  // then drains what the client still sends for a moment, so that it sees the answer rather than a
  // reset. The write is bounded too: a client that reads nothing cannot hold the connection.
  template <class Stream>
  awaitable<void> refuse(Stream& stream, int status, std::chrono::milliseconds drain) {
    auto [body, content_type] = hooks.refusal(status);
    HttpHeaders headers;
    if (status == 503) headers.emplace_back("Retry-After", "1");
    Item item{Item::kWhole, status, content_type, body, headers};
    boost::system::error_code ec;
    tcp_layer(stream).expires_after(drain);
    co_await write_whole(stream, item, false, ec);
    // Over TLS the drain reads through the TLS layer, and the session's end sends the close_notify.
    if constexpr (!kIsTls<Stream>) tcp_layer(stream).socket().shutdown(tcp::socket::shutdown_send, ec);
    char scratch[65536];
    size_t drained = 0;
    tcp_layer(stream).expires_after(drain);
    while (!ec && drained < (256u << 20)) {
      drained += co_await stream.async_read_some(asio::buffer(scratch), redirect_error(use_awaitable, ec));
    }
  }

  // A connection over max_connections: 503 at once.
  awaitable<void> refuse_connection(tcp::socket socket) {
    ++refusing;
    struct Release {
      int& n;
      ~Release() { --n; }
    } release{refusing};
    boost::system::error_code ec;
    if (tls) {
      TlsStream stream(std::move(socket), *tls);
      if (co_await tls_handshake(stream, std::chrono::seconds(1))) co_await refuse(stream, 503, std::chrono::seconds(1));
      tcp_layer(stream).socket().close(ec);
    } else {
      beast::tcp_stream stream(std::move(socket));
      co_await refuse(stream, 503, std::chrono::seconds(1));
      stream.socket().close(ec);
    }
  }

  // True once the client's TLS handshake is done within `limit` (a client that connects and sends
  // nothing is closed, as on a plain connection, by the header timeout).
  awaitable<bool> tls_handshake(TlsStream& stream, std::chrono::milliseconds limit) {
    boost::system::error_code ec;
    tcp_layer(stream).expires_after(limit);
    co_await stream.async_handshake(asio::ssl::stream_base::server, redirect_error(use_awaitable, ec));
    if (ec) {
      spdlog::debug("event=tls_handshake_failed error=\"{}\"", ec.message());
      if (ec == beast::error::timeout) limit_hit("header_timeout");
      co_return false;
    }
    co_return true;
  }

  awaitable<void> session(tcp::socket socket) {
    ++connections;
    struct Release {
      int& n;
      ~Release() { --n; }
    } release{connections};
    if (!tls) {
      beast::tcp_stream stream(std::move(socket));
      co_await serve(stream);
      co_return;
    }
    TlsStream stream(std::move(socket), *tls);
    const auto accepted = std::chrono::steady_clock::now();
    if (!co_await tls_handshake(stream, std::chrono::milliseconds(options.header_timeout_ms))) {
      boost::system::error_code ec;
      tcp_layer(stream).socket().close(ec);
      co_return;
    }
    co_await serve(stream, accepted);
  }

  // One connection's requests, in turn. `accepted`: when the connection was accepted (the first
  // request's header is due header_timeout_ms after it, TLS handshake included).
  template <class Stream>
  awaitable<void> serve(Stream& stream, std::chrono::steady_clock::time_point accepted = std::chrono::steady_clock::now()) {
    beast::flat_buffer buffer;
    asio::steady_timer wake(io);
    boost::system::error_code ec;
    // Fixed for the connection: the admin routes trust loopback peers without a token.
    bool peer_loopback = false;
    {
      auto remote = tcp_layer(stream).socket().remote_endpoint(ec);
      if (!ec) peer_loopback = remote.address().is_loopback() ||
                               (remote.address().is_v6() && remote.address().to_v6().is_v4_mapped() &&
                                asio::ip::make_address_v4(asio::ip::v4_mapped, remote.address().to_v6()).is_loopback());
      ec = {};
    }
    // The first request's header is due header_timeout_ms after the accept: a client that connects
    // and sends nothing, or a byte at a time, is closed then.
    tcp_layer(stream).expires_at(accepted + std::chrono::milliseconds(options.header_timeout_ms));
    for (bool first = true;; first = false) {
      http::request_parser<http::string_body> parser;
      parser.body_limit(options.max_body_bytes);
      parser.header_limit(static_cast<uint32_t>(std::min<size_t>(options.max_header_bytes, UINT32_MAX)));
      if (!first) {
        if (buffer.size() == 0) {
          // Between requests: idle until the next one's first byte (a timeout or a close here is the
          // ordinary end of a keep-alive connection).
          tcp_layer(stream).expires_after(std::chrono::milliseconds(options.idle_timeout_ms));
          const size_t n = co_await stream.async_read_some(buffer.prepare(4096), redirect_error(use_awaitable, ec));
          if (ec) break;
          buffer.commit(n);
        }
        tcp_layer(stream).expires_after(std::chrono::milliseconds(options.header_timeout_ms));
      }
      co_await http::async_read_header(stream, buffer, parser, redirect_error(use_awaitable, ec));
      if (ec == beast::error::timeout) {
        limit_hit("header_timeout");
        break;
      }
      if (ec == http::error::header_limit) {
        limit_hit("header_too_large");
        co_await refuse(stream, 431, std::chrono::seconds(2));
        break;
      }
      // Beast refuses a Content-Length over the limit while parsing the header.
      if (ec == http::error::body_limit ||
          (!ec && parser.content_length() && *parser.content_length() > options.max_body_bytes)) {
        limit_hit("body_too_large");
        co_await refuse(stream, 413, std::chrono::seconds(2));
        break;
      }
      if (ec) break;
      tcp_layer(stream).expires_after(std::chrono::milliseconds(options.idle_timeout_ms));
      co_await http::async_read(stream, buffer, parser, redirect_error(use_awaitable, ec));
      tcp_layer(stream).expires_never();
      if (ec == http::error::body_limit) {
        limit_hit("body_too_large");
        co_await refuse(stream, 413, std::chrono::seconds(2));
        break;
      }
      if (ec == beast::error::timeout) {
        limit_hit("body_timeout");
        break;
      }
      if (ec) break;
      auto& msg = parser.get();
      bool keep_alive = msg.keep_alive();
      HttpRequest request = to_http_request(msg, peer_loopback);

      auto exchange = std::make_shared<Exchange>(std::move(request), options.max_send_buffer_bytes);
      exchange->wake = &wake;
      // Watches for the client going away while the response is produced.
      struct Watch {
        bool done = false;
        size_t n = 0;
        char byte = 0;
      };
      auto watch = std::make_shared<Watch>();
      auto on_watch = [exchange, watch, &wake](const boost::system::error_code& e, size_t n) {
        watch->done = true;
        watch->n = n;
        if (e && e != asio::error::operation_aborted) exchange->mark_gone();
        wake.cancel();
      };
      // Over TLS the byte is read through the TLS layer (one read and one write may be in flight on a
      // TLS stream at once); a plain connection reads the socket itself, as before.
      if constexpr (kIsTls<Stream>) {
        stream.async_read_some(asio::buffer(&watch->byte, 1), on_watch);
      } else {
        stream.socket().async_read_some(asio::buffer(&watch->byte, 1), on_watch);
      }
      try {
        handler(exchange);
      } catch (const std::exception& e) {
        spdlog::error("event=handler_exception what=\"{}\"", e.what());
        exchange->respond(500, "application/json",
                          R"({"error":{"message":"internal error","type":"internal_server_error","param":null,"code":500}})",
                          {});
      }
      bool write_failed = false;
      while (true) {
        while (!exchange->items.empty() && !write_failed && !exchange->overflowed) {
          Item item = std::move(exchange->items.front());
          exchange->items.pop_front();
          if (item.kind == Item::kData) exchange->queued_bytes -= item.body.size();
          // Every write is bounded: a client that takes none of it holds the connection (and its
          // request) no longer than send_timeout_ms. write_data arms its own deadline before each write.
          if (item.kind != Item::kData) tcp_layer(stream).expires_after(std::chrono::milliseconds(options.send_timeout_ms));
          ec = {};  // the wake-up's operation_aborted is no write error
          switch (item.kind) {
            case Item::kWhole:
              co_await write_whole(stream, item, keep_alive, ec, options.send_timeout_ms);
              exchange->written_ = true;
              break;
            case Item::kHead: {
              http::response<http::empty_body> res{static_cast<http::status>(item.status), 11};
              res.set(http::field::server, "tandem");
              res.set(http::field::content_type, item.content_type);
              res.set(http::field::cache_control, "no-cache");
              for (const auto& [name, value] : item.headers) res.set(name, value);
              // A stream is delimited by closing the connection, never by chunks: node-fetch (under the
              // openai npm client) on Node 18 reports chunked responses as "Premature close" when the
              // socket outlives the response, and HTTP/1.0 clients cannot read chunks. A stream lasts
              // far longer than a new connection takes, so nothing is lost by not reusing it.
              keep_alive = false;
              res.keep_alive(false);
              res.chunked(false);
              http::response_serializer<http::empty_body> serializer{res};
              co_await http::async_write_header(stream, serializer, redirect_error(use_awaitable, ec));
              break;
            }
            case Item::kData:
              // Chunks that queued while the previous write was on the wire (a burst of outputs read
              // at once) leave in one write: one syscall and one deadline for all of them.
              while (!exchange->items.empty() && exchange->items.front().kind == Item::kData) {
                exchange->queued_bytes -= exchange->items.front().body.size();
                item.body += exchange->items.front().body;
                exchange->items.pop_front();
              }
              co_await write_data(stream, item.body, ec, options.send_timeout_ms);
              break;
            case Item::kEnd:  // the close below ends the stream
              exchange->written_ = true;
              break;
          }
          tcp_layer(stream).expires_never();
          if (ec) {
            if (ec == beast::error::timeout) limit_hit("send_timeout");
            write_failed = true;
            exchange->mark_gone();
          }
        }
        if (exchange->overflowed && !write_failed) {
          limit_hit("send_buffer_full");
          write_failed = true;
          exchange->mark_gone();
        }
        if (write_failed || exchange->written_ || exchange->client_gone()) break;
        wake.expires_at(asio::steady_timer::time_point::max());
        co_await wake.async_wait(redirect_error(use_awaitable, ec));
      }
      exchange->wake = nullptr;
      if (!watch->done) {
        tcp_layer(stream).socket().cancel(ec);
        while (!watch->done) {
          wake.expires_at(asio::steady_timer::time_point::max());
          co_await wake.async_wait(redirect_error(use_awaitable, ec));
        }
      }
      // A byte of the client's next request (pipelining) belongs in the buffer.
      if (watch->n > 0) {
        buffer.commit(asio::buffer_copy(buffer.prepare(1), asio::buffer(&watch->byte, 1)));
      }
      if (write_failed || exchange->client_gone() || !keep_alive) break;
    }
    if constexpr (kIsTls<Stream>) {
      // close_notify: a stream is delimited by the connection's end, and OpenSSL 3 clients report a
      // TLS connection that ends without one as truncated.
      tcp_layer(stream).expires_after(std::chrono::seconds(1));
      co_await stream.async_shutdown(redirect_error(use_awaitable, ec));
    }
    tcp_layer(stream).socket().shutdown(tcp::socket::shutdown_send, ec);
    tcp_layer(stream).socket().close(ec);
  }

  awaitable<void> accept_loop() {
    asio::steady_timer backoff(io);
    auto last_warning = std::chrono::steady_clock::time_point();
    while (true) {
      boost::system::error_code ec;
      tcp::socket socket = co_await acceptor.async_accept(redirect_error(use_awaitable, ec));
      if (ec) {
        if (!acceptor.is_open()) co_return;
        // Out of descriptors (EMFILE) leaves the connection queued: retrying at once would spin.
        if (std::chrono::steady_clock::now() - last_warning > std::chrono::seconds(10)) {
          last_warning = std::chrono::steady_clock::now();
          spdlog::warn("event=http_accept_failed error=\"{}\" connections={}", ec.message(), connections);
        }
        backoff.expires_after(std::chrono::milliseconds(50));
        co_await backoff.async_wait(redirect_error(use_awaitable, ec));
        continue;
      }
      if (options.max_connections > 0 && connections >= options.max_connections) {
        limit_hit("max_connections");
        if (refusing < kMaxRefusing) asio::co_spawn(io, refuse_connection(std::move(socket)), asio::detached);
        continue;  // else the socket closes here, unanswered
      }
      socket.set_option(tcp::no_delay(true), ec);
      asio::co_spawn(io, session(std::move(socket)), asio::detached);
    }
  }
};

namespace {

// The descriptors max_connections needs, with room for the worker connections and the rest: the
// soft limit is raised toward the hard one when short, else the connection limit is lowered to fit.
int fit_connections_to_descriptors(int max_connections) {
  constexpr rlim_t kHeadroom = 256;
  if (max_connections <= 0) return max_connections;
  rlimit limit{};
  if (getrlimit(RLIMIT_NOFILE, &limit) != 0) return max_connections;
  const rlim_t wanted = static_cast<rlim_t>(max_connections) + kHeadroom;
  if (limit.rlim_cur != RLIM_INFINITY && limit.rlim_cur < wanted) {
    rlimit raised = limit;
    raised.rlim_cur = limit.rlim_max == RLIM_INFINITY ? wanted : std::min(wanted, limit.rlim_max);
    if (setrlimit(RLIMIT_NOFILE, &raised) == 0) limit = raised;
  }
  if (limit.rlim_cur != RLIM_INFINITY && limit.rlim_cur < wanted) {
    const int fitted = static_cast<int>(std::max<rlim_t>(16, limit.rlim_cur > 2 * kHeadroom ? limit.rlim_cur - kHeadroom
                                                                                            : limit.rlim_cur / 2));
    spdlog::warn("event=http_max_connections_lowered requested={} effective={} open_files_limit={} (raise ulimit -n "
                 "or lower --max-connections)",
                 max_connections, fitted, static_cast<unsigned long long>(limit.rlim_cur));
    return fitted;
  }
  return max_connections;
}

// The server's TLS context: TLS 1.2 or later, the certificate chain and key of --tls-cert/--tls-key,
// and with --tls-ca a client certificate signed by that CA required of every client.
asio::ssl::context make_tls_context(const HttpServerOptions& options) {
  if (options.tls_cert.empty() || options.tls_key.empty()) {
    throw Error("--tls-cert and --tls-key: HTTPS needs both (a PEM certificate chain and its PEM private key)");
  }
  asio::ssl::context context(asio::ssl::context::tls_server);
  context.set_options(asio::ssl::context::default_workarounds | asio::ssl::context::no_sslv2 |
                      asio::ssl::context::no_sslv3 | asio::ssl::context::no_tlsv1 | asio::ssl::context::no_tlsv1_1);
  // OpenSSL's reason, e.g. "no such file" or "key values mismatch".
  auto load = [](const char* flag, const std::string& file, auto&& call) {
    boost::system::error_code ec;
    call(ec);
    if (ec) throw Error(std::string(flag) + " " + file + ": " + ec.message());
  };
  load("--tls-cert", options.tls_cert, [&](auto& ec) { context.use_certificate_chain_file(options.tls_cert, ec); });
  load("--tls-key", options.tls_key,
       [&](auto& ec) { context.use_private_key_file(options.tls_key, asio::ssl::context::pem, ec); });
  if (SSL_CTX_check_private_key(context.native_handle()) != 1) {
    throw Error("--tls-key " + options.tls_key + ": does not match the certificate of --tls-cert " + options.tls_cert);
  }
  if (!options.tls_ca.empty()) {
    load("--tls-ca", options.tls_ca, [&](auto& ec) { context.load_verify_file(options.tls_ca, ec); });
    context.set_verify_mode(asio::ssl::verify_peer | asio::ssl::verify_fail_if_no_peer_cert);
  }
  return context;
}

}  // namespace

HttpServer::HttpServer(const HttpServerOptions& options, HttpHandler handler, HttpServerHooks hooks)
    : impl_(std::make_unique<Impl>()) {
  impl_->options = options;
  impl_->options.max_connections = fit_connections_to_descriptors(options.max_connections);
  impl_->handler = std::move(handler);
  impl_->hooks = std::move(hooks);
  if (!options.tls_cert.empty() || !options.tls_key.empty() || !options.tls_ca.empty()) impl_->tls = make_tls_context(options);
  boost::system::error_code ec;
  auto address = asio::ip::make_address(options.host, ec);
  if (ec) throw Error("--host: '" + options.host + "' is not an IP address");
  tcp::endpoint endpoint(address, options.port);
  impl_->acceptor.open(endpoint.protocol(), ec);
  if (!ec) impl_->acceptor.set_option(asio::socket_base::reuse_address(true), ec);
  if (!ec) impl_->acceptor.bind(endpoint, ec);
  if (!ec) impl_->acceptor.listen(asio::socket_base::max_listen_connections, ec);
  if (ec) {
    throw Error("cannot listen on " + options.host + ":" + std::to_string(options.port) + ": " + ec.message());
  }
}

HttpServer::~HttpServer() = default;

uint16_t HttpServer::port() const { return impl_->acceptor.local_endpoint().port(); }

Executor& HttpServer::executor() { return impl_->executor; }

int HttpServer::num_connections() const { return impl_->connections; }

void HttpServer::run() {
  asio::co_spawn(impl_->io, impl_->accept_loop(), asio::detached);
  impl_->io.run();
}

void HttpServer::stop() {
  asio::post(impl_->io, [impl = impl_.get()] {
    boost::system::error_code ec;
    impl->acceptor.close(ec);
    impl->io.stop();
  });
}

}  // namespace tandem::frontend
