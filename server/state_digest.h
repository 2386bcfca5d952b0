// StateDigest: a sha256 over the online-write state of a replica, item by item in ascending id
// order: "<id>:-" for an item the index does not hold, "<id>:<v0>,<v1>,..." with each value
// rounded to 1e-4 for one it does. Rounding keeps replicas that embedded the same features in
// differently sized batches (whose float sums may differ in the last bits) equal. The replica
// set fault test computes the same digest from the stream it reads, so the format is a contract.
//
// Thread-safety: none (one digest per thread).
#ifndef RECALL_SERVER_STATE_DIGEST_H_
#define RECALL_SERVER_STATE_DIGEST_H_

#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>

struct evp_md_ctx_st;

namespace recall::server {

class StateDigest {
 public:
  StateDigest();
  ~StateDigest();
  void AddAbsent(int64_t id);
  void AddVector(int64_t id, const float* values, size_t n);
  std::string Hex();  // finishes the digest (64 hex characters)

 private:
  void Update(const std::string& line);
  evp_md_ctx_st* ctx_;
};

}  // namespace recall::server

#endif  // RECALL_SERVER_STATE_DIGEST_H_
