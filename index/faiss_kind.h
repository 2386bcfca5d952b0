// FaissKind: how EmbeddingIndex searches and writes a FAISS structure (KindOf in
// index/faiss_structures.h tells it). A value type: no thread-safety or error concerns.

#ifndef TOWER_RECALL_INDEX_FAISS_KIND_H_
#define TOWER_RECALL_INDEX_FAISS_KIND_H_

namespace recall {

enum class FaissKind { kFlat, kHnsw, kIvf, kOther };

}  // namespace recall

#endif  // TOWER_RECALL_INDEX_FAISS_KIND_H_
