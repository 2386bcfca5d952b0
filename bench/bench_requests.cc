// bench-requests: writes the request pool and the exact top-K answers of a model version for the
// load generators (recall-bench over gRPC, recall-inprocess-bench in-process). The formats are
// in client/bench_files.h.
//
//   bench-requests --model_base=DIR [--model_version=N] [--users_from=DATASET_DIR] --k=100
//                  --requests_file=R --topk_file=T
//
// Requests: --requests requests of the dataset's users (--users_from: each user's id, features
// and last --history_max train items) or of random users (ids in [0, --num_users), histories of
// --history_min..--history_max items of the version), top --k. Exact answers, for the first
// --topk_queries requests: each request goes through the version's user tower (RecallEngine,
// return_user_embedding), then exact inner-product search over every item vector of the
// version's index (a Flat copy), with the request's exclusions applied as the server applies
// them.
#include <gflags/gflags.h>

#include <algorithm>
#include <cmath>
#include <iostream>
#include <memory>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "client/bench_files.h"
#include "client/bench_load.h"
#include "index/embedding_index.h"
#include "model/openmp_env.h"
#include "server/recall_engine.h"
#include "server/version_manager.h"
#include "trainer/dataset.h"

DEFINE_string(model_base, "", "the model base: the version's item ids make the requests, its "
              "towers and item vectors the exact answers");
DEFINE_int64(model_version, 0, "the version (0 = the newest valid one)");
DEFINE_string(requests_file, "", "output: the request pool (delimited recall.v1.RecallRequest)");
DEFINE_string(topk_file, "", "output: the exact answers (delimited recall.v1.RecallResponse); "
              "empty = none");
DEFINE_int32(topk_queries, 1000, "exact answers for this many leading requests (-1 = all)");
DEFINE_int32(k, 100, "top-k of every request");
DEFINE_int32(history_min, 20, "random users: history items per request, uniform in [min, max]");
DEFINE_int32(history_max, 50, "history items per request (--users_from: the user's last ones)");
DEFINE_int32(requests, 4000, "requests in the pool");
DEFINE_int64(num_users, 100000, "random users: ids drawn from [0, num_users)");
DEFINE_string(users_from, "",
              "a dataset directory as `recall-train --export_dataset` writes it (train.txt, "
              "users.tsv): requests are then its users with a train item, each with its id, "
              "features and last --history_max train items, instead of random ids and histories");
DEFINE_bool(exclude_history, false, "set exclude_history on every request");
DEFINE_uint64(seed, 1, "request pool seed");
DEFINE_int32(batch, 256, "requests per user-tower batch and per exact search");

namespace {

using recall::v1::RecallRequest;
using recall::v1::RecallResponse;

// The users of an exported dataset as callers would present them (external ids, features).
absl::StatusOr<std::vector<recall::bench::BenchUser>> LoadBenchUsers(const std::string& dir) {
  auto d = recall::trainer::LoadDatasetDir(dir);
  if (!d.ok()) return d.status();
  std::vector<recall::bench::BenchUser> users;
  for (int64_t u = 0; u < d->num_users; ++u) {
    if (d->train[u].empty()) continue;
    recall::bench::BenchUser b;
    b.user_id = d->ExternalUserId(u);
    for (int64_t i : d->train[u]) b.history.push_back(d->ExternalItemId(i));
    for (size_t f = 0; f < d->user_cat_names.size(); ++f) {
      if (!d->user_cat_values[f][u].empty()) b.categorical[d->user_cat_names[f]] = d->user_cat_values[f][u];
    }
    for (size_t f = 0; f < d->user_num_names.size(); ++f) {
      if (!std::isnan(d->user_num_values[f][u])) b.numeric[d->user_num_names[f]] = d->user_num_values[f][u];
    }
    users.push_back(std::move(b));
  }
  if (users.empty()) return absl::InvalidArgumentError(dir + ": no user has a train item");
  return users;
}

// The exclusions of a request exactly as RecallEngine applies them.
std::vector<int64_t> Exclusions(const RecallRequest& req) {
  std::vector<int64_t> out(req.exclude_item_ids().begin(), req.exclude_item_ids().end());
  if (req.exclude_history()) {
    out.insert(out.end(), req.user().history_item_ids().begin(),
               req.user().history_item_ids().end());
  }
  return out;
}

// Exact answers (client/bench_files.h) for `reqs`: user vectors from the engine, then exact
// search over `exact`, extended past k while the results still tie with the k-th.
absl::Status ExactAnswers(const recall::server::RecallEngine& engine,
                          const recall::EmbeddingIndex& exact, int64_t version,
                          const std::vector<RecallRequest>& reqs,
                          std::vector<RecallResponse>* out) {
  const int n = static_cast<int>(reqs.size());
  const int dim = exact.dim();
  std::vector<RecallRequest> with_embedding(reqs);
  std::vector<const RecallRequest*> req_ptrs;
  std::vector<RecallResponse> served(n);
  std::vector<RecallResponse*> resp_ptrs;
  for (int i = 0; i < n; ++i) {
    with_embedding[i].set_return_user_embedding(true);
    with_embedding[i].set_k(1);  // only the user vector is needed
    req_ptrs.push_back(&with_embedding[i]);
    resp_ptrs.push_back(&served[i]);
  }
  std::vector<absl::Status> statuses(n);
  engine.RecallBatch(req_ptrs, resp_ptrs, absl::MakeSpan(statuses));
  std::vector<float> queries(static_cast<size_t>(n) * dim);
  std::vector<std::vector<int64_t>> excludes(n);
  int k_max = 1;
  for (int i = 0; i < n; ++i) {
    if (!statuses[i].ok()) {
      return absl::Status(statuses[i].code(), absl::StrCat("request ", reqs[i].request_id(), ": ",
                                                           statuses[i].message()));
    }
    if (served[i].user_embedding_size() != dim) {
      return absl::InternalError("the engine returned no user embedding");
    }
    std::copy(served[i].user_embedding().begin(), served[i].user_embedding().end(),
              queries.begin() + static_cast<size_t>(i) * dim);
    excludes[i] = Exclusions(reqs[i]);
    k_max = std::max(k_max, reqs[i].k());
  }
  const int64_t items = std::max<int64_t>(1, exact.size());
  const float tol = recall::bench::kTieTolerance;
  // Fetch k_max + 16 for every query at once; then, for a query whose results still tie with
  // its k-th at the end of what was fetched, fetch twice as many until they do not.
  int fetch = static_cast<int>(std::min<int64_t>(k_max + 16, items));
  auto hits = exact.Search(queries.data(), n, fetch, excludes);
  if (!hits.ok()) return hits.status();
  for (int i = 0; i < n; ++i) {
    const int k = reqs[i].k();
    recall::SearchHits h = (*hits)[i];
    for (int f = fetch; static_cast<int>(h.ids.size()) == f && f > k && f < items &&
                        h.scores.back() >= h.scores[k - 1] - tol;) {
      f = static_cast<int>(std::min<int64_t>(2 * static_cast<int64_t>(f), items));
      auto more = exact.Search(queries.data() + static_cast<size_t>(i) * dim, 1, f,
                               absl::MakeConstSpan(&excludes[i], 1));
      if (!more.ok()) return more.status();
      h = (*more)[0];
    }
    RecallResponse r;
    r.set_request_id(reqs[i].request_id());
    r.set_model_version(version);
    for (size_t j = 0; j < h.ids.size(); ++j) {
      if (static_cast<int>(j) >= k && h.scores[j] < h.scores[k - 1] - tol) break;
      auto* item = r.add_items();
      item->set_item_id(h.ids[j]);
      item->set_score(h.scores[j]);
    }
    *r.mutable_user_embedding() = served[i].user_embedding();
    out->push_back(std::move(r));
  }
  return absl::OkStatus();
}

}  // namespace

int main(int argc, char** argv) {
  recall::EnsurePassiveOpenMpWait(argv);
  gflags::SetUsageMessage(
      "bench-requests --model_base=DIR --requests_file=R --topk_file=T [--users_from=DIR] "
      "[flags]");
  gflags::ParseCommandLineFlags(&argc, &argv, true);
  if (FLAGS_model_base.empty() || FLAGS_requests_file.empty()) {
    std::cerr << "error: --model_base and --requests_file are required\n";
    return 64;
  }
  if (FLAGS_k < 1) {
    std::cerr << "error: --k must be >= 1\n";
    return 64;
  }
  recall::server::VersionManager versions({FLAGS_model_base, 0, 0});
  absl::Status loaded = FLAGS_model_version > 0 ? versions.SetServingVersion(FLAGS_model_version)
                                                : versions.LoadNewest();
  if (!loaded.ok()) {
    std::cerr << "error: " << loaded.message() << "\n";
    return 1;
  }
  std::shared_ptr<recall::server::Servable> servable = versions.Current();
  const std::vector<int64_t> item_ids = servable->index->Ids();
  std::vector<RecallRequest> pool;
  if (FLAGS_users_from.empty()) {
    pool = recall::bench::MakeRequests(FLAGS_requests, item_ids, FLAGS_num_users,
                                       FLAGS_history_min, FLAGS_history_max, FLAGS_k, FLAGS_seed);
  } else {
    auto users = LoadBenchUsers(FLAGS_users_from);
    if (!users.ok()) {
      std::cerr << "error: --users_from: " << users.status().message() << "\n";
      return 64;
    }
    pool = recall::bench::MakeRequestsForUsers(FLAGS_requests, *users, FLAGS_history_max, FLAGS_k,
                                               FLAGS_seed);
  }
  if (FLAGS_exclude_history) {
    for (auto& r : pool) r.set_exclude_history(true);
  }
  if (auto s = recall::bench::WriteRequestFile(FLAGS_requests_file, pool); !s.ok()) {
    std::cerr << "error: " << s.message() << "\n";
    return 1;
  }
  std::cerr << "bench-requests: version " << servable->version() << ", " << item_ids.size()
            << " items, " << pool.size() << " requests -> " << FLAGS_requests_file << "\n";
  if (FLAGS_topk_file.empty()) return 0;

  // Exact answers: a Flat index over the same item vectors.
  auto exact = recall::EmbeddingIndex::Create(servable->index->dim(), "Flat");
  if (!exact.ok()) {
    std::cerr << "error: " << exact.status().message() << "\n";
    return 1;
  }
  std::vector<int64_t> ids;
  std::vector<float> vectors;
  ids.reserve(item_ids.size());
  vectors.reserve(item_ids.size() * servable->index->dim());
  for (int64_t id : item_ids) {
    auto v = servable->index->Reconstruct(id);
    if (!v.ok()) continue;
    ids.push_back(id);
    vectors.insert(vectors.end(), v->begin(), v->end());
  }
  if (auto s = (*exact)->Build(ids, vectors.data()); !s.ok()) {
    std::cerr << "error: exact index: " << s.message() << "\n";
    return 1;
  }
  vectors = {};
  recall::server::EngineLimits limits;
  limits.max_k = std::max(limits.max_k, FLAGS_k);
  recall::server::RecallEngine engine(&versions, limits);
  const size_t n = FLAGS_topk_queries < 0
                       ? pool.size()
                       : std::min(pool.size(), static_cast<size_t>(FLAGS_topk_queries));
  std::vector<RecallResponse> answers;
  answers.reserve(n);
  const size_t batch = static_cast<size_t>(std::max(1, FLAGS_batch));
  for (size_t i = 0; i < n; i += batch) {
    std::vector<RecallRequest> chunk(pool.begin() + i, pool.begin() + std::min(n, i + batch));
    if (auto s = ExactAnswers(engine, **exact, servable->version(), chunk, &answers); !s.ok()) {
      std::cerr << "error: exact answers: " << s.message() << "\n";
      return 1;
    }
  }
  if (auto s = recall::bench::WriteTopKFile(FLAGS_topk_file, answers); !s.ok()) {
    std::cerr << "error: " << s.message() << "\n";
    return 1;
  }
  std::cerr << "bench-requests: exact top-" << FLAGS_k << " of " << answers.size()
            << " requests -> " << FLAGS_topk_file << "\n";
  return 0;
}
