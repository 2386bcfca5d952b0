#include "server/metrics.h"

#include <arpa/inet.h>
#include <poll.h>
#include <prometheus/text_serializer.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cerrno>
#include <cmath>
#include <chrono>
#include <algorithm>
#include <cstring>
#include <vector>

#include "absl/strings/str_cat.h"

namespace recall::server {
namespace {

// 50 µs .. ~6.5 s: recall latencies are sub-millisecond to tens of milliseconds.
prometheus::Histogram::BucketBoundaries LatencyBuckets() {
  prometheus::Histogram::BucketBoundaries b;
  for (double x = 50e-6; x < 7.0; x *= 2) b.push_back(x);
  return b;
}

// 1 .. 4096: forward batch sizes (powers of two).
prometheus::Histogram::BucketBoundaries BatchBuckets() {
  prometheus::Histogram::BucketBoundaries b;
  for (double x = 1; x <= 4096; x *= 2) b.push_back(x);
  return b;
}

// 10 ms .. ~10 min: model version loads and retrain-sized durations.
prometheus::Histogram::BucketBoundaries LoadBuckets() {
  prometheus::Histogram::BucketBoundaries b;
  for (double x = 0.01; x < 700; x *= 2.5) b.push_back(x);
  return b;
}

template <typename T>
T* Single(prometheus::Family<T>& f) { return &f.Add({}); }

}  // namespace

Metrics::Metrics() : registry_(std::make_shared<prometheus::Registry>()) {
  requests_ = &prometheus::BuildCounter()
                   .Name("recall_requests_total")
                   .Help("RPCs handled, by method and gRPC status code")
                   .Register(*registry_);
  latency_ = &prometheus::BuildHistogram()
                  .Name("recall_request_duration_seconds")
                  .Help("RPC latency inside the server, by method")
                  .Register(*registry_);
  stage_ = &prometheus::BuildHistogram()
                .Name("recall_stage_duration_seconds")
                .Help("Recall latency per stage: queue (wait for a batch, per request); encode, "
                      "tower, search (per batch)")
                .Register(*registry_);
  stage_queue_ = &stage_->Add({{"stage", "queue"}}, LatencyBuckets());
  stage_encode_ = &stage_->Add({{"stage", "encode"}}, LatencyBuckets());
  stage_tower_ = &stage_->Add({{"stage", "tower"}}, LatencyBuckets());
  stage_search_ = &stage_->Add({{"stage", "search"}}, LatencyBuckets());
  in_flight_ = &prometheus::BuildGauge()
                    .Name("recall_in_flight_requests")
                    .Help("RPCs being handled right now")
                    .Register(*registry_)
                    .Add({});
  index_items_ = &prometheus::BuildGauge()
                      .Name("recall_index_items")
                      .Help("Live items in the serving index")
                      .Register(*registry_)
                      .Add({});
  model_version_ = &prometheus::BuildGauge()
                        .Name("recall_serving_model_version")
                        .Help("Model version being served (0 = none)")
                        .Register(*registry_)
                        .Add({});
  upserts_ = &prometheus::BuildCounter()
                  .Name("recall_upserted_items_total")
                  .Help("Items upserted online")
                  .Register(*registry_)
                  .Add({});
  deletes_ = &prometheus::BuildCounter()
                  .Name("recall_deleted_items_total")
                  .Help("Items deleted online")
                  .Register(*registry_)
                  .Add({});
  batch_size_ = &prometheus::BuildHistogram()
                     .Name("recall_batch_size")
                     .Help("Requests per user-tower forward and index search")
                     .Register(*registry_)
                     .Add({}, BatchBuckets());
  hidden_items_ = Single(prometheus::BuildGauge()
                             .Name("recall_index_hidden_items")
                             .Help("Removed or replaced items hidden from search until compaction")
                             .Register(*registry_));
  model_info_ = &prometheus::BuildGauge()
                     .Name("recall_model_info")
                     .Help("The serving model version (value 1; version and index in labels)")
                     .Register(*registry_);
  wal_bytes_ = Single(prometheus::BuildCounter()
                          .Name("recall_wal_bytes_total")
                          .Help("Bytes appended to the write-ahead log")
                          .Register(*registry_));
  wal_commits_ = Single(prometheus::BuildCounter()
                            .Name("recall_wal_commits_total")
                            .Help("Group commits of the write-ahead log (one write + sync each)")
                            .Register(*registry_));
  wal_fsync_ = &prometheus::BuildHistogram()
                    .Name("recall_wal_fsync_duration_seconds")
                    .Help("Duration of each write-ahead log group commit's fdatasync")
                    .Register(*registry_)
                    .Add({}, LatencyBuckets());
  version_loads_ = &prometheus::BuildCounter()
                        .Name("recall_version_loads_total")
                        .Help("Model version loads, by result (success, failure)")
                        .Register(*registry_);
  load_ok_ = &version_loads_->Add({{"result", "success"}});
  load_failed_ = &version_loads_->Add({{"result", "failure"}});
  load_duration_ = &prometheus::BuildHistogram()
                        .Name("recall_version_load_duration_seconds")
                        .Help("Time to load, verify, warm and install a model version")
                        .Register(*registry_)
                        .Add({}, LoadBuckets());
  retrain_jobs_ = &prometheus::BuildCounter()
                       .Name("recall_retrain_jobs_total")
                       .Help("Finished retrain jobs, by result")
                       .Register(*registry_);
  for (const char* r : {"succeeded", "failed", "rejected", "cancelled"}) {
    retrain_results_[r] = &retrain_jobs_->Add({{"result", r}});
  }
  retrain_running_ = Single(prometheus::BuildGauge()
                                .Name("recall_retrain_running")
                                .Help("1 while a retrain job is running")
                                .Register(*registry_));
  retrain_last_success_ = Single(prometheus::BuildGauge()
                                     .Name("recall_retrain_last_success_timestamp_seconds")
                                     .Help("Unix time of the last successful retrain (0 = none)")
                                     .Register(*registry_));
  shed_ = &prometheus::BuildCounter()
               .Name("recall_shed_requests_total")
               .Help("Requests answered without work under overload, by reason: queue_full and "
                     "in_flight (RESOURCE_EXHAUSTED), deadline (DEADLINE_EXCEEDED)")
               .Register(*registry_);
  for (const char* r : {"queue_full", "in_flight", "deadline"}) shed_reasons_[r] = &shed_->Add({{"reason", r}});
  wal_errors_ = Single(prometheus::BuildCounter()
                           .Name("recall_wal_write_errors_total")
                           .Help("Write-ahead log appends that failed (disk full, I/O error); the "
                                 "writes were refused UNAVAILABLE and not applied")
                           .Register(*registry_));

  // The write log (server/REPLICATION.md): position, lag, fullness, health.
  write_applied_ = Single(prometheus::BuildGauge()
                              .Name("recall_write_log_applied_sequence")
                              .Help("Every online write up to this write-log sequence is applied "
                                    "to this replica's index")
                              .Register(*registry_));
  write_last_ = Single(prometheus::BuildGauge()
                           .Name("recall_write_log_last_sequence")
                           .Help("Newest sequence in the write log, as last read from it")
                           .Register(*registry_));
  write_visibility_ = &prometheus::BuildHistogram()
                           .Name("recall_write_visibility_lag_seconds")
                           .Help("From a write's storage in the log to its application to this "
                                 "replica's index")
                           .Register(*registry_)
                           .Add({}, LatencyBuckets());
  write_rejected_ = &prometheus::BuildCounter()
                         .Name("recall_write_log_rejected_total")
                         .Help("Logged writes not applied here, by reason: invalid (for every "
                               "model version; skipped on every replica), not_applicable (items "
                               "whose last write does not fit the serving model version)")
                         .Register(*registry_);
  for (const char* r : {"invalid", "not_applicable"}) {
    write_rejected_reasons_[r] = &write_rejected_->Add({{"reason", r}});
  }
  write_stalled_ = Single(prometheus::BuildGauge()
                              .Name("recall_write_apply_stalled")
                              .Help("1 while the write applier retries a failure instead of "
                                    "moving on (it never skips a write)")
                              .Register(*registry_));
  write_log_up_ = Single(prometheus::BuildGauge()
                             .Name("recall_write_log_up")
                             .Help("1 while the write log (e.g. the NATS cluster) is reachable")
                             .Register(*registry_));
  write_log_up_->Set(1);
  write_stored_bytes_ = Single(prometheus::BuildGauge()
                                   .Name("recall_write_log_stored_bytes")
                                   .Help("Bytes the write log holds")
                                   .Register(*registry_));
  write_limit_bytes_ = Single(prometheus::BuildGauge()
                                  .Name("recall_write_log_limit_bytes")
                                  .Help("Most bytes the write log accepts before it refuses new "
                                        "writes (-1 = no limit)")
                                  .Register(*registry_));
  write_stored_records_ = Single(prometheus::BuildGauge()
                                     .Name("recall_write_log_stored_records")
                                     .Help("Records the write log holds")
                                     .Register(*registry_));
  write_limit_records_ = Single(prometheus::BuildGauge()
                                    .Name("recall_write_log_limit_records")
                                    .Help("Most records the write log accepts before it refuses "
                                          "new writes (-1 = no limit)")
                                    .Register(*registry_));
  snapshots_ = &prometheus::BuildCounter()
                    .Name("recall_write_snapshots_total")
                    .Help("Checkpoints of the folded write log, by result")
                    .Register(*registry_);
  snapshot_ok_ = &snapshots_->Add({{"result", "success"}});
  snapshot_failed_ = &snapshots_->Add({{"result", "failure"}});
  snapshot_seq_ = Single(prometheus::BuildGauge()
                             .Name("recall_write_snapshot_sequence")
                             .Help("Write-log sequence of the newest checkpoint this replica "
                                   "loaded or wrote")
                             .Register(*registry_));
  pin_ = Single(prometheus::BuildGauge()
                    .Name("recall_pinned_model_version")
                    .Help("The pinned model version (0 = following the newest)")
                    .Register(*registry_));
  probe_recall_ = Single(prometheus::BuildGauge()
                             .Name("recall_index_probe_recall")
                             .Help("Live recall probe: recall@k of a sample of recent Recall "
                                   "queries through the serving index against exact search over "
                                   "its live items (0..1; NaN before the first probe of the "
                                   "serving version)")
                             .Register(*registry_));
  probe_recall_->Set(std::nan(""));
  probe_queries_ = Single(prometheus::BuildGauge()
                              .Name("recall_index_probe_queries")
                              .Help("Queries in the live recall probe's last sample")
                              .Register(*registry_));
}

void Metrics::SetRecallProbe(double recall, int64_t queries) {
  probe_recall_->Set(recall >= 0 ? recall : std::nan(""));
  probe_queries_->Set(static_cast<double>(queries));
}

void Metrics::SetWriteLogUsage(uint64_t records, uint64_t bytes, int64_t max_records,
                               int64_t max_bytes) {
  write_stored_records_->Set(static_cast<double>(records));
  write_stored_bytes_->Set(static_cast<double>(bytes));
  write_limit_records_->Set(static_cast<double>(max_records));
  write_limit_bytes_->Set(static_cast<double>(max_bytes));
}

void Metrics::AddWriteRejected(const std::string& reason, int64_t n) {
  if (auto it = write_rejected_reasons_.find(reason); it != write_rejected_reasons_.end()) {
    it->second->Increment(static_cast<double>(n));
  }
}

void Metrics::ObserveSnapshot(bool ok, uint64_t seq) {
  (ok ? snapshot_ok_ : snapshot_failed_)->Increment();
  if (ok) snapshot_seq_->Set(static_cast<double>(seq));
}

void Metrics::AddShed(const std::string& reason) {
  if (auto it = shed_reasons_.find(reason); it != shed_reasons_.end()) it->second->Increment();
}

void Metrics::ObserveWalCommit(uint64_t bytes, double sync_seconds) {
  wal_bytes_->Increment(static_cast<double>(bytes));
  wal_commits_->Increment();
  wal_fsync_->Observe(sync_seconds);
}

void Metrics::ObserveVersionLoad(bool ok, double seconds) {
  (ok ? load_ok_ : load_failed_)->Increment();
  load_duration_->Observe(seconds);
}

void Metrics::ObserveRetrainFinished(const std::string& result) {
  if (auto it = retrain_results_.find(result); it != retrain_results_.end()) it->second->Increment();
  if (result == "succeeded") {
    retrain_last_success_->Set(std::chrono::duration<double>(
        std::chrono::system_clock::now().time_since_epoch()).count());
  }
}

absl::StatusOr<int> Metrics::Serve(const std::string& host, int port) {
  int fd = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd < 0) return absl::UnavailableError("metrics: socket() failed");
  int one = 1;
  ::setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_port = htons(static_cast<uint16_t>(port));
  if (::inet_pton(AF_INET, host.c_str(), &addr.sin_addr) != 1) {
    ::close(fd);
    return absl::InvalidArgumentError(absl::StrCat("metrics host must be an IPv4 address: ", host));
  }
  socklen_t len = sizeof(addr);
  if (::bind(fd, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) != 0 || ::listen(fd, 64) != 0 ||
      ::getsockname(fd, reinterpret_cast<sockaddr*>(&addr), &len) != 0) {
    ::close(fd);
    return absl::UnavailableError(absl::StrCat("metrics: cannot listen on ", host, ":", port, ": ",
                                               std::strerror(errno)));
  }
  listen_fd_ = fd;
  http_thread_ = std::thread([this] { ServeLoop(); });
  return static_cast<int>(ntohs(addr.sin_port));
}

Metrics::~Metrics() {
  stop_ = true;
  if (listen_fd_ >= 0) ::shutdown(listen_fd_, SHUT_RDWR);
  if (http_thread_.joinable()) http_thread_.join();
  if (listen_fd_ >= 0) ::close(listen_fd_);
}

void Metrics::ServeLoop() {
  while (!stop_) {
    pollfd p{listen_fd_, POLLIN, 0};
    if (::poll(&p, 1, 200) <= 0) continue;
    int c = ::accept4(listen_fd_, nullptr, nullptr, SOCK_CLOEXEC);
    if (c < 0) continue;
    timeval tv{2, 0};  // a slow or silent client cannot hold the scrape thread for long
    ::setsockopt(c, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
    ::setsockopt(c, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof(tv));
    std::string request;
    char buf[2048];
    while (request.find("\r\n\r\n") == std::string::npos && request.size() < 8192) {
      ssize_t n = ::recv(c, buf, sizeof(buf), 0);
      if (n <= 0) break;
      request.append(buf, static_cast<size_t>(n));
    }
    std::string status = "200 OK", type = "text/plain; version=0.0.4; charset=utf-8", body;
    if (request.rfind("GET /metrics", 0) == 0 || request.rfind("GET / ", 0) == 0) {
      body = prometheus::TextSerializer().Serialize(registry_->Collect());
    } else if (request.rfind("GET ", 0) == 0) {
      status = "404 Not Found";
      body = "try /metrics\n";
    } else {
      status = "405 Method Not Allowed";
      body = "GET only\n";
    }
    const std::string head = absl::StrCat("HTTP/1.1 ", status, "\r\nContent-Type: ", type,
                                          "\r\nContent-Length: ", body.size(),
                                          "\r\nConnection: close\r\n\r\n");
    const std::string out = head + body;
    size_t off = 0;
    while (off < out.size()) {
      ssize_t n = ::send(c, out.data() + off, out.size() - off, MSG_NOSIGNAL);
      if (n <= 0) break;
      off += static_cast<size_t>(n);
    }
    ::close(c);
  }
}

void Metrics::ObserveRequest(const std::string& method, const std::string& code,
                             double seconds) {
  prometheus::Counter* c;
  prometheus::Histogram* h;
  {
    absl::MutexLock lock(&mu_);
    auto& cref = request_counters_[absl::StrCat(method, "/", code)];
    if (!cref) cref = &requests_->Add({{"method", method}, {"code", code}});
    auto& href = latency_hists_[method];
    if (!href) href = &latency_->Add({{"method", method}}, LatencyBuckets());
    c = cref;
    h = href;
  }
  c->Increment();
  h->Observe(seconds);
}

std::string Metrics::RequestCounts() {
  absl::MutexLock lock(&mu_);
  std::vector<std::pair<std::string, double>> rows;
  for (const auto& [key, counter] : request_counters_) rows.emplace_back(key, counter->Value());
  std::sort(rows.begin(), rows.end());
  std::string out;
  for (const auto& [key, n] : rows) absl::StrAppend(&out, out.empty() ? "" : " ", key, "=", n);
  return out;
}

void Metrics::ObserveStages(double encode_sec, double tower_sec, double search_sec) {
  stage_encode_->Observe(encode_sec);
  stage_tower_->Observe(tower_sec);
  stage_search_->Observe(search_sec);
}

void Metrics::SetServingVersion(int64_t version, const std::string& index_factory,
                                int64_t items, int64_t hidden) {
  model_version_->Set(static_cast<double>(version));
  {
    // One series at a time: the old version's label set goes away on a swap.
    absl::MutexLock lock(&mu_);
    if (model_info_series_) model_info_->Remove(model_info_series_);
    model_info_series_ = &model_info_->Add(
        {{"version", std::to_string(version)}, {"index_factory", index_factory}});
    model_info_series_->Set(1);
  }
  SetIndexItems(items, hidden);
}

void Metrics::SetIndexItems(int64_t items, int64_t hidden) {
  index_items_->Set(static_cast<double>(items));
  hidden_items_->Set(static_cast<double>(hidden));
}

}  // namespace recall::server
