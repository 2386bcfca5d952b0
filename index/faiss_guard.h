// FaissGuard: runs code that calls into FAISS and turns what it throws into an absl::Status,
// so that no index method throws (index/embedding_index.h, "Errors").
//
// Thread-safety: as the guarded code. Errors: FaissException -> `faiss_code`,
// std::bad_alloc -> RESOURCE_EXHAUSTED, other std::exception -> INTERNAL, else UNKNOWN; the
// message starts with `what`.

#ifndef TOWER_RECALL_INDEX_FAISS_GUARD_H_
#define TOWER_RECALL_INDEX_FAISS_GUARD_H_

#include <exception>
#include <new>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/string_view.h"
#include "faiss/impl/FaissException.h"

namespace recall {

template <typename F>
absl::Status FaissGuard(absl::StatusCode faiss_code, absl::string_view what, F&& f) {
  try {
    f();
    return absl::OkStatus();
  } catch (const faiss::FaissException& e) {
    return absl::Status(faiss_code, absl::StrCat(what, ": ", e.what()));
  } catch (const std::bad_alloc&) {
    return absl::ResourceExhaustedError(absl::StrCat(what, ": out of memory"));
  } catch (const std::exception& e) {
    return absl::InternalError(absl::StrCat(what, ": ", e.what()));
  } catch (...) {
    return absl::UnknownError(absl::StrCat(what, ": unknown exception"));
  }
}

}  // namespace recall

#endif  // TOWER_RECALL_INDEX_FAISS_GUARD_H_
