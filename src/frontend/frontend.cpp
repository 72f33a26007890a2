// Frontend (see frontend.h): the HTTP routes, and the wiring of the parts that do the work: the worker
// directory (worker_directory.h), the request lifecycle (request_lifecycle.h), the router thresholds
// (router_admin.h) and the metrics (serving_metrics.h). Everything here runs on the HTTP server's
// I/O thread, except the public methods, which post to it.
#include "frontend/frontend.h"

#include <spdlog/spdlog.h>
#include <unistd.h>

#include <chrono>
#include <ctime>
#include <filesystem>
#include <fstream>

#include "frontend/admission.h"
#include "frontend/auth.h"
#include "frontend/metrics.h"
#include "frontend/openai.h"
#include "frontend/post_gate.h"
#include "frontend/request_lifecycle.h"
#include "frontend/router_admin.h"
#include "frontend/serving_metrics.h"
#include "frontend/worker_directory.h"

namespace tandem::frontend {
namespace {

using nlohmann::json;

DirectoryOptions directory_options(const FrontendOptions& o) {
  DirectoryOptions d;
  d.registry_host = o.registry_host;
  d.registry_port = o.registry_port;
  d.heartbeat_timeout_ms = o.heartbeat_timeout_ms;
  d.served_model_name = o.served_model_name;
  d.etcd = o.etcd;
  d.etcd_credentials = o.etcd_credentials;
  d.cluster_namespace = o.cluster_namespace;
  d.frontend_id = o.frontend_id;
  d.prefill_queue = o.prefill_queue;
  return d;
}

LifecycleOptions lifecycle_options(const FrontendOptions& o) {
  LifecycleOptions l;
  l.remote_prefill_timeout_ms = o.remote_prefill_timeout_ms;
  l.request_timeout_ms = o.request_timeout_ms;
  l.migration_limit = o.migration_limit;
  l.request_deadline_ms = o.request_deadline_ms;
  l.default_max_tokens = o.default_max_tokens;
  l.served_model_name = o.served_model_name;
  l.reasoning = o.reasoning;
  l.tool_parser = o.tool_parser;
  return l;
}

}  // namespace

struct Frontend::Impl {
  FrontendOptions options;  // options.router holds the thresholds as they stand (admin, etcd)
  std::unique_ptr<PromptCodec> codec;
  std::unique_ptr<HttpServer> http;
  // Threads that may outlive run() post through it only while the I/O context exists.
  std::shared_ptr<PostGate> gate = std::make_shared<PostGate>();
  Metrics metrics;
  ApiKeys api_keys;
  std::unique_ptr<Admission> admission;
  std::unique_ptr<WorkerDirectory> directory;
  std::unique_ptr<RequestLifecycle> requests;
  Clock::time_point drain_deadline;
  bool stopped = false;

  Executor& io() { return http->executor(); }

  // Periodic: drop silent workers, fail requests that stalled, end a drain.
  void tick() {
    if (stopped) return;
    const auto now = Clock::now();
    directory->tick(now);
    requests->expire_stalled(now);
    if (requests->draining() && (requests->num_active() == 0 || now > drain_deadline)) {
      spdlog::info("event=drained remaining_requests={}", requests->num_active());
      stop_now();
      return;
    }
    io().post_after(100, [this] { tick(); });
  }

  void stop_now() {
    if (stopped) return;
    stopped = true;
    directory->close();
    http->stop();
  }

  // ---- HTTP routes ------------------------------------------------------------------------------

  void reply_error(HttpExchange& ex, const ApiError& error) { respond_error(ex, metrics, error, {}); }

  void handle(std::shared_ptr<HttpExchange> ex) {
    const HttpRequest& req = ex->request();
    const std::string& path = req.path;
    metrics.add("tandem_http_requests_total", "");
    if (path.rfind("/v1/", 0) == 0) {
      // The admin route takes its own token as a key too: one Authorization header carries either.
      const std::string& admin = path == "/v1/tandem/router" ? options.admin_token : std::string();
      if (auto error = api_keys.check(req, admin)) return respond_error(*ex, metrics, *error, unauthorized_headers());
    }
    if (path == "/v1/completions" || path == "/v1/chat/completions") {
      if (req.method != "POST") return reply_error(*ex, ApiError::method_not_allowed("use POST for " + path));
      if (auto error = admission->admit(requests->num_active())) {
        return respond_error(*ex, metrics, *error, admission->rejection_headers());
      }
      return requests->start(std::move(ex), path == "/v1/chat/completions");
    }
    if (path == "/health") {
      if (req.method != "GET") return reply_error(*ex, ApiError::method_not_allowed("use GET for /health"));
      std::string reason;
      if (requests->draining()) reason = "draining";
      else if (!any_decode_worker(*directory)) reason = "no worker that can decode is registered";
      if (!reason.empty()) return reply_error(*ex, ApiError::unavailable(reason));
      return ex->respond(200, "application/json", R"({"status":"ok"})", {});
    }
    if (path == "/v1/models" && req.method == "GET") return handle_models(*ex);
    if (path == "/metrics" && req.method == "GET") {
      metrics.set("tandem_http_connections", "", http->num_connections());
      return ex->respond(200, "text/plain; version=0.0.4; charset=utf-8",
                         render_serving_metrics(metrics, *directory, requests->num_active(), options.router), {});
    }
    if (path == "/v1/tandem/router") return handle_router_config(std::move(ex));
    reply_error(*ex, ApiError::not_found("no route " + req.method + " " + path));
  }

  void handle_models(HttpExchange& ex) {
    json data = json::array();
    int max_len = 0;
    directory->for_each_worker([&](const WorkerView& w) {
      if (w.registered && w.can_decode()) max_len = std::max(max_len, w.info->max_model_len());
    });
    for (const auto& name : served_models(*directory, options.served_model_name)) {
      data.push_back({{"id", name}, {"object", "model"}, {"created", std::time(nullptr)}, {"owned_by", "tandem"},
                      {"root", name}, {"max_model_len", max_len}});
    }
    ex.respond(200, "application/json", json{{"object", "list"}, {"data", data}}.dump(), {});
  }

  std::string thresholds_body() const { return thresholds_json(options.router, directory->thresholds_source()).dump(); }

  // GET reads the thresholds; POST changes them: here, and where the directory shares them (etcd,
  // so that every frontend applies them from its watch).
  void handle_router_config(std::shared_ptr<HttpExchange> ex) {
    const HttpRequest& req = ex->request();
    if (req.method == "GET") return ex->respond(200, "application/json", thresholds_body(), {});
    if (req.method != "POST" && req.method != "PUT") return reply_error(*ex, ApiError::method_not_allowed("use GET or POST"));
    if (auto error = check_admin(req, options.admin_token)) return reply_error(*ex, *error);
    ThresholdChanges changes;
    if (auto error = parse_threshold_changes(req.body, &changes)) return reply_error(*ex, *error);
    directory->store_thresholds(changes, [this, ex, changes](Status s) {
      if (!s.ok()) return reply_error(*ex, ApiError::unavailable(s.message()));
      // Applied here at once too (a watch brings the same values again, a no-op).
      for (const auto& [name, value] : changes) apply_threshold(options.router, name, value, "admin");
      ex->respond(200, "application/json", thresholds_body(), {});
    });
  }
};

Frontend::Frontend(FrontendOptions options, std::unique_ptr<PromptCodec> codec) : impl_(std::make_unique<Impl>()) {
  Impl* impl = impl_.get();
  impl->options = std::move(options);
  impl->codec = std::move(codec);
  HttpServerHooks hooks;
  hooks.refusal = [impl](int status) {
    const HttpServerOptions& http = impl->options.http;
    impl->metrics.add("tandem_http_errors_total", labels({{"status", std::to_string(status)}}));
    const ApiError error =
        status == 413   ? ApiError::too_large("the request body is over the limit of " +
                                              std::to_string(http.max_body_bytes) + " bytes")
        : status == 431 ? ApiError::header_too_large("the request's headers are over the limit of " +
                                                     std::to_string(http.max_header_bytes) + " bytes")
                        : ApiError::unavailable("the server has too many open connections; retry later");
    return std::make_pair(error_body(error), std::string("application/json"));
  };
  hooks.on_limit = [impl](const char* reason) {
    impl->metrics.add("tandem_http_connections_closed_total", labels({{"reason", reason}}));
  };
  impl->http = std::make_unique<HttpServer>(
      impl->options.http, [impl](std::shared_ptr<HttpExchange> ex) { impl->handle(std::move(ex)); }, std::move(hooks));
  impl->gate->io = &impl->http->executor();
  if (impl->options.frontend_id.empty()) {
    char host[256] = {};
    gethostname(host, sizeof(host) - 1);
    impl->options.frontend_id = std::string(host) + "-" + std::to_string(getpid());
  }
  describe_serving_metrics(impl->metrics);
  impl->api_keys = ApiKeys(impl->options.api_keys);
  AdmissionOptions admission;
  admission.max_pending_requests = impl->options.max_pending_requests;
  impl->admission = std::make_unique<Admission>(admission, impl->metrics);
  impl->directory = make_worker_directory(directory_options(impl->options), impl->gate);
  impl->requests = std::make_unique<RequestLifecycle>(lifecycle_options(impl->options), impl->options.router,
                                                      *impl->directory, impl->metrics, impl->codec.get());
  RequestLifecycle* requests = impl->requests.get();
  DirectoryEvents events;
  events.output = [requests](WorkerKey worker, const rpc::pb::Output& out) { requests->on_output(worker, out); };
  events.worker_lost = [requests](WorkerKey worker, const std::string& name, const Status& reason,
                                  const std::vector<std::string>& ids) { requests->on_worker_lost(worker, name, reason, ids); };
  events.threshold = [impl](const std::string& name, const std::string& value, const char* source) {
    apply_threshold(impl->options.router, name, value, source);
  };
  impl->directory->set_events(std::move(events));
}

Frontend::~Frontend() {
  impl_->directory->stop_threads();
  impl_->gate->close();
  impl_->directory->shutdown();
}

uint16_t Frontend::http_port() const { return impl_->http->port(); }
uint16_t Frontend::registry_port() const { return impl_->directory->registry_port(); }

void Frontend::run() {
  Impl* impl = impl_.get();
  impl->directory->start();
  impl->io().post_after(100, [impl] { impl->tick(); });
  if (!impl->options.ready_file.empty()) {
    std::string tmp = impl->options.ready_file + ".tmp";
    {
      std::ofstream out(tmp);
      out << json{{"http_port", http_port()}, {"registry_port", registry_port()}}.dump() << "\n";
    }
    std::filesystem::rename(tmp, impl->options.ready_file);
  }
  if (impl->api_keys.enabled()) spdlog::info("event=api_keys_required count={}", impl->api_keys.size());
  spdlog::info("event=frontend_listening frontend_id={} http_port={} registry_port={} registry={}",
               impl->options.frontend_id, http_port(), registry_port(), impl->directory->description());
  impl->http->run();
  impl->directory->stop_threads();
}

void Frontend::stop() {
  Impl* impl = impl_.get();
  impl->io().post([impl] { impl->stop_now(); });
}

void Frontend::drain(int deadline_ms) {
  Impl* impl = impl_.get();
  impl->io().post([impl, deadline_ms] {
    if (impl->requests->draining()) return;
    impl->requests->set_draining();
    impl->drain_deadline = Clock::now() + std::chrono::milliseconds(deadline_ms);
    spdlog::info("event=draining active_requests={} deadline_ms={}", impl->requests->num_active(), deadline_ms);
  });
}

}  // namespace tandem::frontend
