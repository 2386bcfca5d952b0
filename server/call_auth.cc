#include "server/call_auth.h"

#include <openssl/crypto.h>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/strip.h"
#include "absl/strings/ascii.h"
#include "model/whole_file.h"

namespace recall::server {
namespace {

absl::StatusOr<std::string> ReadToken(const std::string& path, const char* what) {
  if (path.empty()) return std::string();
  absl::StatusOr<std::string> text = ReadWholeFile(path);
  if (!text.ok()) return absl::InvalidArgumentError(absl::StrCat(what, ": ", text.status().message()));
  std::string token(absl::StripAsciiWhitespace(*text));
  if (token.empty()) return absl::InvalidArgumentError(absl::StrCat(what, ": ", path, " is empty"));
  return token;
}

bool SameToken(absl::string_view a, const std::string& b) {
  // Length is not secret enough to hide; the bytes are compared without early exit.
  return a.size() == b.size() && CRYPTO_memcmp(a.data(), b.data(), b.size()) == 0;
}

}  // namespace

CallAuthorizer::CallAuthorizer(std::string admin_token, std::string read_token)
    : admin_token_(std::move(admin_token)), read_token_(std::move(read_token)) {}

absl::StatusOr<CallAuthorizer> CallAuthorizer::FromFiles(const std::string& admin_token_file,
                                                         const std::string& read_token_file) {
  auto admin = ReadToken(admin_token_file, "--admin_token_file");
  if (!admin.ok()) return admin.status();
  auto read = ReadToken(read_token_file, "--recall_token_file");
  if (!read.ok()) return read.status();
  return CallAuthorizer(*std::move(admin), *std::move(read));
}

absl::Status CallAuthorizer::Check(const Metadata& md, Scope scope) const {
  const bool open = scope == Scope::kAdmin ? admin_open() : read_open();
  if (open) return absl::OkStatus();
  auto it = md.find("authorization");
  if (it == md.end()) {
    return absl::UnauthenticatedError(
        "authorization: missing; send metadata 'authorization: Bearer <token>'");
  }
  absl::string_view value(it->second.data(), it->second.size());
  if (!absl::ConsumePrefix(&value, "Bearer ") || value.empty()) {
    return absl::UnauthenticatedError("authorization: not a bearer token ('Bearer <token>')");
  }
  if (SameToken(value, admin_token_) && !admin_open()) return absl::OkStatus();
  if (scope == Scope::kRead && SameToken(value, read_token_)) return absl::OkStatus();
  return absl::PermissionDeniedError(scope == Scope::kAdmin
                                         ? "authorization: token does not grant admin RPCs"
                                         : "authorization: token not accepted");
}

}  // namespace recall::server
