// Frontend: the OpenAI-compatible HTTP server with the worker registry and the router (DESIGN.md §2
// steps 1, 2 and 4). Workers register on the registry port (or are found in etcd and dialed); each
// request is validated, tokenized, routed (decode worker, remote or local prefill), sent over the
// worker's request-plane connection, and its outputs are streamed back as SSE or one JSON body.
// The parts: worker_directory.h (the workers), request_lifecycle.h (one request), router.h,
// openai.h and openai_responses.h (the API's shapes), serving_metrics.h.
//
// Ownership: owns the HTTP server and the worker directory (the registry listener and every worker
// connection).
// Thread-safety: all request and registry state lives on the HTTP server's single I/O thread;
// connection threads, dialers and the etcd watcher post to it. stop() and drain() may be called from any thread.
#pragma once

#include <memory>
#include <string>
#include <vector>

#include "cluster/etcd.h"
#include "common/socket.h"

#include "frontend/http.h"
#include "frontend/prompt_codec.h"
#include "frontend/reasoning_parser.h"
#include "frontend/tool_call_parser.h"
#include "frontend/router.h"

namespace tandem::frontend {

struct FrontendOptions {
  HttpServerOptions http;
  std::string registry_host = "127.0.0.1";
  uint16_t registry_port = 0;          // 0 = ephemeral (see ready_file)
  RouterOptions router;
  int heartbeat_timeout_ms = 5000;     // a worker silent this long is dropped
  int remote_prefill_timeout_ms = 30000;  // passed to decode workers: then they prefill locally
  int request_timeout_ms = 600000;     // a request with no output for this long fails (504)
  int request_deadline_ms = 0;         // a request not done this long after arrival fails (504); 0 = none
  int default_max_tokens = 1024;       // chat requests without max_tokens: min(this, room left)
  int migration_limit = 3;             // --migration-limit: times a stream moves on after losing its worker
  // --served-model-name: the names /v1/models lists and requests may use, each routed to every
  // worker; empty = the names workers register with.
  std::vector<std::string> served_model_name;
  ReasoningFormat reasoning = ReasoningFormat::kNone;  // --reasoning-parser
  ToolParserKind tool_parser = ToolParserKind::kNone;  // --tool-call-parser
  std::string ready_file;              // written once listening: {"http_port": .., "registry_port": ..}
  // Cluster mode (non-empty etcd): workers are found under /tandem/<ns>/workers/ and dialed; the
  // thresholds live under /tandem/<ns>/disagg/. The embedded registry port stays open as well.
  std::vector<net::Endpoint> etcd;
  cluster::EtcdCredentials etcd_credentials;  // --etcd-user, --etcd-password-file (no user: none)
  std::string cluster_namespace = "default";
  std::string frontend_id;             // names this frontend to workers and in logs ("" = host-pid)
  // "nats://...": remote prefills go through the JetStream work queue; its depth (read from the
  // stream) feeds the --max-prefill-queue rule. Workers need the same --prefill-queue.
  std::string prefill_queue;
  // POST /v1/tandem/router: with a token, from anywhere with "Authorization: Bearer <token>";
  // without one, only from loopback clients.
  std::string admin_token;
  // Admission (auth.h, admission.h): with keys, every /v1/* request needs "Authorization: Bearer
  // <one of them>"; beyond max_pending_requests in flight (0 = no limit), new ones get 429.
  std::vector<std::string> api_keys;
  int max_pending_requests = 0;
};

class Frontend {
 public:
  // Binds both ports (throws tandem::Error naming the address if it cannot). `codec` may be null:
  // then only token-id prompts are accepted.
  Frontend(FrontendOptions options, std::unique_ptr<PromptCodec> codec);
  ~Frontend();
  uint16_t http_port() const;
  uint16_t registry_port() const;
  // Serves until stop() (or the end of a drain); blocks the calling thread.
  void run();
  void stop();
  // /health turns 503, new requests get 503, and run() returns once the running ones have finished
  // or `deadline_ms` has passed.
  void drain(int deadline_ms);

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

}  // namespace tandem::frontend
