// Prometheus metrics of recall-server (prefix recall_, base units, _total counters), served in
// the text format on their own HTTP port by prometheus-cpp's Exposer.
//
// Thread-safety: all methods are thread-safe (prometheus-cpp metrics are atomic; label lookups
// are cached per method/code pair behind a mutex only on first use).
#ifndef RECALL_SERVER_METRICS_H_
#define RECALL_SERVER_METRICS_H_

#include <prometheus/counter.h>
#include <prometheus/gauge.h>
#include <prometheus/histogram.h>
#include <prometheus/registry.h>

#include <atomic>
#include <memory>
#include <string>
#include <thread>

#include "absl/base/thread_annotations.h"
#include "absl/container/flat_hash_map.h"
#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"

namespace recall::server {

class Metrics {
 public:
  Metrics();
  ~Metrics();

  // Serves GET /metrics (Prometheus text format 0.0.4) on host:port from a thread of its own
  // (port 0 = any free port). Returns the bound port. prometheus-cpp's civetweb Exposer is not
  // used: with LibTorch loaded in the same process its mg_start fails after binding.
  absl::StatusOr<int> Serve(const std::string& host, int port);

  void ObserveRequest(const std::string& method, const std::string& code, double seconds);
  void ObserveStages(double encode_sec, double tower_sec, double search_sec);
  // "Method/CODE=count ..." of every call answered so far, sorted (logged at shutdown).
  std::string RequestCounts();
  // Time a request waited in the batcher's queue before its batch started.
  void ObserveQueueWait(double seconds) { stage_queue_->Observe(seconds); }
  void SetServingVersion(int64_t version, const std::string& index_factory, int64_t items,
                         int64_t hidden);
  void SetIndexItems(int64_t items, int64_t hidden);
  void ObserveBatch(int64_t requests) { batch_size_->Observe(static_cast<double>(requests)); }
  void ObserveWalCommit(uint64_t bytes, double sync_seconds);
  void ObserveVersionLoad(bool ok, double seconds);
  void ObserveRetrainFinished(const std::string& result);
  void SetRetrainRunning(bool running) { retrain_running_->Set(running ? 1 : 0); }
  void AddUpserts(int64_t n) { upserts_->Increment(static_cast<double>(n)); }
  void AddDeletes(int64_t n) { deletes_->Increment(static_cast<double>(n)); }
  // A request refused before any work: "queue_full", "in_flight" or "deadline".
  void AddShed(const std::string& reason);
  void AddWalWriteError() { wal_errors_->Increment(); }
  // The write log.
  void SetWriteApplied(uint64_t seq) { write_applied_->Set(static_cast<double>(seq)); }
  void SetWriteLogLast(uint64_t seq) { write_last_->Set(static_cast<double>(seq)); }
  void ObserveWriteVisibility(double seconds) { write_visibility_->Observe(seconds); }
  // reason: "invalid" or "not_applicable".
  void AddWriteRejected(const std::string& reason, int64_t n = 1);
  void SetWriteApplyStalled(bool stalled) { write_stalled_->Set(stalled ? 1 : 0); }
  void SetWriteLogUp(bool up) { write_log_up_->Set(up ? 1 : 0); }
  void SetWriteLogUsage(uint64_t records, uint64_t bytes, int64_t max_records, int64_t max_bytes);
  void ObserveSnapshot(bool ok, uint64_t seq);
  void SetPinnedVersion(int64_t version) { pin_->Set(static_cast<double>(version)); }
  // The live recall probe's last result (server/recall_probe.h); recall < 0 = none yet (NaN).
  void SetRecallProbe(double recall, int64_t queries);
  prometheus::Gauge& in_flight() { return *in_flight_; }
  std::shared_ptr<prometheus::Registry> registry() { return registry_; }

 private:
  std::shared_ptr<prometheus::Registry> registry_;
  void ServeLoop();
  int listen_fd_ = -1;
  std::atomic<bool> stop_{false};
  std::thread http_thread_;
  prometheus::Family<prometheus::Counter>* requests_;
  prometheus::Family<prometheus::Histogram>* latency_;
  prometheus::Family<prometheus::Histogram>* stage_;
  prometheus::Histogram *stage_queue_, *stage_encode_, *stage_tower_, *stage_search_;
  prometheus::Gauge *in_flight_, *index_items_, *model_version_;
  prometheus::Counter *upserts_, *deletes_;
  prometheus::Histogram* batch_size_;
  prometheus::Gauge* hidden_items_;
  prometheus::Family<prometheus::Gauge>* model_info_;
  prometheus::Gauge* model_info_series_ ABSL_GUARDED_BY(mu_) = nullptr;
  prometheus::Counter *wal_bytes_, *wal_commits_;
  prometheus::Histogram* wal_fsync_;
  prometheus::Family<prometheus::Counter>* version_loads_;
  prometheus::Counter *load_ok_, *load_failed_;
  prometheus::Histogram* load_duration_;
  prometheus::Family<prometheus::Counter>* retrain_jobs_;
  absl::flat_hash_map<std::string, prometheus::Counter*> retrain_results_;  // fixed at start
  prometheus::Gauge *retrain_running_, *retrain_last_success_;
  prometheus::Family<prometheus::Counter>* shed_;
  absl::flat_hash_map<std::string, prometheus::Counter*> shed_reasons_;  // fixed at start
  prometheus::Counter* wal_errors_;
  prometheus::Gauge *write_applied_, *write_last_, *write_stalled_, *write_log_up_;
  prometheus::Histogram* write_visibility_;
  prometheus::Family<prometheus::Counter>* write_rejected_;
  absl::flat_hash_map<std::string, prometheus::Counter*> write_rejected_reasons_;  // fixed
  prometheus::Gauge *write_stored_bytes_, *write_limit_bytes_, *write_stored_records_,
      *write_limit_records_;
  prometheus::Family<prometheus::Counter>* snapshots_;
  prometheus::Counter *snapshot_ok_, *snapshot_failed_;
  prometheus::Gauge *snapshot_seq_, *pin_;
  prometheus::Gauge *probe_recall_, *probe_queries_;

  absl::Mutex mu_;
  absl::flat_hash_map<std::string, prometheus::Counter*> request_counters_ ABSL_GUARDED_BY(mu_);
  absl::flat_hash_map<std::string, prometheus::Histogram*> latency_hists_ ABSL_GUARDED_BY(mu_);
};

}  // namespace recall::server

#endif  // RECALL_SERVER_METRICS_H_
