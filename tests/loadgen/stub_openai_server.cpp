// The stub OpenAI server: Asio coroutines on one thread, HTTP/1.1 keep-alive, chunked SSE.
#include <utility>  // before Asio's awaitable headers (Boost 1.74 with g++ 12)

#include "stub_openai_server.h"

#include <boost/asio/co_spawn.hpp>
#include <boost/asio/detached.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/read.hpp>
#include <boost/asio/read_until.hpp>
#include <boost/asio/redirect_error.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/streambuf.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <boost/asio/write.hpp>
#include <nlohmann/json.hpp>

#include <atomic>
#include <chrono>
#include <mutex>
#include <sstream>
#include <thread>

namespace tandem::loadgen::testing {

namespace asio = boost::asio;
using tcp = asio::ip::tcp;
using boost::system::error_code;

namespace {

int64_t now_ns() {
  return std::chrono::duration_cast<std::chrono::nanoseconds>(std::chrono::steady_clock::now().time_since_epoch()).count();
}

std::string chunk(const std::string& data) {
  std::ostringstream out;
  out << std::hex << data.size() << "\r\n" << data << "\r\n";
  return out.str();
}

}  // namespace

std::vector<double> uniform_gaps(int num_tokens, double first_ms, double gap_ms) {
  std::vector<double> gaps(static_cast<size_t>(num_tokens), gap_ms);
  if (!gaps.empty()) gaps[0] = first_ms;
  return gaps;
}

struct StubOpenAIServer::Impl {
  ScriptFn script;
  bool record = true;
  asio::io_context io{1};
  tcp::acceptor acceptor{io};
  uint16_t port = 0;
  std::thread thread;
  mutable std::mutex mu;
  std::vector<StubRecord> records;  // guarded by mu
  std::atomic<int64_t> num_requests{0};
  std::atomic<int64_t> tokens_sent{0};
  int32_t in_flight = 0;  // server thread only
  std::atomic<int32_t> peak_in_flight{0};

  asio::awaitable<void> accept_loop() {
    for (;;) {
      error_code ec;
      tcp::socket sock = co_await acceptor.async_accept(asio::redirect_error(asio::use_awaitable, ec));
      if (ec) co_return;
      sock.set_option(tcp::no_delay(true), ec);
      asio::co_spawn(io, serve_connection(std::move(sock)), asio::detached);
    }
  }

  asio::awaitable<void> serve_connection(tcp::socket sock) {
    asio::streambuf buffer;
    for (;;) {
      error_code ec;
      size_t head_len = co_await asio::async_read_until(sock, buffer, "\r\n\r\n", asio::redirect_error(asio::use_awaitable, ec));
      if (ec) co_return;
      std::string head(asio::buffers_begin(buffer.data()), asio::buffers_begin(buffer.data()) + static_cast<long>(head_len));
      buffer.consume(head_len);
      std::istringstream lines(head);
      std::string method, path, line;
      lines >> method >> path;
      size_t content_length = 0;
      while (std::getline(lines, line)) {
        for (auto& c : line) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
        if (line.rfind("content-length:", 0) == 0) content_length = std::stoul(line.substr(15));
      }
      if (buffer.size() < content_length) {
        co_await asio::async_read(sock, buffer, asio::transfer_exactly(content_length - buffer.size()),
                                  asio::redirect_error(asio::use_awaitable, ec));
        if (ec) co_return;
      }
      std::string body(asio::buffers_begin(buffer.data()), asio::buffers_begin(buffer.data()) + static_cast<long>(content_length));
      buffer.consume(content_length);
      const int64_t received_ns = now_ns();
      if (method == "GET" && path == "/metrics") {
        std::string text = "# HELP tandem_stub_requests_total Requests answered.\n# TYPE tandem_stub_requests_total counter\n"
                           "tandem_stub_requests_total " + std::to_string(num_requests.load()) + "\n"
                           "# TYPE vllm:generation_tokens counter\nvllm:generation_tokens_total{model_name=\"stub\"} " +
                           std::to_string(tokens_sent.load()) + "\n# TYPE tandem_stub_gauge gauge\ntandem_stub_gauge 7\n";
        std::string response = "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: " + std::to_string(text.size()) + "\r\n\r\n" + text;
        co_await asio::async_write(sock, asio::buffer(response), asio::redirect_error(asio::use_awaitable, ec));
        if (ec) co_return;
        continue;
      }
      if (method == "GET" && path == "/v1/models") {
        std::string text = R"({"object":"list","data":[{"id":"stub-model","object":"model"}]})";
        std::string response = "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: " + std::to_string(text.size()) + "\r\n\r\n" + text;
        co_await asio::async_write(sock, asio::buffer(response), asio::redirect_error(asio::use_awaitable, ec));
        if (ec) co_return;
        continue;
      }
      if (method != "POST") {
        std::string response = "HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\n\r\n";
        co_await asio::async_write(sock, asio::buffer(response), asio::redirect_error(asio::use_awaitable, ec));
        if (ec) co_return;
        continue;
      }
      ++num_requests;
      ++in_flight;
      peak_in_flight = std::max(peak_in_flight.load(), in_flight);
      bool keep = co_await answer(sock, path, body, received_ns);
      --in_flight;
      if (!keep) co_return;
    }
  }

  // Answers one completion request; returns false when the connection must close.
  asio::awaitable<bool> answer(tcp::socket& sock, const std::string& path, const std::string& body, int64_t received_ns) {
    nlohmann::json request = nlohmann::json::parse(body, nullptr, false);
    StubRecord rec;
    rec.path = path;
    rec.body = body;
    rec.received_ns = received_ns;
    if (request.is_object() && request.contains("prompt")) rec.prompt = request["prompt"].get<std::string>();
    else if (request.is_object() && request.contains("messages")) rec.prompt = request["messages"][0]["content"].get<std::string>();
    const bool chat = path.find("chat") != std::string::npos;
    StubScript s = script(rec.prompt);
    error_code ec;
    auto finish = [&]() {
      if (!record) return;
      std::lock_guard<std::mutex> lock(mu);
      records.push_back(std::move(rec));
    };
    if (s.fault == StubScript::Fault::kHttp500) {
      std::string err = R"({"error":{"message":"stub says no","type":"internal_error"}})";
      std::string response = "HTTP/1.1 500 Internal Server Error\r\nContent-Type: application/json\r\nContent-Length: " +
                             std::to_string(err.size()) + "\r\n\r\n" + err;
      co_await asio::async_write(sock, asio::buffer(response), asio::redirect_error(asio::use_awaitable, ec));
      finish();
      co_return !ec;
    }
    std::string out = "HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nCache-Control: no-cache\r\nTransfer-Encoding: chunked\r\n\r\n";
    if (!s.coalesce) {
      co_await asio::async_write(sock, asio::buffer(out), asio::redirect_error(asio::use_awaitable, ec));
      out.clear();
      if (ec) { finish(); co_return false; }
    }
    asio::steady_timer timer(io);
    int64_t due_ns = received_ns;
    const int num_tokens = static_cast<int>(s.gaps_ms.size());
    for (int k = 0; k < num_tokens; ++k) {
      if (s.fault != StubScript::Fault::kNone && k == s.fault_after_tokens) break;
      due_ns += static_cast<int64_t>(s.gaps_ms[static_cast<size_t>(k)] * 1e6);
      if (due_ns > now_ns() && !s.coalesce) {
        timer.expires_at(std::chrono::steady_clock::time_point(std::chrono::nanoseconds(due_ns)));
        co_await timer.async_wait(asio::redirect_error(asio::use_awaitable, ec));
      }
      const std::string text = "w" + std::to_string(k) + " ";
      nlohmann::json event = chat ? nlohmann::json{{"id", "chatcmpl-stub"}, {"object", "chat.completion.chunk"},
                                                   {"choices", {{{"index", 0}, {"delta", {{"content", text}}}}}}}
                                  : nlohmann::json{{"id", "cmpl-stub"}, {"object", "text_completion"},
                                                   {"choices", {{{"index", 0}, {"text", text}, {"finish_reason", nullptr}}}}};
      out += chunk("data: " + event.dump() + "\n\n");
      ++tokens_sent;
      if (!s.coalesce) {
        if (record) rec.sent_ns.push_back(now_ns());
        co_await asio::async_write(sock, asio::buffer(out), asio::redirect_error(asio::use_awaitable, ec));
        if (record) rec.sent_end_ns.push_back(now_ns());
        out.clear();
        if (ec) { finish(); co_return false; }
      }
    }
    switch (s.fault) {
      case StubScript::Fault::kDropAfter: {
        if (!out.empty()) co_await asio::async_write(sock, asio::buffer(out), asio::redirect_error(asio::use_awaitable, ec));
        sock.shutdown(tcp::socket::shutdown_both, ec);
        sock.close(ec);
        finish();
        co_return false;
      }
      case StubScript::Fault::kMalformedAfter:
        out += chunk("data: {\"choices\": [{\"text\": unquoted garbage\n\n");
        break;
      case StubScript::Fault::kErrorEventAfter:
        out += chunk("data: {\"error\": {\"message\": \"stub engine died\", \"code\": 500}}\n\n");
        break;
      default:
        break;
    }
    if (s.send_usage) {
      int prompt_tokens = 0;
      std::istringstream words(rec.prompt);
      std::string word;
      while (words >> word) ++prompt_tokens;
      nlohmann::json usage = {{"id", "cmpl-stub"}, {"choices", nlohmann::json::array()},
                              {"usage", {{"prompt_tokens", prompt_tokens}, {"completion_tokens", num_tokens},
                                         {"total_tokens", prompt_tokens + num_tokens}}}};
      if (s.fault == StubScript::Fault::kNone) out += chunk("data: " + usage.dump() + "\n\n");
    }
    out += chunk("data: [DONE]\n\n");
    out += "0\r\n\r\n";
    if (record && s.coalesce) {
      const int64_t t = now_ns();
      rec.sent_ns.assign(static_cast<size_t>(num_tokens), t);
    }
    co_await asio::async_write(sock, asio::buffer(out), asio::redirect_error(asio::use_awaitable, ec));
    if (record && s.coalesce) rec.sent_end_ns.assign(static_cast<size_t>(num_tokens), now_ns());
    finish();
    co_return !ec;
  }
};

StubOpenAIServer::StubOpenAIServer(ScriptFn script, bool record) : impl_(std::make_unique<Impl>()) {
  impl_->script = std::move(script);
  impl_->record = record;
  tcp::endpoint endpoint(asio::ip::make_address("127.0.0.1"), 0);
  impl_->acceptor.open(endpoint.protocol());
  impl_->acceptor.set_option(tcp::acceptor::reuse_address(true));
  impl_->acceptor.bind(endpoint);
  impl_->acceptor.listen(4096);
  impl_->port = impl_->acceptor.local_endpoint().port();
  asio::co_spawn(impl_->io, impl_->accept_loop(), asio::detached);
  impl_->thread = std::thread([this] { impl_->io.run(); });
}

StubOpenAIServer::~StubOpenAIServer() {
  impl_->io.stop();
  impl_->thread.join();
}

uint16_t StubOpenAIServer::port() const { return impl_->port; }
std::string StubOpenAIServer::base_url() const { return "http://127.0.0.1:" + std::to_string(port()); }

std::vector<StubRecord> StubOpenAIServer::records() const {
  std::lock_guard<std::mutex> lock(impl_->mu);
  return impl_->records;
}

std::vector<StubRecord> StubOpenAIServer::wait_for_records(size_t n, double timeout_s) const {
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::duration_cast<std::chrono::steady_clock::duration>(
                                                                std::chrono::duration<double>(timeout_s));
  for (;;) {
    {
      std::lock_guard<std::mutex> lock(impl_->mu);
      if (impl_->records.size() >= n || std::chrono::steady_clock::now() >= deadline) return impl_->records;
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(1));
  }
}

int64_t StubOpenAIServer::num_requests() const { return impl_->num_requests.load(); }
int32_t StubOpenAIServer::peak_in_flight() const { return impl_->peak_in_flight.load(); }

}  // namespace tandem::loadgen::testing
