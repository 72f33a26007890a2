// The frontend's view of HTTP, kept free of Boost.Beast/Asio so that only http_server.cpp pays
// their compile time: one request, and the exchange through which its response (whole, or streamed
// as Server-Sent Events) goes back.
//
// Thread-safety: every method of HttpExchange and every handler runs on the server's one I/O thread;
// other threads reach it through Executor::post.
#pragma once

#include <functional>
#include <map>
#include <memory>
#include <string>
#include <utility>
#include <vector>

namespace tandem::frontend {

struct HttpRequest {
  std::string method;  // "GET", "POST"
  std::string target;  // "/v1/completions?x=y"
  std::string path;    // "/v1/completions"
  std::map<std::string, std::string> headers;  // lower-case names
  std::string body;
  bool peer_is_loopback = false;  // the client connected from 127.0.0.0/8 or ::1

  const std::string* header(const std::string& lower_name) const {
    auto it = headers.find(lower_name);
    return it == headers.end() ? nullptr : &it->second;
  }
};

using HttpHeaders = std::vector<std::pair<std::string, std::string>>;

class HttpExchange {
 public:
  virtual ~HttpExchange() = default;
  virtual const HttpRequest& request() const = 0;
  // A whole response. REQUIRES: nothing sent yet.
  virtual void respond(int status, const std::string& content_type, std::string body, const HttpHeaders& headers) = 0;
  // Starts a chunked response (text/event-stream); then write() pieces and end() it.
  virtual void start_stream(int status, const std::string& content_type, const HttpHeaders& headers) = 0;
  virtual void write(std::string data) = 0;
  virtual void end() = 0;
  // Runs once if the client goes away before the response ended (disconnect or a failed write).
  virtual void on_client_gone(std::function<void()> callback) = 0;
  virtual bool client_gone() const = 0;
};

// Runs callbacks on the I/O thread.
class Executor {
 public:
  virtual ~Executor() = default;
  // Thread-safe: may be called from any thread.
  virtual void post(std::function<void()> fn) = 0;
  virtual void post_after(int delay_ms, std::function<void()> fn) = 0;
};

using HttpHandler = std::function<void(std::shared_ptr<HttpExchange>)>;

// The limits that keep one client from holding the server (issue 20): each is a flag of `tandem
// frontend` (docs/serving.md, "Limits and keys").
struct HttpServerOptions {
  std::string host = "0.0.0.0";
  uint16_t port = 8000;
  size_t max_body_bytes = 16u << 20;    // larger bodies get 413
  size_t max_header_bytes = 16u << 10;  // a larger request line + headers get 431
  // A request's header must be complete this long after its first byte, or, for a connection's first
  // request, after the connection was accepted; else the connection is closed (a slowloris client
  // sending a byte at a time, or connecting and sending nothing, holds it no longer).
  int header_timeout_ms = 10000;
  // A keep-alive connection idle this long between requests is closed; a body must arrive within it too.
  int idle_timeout_ms = 60000;
  // Connections beyond this many open ones are answered 503 and closed at once; 0 = no limit.
  int max_connections = 8192;
  // HTTPS (--tls-cert, --tls-key: PEM files): every connection is TLS 1.2+. With tls_ca (--tls-ca)
  // every client must present a certificate that CA signed. All empty: plain HTTP.
  std::string tls_cert;
  std::string tls_key;
  std::string tls_ca;
  // A client that reads its response slowly, or not at all: taking none of it for send_timeout_ms
  // (the deadline restarts with every piece the socket accepts) closes the connection, and so do
  // response bytes queued for it beyond max_send_buffer_bytes (the producer ran that far ahead of it). Either counts as the client going away, so its
  // request is aborted on its workers.
  int send_timeout_ms = 30000;
  size_t max_send_buffer_bytes = 8u << 20;
};

// What the server answers or closes by itself, before any handler sees a request.
struct HttpServerHooks {
  // The body (and its content type) of an error the server answers itself: 413 (body too large), 431
  // (header too large), 503 (too many connections).
  std::function<std::pair<std::string, std::string>(int status)> refusal;
  // A connection closed by a limit: "body_too_large", "header_too_large", "header_timeout",
  // "body_timeout", "max_connections", "send_timeout", "send_buffer_full". May be empty.
  std::function<void(const char* reason)> on_limit;
};

// Asynchronous HTTP/1.1 server (Boost.Beast) on one I/O thread.
class HttpServer {
 public:
  // Binds now (throws tandem::Error naming the address if it cannot); serves once run() is called.
  HttpServer(const HttpServerOptions& options, HttpHandler handler, HttpServerHooks hooks);
  ~HttpServer();
  uint16_t port() const;
  Executor& executor();
  // Connections open now (I/O thread only).
  int num_connections() const;
  // Serves on the calling thread until stop().
  void run();
  // Thread-safe.
  void stop();

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

}  // namespace tandem::frontend
