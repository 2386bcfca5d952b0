// NatsConnection: this process's connection to a NATS cluster with JetStream, shared by the
// replicated write log (jetstream_write_log.h) and the cluster control store
// (jetstream_control.h). Only these three files see the NATS C client (libnats).
//
// The connection is made in the background and remade forever after a loss (reconnect wait
// --nats_reconnect_wait_ms style, jittered), so a server starts and serves while NATS is down.
// While disconnected, calls fail fast with Unavailable naming NATS instead of queueing: a
// pending JetStream request fails the moment the connection drops.
//
// Thread-safety: all methods are thread-safe; libnats connections are.
#ifndef RECALL_SERVER_NATS_CONNECTION_H_
#define RECALL_SERVER_NATS_CONNECTION_H_

#include <memory>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "absl/time/time.h"

struct __natsConnection;
struct __jsCtx;

namespace recall::server {

class NatsConnection {
 public:
  struct Options {
    std::vector<std::string> servers;  // nats://host:port (tls://host:port with TLS)
    std::string name;                  // client name the servers show (the replica id)
    // Authentication: at most one of a credentials file (JWT + NKey seed), user + password,
    // or a token.
    std::string creds_file;
    std::string user, password;
    std::string token;
    // TLS to NATS: set the CA (and, for mutual TLS, the client certificate and key).
    std::string tls_ca_file, tls_cert_file, tls_key_file;
    absl::Duration connect_timeout = absl::Seconds(2);
    absl::Duration reconnect_wait = absl::Milliseconds(250);
    absl::Duration request_timeout = absl::Seconds(5);  // JetStream API calls
  };

  // Starts connecting; OK even when no server answers yet (the connection keeps trying).
  // InvalidArgument for unusable options (no server, two kinds of credentials, unreadable
  // TLS files).
  static absl::StatusOr<std::unique_ptr<NatsConnection>> Connect(Options options);
  ~NatsConnection();
  NatsConnection(const NatsConnection&) = delete;
  NatsConnection& operator=(const NatsConnection&) = delete;

  bool connected() const;
  // Waits up to `timeout` for the first connection; false if there is none by then.
  bool WaitConnected(absl::Duration timeout) const;
  // Unavailable("NATS (<servers>) is unreachable ...: <what>") for callers that need it up.
  absl::Status Unreachable(absl::string_view what) const;
  std::string servers() const;  // comma-joined, for messages
  const Options& options() const { return options_; }

  __natsConnection* nc() const { return nc_; }
  __jsCtx* js() const { return js_; }

 private:
  explicit NatsConnection(Options options) : options_(std::move(options)) {}
  const Options options_;
  __natsConnection* nc_ = nullptr;
  __jsCtx* js_ = nullptr;
};

// Splits a --write_log value "nats://h1:p1,nats://h2:p2" (tls:// also accepted) into server
// URLs. InvalidArgument naming the flag for anything else.
absl::StatusOr<std::vector<std::string>> ParseNatsServers(absl::string_view value);

// A libnats status (and JetStream error code, 0 = none) as an absl::Status: timeouts, no
// responders and lost connections are Unavailable; `what` says what was attempted.
absl::Status NatsError(int status, int js_error, absl::string_view what);

}  // namespace recall::server

#endif  // RECALL_SERVER_NATS_CONNECTION_H_
