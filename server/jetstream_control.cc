#include "server/jetstream_control.h"

#include <glog/logging.h>
#include <google/protobuf/util/json_util.h>
#include <nats/nats.h>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"

namespace recall::server {
namespace {
constexpr char kPinKey[] = "serving_pin";
}  // namespace

std::string ReplicaKey(const std::string& id) {
  std::string key = "replica.";
  for (char ch : id) key += (isalnum(static_cast<unsigned char>(ch)) || ch == '-' || ch == '_') ? ch : '_';
  return key;
}

JetStreamControl::JetStreamControl(Options options) : options_(std::move(options)) {
  jsOptions jo;
  jsOptions_Init(&jo);
  jo.Wait = absl::ToInt64Milliseconds(options_.request_timeout);
  if (natsConnection_JetStream(&js_, options_.connection->nc(), &jo) != NATS_OK) js_ = nullptr;
}

JetStreamControl::~JetStreamControl() {
  StopWatching();
  absl::MutexLock lock(&mu_);
  if (control_) kvStore_Destroy(control_);
  if (registry_) kvStore_Destroy(registry_);
  if (js_) jsCtx_Destroy(js_);
}

std::string JetStreamControl::Describe() const {
  return absl::StrCat("JetStream KV bucket ", options_.bucket, " (R", options_.replicas, ") on ",
                      options_.connection->servers());
}

absl::StatusOr<kvStore*> JetStreamControl::Bucket(bool registry) {
  absl::MutexLock lock(&mu_);
  kvStore*& kv = registry ? registry_ : control_;
  if (kv != nullptr) return kv;
  NatsConnection& c = *options_.connection;
  const std::string name = registry ? options_.bucket + "_replicas" : options_.bucket;
  if (!c.connected() || js_ == nullptr) {
    return c.Unreachable(absl::StrCat("opening KV bucket ", name));
  }
  natsStatus s = js_KeyValue(&kv, js_, name.c_str());
  if (s == NATS_NOT_FOUND) {
    kvConfig cfg;
    kvConfig_Init(&cfg);
    cfg.Bucket = name.c_str();
    cfg.History = 1;
    cfg.Replicas = options_.replicas;
    cfg.StorageType = js_FileStorage;
    if (registry) cfg.TTL = absl::ToInt64Nanoseconds(options_.replica_ttl);
    s = js_CreateKeyValue(&kv, js_, &cfg);
  }
  if (s != NATS_OK) {
    kv = nullptr;
    return NatsError(s, 0, absl::StrCat("opening KV bucket ", name));
  }
  return kv;
}

absl::Status JetStreamControl::PublishPin(int64_t version) {
  auto kv = Bucket(false);
  if (!kv.ok()) return kv.status();
  uint64_t rev = 0;
  natsStatus s = kvStore_PutString(&rev, *kv, kPinKey, std::to_string(version).c_str());
  if (s != NATS_OK) return NatsError(s, 0, absl::StrCat("setting the cluster pin to ", version));
  return absl::OkStatus();
}

absl::StatusOr<int64_t> JetStreamControl::ReadPin() {
  auto kv = Bucket(false);
  if (!kv.ok()) return kv.status();
  kvEntry* e = nullptr;
  natsStatus s = kvStore_Get(&e, *kv, kPinKey);
  if (s == NATS_NOT_FOUND) return 0;
  if (s != NATS_OK) return NatsError(s, 0, "reading the cluster pin");
  int64_t v = 0;
  const bool ok = absl::SimpleAtoi(kvEntry_ValueString(e), &v);
  kvEntry_Destroy(e);
  if (!ok) return absl::DataLossError("the cluster pin is not a number");
  return v;
}

void JetStreamControl::WatchPin(std::function<void(int64_t)> on_change) {
  watcher_ = std::thread([this, f = std::move(on_change)] { WatchLoop(f); });
}

void JetStreamControl::StopWatching() {
  {
    absl::MutexLock lock(&mu_);
    stop_ = true;
  }
  if (watcher_.joinable()) watcher_.join();
}

void JetStreamControl::WatchLoop(std::function<void(int64_t)> on_change) {
  kvWatcher* w = nullptr;
  auto stopping = [this] {
    absl::MutexLock lock(&mu_);
    return stop_;
  };
  while (!stopping()) {
    if (w == nullptr) {
      auto kv = Bucket(false);
      if (!kv.ok() || kvStore_Watch(&w, *kv, kPinKey, nullptr) != NATS_OK) {
        w = nullptr;
        absl::SleepFor(absl::Milliseconds(500));
        continue;
      }
      // The watcher starts with the current value, so a change made while it was down is seen.
    }
    kvEntry* e = nullptr;
    natsStatus s = kvWatcher_Next(&e, w, 500);
    if (s == NATS_TIMEOUT) continue;
    if (s != NATS_OK) {
      LOG(WARNING) << "watching the cluster pin: " << natsStatus_GetText(s) << "; re-watching";
      kvWatcher_Destroy(w);
      w = nullptr;
      absl::SleepFor(absl::Milliseconds(200));
      continue;
    }
    if (e == nullptr) continue;  // the end of the initial values
    int64_t v = 0;
    if (kvEntry_Operation(e) == kvOp_Put && !absl::SimpleAtoi(kvEntry_ValueString(e), &v)) {
      LOG(ERROR) << "the cluster pin holds \"" << kvEntry_ValueString(e) << "\", not a version";
    } else {
      on_change(v);
    }
    kvEntry_Destroy(e);
  }
  if (w) kvWatcher_Destroy(w);
}

absl::Status JetStreamControl::Announce(const recall::v1::ReplicaStatus& status) {
  auto kv = Bucket(true);
  if (!kv.ok()) return kv.status();
  std::string json;
  google::protobuf::util::JsonPrintOptions jo;
  jo.preserve_proto_field_names = true;
  if (auto st = google::protobuf::util::MessageToJsonString(status, &json, jo); !st.ok()) {
    return absl::InternalError(std::string(st.message()));
  }
  uint64_t rev = 0;
  natsStatus s = kvStore_PutString(&rev, *kv, ReplicaKey(status.replica_id()).c_str(),
                                   json.c_str());
  if (s != NATS_OK) return NatsError(s, 0, "announcing this replica");
  return absl::OkStatus();
}

absl::StatusOr<std::vector<recall::v1::ReplicaStatus>> JetStreamControl::Replicas() {
  auto kv = Bucket(true);
  if (!kv.ok()) return kv.status();
  kvKeysList keys;
  natsStatus s = kvStore_Keys(&keys, *kv, nullptr);
  std::vector<recall::v1::ReplicaStatus> out;
  if (s == NATS_NOT_FOUND) return out;
  if (s != NATS_OK) return NatsError(s, 0, "listing replicas");
  for (int i = 0; i < keys.Count; ++i) {
    kvEntry* e = nullptr;
    if (kvStore_Get(&e, *kv, keys.Keys[i]) != NATS_OK) continue;  // expired meanwhile
    recall::v1::ReplicaStatus r;
    if (google::protobuf::util::JsonStringToMessage(kvEntry_ValueString(e), &r).ok()) {
      out.push_back(std::move(r));
    }
    kvEntry_Destroy(e);
  }
  kvKeysList_Destroy(&keys);
  return out;
}

}  // namespace recall::server
