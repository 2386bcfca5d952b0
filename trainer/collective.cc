#include "trainer/collective.h"

#include <ATen/ATen.h>
#include <glog/logging.h>
#include <torch/csrc/autograd/custom_function.h>
#include <torch/csrc/distributed/c10d/PrefixStore.hpp>
#include <torch/csrc/distributed/c10d/ProcessGroupGloo.hpp>
#include <torch/csrc/distributed/c10d/TCPStore.hpp>
#include <unistd.h>

#include <cstdio>
#include <cstring>
#include <exception>
#include <utility>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"

namespace recall::trainer {
namespace {

std::string HostName() {
  char buf[256] = {0};
  if (gethostname(buf, sizeof(buf) - 1) != 0) return "localhost";
  return buf;
}

std::string Str(const std::vector<uint8_t>& v) { return std::string(v.begin(), v.end()); }
std::vector<uint8_t> Bytes(const std::string& s) { return std::vector<uint8_t>(s.begin(), s.end()); }

// How often the watchdog beats and reads the others' beats: often enough that a dead peer is
// named within a second or two of its sockets closing, rare enough to cost nothing.
std::chrono::milliseconds BeatPeriod(std::chrono::milliseconds timeout) {
  return std::clamp(timeout / 20, std::chrono::milliseconds(100), std::chrono::milliseconds(1000));
}

// Logs why this rank gives up, to glog and plainly to stderr, and exits with kExitRankLost.
[[noreturn]] void ExitLost(const std::string& msg) {
  LOG(ERROR) << msg;
  google::FlushLogFiles(google::GLOG_INFO);
  std::fprintf(stderr, "recall-train: %s\n", msg.c_str());
  std::fflush(stderr);
  _exit(kExitRankLost);
}

}  // namespace

absl::StatusOr<std::unique_ptr<Collective>> Collective::Connect(const Options& o) {
  if (o.world_size < 1 || o.rank < 0 || o.rank >= o.world_size) {
    return absl::InvalidArgumentError(
        absl::StrCat("rank ", o.rank, " is not in [0, world_size ", o.world_size, ")"));
  }
  if (o.master_port <= 0 || o.master_port > 65535) {
    return absl::InvalidArgumentError(absl::StrCat("master_port ", o.master_port, " out of range"));
  }
  std::unique_ptr<Collective> c(new Collective(o));
  const std::string host = o.host.empty() ? HostName() : o.host;
  try {
    c10d::TCPStoreOptions so;
    so.port = static_cast<uint16_t>(o.master_port);
    so.isServer = o.rank == 0;
    so.numWorkers = o.world_size;
    so.waitWorkers = true;
    so.timeout = o.timeout;
    c->store_ = c10::make_intrusive<c10d::TCPStore>(o.master_addr, so);
    c->store_->set(absl::StrCat("rank/", o.rank, "/address"),
                   Bytes(absl::StrCat(host, ":", getpid())));
    c->store_->set(absl::StrCat("beat/", o.rank), Bytes("0"));
    for (int r = 0; r < o.world_size; ++r) {
      c->addresses_.push_back(Str(c->store_->get(absl::StrCat("rank/", r, "/address"))));
    }
    auto go = c10d::ProcessGroupGloo::Options::create(o.timeout);
    go->devices.push_back(c10d::ProcessGroupGloo::createDeviceForHostname(host));
    c->group_ = c10::make_intrusive<c10d::ProcessGroupGloo>(
        c10::make_intrusive<c10d::PrefixStore>("gloo", c->store_), o.rank, o.world_size, go);
    c10d::TCPStoreOptions wo;
    wo.port = so.port;
    wo.isServer = false;
    wo.waitWorkers = false;
    wo.timeout = o.timeout;
    c->watch_store_ = c10::make_intrusive<c10d::TCPStore>(o.master_addr, wo);
  } catch (const std::exception& e) {
    return absl::UnavailableError(absl::StrCat("rank ", o.rank, " of ", o.world_size,
                                               ": rendezvous at ", o.master_addr, ":",
                                               o.master_port, " failed: ", e.what()));
  }
  LOG(INFO) << "rank " << o.rank << " of " << o.world_size << " joined: "
            << absl::StrJoin(c->addresses_, ", ");
  c->watchdog_ = std::thread([raw = c.get()] { raw->Watchdog(); });
  return c;
}

void Collective::Finish() {
  stop_ = true;
  if (watchdog_.joinable()) watchdog_.join();
  Run("barrier", [&] { return group_->barrier(); });
}

Collective::~Collective() {
  stop_ = true;
  if (watchdog_.joinable()) watchdog_.join();
}

void Collective::LostPeer(const std::string& cause) {
  // Which ranks stopped beating: read every counter twice, some periods apart (on the training
  // thread's own store connection; the watchdog keeps its own). A peer killed
  // a moment ago has not beaten since; one alive has, however busy its training thread is.
  const auto period = BeatPeriod(options_.timeout);
  std::vector<std::string> lost;
  try {
    std::vector<int64_t> before(options_.world_size), after(options_.world_size);
    for (int r = 0; r < options_.world_size; ++r) {
      before[r] = store_->add(absl::StrCat("beat/", r), 0);
    }
    std::this_thread::sleep_for(4 * period);
    for (int r = 0; r < options_.world_size; ++r) {
      after[r] = store_->add(absl::StrCat("beat/", r), 0);
      if (r != options_.rank && after[r] == before[r]) {
        lost.push_back(absl::StrCat("rank ", r, " (", addresses_[r], ")"));
      }
    }
  } catch (const std::exception& e) {
    lost.push_back(absl::StrCat("rank 0 (", addresses_[0], ", the store host): unreachable: ", e.what()));
  }
  const std::string msg =
      lost.empty()
          ? absl::StrCat("rank ", options_.rank, ": ", cause,
                         "; every rank still beats: one is stuck or the network dropped")
          : absl::StrCat("rank ", options_.rank, ": lost ", absl::StrJoin(lost, ", "), ": ", cause);
  ExitLost(msg);
}

void Collective::Watchdog() {
  const auto period = BeatPeriod(options_.timeout);
  const std::string mine = absl::StrCat("beat/", options_.rank);
  std::vector<int64_t> seen(options_.world_size, -1);
  std::vector<std::chrono::steady_clock::time_point> since(options_.world_size,
                                                           std::chrono::steady_clock::now());
  while (!stop_) {
    std::this_thread::sleep_for(period);
    if (stop_) break;
    std::string silent;
    try {
      watch_store_->add(mine, 1);
      const auto now = std::chrono::steady_clock::now();
      for (int r = 0; r < options_.world_size; ++r) {
        if (r == options_.rank) continue;
        const int64_t v = watch_store_->add(absl::StrCat("beat/", r), 0);
        if (v != seen[r]) {
          seen[r] = v;
          since[r] = now;
        } else if (now - since[r] > options_.timeout) {
          silent = absl::StrCat("rank ", r, " (", addresses_[r], ") has not beaten for ",
                                options_.timeout.count() / 1000.0, " s");
        }
      }
    } catch (const std::exception& e) {
      if (stop_) break;  // the store's host finished first
      silent = absl::StrCat("rank 0 (", addresses_[0], ", the store host): unreachable: ", e.what());
    }
    if (!silent.empty()) ExitLost(absl::StrCat("rank ", options_.rank, ": lost ", silent));
  }
}

template <typename F>
void Collective::Run(const char* what, F&& f) {
  const auto start = std::chrono::steady_clock::now();
  try {
    c10::intrusive_ptr<c10d::Work> work = f();
    work->wait(options_.timeout);
  } catch (const std::exception& e) {
    LostPeer(absl::StrCat(what, " failed: ", e.what()));
  }
  const double s = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  seconds_.store(seconds_.load() + s);
}

void Collective::AllReduceSum(const std::vector<at::Tensor>& tensors, int64_t bucket_bytes) {
  at::NoGradGuard no_grad;
  size_t i = 0;
  while (i < tensors.size()) {
    // One bucket: consecutive tensors of one dtype up to bucket_bytes (at least one tensor).
    size_t end = i;
    int64_t bytes = 0;
    while (end < tensors.size() && tensors[end].scalar_type() == tensors[i].scalar_type() &&
           (end == i || bytes + tensors[end].nbytes() <= static_cast<size_t>(bucket_bytes))) {
      bytes += static_cast<int64_t>(tensors[end].nbytes());
      ++end;
    }
    if (end == i + 1 && tensors[i].is_contiguous()) {
      // A bucket of one contiguous tensor is reduced where it lies: no pack, no copy back.
      std::vector<at::Tensor> one = {tensors[i]};
      Run("all-reduce", [&] { return group_->allreduce(one); });
      i = end;
      continue;
    }
    std::vector<at::Tensor> flat_parts;
    for (size_t k = i; k < end; ++k) flat_parts.push_back(tensors[k].reshape({-1}));
    std::vector<at::Tensor> flat = {flat_parts.size() == 1 ? flat_parts[0].contiguous().clone()
                                                              : at::cat(flat_parts)};
    Run("all-reduce", [&] { return group_->allreduce(flat); });
    int64_t offset = 0;
    for (size_t k = i; k < end; ++k) {
      const int64_t n = tensors[k].numel();
      tensors[k].copy_(flat[0].narrow(0, offset, n).view(tensors[k].sizes()));
      offset += n;
    }
    i = end;
  }
}

at::Tensor Collective::AllGather(const at::Tensor& t) {
  at::NoGradGuard no_grad;
  std::vector<at::Tensor> in = {t.contiguous()};
  std::vector<std::vector<at::Tensor>> out(1);
  for (int r = 0; r < options_.world_size; ++r) out[0].push_back(at::empty_like(in[0]));
  Run("all-gather", [&] { return group_->allgather(out, in); });
  return at::cat(out[0], 0);
}

void Collective::Broadcast(at::Tensor& t, int root) {
  at::NoGradGuard no_grad;
  std::vector<at::Tensor> v = {t.contiguous()};
  c10d::BroadcastOptions bo;
  bo.rootRank = root;
  Run("broadcast", [&] { return group_->broadcast(v, bo); });
  if (!v[0].is_same(t)) t.copy_(v[0]);
}

std::string Collective::BroadcastBytes(const std::string& bytes, int root) {
  at::Tensor size = at::full({1}, static_cast<int64_t>(bytes.size()), at::kLong);
  Broadcast(size, root);
  at::Tensor data = at::empty({size.item<int64_t>()}, at::kByte);
  if (options_.rank == root && !bytes.empty()) std::memcpy(data.data_ptr(), bytes.data(), bytes.size());
  if (data.numel() > 0) Broadcast(data, root);
  return std::string(static_cast<const char*>(data.data_ptr()), static_cast<size_t>(data.numel()));
}

namespace {

class GatherFunction : public torch::autograd::Function<GatherFunction> {
 public:
  static at::Tensor forward(torch::autograd::AutogradContext* ctx, const at::Tensor& t,
                               Collective* c) {
    ctx->saved_data["collective"] = reinterpret_cast<int64_t>(c);
    ctx->saved_data["rows"] = t.size(0);
    return c->AllGather(t);
  }
  static torch::autograd::variable_list backward(torch::autograd::AutogradContext* ctx,
                                                 torch::autograd::variable_list grads) {
    auto* c = reinterpret_cast<Collective*>(ctx->saved_data["collective"].toInt());
    const int64_t rows = ctx->saved_data["rows"].toInt();
    at::Tensor g = grads[0].contiguous().clone();
    c->AllReduceSum({g});
    return {g.narrow(0, c->rank() * rows, rows).clone(), at::Tensor()};
  }
};

}  // namespace

at::Tensor GatherWithGradient(Collective* c, const at::Tensor& t) {
  if (c == nullptr || c->world_size() == 1) return t;
  return GatherFunction::apply(t, c);
}

at::Tensor GatherNoGradient(Collective* c, const at::Tensor& t) {
  if (c == nullptr || c->world_size() == 1) return t;
  return c->AllGather(t.detach());
}

}  // namespace recall::trainer
