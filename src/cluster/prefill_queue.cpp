// NATS JetStream prefill queue over libnats (see prefill_queue.h).
#include "cluster/prefill_queue.h"

#include <nats/nats.h>
#include <spdlog/spdlog.h>

#include <algorithm>
#include <chrono>

namespace tandem::cluster {
namespace {

constexpr const char* kConsumer = "prefill";  // the durable pull consumer all prefill workers share


Status nats_error(const std::string& what, natsStatus s, jsErrCode jerr = static_cast<jsErrCode>(0)) {
  std::string text = what + ": " + natsStatus_GetText(s);
  if (jerr != 0) text += " (JetStream error " + std::to_string(static_cast<int>(jerr)) + ")";
  return Status::Unavailable(text);
}

// The URL with each server's credentials (user:password@ or token@) and the query left out, for logs
// and errors: the URL itself may carry a password.
std::string redacted(const std::string& url) {
  std::string out = url.substr(0, url.find('?'));
  for (size_t at = out.find("://"); at != std::string::npos; at = out.find("://", at + 3)) {
    const size_t host = at + 3;
    const size_t end = std::min(out.find(',', host), out.size());
    const size_t user = out.find('@', host);
    if (user != std::string::npos && user < end) out.replace(host, user + 1 - host, "***@");
  }
  return out;
}

// The security settings of the URL's query (see prefill_queue.h), applied to the NATS options.
Status apply_security(natsOptions* opts, const std::string& url) {
  const bool tls_scheme = url.rfind("tls://", 0) == 0;
  const size_t query_at = url.find('?');
  std::string ca, cert, key, creds;
  if (query_at != std::string::npos) {
    std::string query = url.substr(query_at + 1);
    for (size_t start = 0; start <= query.size();) {
      size_t end = std::min(query.find('&', start), query.size());
      const std::string pair = query.substr(start, end - start);
      const size_t eq = pair.find('=');
      const std::string name = pair.substr(0, eq);
      const std::string value = eq == std::string::npos ? std::string() : pair.substr(eq + 1);
      std::string* slot = name == "ca" ? &ca : name == "cert" ? &cert : name == "key" ? &key : name == "creds" ? &creds : nullptr;
      if (slot == nullptr || value.empty()) {
        return Status::InvalidArgument("--prefill-queue: unknown or empty setting '" + pair +
                                       "' (the query takes ca=FILE, cert=FILE, key=FILE, creds=FILE)");
      }
      *slot = value;
      start = end + 1;
    }
  }
  if (cert.empty() != key.empty()) return Status::InvalidArgument("--prefill-queue: cert= and key= go together");
  auto check = [](const char* what, const std::string& file, natsStatus s) {
    return s == NATS_OK ? Status::Ok()
                        : Status::InvalidArgument(std::string("--prefill-queue: ") + what + "=" + file + ": " +
                                                  natsStatus_GetText(s) + " (" + nats_GetLastError(nullptr) + ")");
  };
  if (tls_scheme || !ca.empty() || !cert.empty()) {
    TANDEM_RETURN_IF_ERROR(check("tls", url.substr(0, 6), natsOptions_SetSecure(opts, true)));
  }
  if (!ca.empty()) TANDEM_RETURN_IF_ERROR(check("ca", ca, natsOptions_LoadCATrustedCertificates(opts, ca.c_str())));
  if (!cert.empty()) {
    TANDEM_RETURN_IF_ERROR(check("cert", cert, natsOptions_LoadCertificatesChain(opts, cert.c_str(), key.c_str())));
  }
  if (!creds.empty()) {
    TANDEM_RETURN_IF_ERROR(check("creds", creds, natsOptions_SetUserCredentialsFromFiles(opts, creds.c_str(), nullptr)));
  }
  return Status::Ok();
}

// A server that answered and refused this client: retrying cannot help until someone changes the
// credentials or certificates (libnats itself stops reconnecting after two such refusals).
bool refused(natsStatus s) {
  return s == NATS_CONNECTION_AUTH_FAILED || s == NATS_NOT_PERMITTED || s == NATS_SSL_ERROR ||
         s == NATS_SECURE_CONNECTION_REQUIRED || s == NATS_SECURE_CONNECTION_WANTED;
}

// Connected in the background: calls see it through natsConnection_Status.
void on_connected(natsConnection*, void*) {}

int64_t now_ms() {
  return std::chrono::duration_cast<std::chrono::milliseconds>(std::chrono::steady_clock::now().time_since_epoch()).count();
}

}  // namespace

struct PrefillQueue::Link {
  natsConnection* nc = nullptr;
  jsCtx* js = nullptr;
  natsSubscription* sub = nullptr;  // GUARDED_BY(PrefillQueue::mu_): the pull consumer's, made lazily
  bool stream_ready = false;        // GUARDED_BY(PrefillQueue::mu_)
  Link() = default;
  Link(const Link&) = delete;
  Link& operator=(const Link&) = delete;
  ~Link() {
    if (sub) natsSubscription_Destroy(sub);
    if (js) jsCtx_Destroy(js);
    if (nc) {
      natsConnection_Close(nc);
      natsConnection_Destroy(nc);
    }
  }
  bool connected() const { return nc && natsConnection_Status(nc) == NATS_CONN_STATUS_CONNECTED; }
  bool closed() const { return !nc || natsConnection_Status(nc) == NATS_CONN_STATUS_CLOSED; }
  // Why libnats closed it ("Authorization Violation"), for the log.
  std::string last_error() const {
    const char* text = nullptr;
    if (nc) natsConnection_GetLastError(nc, &text);
    return text && *text ? text : "closed";
  }
};

bool is_nats_url(const std::string& url) { return url.rfind("nats://", 0) == 0 || url.rfind("tls://", 0) == 0; }

PrefillQueue::Message::~Message() {
  if (msg_) natsMsg_Destroy(static_cast<natsMsg*>(msg_));
}

Status PrefillQueue::Message::ack() {
  natsStatus s = natsMsg_Ack(static_cast<natsMsg*>(msg_), nullptr);
  return s == NATS_OK ? Status::Ok() : nats_error("ack", s);
}

Status PrefillQueue::Message::nak() {
  natsStatus s = natsMsg_Nak(static_cast<natsMsg*>(msg_), nullptr);
  return s == NATS_OK ? Status::Ok() : nats_error("nak", s);
}

Status PrefillQueue::Message::in_progress() {
  natsStatus s = natsMsg_InProgress(static_cast<natsMsg*>(msg_), nullptr);
  return s == NATS_OK ? Status::Ok() : nats_error("in_progress", s);
}

StatusOr<std::unique_ptr<PrefillQueue>> PrefillQueue::connect(const PrefillQueueOptions& options) {
  if (!is_nats_url(options.url)) {
    return Status::InvalidArgument("'" + redacted(options.url) + "' is not a nats:// or tls:// URL");
  }
  std::unique_ptr<PrefillQueue> q(new PrefillQueue());
  q->options_ = options;
  q->options_.url = redacted(options.url);  // what logs and errors show
  q->stream_ = "tandem_" + options.cluster_namespace + "_prefill";
  q->subject_ = "tandem." + options.cluster_namespace + ".prefill";
  natsOptions* opts = nullptr;
  natsStatus s = natsOptions_Create(&opts);
  if (s != NATS_OK) return nats_error("nats options", s);
  q->opts_ = opts;
  const std::string servers = options.url.substr(0, options.url.find('?'));
  s = natsOptions_SetURL(opts, servers.c_str());
  if (s != NATS_OK) return Status::InvalidArgument("--prefill-queue '" + q->options_.url + "': " + natsStatus_GetText(s));
  TANDEM_RETURN_IF_ERROR(apply_security(opts, options.url));
  // Reconnect forever, every 250 ms, buffering nothing: a call made while down fails at once and the
  // caller falls back (a decode worker prefills locally).
  natsOptions_SetMaxReconnect(opts, -1);
  natsOptions_SetReconnectWait(opts, 250);
  natsOptions_SetReconnectBufSize(opts, 0);
  natsOptions_SetTimeout(opts, options.timeout_ms);
  natsOptions_SetName(opts, "tandem");
  auto link = q->make_link();
  if (!link.ok()) return link.status();
  {
    std::lock_guard<std::mutex> lock(q->mu_);
    q->link_ = std::move(*link);
    Status st = q->ensure_stream(*q->link_);
    if (!st.ok()) spdlog::warn("event=prefill_queue_unavailable url={} reason=\"{}\"; retrying", q->options_.url, st.message());
  }
  return q;
}

PrefillQueue::~PrefillQueue() {
  {
    std::lock_guard<std::mutex> lock(mu_);
    link_.reset();  // closed here unless a Message still holds it
  }
  if (opts_) natsOptions_Destroy(static_cast<natsOptions*>(opts_));
}

bool PrefillQueue::connected() const {
  std::lock_guard<std::mutex> lock(mu_);
  return link_ && link_->connected();
}

StatusOr<std::shared_ptr<PrefillQueue::Link>> PrefillQueue::make_link() {
  // One plain attempt first, to tell a server that refuses this client (for the user to fix) from one
  // that is not up yet (retried in the background from then on).
  natsOptions* opts = static_cast<natsOptions*>(opts_);
  auto link = std::make_shared<Link>();
  natsOptions_SetRetryOnFailedConnect(opts, false, nullptr, nullptr);
  natsStatus s = natsConnection_Connect(&link->nc, opts);
  if (refused(s)) {
    const char* detail = nats_GetLastError(nullptr);
    return Status::InvalidArgument("the NATS server at " + options_.url + " refused this client: " + natsStatus_GetText(s) +
                                   (detail && *detail ? std::string(" (") + detail + ")" : std::string()) +
                                   ": check the URL's credentials (TOKEN@, user:password@, creds=) and its TLS settings "
                                   "(tls://, ca=, cert=, key=) against the server's");
  }
  if (s != NATS_OK) {
    spdlog::warn("event=prefill_queue_unavailable url={} reason=\"{}\"; connecting in the background", options_.url,
                 natsStatus_GetText(s));
    link->nc = nullptr;
    // With a connected callback, natsConnection_Connect returns NATS_NOT_YET_CONNECTED at once and
    // retries on libnats's thread. Without one it blocks until connected (libnats's documented
    // behaviour), for ever with unlimited reconnects: that is what left a worker given a refused
    // password stuck in its constructor, never registered (the issue-20 "known gap"), and a worker
    // started while NATS was down waiting for it.
    natsOptions_SetRetryOnFailedConnect(opts, true, on_connected, nullptr);
    s = natsConnection_Connect(&link->nc, opts);
    if (s != NATS_OK && s != NATS_NOT_YET_CONNECTED) return nats_error("connect to " + options_.url, s);
  }
  jsOptions jo;
  jsOptions_Init(&jo);
  jo.Wait = options_.timeout_ms;
  s = natsConnection_JetStream(&link->js, link->nc, &jo);
  if (s != NATS_OK) return nats_error("JetStream context", s);
  return link;
}

std::shared_ptr<PrefillQueue::Link> PrefillQueue::link() {
  std::string reason;
  {
    std::lock_guard<std::mutex> lock(mu_);
    if (!link_->closed()) {
      if (link_->connected() && !reported_refusal_.empty()) {
        spdlog::info("event=prefill_queue_connected url={} after=\"{}\"", options_.url, reported_refusal_);
        reported_refusal_.clear();
      }
      return link_;
    }
    const int64_t now = now_ms();
    if (relinking_ || now < next_relink_ms_) return link_;
    relinking_ = true;
    next_relink_ms_ = now + kRelinkIntervalMs;
    reason = link_->last_error();
  }
  // Outside mu_: a connect may take up to the connect timeout, and other calls fail at once meanwhile.
  auto fresh = make_link();
  std::lock_guard<std::mutex> lock(mu_);
  relinking_ = false;
  if (fresh.ok()) {
    link_ = std::move(*fresh);  // the old one closes when the last Message on it goes
    if (link_->connected()) {
      spdlog::info("event=prefill_queue_connected url={} after=\"{}\"", options_.url, reason);
      reported_refusal_.clear();
      return link_;
    }
    // Connecting in the background (the server is down): "connected" is logged once it is.
  } else {
    reason = fresh.status().message();
  }
  if (reason != reported_refusal_) {
    spdlog::warn("event=prefill_queue_refused url={} reason=\"{}\"; connecting again every {} ms, remote prefills "
                 "fall back to local meanwhile",
                 options_.url, reason, kRelinkIntervalMs);
    reported_refusal_ = reason;
  }
  return link_;
}

Status PrefillQueue::ensure_stream(Link& link) {
  if (link.stream_ready) return Status::Ok();
  if (!link.connected()) {
    return Status::Unavailable("not connected to " + options_.url + (link.closed() ? ": " + link.last_error() : ""));
  }
  jsErrCode jerr = static_cast<jsErrCode>(0);
  jsStreamInfo* si = nullptr;
  natsStatus s = js_GetStreamInfo(&si, link.js, stream_.c_str(), nullptr, &jerr);
  if (s == NATS_OK) {
    jsStreamInfo_Destroy(si);
    link.stream_ready = true;
    return Status::Ok();
  }
  if (s != NATS_NOT_FOUND && jerr != JSStreamNotFoundErr) return nats_error("stream info " + stream_, s, jerr);
  jsStreamConfig cfg;
  jsStreamConfig_Init(&cfg);
  cfg.Name = stream_.c_str();
  const char* subjects[] = {subject_.c_str()};
  cfg.Subjects = subjects;
  cfg.SubjectsLen = 1;
  cfg.Retention = js_WorkQueuePolicy;  // a message is gone once a worker acknowledges it
  cfg.Storage = js_FileStorage;        // survives a server restart
  jerr = static_cast<jsErrCode>(0);
  s = js_AddStream(&si, link.js, &cfg, nullptr, &jerr);
  if (s != NATS_OK && jerr != JSStreamNameExistErr) return nats_error("create stream " + stream_, s, jerr);
  if (si) jsStreamInfo_Destroy(si);
  spdlog::info("event=prefill_queue_ready stream={} subject={}", stream_, subject_);
  link.stream_ready = true;
  return Status::Ok();
}

Status PrefillQueue::ensure_consumer(Link& link) {
  if (link.sub) return Status::Ok();
  Status st = ensure_stream(link);
  if (!st.ok()) return st;
  // The first prefill worker creates the shared durable consumer (its ack deadline and delivery
  // limit win); the others bind to it as it is, whatever their own settings.
  jsErrCode jerr = static_cast<jsErrCode>(0);
  jsConsumerInfo* ci = nullptr;
  natsStatus s = js_GetConsumerInfo(&ci, link.js, stream_.c_str(), kConsumer, nullptr, &jerr);
  if (s == NATS_OK) {
    jsConsumerInfo_Destroy(ci);
  } else if (s == NATS_NOT_FOUND || jerr == JSConsumerNotFoundErr) {
    jsConsumerConfig cfg;
    jsConsumerConfig_Init(&cfg);
    cfg.Durable = kConsumer;
    cfg.AckPolicy = js_AckExplicit;
    cfg.AckWait = static_cast<int64_t>(options_.ack_wait_ms) * 1000000;  // nanoseconds
    cfg.MaxDeliver = options_.max_deliver;
    cfg.FilterSubject = subject_.c_str();
    jerr = static_cast<jsErrCode>(0);
    s = js_AddConsumer(&ci, link.js, stream_.c_str(), &cfg, nullptr, &jerr);
    if (s != NATS_OK && jerr != JSConsumerNameExistErr && jerr != JSConsumerExistingActiveErr) {
      return nats_error("create consumer " + std::string(kConsumer), s, jerr);
    }
    if (ci) jsConsumerInfo_Destroy(ci);
    spdlog::info("event=prefill_queue_consumer_created stream={} ack_wait_ms={} max_deliver={}", stream_,
                 options_.ack_wait_ms, options_.max_deliver);
  } else {
    return nats_error("consumer info " + std::string(kConsumer), s, jerr);
  }
  jsSubOptions so;
  jsSubOptions_Init(&so);
  so.Stream = stream_.c_str();
  so.Consumer = kConsumer;
  natsSubscription* sub = nullptr;
  jerr = static_cast<jsErrCode>(0);
  s = js_PullSubscribe(&sub, link.js, subject_.c_str(), kConsumer, nullptr, &so, &jerr);
  if (s != NATS_OK) return nats_error("pull subscribe " + stream_, s, jerr);
  link.sub = sub;
  return Status::Ok();
}

Status PrefillQueue::publish(const std::string& bytes) {
  std::shared_ptr<Link> link = this->link();
  {
    std::lock_guard<std::mutex> lock(mu_);
    Status st = ensure_stream(*link);
    if (!st.ok()) return st;
  }
  jsPubAck* ack = nullptr;
  jsErrCode jerr = static_cast<jsErrCode>(0);
  natsStatus s = js_Publish(&ack, link->js, subject_.c_str(), bytes.data(), static_cast<int>(bytes.size()), nullptr, &jerr);
  if (ack) jsPubAck_Destroy(ack);
  if (s != NATS_OK) {
    if (jerr == JSStreamNotFoundErr || s == NATS_NO_RESPONDERS) {
      std::lock_guard<std::mutex> lock(mu_);
      link->stream_ready = false;  // made again on the next call (a server that lost its store)
    }
    return nats_error("publish to " + stream_, s, jerr);
  }
  return Status::Ok();
}

StatusOr<int64_t> PrefillQueue::depth() {
  std::shared_ptr<Link> link = this->link();
  {
    std::lock_guard<std::mutex> lock(mu_);
    Status st = ensure_stream(*link);
    if (!st.ok()) return st;
  }
  jsStreamInfo* si = nullptr;
  jsErrCode jerr = static_cast<jsErrCode>(0);
  natsStatus s = js_GetStreamInfo(&si, link->js, stream_.c_str(), nullptr, &jerr);
  if (s != NATS_OK) return nats_error("stream info " + stream_, s, jerr);
  int64_t n = static_cast<int64_t>(si->State.Msgs);
  jsStreamInfo_Destroy(si);
  return n;
}

StatusOr<std::unique_ptr<PrefillQueue::Message>> PrefillQueue::pull(int timeout_ms) {
  std::lock_guard<std::mutex> pull_lock(pull_mu_);
  std::shared_ptr<Link> link = this->link();
  natsSubscription* sub = nullptr;
  {
    std::lock_guard<std::mutex> lock(mu_);
    Status st = ensure_consumer(*link);
    if (!st.ok()) return st;
    sub = link->sub;
  }
  natsMsgList list{nullptr, 0};
  jsErrCode jerr = static_cast<jsErrCode>(0);
  natsStatus s = natsSubscription_Fetch(&list, sub, 1, timeout_ms, &jerr);
  if (s == NATS_TIMEOUT) return std::unique_ptr<Message>();
  if (s != NATS_OK) {
    // Made again on the next call: after a server restart the old subscription may be stale. Only
    // this thread (pull_mu_) uses the subscription, so it is not in use elsewhere.
    std::lock_guard<std::mutex> lock(mu_);
    natsSubscription_Destroy(link->sub);
    link->sub = nullptr;
    link->stream_ready = false;
    return nats_error("fetch from " + stream_, s, jerr);
  }
  std::unique_ptr<Message> out;
  for (int i = 0; i < list.Count; ++i) {
    natsMsg* m = list.Msgs[i];
    if (out) {  // asked for one; hand back any extra at once
      natsMsg_Nak(m, nullptr);
      continue;
    }
    out.reset(new Message());
    out->data_.assign(natsMsg_GetData(m), static_cast<size_t>(natsMsg_GetDataLength(m)));
    jsMsgMetaData* meta = nullptr;
    if (natsMsg_GetMetaData(&meta, m) == NATS_OK && meta) {
      out->num_delivered_ = static_cast<int>(meta->NumDelivered);
      jsMsgMetaData_Destroy(meta);
    }
    out->msg_ = m;
    out->link_ = link;
    list.Msgs[i] = nullptr;  // owned by the Message now
  }
  natsMsgList_Destroy(&list);
  return out;
}

}  // namespace tandem::cluster
