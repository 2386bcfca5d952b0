#include "index/faiss_structures.h"

#include <typeinfo>
#include <utility>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "faiss/Index.h"
#include "faiss/IndexFlat.h"
#include "faiss/IndexHNSW.h"
#include "faiss/IndexIVF.h"
#include "faiss/IndexIVFFastScan.h"
#include "faiss/IndexIVFFlat.h"
#include "faiss/IndexIVFPQ.h"
#include "faiss/IndexIVFPQR.h"
#include "faiss/IndexRefine.h"
#include "faiss/IndexScalarQuantizer.h"
#include "faiss/clone_index.h"
#include "faiss/impl/HNSW.h"

namespace recall {
namespace {

// "SQ8", "SQ4", "SQfp16", ... for the scalar quantizer types the factory string names; "" else.
std::string SqName(const faiss::ScalarQuantizer& sq) {
  switch (sq.qtype) {
    case faiss::ScalarQuantizer::QT_8bit: return "SQ8";
    case faiss::ScalarQuantizer::QT_4bit: return "SQ4";
    case faiss::ScalarQuantizer::QT_6bit: return "SQ6";
    case faiss::ScalarQuantizer::QT_fp16: return "SQfp16";
    default: return "";
  }
}

// The graph's construction and search settings (not its nodes).
void CopyHnswSettings(const faiss::HNSW& from, faiss::HNSW* to) {
  to->efConstruction = from.efConstruction;
  to->efSearch = from.efSearch;
  to->search_bounded_queue = from.search_bounded_queue;
  to->check_relative_distance = from.check_relative_distance;
}

}  // namespace

bool IsFlat(const faiss::Index* index) {
  return dynamic_cast<const faiss::IndexFlat*>(index) != nullptr;
}

std::string DeriveFactory(const faiss::Index* index, bool reranks) {
  std::string out;
  if (IsFlat(index)) {
    out = "Flat";
  } else if (typeid(*index) == typeid(faiss::IndexHNSWFlat)) {
    const auto* h = static_cast<const faiss::IndexHNSWFlat*>(index);
    out = absl::StrCat("HNSW", h->hnsw.nb_neighbors(1));
  } else if (typeid(*index) == typeid(faiss::IndexHNSWSQ)) {
    const auto* h = static_cast<const faiss::IndexHNSWSQ*>(index);
    const auto* sq = dynamic_cast<const faiss::IndexScalarQuantizer*>(h->storage);
    const std::string q = sq ? SqName(sq->sq) : "";
    if (!q.empty()) out = absl::StrCat("HNSW", h->hnsw.nb_neighbors(1), ",", q);
  } else if (const auto* ivf = dynamic_cast<const faiss::IndexIVF*>(index);
             ivf != nullptr && IsFlat(ivf->quantizer)) {
    const std::string head = absl::StrCat("IVF", ivf->nlist, ",");
    if (typeid(*index) == typeid(faiss::IndexIVFFlat)) {
      out = head + "Flat";
    } else if (typeid(*index) == typeid(faiss::IndexIVFScalarQuantizer)) {
      const std::string q = SqName(static_cast<const faiss::IndexIVFScalarQuantizer*>(index)->sq);
      if (!q.empty()) out = head + q;
    } else if (typeid(*index) == typeid(faiss::IndexIVFPQ)) {
      const auto* pq = static_cast<const faiss::IndexIVFPQ*>(index);
      out = absl::StrCat(head, "PQ", pq->pq.M,
                         pq->pq.nbits == 8 ? "" : absl::StrCat("x", pq->pq.nbits));
    }
  }
  if (!out.empty() && reranks) absl::StrAppend(&out, kRerankSuffix);
  return out;
}

bool StoresExactVectors(const faiss::Index* index) {
  return IsFlat(index) || dynamic_cast<const faiss::IndexHNSWFlat*>(index) != nullptr ||
         dynamic_cast<const faiss::IndexIVFFlat*>(index) != nullptr;
}

std::unique_ptr<faiss::Index> NewExactStore(int dim) {
  return std::make_unique<faiss::IndexFlat>(dim, faiss::METRIC_INNER_PRODUCT);
}

void TruncateExact(faiss::Index* exact, int64_t n) {
  auto* flat = static_cast<faiss::IndexFlat*>(exact);
  if (flat->ntotal <= n) return;
  flat->codes.resize(static_cast<size_t>(n) * flat->code_size);
  flat->ntotal = n;
}

std::unique_ptr<faiss::Index> MakeEmptyLike(const faiss::Index& old) {
  std::unique_ptr<faiss::Index> fresh;
  if (IsFlat(&old)) {
    fresh = std::make_unique<faiss::IndexFlat>(old.d, old.metric_type);
  } else if (typeid(old) == typeid(faiss::IndexHNSWFlat)) {
    const auto& h = static_cast<const faiss::IndexHNSWFlat&>(old);
    auto n = std::make_unique<faiss::IndexHNSWFlat>(h.d, h.hnsw.nb_neighbors(1), h.metric_type);
    CopyHnswSettings(h.hnsw, &n->hnsw);
    fresh = std::move(n);
  } else if (typeid(old) == typeid(faiss::IndexHNSWSQ)) {
    // clone_index turns an IndexHNSWSQ into a plain IndexHNSW, which write_index refuses.
    const auto& h = static_cast<const faiss::IndexHNSWSQ&>(old);
    const auto& storage = dynamic_cast<const faiss::IndexScalarQuantizer&>(*h.storage);
    auto n = std::make_unique<faiss::IndexHNSWSQ>(h.d, storage.sq.qtype, h.hnsw.nb_neighbors(1),
                                                  h.metric_type);
    auto& fresh_storage = static_cast<faiss::IndexScalarQuantizer&>(*n->storage);
    fresh_storage.sq = storage.sq;  // the trained ranges
    fresh_storage.is_trained = storage.is_trained;
    n->is_trained = h.is_trained;
    CopyHnswSettings(h.hnsw, &n->hnsw);
    fresh = std::move(n);
  } else if (typeid(old) == typeid(faiss::IndexIVFFlat)) {
    // Keep the trained coarse quantizer without copying the inverted lists.
    const auto& ivf = static_cast<const faiss::IndexIVFFlat&>(old);
    std::unique_ptr<faiss::Index> q(faiss::clone_index(ivf.quantizer));
    auto n = std::make_unique<faiss::IndexIVFFlat>(q.get(), ivf.d, ivf.nlist, ivf.metric_type);
    q.release();
    n->own_fields = true;
    n->is_trained = ivf.is_trained;
    n->nprobe = ivf.nprobe;
    n->parallel_mode = ivf.parallel_mode;
    fresh = std::move(n);
  } else {
    // Generic: a deep copy, emptied. Keeps every trained part (codecs, transforms).
    fresh.reset(faiss::clone_index(&old));
    fresh->reset();
  }
  if (auto* ivf = dynamic_cast<faiss::IndexIVF*>(fresh.get())) {
    if (ivf->direct_map.type != faiss::DirectMap::Array) ivf->make_direct_map(true);
  }
  return fresh;
}

// FAISS's flat and HNSW structures are std::vectors sized exactly to ntotal after read_index, so
// the first online add reallocates and copies all of them (vectors + graph: ~0.5 GB at 1M x 64)
// while Upsert holds the exclusive lock, and every search waits (measured: Recall p99 7 ms ->
// 1.2 s for that request). Reserving headroom when a version is loaded moves that copy off the
// serving path; untouched capacity is not resident memory (large allocations are fresh pages).
// Headroom: an eighth of the index plus 64K items (190K at 1M: 38 s of upserts at 5,000/s, or
// a day at 2/s); past it the vectors grow geometrically again, one copy per doubling.
int64_t OnlineAddHeadroom(int64_t n) { return n / 8 + 65536; }

void ReserveForOnlineAdds(faiss::Index* index, int64_t extra) {
  if (extra <= 0 || index == nullptr) return;
  const int64_t n = index->ntotal;
  if (auto* flat = dynamic_cast<faiss::IndexFlatCodes*>(index)) {
    flat->codes.reserve((n + extra) * flat->code_size);
    return;
  }
  if (auto* h = dynamic_cast<faiss::IndexHNSW*>(index)) {
    ReserveForOnlineAdds(h->storage, extra);
    faiss::HNSW& g = h->hnsw;
    g.levels.reserve(n + extra);
    g.offsets.reserve(n + extra + 1);
    const double per_item = n > 0 ? static_cast<double>(g.neighbors.size()) / n : 0.0;
    g.neighbors.reserve(g.neighbors.size() + static_cast<size_t>(per_item * extra) + 1024);
  }
}

const faiss::IndexFlat* BlasQuantizer(const faiss::IndexIVF& ivf) {
  const auto* flat = dynamic_cast<const faiss::IndexFlat*>(ivf.quantizer);
  return flat != nullptr && flat->metric_type == faiss::METRIC_INNER_PRODUCT &&
                 flat->ntotal == static_cast<faiss::Index::idx_t>(ivf.nlist)
             ? flat
             : nullptr;
}

// Kinds whose FAISS 1.7.3 search honors SearchParameters::sel. Others (IndexPQ, IndexLSH,
// IndexIDMap, ...) reject or ignore search params, so exclusions could not be applied inside
// the search.
absl::StatusOr<FaissKind> KindOf(const faiss::Index* index) {
  // Checked on 1.7.3: fast-scan search and IndexRefine throw for any SearchParameters,
  // fast-scan remove_ids aborts from inside an OpenMP loop, and IndexIVFPQR re-ranks inside
  // its own search with a selector-blind second stage.
  const char* refused = nullptr;
  if (dynamic_cast<const faiss::IndexIVFFastScan*>(index) != nullptr) {
    refused = "fast-scan IVF kinds (PQ<m>x4fs) throw on SearchParameters";
  } else if (dynamic_cast<const faiss::IndexRefine*>(index) != nullptr) {
    refused = "IndexRefine throws on SearchParameters; use the \",RFlat\" suffix, which "
              "EmbeddingIndex re-ranks itself";
  } else if (dynamic_cast<const faiss::IndexIVFPQR*>(index) != nullptr) {
    refused = "IndexIVFPQR re-ranks without the selector";
  }
  if (refused != nullptr) {
    return absl::InvalidArgumentError(absl::StrCat("FAISS index type ", typeid(*index).name(),
                                                   " cannot serve exclusions: ", refused));
  }
  if (IsFlat(index)) return FaissKind::kFlat;
  if (dynamic_cast<const faiss::IndexHNSW*>(index) != nullptr) return FaissKind::kHnsw;
  if (dynamic_cast<const faiss::IndexIVF*>(index) != nullptr) return FaissKind::kIvf;
  if (dynamic_cast<const faiss::IndexScalarQuantizer*>(index) != nullptr) return FaissKind::kOther;
  return absl::InvalidArgumentError(absl::StrCat(
      "FAISS index type ", typeid(*index).name(),
      " does not support filtered search (SearchParameters::sel) in FAISS 1.7.3; supported: "
      "Flat, HNSW<M>[,storage], IVF<n>[_quantizer],<codec>, SQ<bits>, each optionally followed "
      "by \",RFlat\""));
}

}  // namespace recall
