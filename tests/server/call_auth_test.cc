#include "server/call_auth.h"

#include <gtest/gtest.h>

#include <cstdio>
#include <fstream>
#include <string>

namespace recall::server {
namespace {

using Scope = CallAuthorizer::Scope;

CallAuthorizer::Metadata Bearer(const std::string& header) {
  static std::string storage_key = "authorization";
  static thread_local std::string storage_value;
  storage_value = header;
  CallAuthorizer::Metadata md;
  md.emplace(grpc::string_ref(storage_key), grpc::string_ref(storage_value));
  return md;
}

TEST(CallAuthorizer, AdminScopeMissingWrongRightToken) {
  CallAuthorizer auth("s3cret-admin", "");
  EXPECT_EQ(auth.Check({}, Scope::kAdmin).code(), absl::StatusCode::kUnauthenticated);
  EXPECT_EQ(auth.Check(Bearer("Basic abc"), Scope::kAdmin).code(),
            absl::StatusCode::kUnauthenticated);
  EXPECT_EQ(auth.Check(Bearer("Bearer "), Scope::kAdmin).code(), absl::StatusCode::kUnauthenticated);
  EXPECT_EQ(auth.Check(Bearer("Bearer s3cret-admiN"), Scope::kAdmin).code(),
            absl::StatusCode::kPermissionDenied);
  EXPECT_EQ(auth.Check(Bearer("Bearer s3cret-admin-longer"), Scope::kAdmin).code(),
            absl::StatusCode::kPermissionDenied);
  EXPECT_TRUE(auth.Check(Bearer("Bearer s3cret-admin"), Scope::kAdmin).ok());
  // No read token configured: Recall stays open, with or without a header.
  EXPECT_TRUE(auth.Check({}, Scope::kRead).ok());
  EXPECT_TRUE(auth.Check(Bearer("Bearer anything"), Scope::kRead).ok());
}

TEST(CallAuthorizer, ReadTokenDoesNotGrantAdminButAdminTokenGrantsRead) {
  CallAuthorizer auth("admin-t", "read-t");
  EXPECT_TRUE(auth.Check(Bearer("Bearer read-t"), Scope::kRead).ok());
  EXPECT_TRUE(auth.Check(Bearer("Bearer admin-t"), Scope::kRead).ok());
  EXPECT_EQ(auth.Check(Bearer("Bearer read-t"), Scope::kAdmin).code(),
            absl::StatusCode::kPermissionDenied);
  EXPECT_EQ(auth.Check({}, Scope::kRead).code(), absl::StatusCode::kUnauthenticated);
  EXPECT_EQ(auth.Check(Bearer("Bearer nope"), Scope::kRead).code(),
            absl::StatusCode::kPermissionDenied);
}

TEST(CallAuthorizer, OpenWhenNoTokensAndFilesAreStrictAboutTypos) {
  CallAuthorizer open("", "");
  EXPECT_TRUE(open.Check({}, Scope::kAdmin).ok());
  const std::string dir = ::testing::TempDir();
  const std::string good = dir + "/call_auth_token", empty = dir + "/call_auth_empty";
  std::ofstream(good) << "  tok-123\n";
  std::ofstream(empty) << "\n \n";
  auto a = CallAuthorizer::FromFiles(good, "");
  ASSERT_TRUE(a.ok()) << a.status();
  EXPECT_TRUE(a->Check(Bearer("Bearer tok-123"), Scope::kAdmin).ok());
  EXPECT_FALSE(a->admin_open());
  EXPECT_TRUE(a->read_open());
  EXPECT_EQ(CallAuthorizer::FromFiles(empty, "").status().code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(CallAuthorizer::FromFiles(dir + "/no_such_token_file", "").status().code(),
            absl::StatusCode::kInvalidArgument);
  std::remove(good.c_str());
  std::remove(empty.c_str());
}

}  // namespace
}  // namespace recall::server
