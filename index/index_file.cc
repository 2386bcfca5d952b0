#include "index/index_file.h"

#include <algorithm>
#include <fstream>
#include <utility>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "faiss/Index.h"
#include "faiss/IndexIDMap.h"
#include "faiss/IndexRefine.h"
#include "faiss/impl/io.h"
#include "faiss/index_io.h"
#include "index/faiss_guard.h"
#include "index/faiss_structures.h"

namespace recall {
namespace {

// Counts the bytes written to it.
struct CountingWriter final : faiss::IOWriter {
  size_t bytes = 0;
  size_t operator()(const void*, size_t size, size_t nitems) override {
    bytes += size * nitems;
    return nitems;
  }
};

}  // namespace

absl::StatusOr<IndexFileContents> ReadIndexFile(const std::string& path) {
  {
    std::ifstream probe(path, std::ios::binary);
    if (!probe.good()) {
      return absl::NotFoundError(absl::StrCat("cannot open index file \"", path, "\""));
    }
  }
  std::unique_ptr<faiss::Index> top;
  absl::Status s = FaissGuard(absl::StatusCode::kDataLoss,
                              absl::StrCat("cannot read FAISS index \"", path, "\""),
                              [&] { top.reset(faiss::read_index(path.c_str())); });
  if (!s.ok()) return s;

  IndexFileContents out;
  if (auto* map = dynamic_cast<faiss::IndexIDMap*>(top.get())) {  // also IndexIDMap2
    if (map->index == nullptr) {
      return absl::DataLossError(absl::StrCat("\"", path, "\": IndexIDMap without sub-index"));
    }
    out.label_to_id = std::move(map->id_map);
    out.index.reset(map->index);  // take ownership: the wrapper must not delete it
    map->index = nullptr;
    map->own_fields = false;
    top.reset();
  } else {
    out.index = std::move(top);
    out.label_to_id.resize(out.index->ntotal);
    for (int64_t i = 0; i < out.index->ntotal; ++i) out.label_to_id[i] = i;
  }
  // A ",RFlat" file: IndexRefine over the compressed index and a Flat store of exact vectors.
  if (auto* refine = dynamic_cast<faiss::IndexRefine*>(out.index.get())) {
    std::unique_ptr<faiss::Index> base(refine->base_index);
    out.exact.reset(refine->refine_index);
    refine->base_index = nullptr;
    refine->refine_index = nullptr;
    refine->own_fields = refine->own_refine_index = false;
    out.k_factor = std::max(1.0f, refine->k_factor);
    out.index = std::move(base);
    const faiss::Index* inner = out.index.get();
    const faiss::Index* exact = out.exact.get();
    if (inner == nullptr || exact == nullptr || !IsFlat(exact) ||
        exact->ntotal != inner->ntotal || exact->d != inner->d ||
        exact->metric_type != faiss::METRIC_INNER_PRODUCT) {
      return absl::DataLossError(absl::StrCat(
          "\"", path, "\": a re-rank index needs a base index and an inner-product Flat store of "
          "the same size and dimension"));
    }
  }
  if (static_cast<int64_t>(out.label_to_id.size()) != out.index->ntotal) {
    return absl::DataLossError(absl::StrCat("\"", path, "\": id map has ",
                                            out.label_to_id.size(),
                                            " entries but the index holds ", out.index->ntotal));
  }
  if (out.index->d <= 0) {
    return absl::DataLossError(absl::StrCat("\"", path, "\": bad dimension"));
  }
  return out;
}

void WriteIndexFile(const faiss::Index& index, const faiss::Index* exact, float k_factor,
                    const std::vector<int64_t>& label_to_id, faiss::IOWriter* writer) {
  faiss::IndexRefine refine;  // borrows: own_fields / own_refine_index stay false
  faiss::Index* top = const_cast<faiss::Index*>(&index);
  if (exact != nullptr) {
    refine.base_index = top;
    refine.refine_index = const_cast<faiss::Index*>(exact);
    refine.d = index.d;
    refine.ntotal = index.ntotal;
    refine.is_trained = index.is_trained;
    refine.metric_type = index.metric_type;
    refine.k_factor = k_factor;
    top = &refine;
  }
  faiss::IndexIDMap2 wrapper;  // borrows: own_fields stays false
  wrapper.index = top;
  wrapper.d = index.d;
  wrapper.ntotal = index.ntotal;
  wrapper.is_trained = index.is_trained;
  wrapper.metric_type = index.metric_type;
  wrapper.metric_arg = index.metric_arg;
  wrapper.id_map = label_to_id;
  try {
    faiss::write_index(&wrapper, writer);
  } catch (...) {
    wrapper.index = nullptr;
    refine.base_index = refine.refine_index = nullptr;
    throw;
  }
  wrapper.index = nullptr;
  refine.base_index = refine.refine_index = nullptr;
}

size_t IndexFileBytes(const faiss::Index& index, const faiss::Index* exact, float k_factor,
                      const std::vector<int64_t>& label_to_id) {
  CountingWriter counter;
  WriteIndexFile(index, exact, k_factor, label_to_id, &counter);
  return counter.bytes;
}

}  // namespace recall
