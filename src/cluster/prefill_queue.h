// The prefill queue of cluster mode (issue 11): a NATS JetStream work queue through Debian's libnats.
// Stream `tandem_<ns>_prefill` (work-queue retention: a message lives until it is acknowledged) on
// subject `tandem.<ns>.prefill`; one durable pull consumer `prefill` shared by every prefill worker,
// so each message goes to one worker, which pulls only when it has room. A message not acknowledged
// within ack_wait_ms (its worker died) is delivered again, up to max_deliver times.
//
// Decode workers publish (remote prefills), prefill workers pull, frontends read the depth (the
// stream's message count: queued plus delivered and not yet acknowledged) for --max-prefill-queue.
//
// Ownership: PrefillQueue owns its NATS connection, which reconnects by itself (forever) when the
// server goes away; calls made meanwhile fail with Unavailable at once. libnats gives up for good on
// a server that refuses the credentials twice (a password changed on the server, a server that came
// up requiring what the URL lacks): such a closed connection is replaced by a new one, every
// kRelinkIntervalMs at most, with one `event=prefill_queue_refused` warning naming the reason.
// Thread-safety: every method may be called from any thread; a Message belongs to one thread.
#pragma once

#include <cstdint>
#include <memory>
#include <mutex>
#include <string>

#include "common/status.h"

namespace tandem::cluster {

struct PrefillQueueOptions {
  // "nats://host:port[,nats://host:port...]". Over TLS: "tls://" (or any ca=/cert=). Credentials: a
  // token or user:password before the host ("tls://TOKEN@host:4222", "nats://user:pw@host:4222"), or
  // a creds file (JWT + NKey seed). Files in the query: "?ca=CA.pem&cert=C.pem&key=K.pem&creds=U.creds".
  // Logs and errors show it with credentials and query left out.
  std::string url;
  std::string cluster_namespace = "default";
  int ack_wait_ms = 10000;        // redelivery after this long without an ack
  int max_deliver = 3;            // deliveries of one message at most
  int timeout_ms = 2000;          // one JetStream API call
};

class PrefillQueue {
 public:
  // One pulled message; ack() when its work is done (or pointless), nak() to hand it back now.
  class Message {
   public:
    Message() = default;
    Message(const Message&) = delete;
    Message& operator=(const Message&) = delete;
    ~Message();
    const std::string& data() const { return data_; }
    int num_delivered() const { return num_delivered_; }
    Status ack();
    Status nak();
    Status in_progress();  // resets the ack deadline (a long prefill)

   private:
    friend class PrefillQueue;
    void* msg_ = nullptr;  // natsMsg*
    std::shared_ptr<void> link_;  // the connection the message came on, kept open for its ack
    std::string data_;
    int num_delivered_ = 1;
  };

  static constexpr int kRelinkIntervalMs = 2000;

  // Connects, creating the stream if needed. A server that is not up yet is not an error: the
  // connection keeps retrying and calls fail with Unavailable until it is up. InvalidArgument for a
  // malformed URL, and for a server that answers but refuses this client (its credentials, or the
  // TLS handshake: an untrusted certificate, TLS required or refused): a process given those would
  // never get a remote prefill through, so it should not start.
  static StatusOr<std::unique_ptr<PrefillQueue>> connect(const PrefillQueueOptions& options);
  ~PrefillQueue();
  PrefillQueue(const PrefillQueue&) = delete;
  PrefillQueue& operator=(const PrefillQueue&) = delete;

  bool connected() const;
  const std::string& stream_name() const { return stream_; }
  const std::string& subject() const { return subject_; }

  // Unavailable when NATS is down or did not acknowledge the publish.
  Status publish(const std::string& bytes);
  // Queued plus delivered-and-unacknowledged messages.
  StatusOr<int64_t> depth();
  // One message within timeout_ms; nullptr when none came. Unavailable when NATS is down.
  StatusOr<std::unique_ptr<Message>> pull(int timeout_ms);

 private:
  struct Link;  // one NATS connection, its JetStream context and pull subscription

  PrefillQueue() = default;
  // The current connection, replaced first when libnats has closed it for good (see above).
  std::shared_ptr<Link> link();        // REQUIRES: mu_ not held
  // A new connection; InvalidArgument when the server answers and refuses this client.
  StatusOr<std::shared_ptr<Link>> make_link();  // REQUIRES: one caller at a time (opts_ is changed)
  Status ensure_stream(Link& link);    // REQUIRES: mu_ held
  Status ensure_consumer(Link& link);  // REQUIRES: mu_ held

  PrefillQueueOptions options_;
  std::string stream_, subject_;
  void* opts_ = nullptr;  // natsOptions*, retrying a failed connect
  mutable std::mutex mu_;  // guards the connection and its lazily made stream and subscription
  std::shared_ptr<Link> link_;            // GUARDED_BY(mu_)
  int64_t next_relink_ms_ = 0;            // GUARDED_BY(mu_): steady clock
  bool relinking_ = false;                // GUARDED_BY(mu_): one make_link() at a time
  std::string reported_refusal_;          // GUARDED_BY(mu_): the reason last logged
  std::mutex pull_mu_;         // one fetch at a time on the subscription
};

// "nats://..." -> true. Anything else is not a prefill queue URL.
bool is_nats_url(const std::string& url);

}  // namespace tandem::cluster
