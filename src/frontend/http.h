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

struct HttpServerOptions {
  std::string host = "0.0.0.0";
  uint16_t port = 8000;
  size_t max_body_bytes = 16u << 20;  // larger bodies get 413
  int idle_timeout_ms = 60000;        // a keep-alive connection idle this long is closed
};

// Asynchronous HTTP/1.1 server (Boost.Beast) on one I/O thread.
class HttpServer {
 public:
  // Binds now (throws tandem::Error naming the address if it cannot); serves once run() is called.
  // `too_large` renders the 413 response for a body over the limit (body, content type).
  HttpServer(const HttpServerOptions& options, HttpHandler handler,
             std::function<std::pair<std::string, std::string>()> too_large);
  ~HttpServer();
  uint16_t port() const;
  Executor& executor();
  // Serves on the calling thread until stop().
  void run();
  // Thread-safe.
  void stop();

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

}  // namespace tandem::frontend
