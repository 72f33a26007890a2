// Asynchronous HTTP/1.1 server on Boost.Beast with C++20 coroutines (see http.h). One coroutine per
// connection: read a request, hand it to the handler, then pump whatever the handler queues on the
// exchange (a whole response, or SSE chunks) to the socket, while a pending one-byte read notices a
// client that goes away mid-response.
#include <utility>  // before Asio's awaitable headers (Boost 1.74 with g++ 12)

#include <boost/asio/co_spawn.hpp>
#include <boost/asio/detached.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/post.hpp>
#include <boost/asio/redirect_error.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <boost/asio/write.hpp>
#include <boost/beast/core.hpp>
#include <boost/beast/http.hpp>

#include <spdlog/spdlog.h>

#include <deque>

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

struct Item {
  enum Kind { kWhole, kHead, kData, kEnd } kind;
  int status = 200;
  std::string content_type;
  std::string body;
  HttpHeaders headers;
};

class Exchange : public HttpExchange {
 public:
  explicit Exchange(HttpRequest request) : request_(std::move(request)) {}
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
    if (closed_ || data.empty()) return;
    items.push_back({Item::kData, 0, {}, std::move(data), {}});
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
  asio::steady_timer* wake = nullptr;  // the session's timer while it serves this exchange
  bool written_ = false;               // the whole response is on the wire

 private:
  HttpRequest request_;
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
  std::function<std::pair<std::string, std::string>()> too_large;
  asio::io_context io{1};
  tcp::acceptor acceptor{io};
  IoExecutor executor{io};

  awaitable<void> write_whole(beast::tcp_stream& stream, const Item& item, bool keep_alive,
                              boost::system::error_code& ec) {
    http::response<http::string_body> res{static_cast<http::status>(item.status), 11};
    res.set(http::field::server, "tandem");
    res.set(http::field::content_type, item.content_type);
    for (const auto& [name, value] : item.headers) res.set(name, value);
    res.keep_alive(keep_alive);
    res.body() = item.body;
    res.prepare_payload();
    co_await http::async_write(stream, res, redirect_error(use_awaitable, ec));
  }

  // Answers 413 without reading the body, then drains it briefly so the client sees the answer
  // rather than a reset.
  awaitable<void> refuse_too_large(beast::tcp_stream& stream) {
    auto [body, content_type] = too_large();
    Item item{Item::kWhole, 413, content_type, body, {}};
    boost::system::error_code ec;
    co_await write_whole(stream, item, false, ec);
    stream.socket().shutdown(tcp::socket::shutdown_send, ec);
    char scratch[65536];
    size_t drained = 0;
    stream.expires_after(std::chrono::seconds(2));
    while (!ec && drained < (256u << 20)) {
      drained += co_await stream.async_read_some(asio::buffer(scratch), redirect_error(use_awaitable, ec));
    }
  }

  awaitable<void> session(tcp::socket socket) {
    beast::tcp_stream stream(std::move(socket));
    beast::flat_buffer buffer;
    asio::steady_timer wake(io);
    boost::system::error_code ec;
    // Fixed for the connection: the admin routes trust loopback peers without a token.
    bool peer_loopback = false;
    {
      auto remote = stream.socket().remote_endpoint(ec);
      if (!ec) peer_loopback = remote.address().is_loopback() ||
                               (remote.address().is_v6() && remote.address().to_v6().is_v4_mapped() &&
                                asio::ip::make_address_v4(asio::ip::v4_mapped, remote.address().to_v6()).is_loopback());
      ec = {};
    }
    while (true) {
      http::request_parser<http::string_body> parser;
      parser.body_limit(options.max_body_bytes);
      stream.expires_after(std::chrono::milliseconds(options.idle_timeout_ms));
      co_await http::async_read_header(stream, buffer, parser, redirect_error(use_awaitable, ec));
      // Beast refuses a Content-Length over the limit while parsing the header.
      if (ec == http::error::body_limit ||
          (!ec && parser.content_length() && *parser.content_length() > options.max_body_bytes)) {
        stream.expires_never();
        co_await refuse_too_large(stream);
        break;
      }
      if (ec) break;
      co_await http::async_read(stream, buffer, parser, redirect_error(use_awaitable, ec));
      stream.expires_never();
      if (ec == http::error::body_limit) {
        co_await refuse_too_large(stream);
        break;
      }
      if (ec) break;
      auto& msg = parser.get();
      bool keep_alive = msg.keep_alive();
      HttpRequest request = to_http_request(msg, peer_loopback);

      auto exchange = std::make_shared<Exchange>(std::move(request));
      exchange->wake = &wake;
      // Watches for the client going away while the response is produced.
      struct Watch {
        bool done = false;
        size_t n = 0;
        char byte = 0;
      };
      auto watch = std::make_shared<Watch>();
      stream.socket().async_read_some(asio::buffer(&watch->byte, 1),
                                      [exchange, watch, &wake](const boost::system::error_code& e, size_t n) {
                                        watch->done = true;
                                        watch->n = n;
                                        if (e && e != asio::error::operation_aborted) exchange->mark_gone();
                                        wake.cancel();
                                      });
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
        while (!exchange->items.empty() && !write_failed) {
          Item item = std::move(exchange->items.front());
          exchange->items.pop_front();
          switch (item.kind) {
            case Item::kWhole:
              co_await write_whole(stream, item, keep_alive, ec);
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
              co_await asio::async_write(stream, asio::buffer(item.body), redirect_error(use_awaitable, ec));
              break;
            case Item::kEnd:  // the close below ends the stream
              exchange->written_ = true;
              break;
          }
          if (ec) {
            write_failed = true;
            exchange->mark_gone();
          }
        }
        if (write_failed || exchange->written_ || exchange->client_gone()) break;
        wake.expires_at(asio::steady_timer::time_point::max());
        co_await wake.async_wait(redirect_error(use_awaitable, ec));
      }
      exchange->wake = nullptr;
      if (!watch->done) {
        stream.socket().cancel(ec);
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
    stream.socket().shutdown(tcp::socket::shutdown_send, ec);
    stream.socket().close(ec);
  }

  awaitable<void> accept_loop() {
    while (true) {
      boost::system::error_code ec;
      tcp::socket socket = co_await acceptor.async_accept(redirect_error(use_awaitable, ec));
      if (ec) {
        if (!acceptor.is_open()) co_return;
        continue;
      }
      socket.set_option(tcp::no_delay(true), ec);
      asio::co_spawn(io, session(std::move(socket)), asio::detached);
    }
  }
};

HttpServer::HttpServer(const HttpServerOptions& options, HttpHandler handler,
                       std::function<std::pair<std::string, std::string>()> too_large)
    : impl_(std::make_unique<Impl>()) {
  impl_->options = options;
  impl_->handler = std::move(handler);
  impl_->too_large = std::move(too_large);
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
