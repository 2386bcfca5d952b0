// CallAuthorizer: bearer-token checks for the gRPC services (issue 6, "Security").
//
// Two scopes. kAdmin covers the RPCs that change what is served (UpsertItems, DeleteItems,
// TriggerRetrain, CancelRetrain, SetServingVersion, ReloadVersions); kRead covers Recall,
// RecallStream and the read-only RPCs. Each scope is open unless a token is configured for it;
// the admin token is also accepted wherever a read token is required.
//
// A call presents its token as metadata `authorization: Bearer <token>`. No such header (or one
// that is not a bearer credential) -> UNAUTHENTICATED; a token that does not match ->
// PERMISSION_DENIED. Tokens are compared in constant time.
//
// Thread-safety: immutable after construction; Check may be called from any thread.
#ifndef RECALL_SERVER_CALL_AUTH_H_
#define RECALL_SERVER_CALL_AUTH_H_

#include <grpcpp/support/string_ref.h>

#include <map>
#include <string>

#include "absl/status/status.h"
#include "absl/status/statusor.h"

namespace recall::server {

class CallAuthorizer {
 public:
  enum class Scope { kRead, kAdmin };
  using Metadata = std::multimap<grpc::string_ref, grpc::string_ref>;

  // Empty token = that scope is open.
  CallAuthorizer(std::string admin_token, std::string read_token);
  // Reads each token from its file (surrounding whitespace stripped); an empty path leaves the
  // scope open, an unreadable or empty file is an error (a typo must not open the service).
  static absl::StatusOr<CallAuthorizer> FromFiles(const std::string& admin_token_file,
                                                  const std::string& read_token_file);

  absl::Status Check(const Metadata& client_metadata, Scope scope) const;

  bool admin_open() const { return admin_token_.empty(); }
  bool read_open() const { return read_token_.empty(); }

 private:
  std::string admin_token_;
  std::string read_token_;
};

}  // namespace recall::server

#endif  // RECALL_SERVER_CALL_AUTH_H_
