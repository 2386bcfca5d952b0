#include "server/state_digest.h"

#include <openssl/evp.h>

#include <cmath>

#include "absl/strings/escaping.h"
#include "absl/strings/str_cat.h"

namespace recall::server {

StateDigest::StateDigest() : ctx_(EVP_MD_CTX_new()) {
  EVP_DigestInit_ex(ctx_, EVP_sha256(), nullptr);
}

StateDigest::~StateDigest() { EVP_MD_CTX_free(ctx_); }

void StateDigest::Update(const std::string& line) { EVP_DigestUpdate(ctx_, line.data(), line.size()); }

void StateDigest::AddAbsent(int64_t id) { Update(absl::StrCat(id, ":-\n")); }

void StateDigest::AddVector(int64_t id, const float* values, size_t n) {
  std::string line = absl::StrCat(id, ":");
  for (size_t i = 0; i < n; ++i) absl::StrAppend(&line, i ? "," : "", std::lround(values[i] * 1e4));
  line += "\n";
  Update(line);
}

std::string StateDigest::Hex() {
  unsigned char md[EVP_MAX_MD_SIZE];
  unsigned int len = 0;
  EVP_DigestFinal_ex(ctx_, md, &len);
  return absl::BytesToHexString(absl::string_view(reinterpret_cast<const char*>(md), len));
}

}  // namespace recall::server
