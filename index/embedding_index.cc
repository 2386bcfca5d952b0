#include "index/embedding_index.h"

#include <omp.h>

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <climits>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <thread>
#include <typeinfo>
#include <utility>

#include "absl/container/flat_hash_set.h"
#include "absl/status/status.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "faiss/Index.h"
#include "faiss/IndexFlat.h"
#include "faiss/IndexHNSW.h"
#include "faiss/IndexIVF.h"
#include "faiss/IndexIVFFlat.h"
#include "faiss/IndexIVFPQ.h"
#include "faiss/clone_index.h"
#include "faiss/impl/HNSW.h"
#include "faiss/impl/IDSelector.h"
#include "faiss/impl/io.h"
#include "faiss/index_factory.h"
#include "faiss/utils/distances.h"
#include "index/blas_ivf_scan.h"
#include "index/faiss_guard.h"
#include "index/faiss_structures.h"
#include "index/hnsw_inserter.h"
#include "index/index_file.h"

namespace recall {
namespace {

using idx_t = faiss::Index::idx_t;

// Adds a bulk load (Build, Compact) to `index`. An HNSW graph built in bulk gets
// efConstruction kBulkEfConstruction for a better graph (FAISS's default of 40 leaves 1M
// clustered vectors at recall@100 ~0.6 even with a large efSearch); the structure's own value,
// kept for online Upserts where insertion cost matters, is restored afterwards.
void AddBulk(faiss::Index* index, int64_t n, const float* vectors) {
  auto* hnsw = dynamic_cast<faiss::IndexHNSW*>(index);
  const int saved = hnsw ? hnsw->hnsw.efConstruction : 0;
  if (hnsw) {
    hnsw->hnsw.efConstruction =
        std::max(saved, recall::EmbeddingIndex::kBulkEfConstruction);
  }
  try {
    index->add(n, vectors);
  } catch (...) {
    if (hnsw) hnsw->hnsw.efConstruction = saved;
    throw;
  }
  if (hnsw) hnsw->hnsw.efConstruction = saved;
}

// Runs fn(i) for i in [0, n) on min(n, threads) OpenMP threads (the calling thread alone when
// that is 1). Inside, every thread limits its own nested regions to one thread, so FAISS's
// internal `#pragma omp parallel` (e.g. IndexHNSW::search, which opens a full team even for
// one query) neither oversubscribes the machine nor allocates per-thread scratch for threads
// that get no work. fn must not throw.
template <typename Fn>
void ParallelFor(int n, int threads, Fn&& fn) {
  if (n <= 0) return;
  const int nt = std::max(1, std::min(n, threads));
#pragma omp parallel num_threads(nt)
  {
    omp_set_num_threads(1);  // ICV of this implicit task only; gone when the region ends
#pragma omp for schedule(dynamic, 1)
    for (int i = 0; i < n; ++i) fn(i);
  }
}

// Runs fn() on the calling thread with the OpenMP regions it opens (FAISS's) limited to
// `threads` threads, without changing the calling thread's own OpenMP settings.
template <typename Fn>
void WithThreads(int threads, Fn&& fn) {
#pragma omp parallel num_threads(1)
  {
    omp_set_num_threads(std::max(1, threads));
    fn();
  }
}

// A search is split over at most one thread per this many multiply-adds: below it, starting
// an OpenMP team (and waking its threads) costs more than it saves, especially when cores
// are shared with other work.
constexpr double kMinWorkPerThread = 1 << 20;

// Accepts a label iff it is live (label_to_id[label] != -1) and not in `excluded` (internal
// labels). Called by FAISS from inside the search for every candidate.
class LiveSelector final : public faiss::IDSelector {
 public:
  LiveSelector(const std::vector<int64_t>& label_to_id,
               const absl::flat_hash_set<int64_t>* excluded)
      : label_to_id_(label_to_id.data()),
        n_(static_cast<idx_t>(label_to_id.size())),
        excluded_(excluded) {}
  bool is_member(idx_t id) const override {
    if (id < 0 || id >= n_ || label_to_id_[id] == EmbeddingIndex::kReservedId) return false;
    return excluded_ == nullptr || !excluded_->contains(id);
  }

 private:
  const int64_t* label_to_id_;
  idx_t n_;
  const absl::flat_hash_set<int64_t>* excluded_;
};

absl::Status CheckFinite(const float* v, size_t count, absl::string_view what) {
  for (size_t i = 0; i < count; ++i) {
    if (!std::isfinite(v[i])) {
      return absl::InvalidArgumentError(
          absl::StrCat(what, " contains a non-finite value at element ", i));
    }
  }
  return absl::OkStatus();
}

}  // namespace

EmbeddingIndex::EmbeddingIndex(int dim, std::string factory, std::unique_ptr<faiss::Index> index,
                               std::unique_ptr<faiss::Index> exact, Kind kind)
    : dim_(dim),
      factory_(std::move(factory)),
      kind_(kind),
      reranks_(exact != nullptr),
      index_(std::move(index)),
      exact_(std::move(exact)) {}

EmbeddingIndex::~EmbeddingIndex() = default;

absl::StatusOr<std::unique_ptr<EmbeddingIndex>> EmbeddingIndex::Create(int dim,
                                                                       std::string_view factory) {
  if (dim <= 0) return absl::InvalidArgumentError(absl::StrCat("dim must be > 0, got ", dim));
  if (factory.empty()) return absl::InvalidArgumentError("factory string is empty");
  const std::string fs(factory);
  const bool rerank = absl::EndsWith(fs, kRerankSuffix);
  const std::string base = rerank ? fs.substr(0, fs.size() - kRerankSuffix.size()) : fs;
  std::unique_ptr<faiss::Index> index;
  absl::Status s = FaissGuard(
      absl::StatusCode::kInvalidArgument, absl::StrCat("invalid FAISS factory string \"", fs, "\""),
      [&] { index.reset(faiss::index_factory(dim, base.c_str(), faiss::METRIC_INNER_PRODUCT)); });
  if (!s.ok()) return s;
  if (rerank && StoresExactVectors(index.get())) {
    return absl::InvalidArgumentError(absl::StrCat(
        "factory string \"", fs, "\": \",RFlat\" re-ranks a compressed kind; \"", base,
        "\" stores exact vectors already"));
  }
  if (index->metric_type != faiss::METRIC_INNER_PRODUCT) {
    return absl::InvalidArgumentError(
        absl::StrCat("factory string \"", fs, "\" does not build an inner-product index"));
  }
  absl::StatusOr<FaissKind> kind = KindOf(index.get());
  if (!kind.ok()) {
    return absl::InvalidArgumentError(
        absl::StrCat("factory string \"", fs, "\": ", kind.status().message()));
  }
  int ef = kDefaultEfSearch, nprobe = kDefaultNprobe;
  s = FaissGuard(absl::StatusCode::kInternal, "configuring the new index", [&] {
    if (auto* h = dynamic_cast<faiss::IndexHNSW*>(index.get())) h->hnsw.efSearch = ef;
    // Polysemous training (the factory's default for IVF-PQ) only serves Hamming-distance
    // filtering, which this index never uses; it costs most of the training time.
    if (auto* pq = dynamic_cast<faiss::IndexIVFPQ*>(index.get()))
      pq->do_polysemous_training = false;
    if (auto* ivf = dynamic_cast<faiss::IndexIVF*>(index.get())) {
      nprobe = static_cast<int>(std::min<size_t>(nprobe, ivf->nlist));
      ivf->nprobe = nprobe;
      ivf->make_direct_map(true);  // Reconstruct and Compact need it
    }
  });
  if (!s.ok()) return s;
  std::unique_ptr<EmbeddingIndex> out(new EmbeddingIndex(
      dim, fs, std::move(index), rerank ? NewExactStore(dim) : nullptr, *kind));
  {
    absl::MutexLock lock(&out->mu_);
    out->ef_search_ = ef;
    out->nprobe_ = nprobe;
  }
  return out;
}

absl::StatusOr<std::unique_ptr<EmbeddingIndex>> EmbeddingIndex::Load(const std::string& path) {
  return Load(path, std::string_view());
}

absl::StatusOr<std::unique_ptr<EmbeddingIndex>> EmbeddingIndex::Load(const std::string& path,
                                                                     std::string_view factory) {
  absl::StatusOr<IndexFileContents> file = ReadIndexFile(path);
  if (!file.ok()) return file.status();
  std::unique_ptr<faiss::Index> inner = std::move(file->index);
  std::unique_ptr<faiss::Index> exact = std::move(file->exact);
  const float k_factor = exact != nullptr ? file->k_factor : static_cast<float>(kDefaultKFactor);
  if (inner->metric_type != faiss::METRIC_INNER_PRODUCT) {
    return absl::InvalidArgumentError(
        absl::StrCat("\"", path, "\": index metric is ", static_cast<int>(inner->metric_type),
                     ", EmbeddingIndex needs inner product (", faiss::METRIC_INNER_PRODUCT, ")"));
  }
  absl::StatusOr<FaissKind> kind = KindOf(inner.get());
  if (!kind.ok()) {
    return absl::InvalidArgumentError(absl::StrCat("\"", path, "\": ", kind.status().message()));
  }
  int ef = kDefaultEfSearch, nprobe = kDefaultNprobe;
  absl::Status s = FaissGuard(
      absl::StatusCode::kInvalidArgument,
      absl::StrCat("\"", path, "\": IVF lists must hold the sequential labels 0..ntotal-1"), [&] {
        if (auto* h = dynamic_cast<faiss::IndexHNSW*>(inner.get())) ef = h->hnsw.efSearch;
        if (auto* ivf = dynamic_cast<faiss::IndexIVF*>(inner.get())) {
          nprobe = static_cast<int>(std::max<size_t>(1, ivf->nprobe));
          if (ivf->direct_map.type != faiss::DirectMap::Array) ivf->make_direct_map(true);
        }
      });
  if (!s.ok()) return s;

  ReserveForOnlineAdds(inner.get(), OnlineAddHeadroom(inner->ntotal));
  ReserveForOnlineAdds(exact.get(), OnlineAddHeadroom(inner->ntotal));
  std::string fs =
      factory.empty() ? DeriveFactory(inner.get(), exact != nullptr) : std::string(factory);
  const int dim = inner->d;
  std::unique_ptr<EmbeddingIndex> out(new EmbeddingIndex(
      dim, std::move(fs), std::move(inner), std::move(exact), *kind));
  {
    absl::MutexLock lock(&out->mu_);
    out->ef_search_ = ef;
    out->nprobe_ = nprobe;
    out->k_factor_ = k_factor;
    // A plain FAISS file may hold an external id twice: the later entry wins.
    out->ids_ = IdMap::FromTable(std::move(file->label_to_id));
  }
  return out;
}

absl::Status EmbeddingIndex::Save(const std::string& path) const {
  absl::ReaderMutexLock lock(&mu_);
  FILE* f = std::fopen(path.c_str(), "wb");
  if (f == nullptr) {
    const int err = errno;
    return absl::ErrnoToStatus(err, absl::StrCat("cannot open \"", path, "\" for writing"));
  }
  absl::Status s = FaissGuard(
      absl::StatusCode::kInternal, absl::StrCat("cannot write FAISS index \"", path, "\""), [&] {
        mu_.AssertReaderHeld();
        faiss::FileIOWriter writer(f);
        WriteIndexFile(*index_, exact_.get(), static_cast<float>(k_factor_), ids_.table(), &writer);
      });
  if (std::fclose(f) != 0 && s.ok()) {
    const int err = errno;
    s = absl::ErrnoToStatus(err, absl::StrCat("cannot write \"", path, "\""));
  }
  return s;
}

int64_t EmbeddingIndex::ByteSize() const {
  absl::ReaderMutexLock lock(&mu_);
  size_t bytes = 0;
  absl::Status s = FaissGuard(absl::StatusCode::kInternal, "sizing", [&] {
    mu_.AssertReaderHeld();
    bytes = IndexFileBytes(*index_, exact_.get(), static_cast<float>(k_factor_), ids_.table());
  });
  return s.ok() ? static_cast<int64_t>(bytes) : -1;
}

absl::Status EmbeddingIndex::ValidateVectors(absl::Span<const int64_t> ids, const float* vectors,
                                             const char* what) const {
  if (ids.empty()) return absl::OkStatus();
  if (vectors == nullptr) {
    return absl::InvalidArgumentError(absl::StrCat(what, ": vectors is null"));
  }
  if (ids.size() > static_cast<size_t>(INT32_MAX)) {
    return absl::InvalidArgumentError(absl::StrCat(what, ": too many ids in one call"));
  }
  absl::flat_hash_set<int64_t> seen;
  seen.reserve(ids.size());
  for (int64_t id : ids) {
    if (id == kReservedId) {
      return absl::InvalidArgumentError(absl::StrCat(what, ": id -1 is reserved"));
    }
    if (!seen.insert(id).second) {
      return absl::InvalidArgumentError(absl::StrCat(what, ": duplicate id ", id));
    }
  }
  return CheckFinite(vectors, ids.size() * static_cast<size_t>(dim_),
                     absl::StrCat(what, ": vectors"));
}

absl::Status EmbeddingIndex::AddLocked(absl::Span<const int64_t> ids, const float* vectors,
                                       const int64_t* ivf_lists) {
  const int64_t n = static_cast<int64_t>(ids.size());
  if (n == 0) return absl::OkStatus();
  const int64_t base = index_->ntotal;
  if (kind_ == Kind::kHnsw && base + n > INT32_MAX) {
    return absl::ResourceExhaustedError(
        "HNSW holds at most 2^31-1 entries including hidden ones; Compact() first");
  }
  faiss::Index* index = index_.get();
  auto* hnsw = dynamic_cast<faiss::IndexHNSW*>(index);
  if (hnsw != nullptr && hnsw_inserter_ == nullptr) {
    hnsw_inserter_ = std::make_unique<HnswInserter>();
  }
  absl::Status s = FaissGuard(absl::StatusCode::kInternal, "adding vectors to FAISS", [&] {
    if (exact_ != nullptr) exact_->add(n, vectors);
    if (hnsw != nullptr) {
      hnsw_inserter_->Insert(*hnsw, n, vectors);
    } else if (auto* ivf = dynamic_cast<faiss::IndexIVF*>(index); ivf && ivf_lists != nullptr) {
      static_assert(sizeof(idx_t) == sizeof(int64_t));
      ivf->add_core(n, vectors, nullptr, reinterpret_cast<const idx_t*>(ivf_lists));
    } else {
      index->add(n, vectors);
    }
  });
  // Keep the label table (and the exact store) in step with the FAISS structure, even after a
  // partial failure (entries FAISS kept without our ids stay hidden).
  const int64_t now = index_->ntotal;
  if (exact_ != nullptr) {
    if (exact_->ntotal < now) {  // cannot happen: the store is added first
      return absl::InternalError("the exact store fell behind the index");
    }
    TruncateExact(exact_.get(), now);
  }
  if (!s.ok() || now != base + n) {
    ids_.GrowTo(now);
    return s.ok() ? absl::InternalError("FAISS added an unexpected number of vectors") : s;
  }
  ids_.GrowTo(now);
  // A replaced id's old entry is hidden from now on.
  for (int64_t i = 0; i < n; ++i) ids_.Bind(ids[i], base + i);
  return absl::OkStatus();
}

bool EmbeddingIndex::is_trained() const {
  absl::ReaderMutexLock lock(&mu_);
  return index_->is_trained;
}

absl::Status EmbeddingIndex::Train(const float* sample, int64_t n,
                                   const EmbeddingIndex* coarse_from) {
  if (n <= 0 || sample == nullptr) {
    return absl::InvalidArgumentError("Train needs at least one sample vector");
  }
  if (absl::Status s = CheckFinite(sample, static_cast<size_t>(n) * dim_, "Train: sample");
      !s.ok()) {
    return s;
  }
  absl::MutexLock write_lock(&write_mu_);
  std::unique_ptr<faiss::Index> fresh;
  {
    absl::ReaderMutexLock lock(&mu_);
    if (index_->ntotal != 0 || index_->is_trained) {
      return absl::FailedPreconditionError(
          absl::StrCat("Train needs an empty, untrained index; \"", factory_, "\" is ",
                       index_->is_trained ? "trained" : "not empty"));
    }
    const faiss::Index& current = *index_;
    absl::Status s = FaissGuard(absl::StatusCode::kInternal, "creating the index",
                                [&] { fresh = MakeEmptyLike(current); });
    if (!s.ok()) return s;
  }
  auto* ivf = dynamic_cast<faiss::IndexIVF*>(fresh.get());
  if (coarse_from != nullptr && coarse_from != this && ivf != nullptr) {
    absl::ReaderMutexLock lock(&coarse_from->mu_);
    const auto* donor = dynamic_cast<const faiss::IndexIVF*>(coarse_from->index_.get());
    if (donor != nullptr && donor->is_trained && donor->nlist == ivf->nlist &&
        donor->d == ivf->d && donor->quantizer->ntotal == static_cast<idx_t>(ivf->nlist)) {
      absl::Status s = FaissGuard(absl::StatusCode::kInternal, "copying the coarse quantizer", [&] {
        std::unique_ptr<faiss::Index> q(faiss::clone_index(donor->quantizer));
        if (ivf->own_fields) delete ivf->quantizer;
        ivf->quantizer = q.release();
        ivf->own_fields = true;
      });
      if (!s.ok()) return s;
    }
  }
  // IndexIVF::train skips k-means when the quantizer already holds nlist centroids.
  absl::Status s =
      FaissGuard(absl::StatusCode::kInvalidArgument,
                 absl::StrCat("training \"", factory_, "\" on ", n, " vectors failed"), [&] {
                   fresh->train(n, sample);
                   if (ivf != nullptr) ivf->make_direct_map(true);
                 });
  if (!s.ok()) return s;
  absl::WriterMutexLock lock(&mu_);
  std::swap(index_, fresh);
  if (auto* h = dynamic_cast<faiss::IndexHNSW*>(index_.get())) h->hnsw.efSearch = ef_search_;
  if (auto* v = dynamic_cast<faiss::IndexIVF*>(index_.get())) v->nprobe = nprobe_;
  return absl::OkStatus();
}

absl::Status EmbeddingIndex::Build(absl::Span<const int64_t> ids, const float* vectors) {
  if (absl::Status s = ValidateVectors(ids, vectors, "Build"); !s.ok()) return s;
  absl::MutexLock write_lock(&write_mu_);
  std::unique_ptr<faiss::Index> fresh;
  {
    absl::ReaderMutexLock lock(&mu_);
    if (ids_.num_live() != 0 || index_->ntotal != 0) {
      return absl::FailedPreconditionError(absl::StrCat("Build needs an empty index; it holds ",
                                                        index_->ntotal,
                                                        " entries (use Upsert to add to it)"));
    }
    const faiss::Index& current = *index_;
    absl::Status s = FaissGuard(absl::StatusCode::kInternal, "creating the index",
                                [&] { fresh = MakeEmptyLike(current); });
    if (!s.ok()) return s;
  }
  // Train and fill the new structure while searches keep using the (empty) current one.
  const int64_t n = static_cast<int64_t>(ids.size());
  std::unique_ptr<faiss::Index> exact = reranks_ ? NewExactStore(dim_) : nullptr;
  if (!fresh->is_trained) {
    if (n == 0) {
      return absl::InvalidArgumentError(
          absl::StrCat("index \"", factory_, "\" needs training vectors; Build got none"));
    }
    absl::Status s =
        FaissGuard(absl::StatusCode::kInvalidArgument,
                   absl::StrCat("training \"", factory_, "\" on ", n, " vectors failed"), [&] {
                     fresh->train(n, vectors);
                     if (auto* ivf = dynamic_cast<faiss::IndexIVF*>(fresh.get())) {
                       ivf->make_direct_map(true);
                     }
                   });
    if (!s.ok()) return s;
  }
  if (n > 0) {
    absl::Status s = FaissGuard(absl::StatusCode::kInternal, "adding vectors to FAISS", [&] {
      AddBulk(fresh.get(), n, vectors);
      if (exact != nullptr) exact->add(n, vectors);
    });
    if (!s.ok()) return s;
  }
  IdMap id_map = IdMap::FromTable(std::vector<int64_t>(ids.begin(), ids.end()));
  {
    absl::WriterMutexLock lock(&mu_);
    std::swap(index_, fresh);
    std::swap(exact_, exact);
    std::swap(ids_, id_map);
    generation_.fetch_add(1, std::memory_order_acq_rel);
  }
  return absl::OkStatus();  // the old (empty) index is freed outside the lock
}

absl::Status EmbeddingIndex::Upsert(absl::Span<const int64_t> ids, const float* vectors) {
  if (absl::Status s = ValidateVectors(ids, vectors, "Upsert"); !s.ok()) return s;
  absl::MutexLock write_lock(&write_mu_);
  {
    absl::ReaderMutexLock lock(&mu_);
    if (!index_->is_trained) {
      return absl::FailedPreconditionError(
          absl::StrCat("index \"", factory_, "\" is not trained; call Build first"));
    }
  }
  // An HNSW insertion costs ~0.25 ms at 1M items (the new node's neighbors are searched and
  // each neighbor's list re-pruned), so a 50-item batch under one exclusive hold stalled every
  // search for 10-20 ms. Chunks release mu_ in between; write_mu_ keeps other writers out, so
  // the chunks of one call still apply in order. Other kinds add in microseconds: one hold.
  const size_t chunk = kind_ == Kind::kHnsw ? kHnswUpsertChunk : std::max<size_t>(ids.size(), 1);
  // IVF: the coarse assignment (a product with every centroid, ~1-2 ms for 50 vectors over
  // 4,096 lists) runs before the exclusive hold, beside the searches; the hold only appends
  // codes. Writers are serialized by write_mu_, so the quantizer cannot change meanwhile.
  std::vector<int64_t> lists;
  if (kind_ == Kind::kIvf && !ids.empty()) {
    absl::ReaderMutexLock lock(&mu_);
    const auto* ivf = static_cast<const faiss::IndexIVF*>(index_.get());
    lists.resize(ids.size());
    absl::Status s = FaissGuard(absl::StatusCode::kInternal, "assigning IVF lists", [&] {
      if (const faiss::IndexFlat* flat = BlasQuantizer(*ivf); flat != nullptr) {
        // FAISS's own path allocates a 16 MB score block per call and keeps a heap per vector:
        // at 5,000 writes/s in batches of 50 that was ~2/5 of the writes' CPU.
        std::vector<float> scores(ids.size());
        BlasCoarseAssign(flat->get_xb(), flat->ntotal, dim_, vectors,
                         static_cast<int>(ids.size()), 1, scores.data(), lists.data());
      } else {
        ivf->quantizer->assign(static_cast<idx_t>(ids.size()), vectors,
                               reinterpret_cast<idx_t*>(lists.data()));
      }
    });
    if (!s.ok()) return s;
  }
  size_t i = 0;
  do {  // at least once: an empty batch still counts a generation, as every write does
    if (i > 0) {
      // absl::Mutex lets a releasing writer take the lock straight back before the readers it
      // woke have run (measured: no search got in between 100 chunks). Let the searches that
      // queued during the last chunk take their shared lock first; bounded, so a stream of
      // arriving searches cannot stall the write.
      const auto until = std::chrono::steady_clock::now() + std::chrono::milliseconds(1);
      while (searches_waiting_.load(std::memory_order_acquire) > 0 &&
             std::chrono::steady_clock::now() < until) {
        std::this_thread::yield();
      }
    }
    const size_t m = std::min(ids.size() - i, chunk);
    absl::WriterMutexLock lock(&mu_);
    if (absl::Status s = AddLocked(ids.subspan(i, m), vectors + i * static_cast<size_t>(dim_),
                                   lists.empty() ? nullptr : lists.data() + i);
        !s.ok()) {
      return s;
    }
    generation_.fetch_add(1, std::memory_order_acq_rel);
    i += m;
  } while (i < ids.size());
  return absl::OkStatus();
}

absl::StatusOr<int64_t> EmbeddingIndex::Remove(absl::Span<const int64_t> ids) {
  absl::MutexLock write_lock(&write_mu_);
  absl::WriterMutexLock lock(&mu_);
  int64_t removed = 0;
  for (int64_t id : ids) {
    if (ids_.Unbind(id) >= 0) ++removed;
  }
  generation_.fetch_add(1, std::memory_order_acq_rel);
  return removed;
}

absl::Status EmbeddingIndex::Compact() {
  absl::MutexLock write_lock(&write_mu_);
  // Writers are serialized by write_mu_, so the state read under the shared lock stays valid
  // until the swap below.
  std::unique_ptr<faiss::Index> fresh;
  std::vector<int64_t> live_ids;
  std::vector<float> vectors;
  {
    absl::ReaderMutexLock lock(&mu_);
    if (ids_.num_hidden() == 0) {
      fresh = nullptr;  // nothing to drop
    } else {
      live_ids.reserve(ids_.num_live());
      vectors.resize(ids_.num_live() * static_cast<size_t>(dim_));
      const faiss::Index& current = *index_;
      const int64_t* label_to_id = ids_.table().data();
      const int64_t num_labels = ids_.num_labels();
      absl::Status s = FaissGuard(absl::StatusCode::kInternal, "reconstructing live vectors", [&] {
        mu_.AssertReaderHeld();
        const auto* flat = exact_ != nullptr ? static_cast<const faiss::IndexFlat*>(exact_.get())
                                             : dynamic_cast<const faiss::IndexFlat*>(&current);
        for (int64_t label = 0; label < num_labels; ++label) {
          if (label_to_id[label] == kReservedId) continue;
          float* dst = vectors.data() + live_ids.size() * dim_;
          if (flat != nullptr) {
            std::memcpy(dst, flat->get_xb() + label * dim_, sizeof(float) * dim_);
          } else {
            current.reconstruct(label, dst);
          }
          live_ids.push_back(label_to_id[label]);
        }
        fresh = MakeEmptyLike(current);
      });
      if (!s.ok()) return s;
    }
  }
  if (fresh == nullptr) {
    absl::WriterMutexLock lock(&mu_);
    generation_.fetch_add(1, std::memory_order_acq_rel);
    return absl::OkStatus();
  }
  // The expensive rebuild runs while searches continue on the current structure.
  const int64_t n = static_cast<int64_t>(live_ids.size());
  std::unique_ptr<faiss::Index> exact = reranks_ ? NewExactStore(dim_) : nullptr;
  if (n > 0) {
    absl::Status s = FaissGuard(absl::StatusCode::kInternal, "re-adding live vectors", [&] {
      AddBulk(fresh.get(), n, vectors.data());
      if (exact != nullptr) exact->add(n, vectors.data());
    });
    if (!s.ok()) return s;
  }
  IdMap id_map = IdMap::FromTable(std::move(live_ids));
  {
    absl::WriterMutexLock lock(&mu_);
    std::swap(index_, fresh);
    std::swap(exact_, exact);
    std::swap(ids_, id_map);
    generation_.fetch_add(1, std::memory_order_acq_rel);
  }
  return absl::OkStatus();  // the old structure and maps are freed outside the lock
}

bool EmbeddingIndex::Contains(int64_t id) const {
  absl::ReaderMutexLock lock(&mu_);
  return ids_.Contains(id);
}

std::vector<int64_t> EmbeddingIndex::Ids() const {
  std::vector<int64_t> ids;
  {
    absl::ReaderMutexLock lock(&mu_);
    ids.reserve(ids_.num_live());
    ids_.ForEachLive([&](int64_t id, int64_t) { ids.push_back(id); });
  }
  std::sort(ids.begin(), ids.end());
  return ids;
}

absl::StatusOr<std::vector<float>> EmbeddingIndex::Reconstruct(int64_t id) const {
  absl::ReaderMutexLock lock(&mu_);
  const int64_t label = ids_.LabelOf(id);
  if (label < 0) {
    return absl::NotFoundError(absl::StrCat("id ", id, " is not in the index"));
  }
  std::vector<float> v(dim_);
  const faiss::Index& current = exact_ != nullptr ? *exact_ : *index_;
  absl::Status s = FaissGuard(absl::StatusCode::kInternal, absl::StrCat("reconstructing id ", id),
                              [&] { current.reconstruct(label, v.data()); });
  if (!s.ok()) return s;
  return v;
}

absl::StatusOr<int64_t> EmbeddingIndex::ReconstructMany(absl::Span<const int64_t> ids,
                                                        float* out,
                                                        std::vector<int64_t>* present) const {
  if (out == nullptr || present == nullptr) {
    return absl::InvalidArgumentError("ReconstructMany: null output");
  }
  present->clear();
  absl::ReaderMutexLock lock(&mu_);
  const faiss::Index& current = exact_ != nullptr ? *exact_ : *index_;
  const auto* flat = dynamic_cast<const faiss::IndexFlat*>(&current);
  absl::Status s = FaissGuard(absl::StatusCode::kInternal, "reconstructing vectors", [&] {
    mu_.AssertReaderHeld();
    for (int64_t id : ids) {
      const int64_t label = ids_.LabelOf(id);
      if (label < 0) continue;
      float* dst = out + present->size() * static_cast<size_t>(dim_);
      if (flat != nullptr) {
        std::memcpy(dst, flat->get_xb() + label * dim_, sizeof(float) * dim_);
      } else {
        current.reconstruct(label, dst);
      }
      present->push_back(id);
    }
  });
  if (!s.ok()) return s;
  return static_cast<int64_t>(present->size());
}

absl::Status EmbeddingIndex::SetSearchParameter(std::string_view name_in, double value) {
  const absl::string_view name(name_in.data(), name_in.size());
  const bool known = (name == "efSearch" && kind_ == Kind::kHnsw) ||
                     (name == "nprobe" && kind_ == Kind::kIvf) || (name == "k_factor" && reranks_);
  if (!known) {
    std::vector<std::string> has;
    for (auto& [n, v] : SearchParameters()) has.push_back(n);
    return absl::InvalidArgumentError(
        absl::StrCat("unknown search parameter \"", name, "\" for index \"", factory_, "\"",
                     has.empty() ? " (it has none)" : absl::StrCat(" (has: ", absl::StrJoin(has, ", "), ")")));
  }
  if (name == "k_factor") {
    if (!std::isfinite(value) || value < 1 || value > 1e6) {
      return absl::InvalidArgumentError(
          absl::StrCat("search parameter k_factor must be a number in [1, 1e6], got ", value));
    }
    absl::MutexLock write_lock(&write_mu_);
    absl::WriterMutexLock lock(&mu_);
    k_factor_ = value;
    return absl::OkStatus();
  }
  if (!std::isfinite(value) || value < 1 || value > INT32_MAX || value != std::floor(value)) {
    return absl::InvalidArgumentError(
        absl::StrCat("search parameter ", name, " must be an integer >= 1, got ", value));
  }
  const int v = static_cast<int>(value);
  absl::MutexLock write_lock(&write_mu_);
  absl::WriterMutexLock lock(&mu_);
  if (auto* h = dynamic_cast<faiss::IndexHNSW*>(index_.get())) {
    ef_search_ = v;
    h->hnsw.efSearch = v;
  } else if (auto* ivf = dynamic_cast<faiss::IndexIVF*>(index_.get())) {
    nprobe_ = static_cast<int>(std::min<size_t>(v, ivf->nlist));
    ivf->nprobe = nprobe_;
  }
  return absl::OkStatus();
}

absl::StatusOr<double> EmbeddingIndex::GetSearchParameter(std::string_view name_in) const {
  const absl::string_view name(name_in.data(), name_in.size());
  absl::ReaderMutexLock lock(&mu_);
  if (name == "efSearch" && kind_ == Kind::kHnsw) return ef_search_;
  if (name == "nprobe" && kind_ == Kind::kIvf) return nprobe_;
  if (name == "k_factor" && reranks_) return k_factor_;
  return absl::NotFoundError(
      absl::StrCat("index \"", factory_, "\" has no search parameter \"", name, "\""));
}

std::vector<std::pair<std::string, double>> EmbeddingIndex::SearchParameters() const {
  absl::ReaderMutexLock lock(&mu_);
  std::vector<std::pair<std::string, double>> out;
  if (kind_ == Kind::kHnsw) out.emplace_back("efSearch", ef_search_);
  if (kind_ == Kind::kIvf) out.emplace_back("nprobe", nprobe_);
  if (reranks_) out.emplace_back("k_factor", k_factor_);
  return out;
}

int64_t EmbeddingIndex::size() const {
  absl::ReaderMutexLock lock(&mu_);
  return ids_.num_live();
}

int64_t EmbeddingIndex::num_hidden() const {
  absl::ReaderMutexLock lock(&mu_);
  return ids_.num_hidden();
}

namespace {

// Per-call FAISS search parameters for one kind (FAISS 1.7.3 applies them to a whole call).
struct CallParams {
  faiss::SearchParameters plain;
  faiss::SearchParametersHNSW hnsw;
  faiss::SearchParametersIVF ivf;
};

}  // namespace

absl::StatusOr<std::vector<SearchHits>> EmbeddingIndex::Search(
    const float* queries, int n, int k, absl::Span<const std::vector<int64_t>> excludes) const {
  return Search(queries, n, k, excludes, nullptr);
}

absl::StatusOr<std::vector<SearchHits>> EmbeddingIndex::Search(
    const float* queries, int n, int k, absl::Span<const std::vector<int64_t>> excludes,
    uint64_t* generation) const {
  if (n < 0) return absl::InvalidArgumentError(absl::StrCat("n must be >= 0, got ", n));
  if (k < 1) return absl::InvalidArgumentError(absl::StrCat("k must be >= 1, got ", k));
  if (n > 0 && queries == nullptr) return absl::InvalidArgumentError("queries is null");
  if (!excludes.empty() && excludes.size() != static_cast<size_t>(n)) {
    return absl::InvalidArgumentError(
        absl::StrCat("excludes must be empty or hold one list per query: got ", excludes.size(),
                     " for ", n, " queries"));
  }
  if (absl::Status s =
          CheckFinite(queries, static_cast<size_t>(n) * static_cast<size_t>(dim_), "queries");
      !s.ok()) {
    return s;
  }
  std::vector<SearchHits> out(n);

  searches_waiting_.fetch_add(1, std::memory_order_acq_rel);
  absl::ReaderMutexLock lock(&mu_);
  searches_waiting_.fetch_sub(1, std::memory_order_acq_rel);
  if (generation != nullptr) *generation = generation_.load(std::memory_order_acquire);
  const int64_t live = ids_.num_live();
  if (n == 0 || live == 0) return out;
  const int kk = static_cast<int>(std::min<int64_t>(k, live));
  // ",RFlat" kinds ask the compressed structure for k_factor * kk candidates and keep the kk
  // best by exact inner product.
  const int kbase =
      exact_ == nullptr
          ? kk
          : static_cast<int>(std::clamp<double>(std::ceil(k_factor_ * kk), kk,
                                                std::max<int64_t>(kk, index_->ntotal)));
  const float* exact_xb =
      exact_ != nullptr ? static_cast<const faiss::IndexFlat*>(exact_.get())->get_xb() : nullptr;
  const idx_t nlabels = static_cast<idx_t>(ids_.num_labels());

  // Turns FAISS's kbase (label, score) answers for query q into hits: external ids, and with
  // an exact store the kk best by exact score (ties by label, so answers are reproducible).
  auto collect = [&](int q, const idx_t* labels, const float* dist) {
    mu_.AssertReaderHeld();
    SearchHits& hits = out[q];
    hits.ids.reserve(kk);
    hits.scores.reserve(kk);
    if (exact_xb == nullptr) {
      for (int j = 0; j < kk; ++j) {
        const idx_t label = labels[j];
        if (label < 0 || label >= nlabels) continue;  // -1: fewer results than k
        const int64_t id = ids_.id_at(label);
        if (id == kReservedId) continue;  // cannot happen: the selector rejects hidden labels
        hits.ids.push_back(id);
        hits.scores.push_back(dist[j]);
      }
      return;
    }
    const float* query = queries + static_cast<size_t>(q) * dim_;
    std::vector<std::pair<float, idx_t>> scored;
    scored.reserve(kbase);
    for (int j = 0; j < kbase; ++j) {
      const idx_t label = labels[j];
      if (label < 0 || label >= nlabels || ids_.id_at(label) == kReservedId) continue;
      scored.emplace_back(faiss::fvec_inner_product(query, exact_xb + label * dim_, dim_), label);
    }
    const size_t keep = std::min<size_t>(kk, scored.size());
    std::partial_sort(scored.begin(), scored.begin() + keep, scored.end(),
                      [](const auto& a, const auto& b) {
                        return a.first > b.first || (a.first == b.first && a.second < b.second);
                      });
    for (size_t j = 0; j < keep; ++j) {
      hits.ids.push_back(ids_.id_at(scored[j].second));
      hits.scores.push_back(scored[j].first);
    }
  };

  // The search parameters of one FAISS call with selector `sel` (nullable).
  auto make_params = [&](CallParams* p, faiss::IDSelector* sel) -> const faiss::SearchParameters* {
    mu_.AssertReaderHeld();
    switch (kind_) {
      case Kind::kHnsw:
        p->hnsw.efSearch = std::max(ef_search_, kbase);
        p->hnsw.sel = sel;
        return &p->hnsw;
      case Kind::kIvf:
        p->ivf.nprobe = static_cast<size_t>(nprobe_);
        p->ivf.sel = sel;
        return &p->ivf;
      default:
        p->plain.sel = sel;
        return sel != nullptr ? &p->plain : nullptr;
    }
  };

  // One FAISS call over queries [q0, q0 + m) with the selector `sel` (nullable). Never throws
  // (it runs inside OpenMP regions).
  auto search_range = [&](int q0, int m, faiss::IDSelector* sel) -> absl::Status {
    mu_.AssertReaderHeld();
    CallParams p;
    const faiss::SearchParameters* params = make_params(&p, sel);
    return FaissGuard(absl::StatusCode::kInternal, "FAISS search", [&] {
      mu_.AssertReaderHeld();
      std::vector<float> dist(static_cast<size_t>(m) * kbase);
      std::vector<idx_t> labels(static_cast<size_t>(m) * kbase);
      index_->search(m, queries + static_cast<size_t>(q0) * dim_, kbase, dist.data(), labels.data(),
                     params);
      for (int i = 0; i < m; ++i) {
        collect(q0 + i, labels.data() + static_cast<size_t>(i) * kbase,
                dist.data() + static_cast<size_t>(i) * kbase);
      }
    });
  };

  // Estimated multiply-adds per query, to decide how many threads the batch deserves.
  double per_query = static_cast<double>(index_->ntotal) * dim_;  // Flat, SQ: a full scan
  if (kind_ == Kind::kHnsw) {
    // About efSearch expansions of up to 2M level-0 neighbors each.
    const auto* h = static_cast<const faiss::IndexHNSW*>(index_.get());
    per_query = std::max(ef_search_, kbase) * 2.0 * h->hnsw.nb_neighbors(1) * dim_;
  } else if (kind_ == Kind::kIvf) {
    const auto* ivf = static_cast<const faiss::IndexIVF*>(index_.get());
    const double nlist = std::max<double>(1, ivf->nlist);
    per_query = (nlist + index_->ntotal * std::min<double>(nprobe_, nlist) / nlist) * dim_;
  }
  const int threads = static_cast<int>(std::clamp<double>(
      n * per_query / kMinWorkPerThread, 1, std::min(n, omp_get_max_threads())));

  bool any_exclusions = false;
  for (const auto& e : excludes) any_exclusions |= !e.empty();
  // Hidden entries only; null when nothing is hidden.
  LiveSelector live_sel(ids_.table(), nullptr);
  faiss::IDSelector* shared_sel = ids_.num_hidden() > 0 ? &live_sel : nullptr;

  // Runs one query's FAISS search with its own selector (its exclusions) through `search_one`.
  auto per_query_selector = [&](int i, auto&& search_one) -> absl::Status {
    mu_.AssertReaderHeld();
    if (excludes.empty() || excludes[i].empty()) return search_one(shared_sel);
    absl::flat_hash_set<int64_t> excluded;
    absl::Status s = FaissGuard(absl::StatusCode::kInternal, "search exclusions", [&] {
      mu_.AssertReaderHeld();
      excluded.reserve(excludes[i].size());
      for (int64_t id : excludes[i]) {
        const int64_t label = ids_.LabelOf(id);
        if (label >= 0) excluded.insert(label);
      }
    });
    if (!s.ok()) return s;
    if (excluded.empty()) return search_one(shared_sel);
    LiveSelector sel(ids_.table(), &excluded);
    return search_one(&sel);
  };

  if (kind_ == Kind::kIvf) {
    // The coarse quantizer runs once for the whole batch (a GEMM for a Flat quantizer), then
    // each query scans its own lists with its own selector: FAISS 1.7.3 applies a selector to
    // a whole call, and per-query IndexIVF::search calls would quantize one query at a time.
    // With a flat inner-product quantizer and raw-vector lists (IVF-Flat) both steps are BLAS
    // calls (index/blas_ivf_scan.h: Debian's FAISS scores one vector at a time, scalar).
    const auto* ivf = static_cast<const faiss::IndexIVF*>(index_.get());
    const int np = static_cast<int>(std::min<size_t>(nprobe_, ivf->nlist));
    const faiss::IndexFlat* flat_quantizer = BlasQuantizer(*ivf);
    const bool blas_coarse = flat_quantizer != nullptr;
    const bool blas_lists = ivf->metric_type == faiss::METRIC_INNER_PRODUCT &&
                            typeid(*ivf) == typeid(faiss::IndexIVFFlat) &&
                            ivf->code_size == sizeof(float) * static_cast<size_t>(dim_);
    std::vector<idx_t> keys(static_cast<size_t>(n) * np);
    std::vector<float> coarse(static_cast<size_t>(n) * np);
    absl::Status qs;
    WithThreads(threads, [&] {
      qs = FaissGuard(absl::StatusCode::kInternal, "IVF coarse quantizer", [&] {
        if (blas_coarse) {
          BlasCoarseAssign(flat_quantizer->get_xb(), flat_quantizer->ntotal, dim_, queries, n, np,
                           coarse.data(), keys.data());
        } else {
          ivf->quantizer->search(n, queries, np, coarse.data(), keys.data());
        }
      });
    });
    if (!qs.ok()) return qs;
    std::vector<absl::Status> status(n);
    // Per-query counters, summed into FAISS's global ones afterwards on this thread, as
    // IndexIVF::search does (the tuner reads them).
    std::vector<faiss::IndexIVFStats> stats(n);
    ParallelFor(n, threads, [&](int i) {
      mu_.AssertReaderHeld();
      status[i] = per_query_selector(i, [&](faiss::IDSelector* sel) {
        mu_.AssertReaderHeld();
        CallParams p;
        p.ivf.nprobe = static_cast<size_t>(np);
        p.ivf.sel = sel;
        return FaissGuard(absl::StatusCode::kInternal, "FAISS IVF search", [&] {
          mu_.AssertReaderHeld();
          std::vector<float> dist(kbase);
          std::vector<idx_t> labels(kbase);
          const float* query = queries + static_cast<size_t>(i) * dim_;
          const idx_t* lists = keys.data() + static_cast<size_t>(i) * np;
          if (blas_lists) {
            BlasScanFlatLists(*ivf->invlists, dim_, query, lists, np, kbase, sel, dist.data(),
                              labels.data(), &stats[i]);
          } else {
            ivf->search_preassigned(1, query, kbase, lists,
                                    coarse.data() + static_cast<size_t>(i) * np, dist.data(),
                                    labels.data(), false, &p.ivf, &stats[i]);
          }
          collect(i, labels.data(), dist.data());
        });
      });
    });
    for (const auto& s : status) {
      if (!s.ok()) return s;
    }
    for (const auto& st : stats) faiss::indexIVF_stats.add(st);
    return out;
  }

  if (!any_exclusions) {
    // Every query shares one selector, so batched FAISS calls are allowed.
    if (kind_ != Kind::kHnsw) {
      // IndexFlat (BLAS for >= 20 queries) and IndexScalarQuantizer parallelize over queries
      // themselves; one call with FAISS's team limited to `threads`.
      absl::Status s;
      WithThreads(threads, [&] { s = search_range(0, n, shared_sel); });
      if (!s.ok()) return s;
      return out;
    }
    // IndexHNSW::search opens a full OpenMP team even for one query: split the batch into one
    // contiguous slice per thread ourselves, with FAISS's nested region limited to 1 thread.
    const int slices = threads;
    std::vector<absl::Status> status(slices);
    ParallelFor(slices, slices, [&](int t) {
      const int q0 = static_cast<int>(static_cast<int64_t>(n) * t / slices);
      const int q1 = static_cast<int>(static_cast<int64_t>(n) * (t + 1) / slices);
      status[t] = search_range(q0, q1 - q0, shared_sel);
    });
    for (const auto& s : status) {
      if (!s.ok()) return s;
    }
    return out;
  }

  // Per-query exclusion sets: one FAISS call per query (SearchParameters apply to a whole
  // call in 1.7.3), the queries spread over OpenMP threads.
  std::vector<absl::Status> status(n);
  ParallelFor(n, threads, [&](int i) {
    mu_.AssertReaderHeld();
    status[i] = per_query_selector(
        i, [&](faiss::IDSelector* sel) { return search_range(i, 1, sel); });
  });
  for (const auto& s : status) {
    if (!s.ok()) return s;
  }
  return out;
}

}  // namespace recall
