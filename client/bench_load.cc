#include "client/bench_load.h"

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cmath>
#include <condition_variable>
#include <mutex>
#include <random>
#include <thread>
#include <unordered_map>
#include <unordered_set>
#include <utility>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "client/cli_util.h"

namespace recall::bench {
namespace {

using Clock = std::chrono::steady_clock;
using recall::v1::RecallRequest;
using recall::v1::RecallResponse;

double Seconds(Clock::duration d) { return std::chrono::duration<double>(d).count(); }
Clock::duration After(double sec) {
  return std::chrono::duration_cast<Clock::duration>(std::chrono::duration<double>(sec));
}

// Collects the outcomes of calls that fall into the measured window.
class Recorder {
 public:
  Recorder(Clock::time_point window_start, Clock::time_point window_end)
      : start_(window_start), end_(window_end) {}
  bool InWindow(Clock::time_point t) const { return t >= start_ && t < end_; }
  void Record(Clock::time_point at, const grpc::Status& s, double latency_sec) {
    if (!InWindow(at)) return;
    std::lock_guard<std::mutex> l(mu_);
    if (s.ok()) {
      latencies_.push_back(latency_sec);
    } else {
      ++errors_;
      ++by_code_[recall::cli::StatusCodeName(s.error_code())];
    }
  }
  void RecordError(Clock::time_point at, const std::string& code) {
    if (!InWindow(at)) return;
    std::lock_guard<std::mutex> l(mu_);
    ++errors_;
    ++by_code_[code];
  }
  LatencyStats Stats() {
    std::lock_guard<std::mutex> l(mu_);
    return Summarize(latencies_, errors_, by_code_, Seconds(end_ - start_));
  }

 private:
  const Clock::time_point start_, end_;
  std::mutex mu_;
  std::vector<double> latencies_;
  int64_t errors_ = 0;
  std::map<std::string, int64_t> by_code_;
};

// Counts down to zero; Wait blocks until then.
class Latch {
 public:
  explicit Latch(int64_t n) : n_(n) {}
  void Add(int64_t d) {
    std::lock_guard<std::mutex> l(mu_);
    n_ += d;
    if (n_ == 0) cv_.notify_all();
  }
  bool WaitFor(double sec) {
    std::unique_lock<std::mutex> l(mu_);
    return cv_.wait_for(l, std::chrono::duration<double>(sec), [&] { return n_ == 0; });
  }

 private:
  std::mutex mu_;
  std::condition_variable cv_;
  int64_t n_;
};

std::vector<std::shared_ptr<grpc::Channel>> MakeChannels(const std::string& addr, int n) {
  std::vector<std::shared_ptr<grpc::Channel>> out;
  for (int i = 0; i < std::max(1, n); ++i) {
    grpc::ChannelArguments args;
    args.SetInt(GRPC_ARG_USE_LOCAL_SUBCHANNEL_POOL, 1);  // one connection per channel
    args.SetInt("recall.bench.channel", i);             // distinct args: no channel sharing
    out.push_back(grpc::CreateCustomChannel(addr, grpc::InsecureChannelCredentials(), args));
  }
  return out;
}

class UnaryTarget : public Target {
 public:
  UnaryTarget(const std::string& addr, int channels, int deadline_ms)
      : deadline_ms_(deadline_ms) {
    for (auto& c : MakeChannels(addr, channels)) stubs_.push_back(recall::v1::RecallService::NewStub(c));
  }
  void Call(const RecallRequest* req, RecallResponse* resp,
            std::function<void(const grpc::Status&)> done) override {
    auto* ctx = new grpc::ClientContext;
    ctx->set_deadline(std::chrono::system_clock::now() + std::chrono::milliseconds(deadline_ms_));
    auto& stub = stubs_[next_.fetch_add(1, std::memory_order_relaxed) % stubs_.size()];
    stub->async()->Recall(ctx, req, resp, [ctx, done = std::move(done)](grpc::Status s) {
      delete ctx;
      done(s);
    });
  }
  std::string name() const override { return "grpc-unary"; }

 private:
  const int deadline_ms_;
  std::vector<std::unique_ptr<recall::v1::RecallService::Stub>> stubs_;
  std::atomic<uint64_t> next_{0};
};

class FunctionTarget : public Target {
 public:
  FunctionTarget(std::string name,
                 std::function<void(const RecallRequest*, RecallResponse*,
                                    std::function<void(const grpc::Status&)>)> fn)
      : name_(std::move(name)), fn_(std::move(fn)) {}
  void Call(const RecallRequest* req, RecallResponse* resp,
            std::function<void(const grpc::Status&)> done) override {
    fn_(req, resp, std::move(done));
  }
  std::string name() const override { return name_; }

 private:
  std::string name_;
  std::function<void(const RecallRequest*, RecallResponse*,
                     std::function<void(const grpc::Status&)>)> fn_;
};

// One closed-loop virtual user over a unary-style target. A target may answer inside Call (an
// in-process engine without the batcher) or later on another thread (gRPC, the batcher's
// workers). Send loops instead of calling itself from the callback: a synchronous target once
// nested one Send frame per request, thousands of them over a run, and recall-bench died of a
// stack overflow under ASan (CI, inside OpenBLAS's sgemm kernel at the bottom of that stack).
struct VirtualUser {
  Target* target;
  const std::vector<RecallRequest>* pool;
  Recorder* rec;
  Latch* finished;
  Clock::time_point end;
  size_t next;
  RecallResponse resp;
  Clock::time_point sent;
  // Who continues after a call: Send's loop if the answer came before Call returned, else the
  // callback. kCalling until one of the two claims the other's turn.
  enum : int { kCalling, kAnswered, kReturned };
  std::atomic<int> turn{kCalling};

  void Send() {
    for (;;) {
      if (Clock::now() >= end) {
        finished->Add(-1);
        return;
      }
      const RecallRequest* req = &(*pool)[next++ % pool->size()];
      resp.Clear();
      sent = Clock::now();
      turn.store(kCalling, std::memory_order_relaxed);
      target->Call(req, &resp, [this](const grpc::Status& s) {
        const auto now = Clock::now();
        rec->Record(now, s, Seconds(now - sent));
        int expected = kCalling;
        if (turn.compare_exchange_strong(expected, kAnswered, std::memory_order_acq_rel)) {
          return;  // Call has not returned yet: its caller's loop sends the next request
        }
        Send();  // Call had returned: this callback is the only one left to continue
      });
      int expected = kCalling;
      if (turn.compare_exchange_strong(expected, kReturned, std::memory_order_acq_rel)) {
        return;  // the answer comes later; its callback continues
      }
    }
  }
};

// One closed-loop virtual user over a RecallStream stream.
class StreamUser : public grpc::ClientBidiReactor<RecallRequest, RecallResponse> {
 public:
  StreamUser(recall::v1::RecallService::Stub* stub, const std::vector<RecallRequest>* pool,
             size_t first, Recorder* rec, Latch* finished, Clock::time_point end)
      : pool_(pool), next_(first), rec_(rec), finished_(finished), end_(end) {
    stub->async()->RecallStream(&ctx_, this);
    SendNext();
    StartCall();
  }
  void OnWriteDone(bool ok) override {
    if (ok) StartRead(&resp_);
  }
  void OnReadDone(bool ok) override {
    const auto now = Clock::now();
    if (!ok) return;  // the stream ended; OnDone reports why
    rec_->Record(now, grpc::Status::OK, Seconds(now - sent_));
    SendNext();
  }
  void OnDone(const grpc::Status& s) override {
    if (!s.ok()) rec_->Record(Clock::now(), s, 0);  // counted if the stream broke in the window
    Latch* f = finished_;
    delete this;
    f->Add(-1);
  }

 private:
  void SendNext() {
    if (Clock::now() >= end_) {
      StartWritesDone();
      return;
    }
    req_ = (*pool_)[next_++ % pool_->size()];
    resp_.Clear();
    sent_ = Clock::now();
    StartWrite(&req_);
  }

  grpc::ClientContext ctx_;
  const std::vector<RecallRequest>* pool_;
  size_t next_;
  Recorder* rec_;
  Latch* finished_;
  Clock::time_point end_, sent_;
  RecallRequest req_;
  RecallResponse resp_;
};

}  // namespace

LatencyStats Summarize(std::vector<double> lat, int64_t errors,
                       std::map<std::string, int64_t> errors_by_code, double wall_sec) {
  LatencyStats s;
  s.ok = static_cast<int64_t>(lat.size());
  s.errors = errors;
  s.errors_by_code = std::move(errors_by_code);
  s.wall_sec = wall_sec;
  s.qps = wall_sec > 0 ? static_cast<double>(s.ok) / wall_sec : 0;
  if (lat.empty()) return s;
  std::sort(lat.begin(), lat.end());
  auto pct = [&](double p) {
    const size_t rank = static_cast<size_t>(std::ceil(p * static_cast<double>(lat.size())));
    return 1e3 * lat[std::min(lat.size() - 1, rank == 0 ? 0 : rank - 1)];
  };
  double sum = 0;
  for (double x : lat) sum += x;
  s.mean_ms = 1e3 * sum / static_cast<double>(lat.size());
  s.p50_ms = pct(0.50);
  s.p95_ms = pct(0.95);
  s.p99_ms = pct(0.99);
  s.p999_ms = pct(0.999);
  s.max_ms = 1e3 * lat.back();
  return s;
}

std::string StatsJson(const LatencyStats& s) {
  std::string codes;
  for (const auto& [code, n] : s.errors_by_code) {
    absl::StrAppend(&codes, codes.empty() ? "" : ", ", "\"", code, "\": ", n);
  }
  return absl::StrFormat(
      "{\"ok\": %d, \"errors\": %d, \"errors_by_code\": {%s}, \"wall_sec\": %.3f, \"qps\": %.1f, "
      "\"mean_ms\": %.3f, \"p50_ms\": %.3f, \"p95_ms\": %.3f, \"p99_ms\": %.3f, "
      "\"p999_ms\": %.3f, \"max_ms\": %.3f}",
      s.ok, s.errors, codes, s.wall_sec, s.qps, s.mean_ms, s.p50_ms, s.p95_ms, s.p99_ms,
      s.p999_ms, s.max_ms);
}

std::vector<RecallRequest> MakeRequests(int n, const std::vector<int64_t>& item_ids,
                                        int64_t num_users, int history_min, int history_max,
                                        int k, uint64_t seed) {
  std::mt19937_64 rng(seed);
  std::vector<RecallRequest> out(std::max(0, n));
  const int hmin = std::max(0, history_min), hmax = std::max(hmin, history_max);
  for (int i = 0; i < n; ++i) {
    RecallRequest& r = out[i];
    r.set_k(k);
    r.mutable_user()->set_user_id(static_cast<int64_t>(rng() % std::max<int64_t>(1, num_users)));
    const int len = hmin + static_cast<int>(rng() % (hmax - hmin + 1));
    for (int j = 0; j < len && !item_ids.empty(); ++j) {
      r.mutable_user()->add_history_item_ids(item_ids[rng() % item_ids.size()]);
    }
    r.set_request_id(absl::StrCat("bench-", i));
  }
  return out;
}

std::vector<RecallRequest> MakeRequestsForUsers(int n, const std::vector<BenchUser>& users,
                                                int history_max, int k, uint64_t seed) {
  std::mt19937_64 rng(seed);
  std::vector<RecallRequest> out(users.empty() ? 0 : std::max(0, n));
  for (int i = 0; i < static_cast<int>(out.size()); ++i) {
    const BenchUser& u = users[rng() % users.size()];
    RecallRequest& r = out[i];
    r.set_k(k);
    recall::v1::UserFeatures* f = r.mutable_user();
    f->set_user_id(u.user_id);
    const size_t keep = std::min(u.history.size(), static_cast<size_t>(std::max(0, history_max)));
    for (size_t j = u.history.size() - keep; j < u.history.size(); ++j) {
      f->add_history_item_ids(u.history[j]);
    }
    for (const auto& [name, value] : u.categorical) (*f->mutable_categorical())[name] = value;
    for (const auto& [name, value] : u.numeric) (*f->mutable_numeric())[name] = value;
    r.set_request_id(absl::StrCat("bench-", i));
  }
  return out;
}

std::unique_ptr<Target> MakeUnaryTarget(const std::string& addr, int channels, int deadline_ms) {
  return std::make_unique<UnaryTarget>(addr, channels, deadline_ms);
}

std::unique_ptr<Target> MakeFunctionTarget(
    std::string name, std::function<void(const RecallRequest*, RecallResponse*,
                                         std::function<void(const grpc::Status&)>)> fn) {
  return std::make_unique<FunctionTarget>(std::move(name), std::move(fn));
}

LatencyStats RunClosedLoop(Target& target, const std::vector<RecallRequest>& pool,
                           int concurrency, double warmup_sec, double duration_sec) {
  const auto t0 = Clock::now();
  const auto start = t0 + After(warmup_sec), end = start + After(duration_sec);
  Recorder rec(start, end);
  const int c = std::max(1, concurrency);
  Latch finished(c);
  std::vector<std::unique_ptr<VirtualUser>> users;
  for (int i = 0; i < c; ++i) {
    users.push_back(std::unique_ptr<VirtualUser>(
        new VirtualUser{&target, &pool, &rec, &finished, end, pool.size() * i / c, {}, {}, {}}));
  }
  // Each user starts on a thread of its own: with a synchronous target its whole run is that
  // thread's loop (c threads, c requests in flight); with an asynchronous one the thread only
  // sends the first request.
  std::vector<std::thread> starters;
  starters.reserve(c);
  for (auto& u : users) starters.emplace_back([v = u.get()] { v->Send(); });
  for (auto& t : starters) t.join();
  finished.WaitFor(warmup_sec + duration_sec + 60);
  return rec.Stats();
}

LatencyStats RunStreamClosedLoop(const std::string& addr, int channels,
                                 const std::vector<RecallRequest>& pool, int concurrency,
                                 double warmup_sec, double duration_sec) {
  std::vector<std::unique_ptr<recall::v1::RecallService::Stub>> stubs;
  for (auto& ch : MakeChannels(addr, channels)) stubs.push_back(recall::v1::RecallService::NewStub(ch));
  const auto t0 = Clock::now();
  const auto start = t0 + After(warmup_sec), end = start + After(duration_sec);
  Recorder rec(start, end);
  const int c = std::max(1, concurrency);
  Latch finished(c);
  for (int i = 0; i < c; ++i) {
    new StreamUser(stubs[i % stubs.size()].get(), &pool, pool.size() * i / c, &rec, &finished,
                   end);
  }
  finished.WaitFor(warmup_sec + duration_sec + 60);
  return rec.Stats();
}

LatencyStats RunOpenLoop(Target& target, const std::vector<RecallRequest>& pool, double rate,
                         double warmup_sec, double duration_sec, int max_outstanding) {
  struct Pending {
    RecallResponse resp;
    Clock::time_point scheduled;
  };
  const auto t0 = Clock::now();
  const auto start = t0 + After(warmup_sec), end = start + After(duration_sec);
  Recorder rec(start, end);
  std::atomic<int> outstanding{0};
  Latch drained(1);  // 1 = the dispatcher itself
  const double interval = 1.0 / std::max(1e-9, rate);
  for (int64_t i = 0;; ++i) {
    const auto scheduled = t0 + After(interval * i);
    if (scheduled >= end) break;
    std::this_thread::sleep_until(scheduled);
    if (outstanding.load(std::memory_order_relaxed) >= max_outstanding) {
      rec.RecordError(scheduled, "client_backlog");
      continue;
    }
    outstanding.fetch_add(1, std::memory_order_relaxed);
    drained.Add(1);
    auto* p = new Pending{RecallResponse(), scheduled};
    target.Call(&pool[i % pool.size()], &p->resp, [p, &rec, &outstanding, &drained](
                                                      const grpc::Status& s) {
      // Latency from the scheduled send time: a late send counts against the server's queue.
      rec.Record(p->scheduled, s, Seconds(Clock::now() - p->scheduled));
      delete p;
      outstanding.fetch_sub(1, std::memory_order_relaxed);
      drained.Add(-1);
    });
  }
  drained.Add(-1);
  drained.WaitFor(60);
  return rec.Stats();
}

namespace {

// Ids with O(1) insert, erase and uniform draw.
class IdSet {
 public:
  bool Contains(int64_t id) const { return pos_.count(id) > 0; }
  void Insert(int64_t id) {
    if (pos_.emplace(id, ids_.size()).second) ids_.push_back(id);
  }
  void Erase(int64_t id) {
    auto it = pos_.find(id);
    if (it == pos_.end()) return;
    const size_t at = it->second;
    pos_.erase(it);
    if (at + 1 != ids_.size()) {
      ids_[at] = ids_.back();
      pos_[ids_[at]] = at;
    }
    ids_.pop_back();
  }
  size_t size() const { return ids_.size(); }
  int64_t at(size_t i) const { return ids_[i]; }

 private:
  std::vector<int64_t> ids_;
  std::unordered_map<int64_t, size_t> pos_;
};

}  // namespace

class UpsertLoad::State {
 public:
  State(const WriteMix& mix) : rng(mix.seed) {
    for (int64_t id : mix.served_ids) served.Insert(id);
  }
  std::mutex mu;
  std::mt19937_64 rng;
  // What the writers know is live: served ids not deleted since, and ids they wrote.
  IdSet served, written;
  int64_t next_new = 0;
};

UpsertLoad::UpsertLoad(const std::string& addr, WriteMix mix)
    : mix_(std::move(mix)), state_(std::make_unique<State>(mix_)) {
  for (int w = 0; w < std::max(1, mix_.writers); ++w) {
    threads_.emplace_back([this, addr, w] { RunWriter(w, addr); });
  }
}

void UpsertLoad::RunWriter(int w, const std::string& addr) {
  const WriteMix& mix = mix_;
  State& st = *state_;
  auto stub = recall::v1::RecallService::NewStub(MakeChannels(addr, 1)[0]);
  std::normal_distribution<float> normal;
  std::uniform_real_distribution<double> unit(0.0, 1.0);
  const int b = std::max(1, mix.batch);
  const int writers = std::max(1, mix.writers);
  const int64_t span = std::max<int64_t>(b, mix.new_id_span);
  const double interval = b / std::max(1e-9, mix.items_per_sec);
  const auto t0 = Clock::now();
  for (int64_t call = w; !stop_.load(); call += writers) {
    std::this_thread::sleep_until(t0 + After(interval * call));
    if (stop_.load()) break;
    grpc::ClientContext ctx;
    ctx.set_deadline(std::chrono::system_clock::now() +
                     std::chrono::milliseconds(mix.deadline_ms));
    std::unique_lock<std::mutex> lock(st.mu);
    const size_t live = st.served.size() + st.written.size();
    if (live > 0 && unit(st.rng) < mix.delete_fraction) {
      recall::v1::DeleteItemsRequest req;
      const size_t n = std::min<size_t>(b, live);
      std::unordered_set<int64_t> picked;
      while (picked.size() < n) {
        const size_t i = st.rng() % (st.served.size() + st.written.size());
        const int64_t id =
            i < st.served.size() ? st.served.at(i) : st.written.at(i - st.served.size());
        if (picked.insert(id).second) req.add_item_ids(id);
      }
      // Gone whether or not the call succeeds: a failed delete may still have been applied.
      for (int64_t id : req.item_ids()) {
        st.served.Erase(id);
        st.written.Erase(id);
      }
      lock.unlock();
      recall::v1::DeleteItemsResponse resp;
      if (stub->DeleteItems(&ctx, req, &resp).ok()) {
        deleted_ids_ok_ += req.item_ids_size();
        deleted_present_ += resp.deleted();
      } else {
        ++delete_calls_failed_;
      }
      continue;
    }
    recall::v1::UpsertItemsRequest req;
    std::unordered_set<int64_t> picked;
    int64_t replaced = 0;
    for (int i = 0; i < b; ++i) {
      int64_t id = 0;
      bool chosen = false;
      if (st.served.size() > 0 && unit(st.rng) < mix.replace_fraction) {
        id = st.served.at(st.rng() % st.served.size());
        chosen = picked.insert(id).second;
      }
      while (!chosen) {  // a new id (span >= b: one is always free in this call)
        id = mix.first_new_id + (st.next_new++ % span);
        chosen = picked.insert(id).second;
      }
      replaced += st.served.Contains(id) || st.written.Contains(id);
      auto* v = req.add_items()->mutable_vector();
      v->set_item_id(id);
      v->set_model_version(mix.model_version);
      double norm = 0;
      std::vector<float> x(std::max(0, mix.dim));
      for (float& e : x) {
        e = normal(st.rng);
        norm += static_cast<double>(e) * e;
      }
      const float inv = static_cast<float>(1.0 / std::sqrt(std::max(norm, 1e-12)));
      for (float e : x) v->add_values(e * inv);
    }
    lock.unlock();
    recall::v1::UpsertItemsResponse resp;
    if (stub->UpsertItems(&ctx, req, &resp).ok()) {
      items_ok_ += resp.upserted();
      replaced_ok_ += replaced;
      std::lock_guard<std::mutex> relock(st.mu);
      for (const auto& item : req.items()) {
        if (!st.served.Contains(item.vector().item_id())) {
          st.written.Insert(item.vector().item_id());
        }
      }
    } else {
      ++calls_failed_;
    }
  }
}

void UpsertLoad::Stop() {
  stop_ = true;
  for (std::thread& t : threads_) {
    if (t.joinable()) t.join();
  }
}

UpsertLoad::~UpsertLoad() { Stop(); }

}  // namespace recall::bench
