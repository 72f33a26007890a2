// A stub OpenAI-compatible server for tests and the client-overhead benchmark: answers
// /v1/completions and /v1/chat/completions with SSE tokens at scripted times (or faults), serves a
// Prometheus /metrics, and records when it actually sent each token so tests can compare the client's
// timestamps with the truth rather than with sleeps.
// Runs its own thread with one Asio event loop; records() may be called from any thread.
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <vector>

namespace tandem::loadgen::testing {

struct StubScript {
  enum class Fault { kNone, kHttp500, kDropAfter, kMalformedAfter, kErrorEventAfter };
  // Gap before each token in ms: gaps_ms[0] from the request's arrival, then from the previous token.
  // Its size is the number of tokens.
  std::vector<double> gaps_ms;
  Fault fault = Fault::kNone;
  int fault_after_tokens = 0;  // tokens sent before the fault
  bool send_usage = true;
  bool coalesce = false;       // write every event in one write (a server that answers at once)
};

struct StubRecord {
  std::string path;
  std::string body;                 // the request body as received
  std::string prompt;               // prompt, or the first message's content
  int64_t received_ns = 0;          // steady clock, when the request was fully read
  std::vector<int64_t> sent_ns;     // steady clock, just before each token's write
  std::vector<int64_t> sent_end_ns; // steady clock, just after it: the token left in [sent, sent_end]
};

class StubOpenAIServer {
 public:
  using ScriptFn = std::function<StubScript(const std::string& prompt)>;
  // Listens on 127.0.0.1, an ephemeral port. script is called on the server thread.
  explicit StubOpenAIServer(ScriptFn script, bool record = true);
  ~StubOpenAIServer();
  StubOpenAIServer(const StubOpenAIServer&) = delete;
  StubOpenAIServer& operator=(const StubOpenAIServer&) = delete;

  uint16_t port() const;
  std::string base_url() const;
  std::vector<StubRecord> records() const;
  // records() once it holds at least n records, or after timeout_s: the stub files a record after its
  // last write, which the client may see before the stub's thread gets there.
  std::vector<StubRecord> wait_for_records(size_t n, double timeout_s = 5.0) const;
  int64_t num_requests() const;       // completion requests received (not /metrics)
  int32_t peak_in_flight() const;     // most completion requests being answered at once

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

// Tokens as the word codec reads them: "w<i> ".
std::vector<double> uniform_gaps(int num_tokens, double first_ms, double gap_ms);

}  // namespace tandem::loadgen::testing
