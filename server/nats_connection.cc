#include "server/nats_connection.h"

#include <glog/logging.h>
#include <nats/nats.h>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"

namespace recall::server {
namespace {

// What libnats's callbacks may touch. They run on libnats's own thread and may come after the
// NatsConnection is gone (natsConnection_Destroy does not wait for them), so they get this
// instead, which the last callback of a connection, "closed", frees.
struct CallbackContext {
  std::string servers;
};

void OnDisconnected(natsConnection*, void* closure) {
  LOG(WARNING) << "NATS: disconnected from " << static_cast<CallbackContext*>(closure)->servers
               << "; reconnecting";
}

void OnClosed(natsConnection*, void* closure) { delete static_cast<CallbackContext*>(closure); }

void OnReconnected(natsConnection* nc, void*) {
  char url[256] = {0};
  natsConnection_GetConnectedUrl(nc, url, sizeof(url));
  LOG(INFO) << "NATS: connected to " << url;
}

void OnError(natsConnection*, natsSubscription*, natsStatus err, void*) {
  LOG(WARNING) << "NATS: " << natsStatus_GetText(err);
}

}  // namespace

absl::Status NatsError(int status, int js_error, absl::string_view what) {
  const natsStatus s = static_cast<natsStatus>(status);
  std::string text = natsStatus_GetText(s);
  if (const char* last = nats_GetLastError(nullptr); last != nullptr && *last) {
    absl::StrAppend(&text, " (", last, ")");
  }
  if (js_error != 0) absl::StrAppend(&text, " [JetStream error ", js_error, "]");
  const std::string msg = absl::StrCat("NATS: ", what, ": ", text);
  switch (s) {
    case NATS_TIMEOUT:
    case NATS_NO_RESPONDERS:
    case NATS_CONNECTION_CLOSED:
    case NATS_CONNECTION_DISCONNECTED:
    case NATS_NO_SERVER:
    case NATS_NOT_YET_CONNECTED:
    case NATS_STALE_CONNECTION:
    case NATS_IO_ERROR:
      return absl::UnavailableError(msg);
    case NATS_NOT_FOUND:
      return absl::NotFoundError(msg);
    default:
      return absl::InternalError(msg);
  }
}

absl::StatusOr<std::vector<std::string>> ParseNatsServers(absl::string_view value) {
  std::vector<std::string> out;
  for (absl::string_view part : absl::StrSplit(value, ',', absl::SkipWhitespace())) {
    if (!absl::StartsWith(part, "nats://") && !absl::StartsWith(part, "tls://")) {
      return absl::InvalidArgumentError(absl::StrCat(
          "--write_log: \"", part, "\" is not a nats:// (or tls://) URL; expected "
          "nats://host:port[,nats://host:port...]"));
    }
    out.emplace_back(part);
  }
  if (out.empty()) return absl::InvalidArgumentError("--write_log: no NATS server given");
  return out;
}

absl::StatusOr<std::unique_ptr<NatsConnection>> NatsConnection::Connect(Options options) {
  if (options.servers.empty()) return absl::InvalidArgumentError("NATS: no server given");
  const int auth_kinds = !options.creds_file.empty() + !options.user.empty() +
                         !options.token.empty();
  if (auth_kinds > 1) {
    return absl::InvalidArgumentError(
        "NATS: give one of a credentials file, user + password, or a token");
  }
  std::unique_ptr<NatsConnection> c(new NatsConnection(std::move(options)));
  const Options& o = c->options_;
  natsOptions* opts = nullptr;
  auto fail = [&](natsStatus s, const std::string& what) {
    if (opts) natsOptions_Destroy(opts);
    return absl::InvalidArgumentError(absl::StrCat("NATS: ", what, ": ", natsStatus_GetText(s),
                                                   " ", nats_GetLastError(nullptr)));
  };
  natsStatus s = natsOptions_Create(&opts);
  if (s != NATS_OK) return fail(s, "options");
  std::vector<const char*> urls;
  for (const auto& u : o.servers) urls.push_back(u.c_str());
  if ((s = natsOptions_SetServers(opts, urls.data(), static_cast<int>(urls.size()))) != NATS_OK) {
    return fail(s, "servers");
  }
  if (!o.name.empty()) natsOptions_SetName(opts, o.name.c_str());
  natsOptions_SetTimeout(opts, absl::ToInt64Milliseconds(o.connect_timeout));
  natsOptions_SetMaxReconnect(opts, -1);  // forever: NATS coming back must not need a restart
  natsOptions_SetReconnectWait(opts, absl::ToInt64Milliseconds(o.reconnect_wait));
  natsOptions_SetReconnectJitter(opts, 100, 1000);
  // A JetStream request pending when the connection drops fails at once, so a write never
  // waits out its whole deadline for an answer that cannot come.
  natsOptions_SetFailRequestsOnDisconnect(opts, true);
  natsOptions_SetRetryOnFailedConnect(opts, true, nullptr, nullptr);
  natsOptions_SetPingInterval(opts, 2000);
  natsOptions_SetMaxPingsOut(opts, 2);
  if (!o.creds_file.empty()) {
    if ((s = natsOptions_SetUserCredentialsFromFiles(opts, o.creds_file.c_str(), nullptr)) !=
        NATS_OK) {
      return fail(s, "--nats_creds_file " + o.creds_file);
    }
  } else if (!o.user.empty()) {
    natsOptions_SetUserInfo(opts, o.user.c_str(), o.password.c_str());
  } else if (!o.token.empty()) {
    natsOptions_SetToken(opts, o.token.c_str());
  }
  if (!o.tls_ca_file.empty() || !o.tls_cert_file.empty()) {
    natsOptions_SetSecure(opts, true);
    if (!o.tls_ca_file.empty() &&
        (s = natsOptions_LoadCATrustedCertificates(opts, o.tls_ca_file.c_str())) != NATS_OK) {
      return fail(s, "--nats_tls_ca_file " + o.tls_ca_file);
    }
    if (!o.tls_cert_file.empty() &&
        (s = natsOptions_LoadCertificatesChain(opts, o.tls_cert_file.c_str(),
                                               o.tls_key_file.c_str())) != NATS_OK) {
      return fail(s, "--nats_tls_cert_file " + o.tls_cert_file);
    }
  }
  auto* context = new CallbackContext{c->servers()};
  natsOptions_SetDisconnectedCB(opts, OnDisconnected, context);
  natsOptions_SetReconnectedCB(opts, OnReconnected, context);
  natsOptions_SetErrorHandler(opts, OnError, context);
  natsOptions_SetClosedCB(opts, OnClosed, context);
  s = natsConnection_Connect(&c->nc_, opts);
  natsOptions_Destroy(opts);
  opts = nullptr;
  if (s != NATS_OK && s != NATS_NOT_YET_CONNECTED) {
    delete context;  // no connection, so no "closed" callback will free it
    return fail(s, "connect");
  }
  if (s == NATS_NOT_YET_CONNECTED) {
    LOG(WARNING) << "NATS: no server of " << c->servers() << " answers yet; still trying";
  }
  jsOptions jo;
  jsOptions_Init(&jo);
  jo.Wait = absl::ToInt64Milliseconds(o.request_timeout);
  if ((s = natsConnection_JetStream(&c->js_, c->nc_, &jo)) != NATS_OK) return fail(s, "JetStream");
  return c;
}

NatsConnection::~NatsConnection() {
  if (js_) jsCtx_Destroy(js_);
  if (nc_) {
    natsConnection_Close(nc_);
    natsConnection_Destroy(nc_);
  }
}

bool NatsConnection::connected() const {
  return nc_ != nullptr && natsConnection_Status(nc_) == NATS_CONN_STATUS_CONNECTED;
}

bool NatsConnection::WaitConnected(absl::Duration timeout) const {
  const absl::Time deadline = absl::Now() + timeout;
  while (!connected()) {
    if (absl::Now() >= deadline) return false;
    absl::SleepFor(absl::Milliseconds(20));
  }
  return true;
}

std::string NatsConnection::servers() const { return absl::StrJoin(options_.servers, ","); }

absl::Status NatsConnection::Unreachable(absl::string_view what) const {
  return absl::UnavailableError(
      absl::StrCat("NATS (", servers(), ") is unreachable: ", what));
}

}  // namespace recall::server
