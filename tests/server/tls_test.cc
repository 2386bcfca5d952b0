// TLS and mutual TLS on a real recall-server child (loopback), with a CA, a server and a client
// certificate made by openssl for this run: a plaintext client is refused on a TLS port, a TLS
// client that trusts the CA is served; with --tls_client_ca_file a client without a certificate
// is refused and one with a CA-signed certificate is served.
#include <grpcpp/grpcpp.h>
#include <gtest/gtest.h>

#include <cstdlib>
#include <fstream>
#include <sstream>
#include <string>

#include "tests/server/server_process.h"
#include "tests/server/small_model.h"

namespace recall {
namespace {

std::string ReadFile(const std::string& path) {
  std::ifstream in(path);
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

class TlsTest : public testing::SmallModelSuite<TlsTest> {
 public:
  static constexpr char kTempName[] = "recall_tls";

 protected:
  static void SetUpTestSuite() {
    SmallModelSuite::SetUpTestSuite();
    auto path = model_->Export(*dir_ + "/models");
    ASSERT_TRUE(path.ok()) << path.status();
    const std::string d = *dir_;
    std::ofstream(d + "/server.ext") << "subjectAltName=DNS:localhost\nextendedKeyUsage=serverAuth\n";
    std::ofstream(d + "/client.ext") << "extendedKeyUsage=clientAuth\n";
    const std::string script =
        "set -e; cd '" + d + "'; "
        "openssl req -x509 -newkey rsa:2048 -nodes -keyout ca.key -out ca.pem -days 1 "
        "  -subj /CN=recall-test-ca; "
        "for who in server client; do "
        "  openssl req -newkey rsa:2048 -nodes -keyout $who.key -out $who.csr -subj /CN=$who; "
        "  openssl x509 -req -in $who.csr -CA ca.pem -CAkey ca.key -CAcreateserial -days 1 "
        "    -extfile $who.ext -out $who.pem; "
        "done; "
        // A second CA the server does not trust, with a client certificate of its own.
        "openssl req -x509 -newkey rsa:2048 -nodes -keyout other.key -out other.pem -days 1 "
        "  -subj /CN=other-ca";
    std::ofstream(d + "/make_certs.sh") << script << "\n";
    ASSERT_EQ(std::system(("bash '" + d + "/make_certs.sh' > '" + d + "/openssl.log' 2>&1").c_str()), 0)
        << "openssl failed; see " << d << "/openssl.log";
  }

  static std::shared_ptr<grpc::Channel> TlsChannel(int port, bool with_client_cert,
                                                   const std::string& client_prefix = "client") {
    grpc::SslCredentialsOptions opts;
    opts.pem_root_certs = ReadFile(*dir_ + "/ca.pem");
    if (with_client_cert) {
      opts.pem_private_key = ReadFile(*dir_ + "/" + client_prefix + ".key");
      opts.pem_cert_chain = ReadFile(*dir_ + "/" + client_prefix + ".pem");
    }
    grpc::ChannelArguments args;
    args.SetSslTargetNameOverride("localhost");
    return grpc::CreateCustomChannel("127.0.0.1:" + std::to_string(port),
                                     grpc::SslCredentials(opts), args);
  }

  static grpc::Status RecallOn(const std::shared_ptr<grpc::Channel>& channel) {
    auto stub = v1::RecallService::NewStub(channel);
    v1::RecallRequest req;
    req.set_k(5);
    req.mutable_user()->set_user_id(1);
    for (int64_t i : dataset_->train[1]) req.mutable_user()->add_history_item_ids(i);
    v1::RecallResponse resp;
    auto ctx = testing::Deadline(10);
    grpc::Status s = stub->Recall(ctx.get(), req, &resp);
    if (s.ok() && resp.items_size() != 5) return grpc::Status(grpc::StatusCode::INTERNAL, "size");
    return s;
  }

  std::vector<std::string> TlsFlags(bool mutual) {
    std::vector<std::string> f = {"--poll_interval_s=0", "--tls_cert_file=" + *dir_ + "/server.pem",
                                  "--tls_key_file=" + *dir_ + "/server.key"};
    if (mutual) f.push_back("--tls_client_ca_file=" + *dir_ + "/ca.pem");
    return f;
  }
};

TEST_F(TlsTest, PlaintextClientIsRefusedAndTlsClientIsServed) {
  testing::ServerProcess server;
  ASSERT_TRUE(server.Start(RECALL_SERVER_BIN, *dir_ + "/models", *dir_, TlsFlags(false)));
  const int port = server.grpc_port();
  grpc::Status plain = RecallOn(grpc::CreateChannel("127.0.0.1:" + std::to_string(port),
                                                    grpc::InsecureChannelCredentials()));
  EXPECT_EQ(plain.error_code(), grpc::StatusCode::UNAVAILABLE) << plain.error_message();
  grpc::Status tls = RecallOn(TlsChannel(port, false));
  EXPECT_TRUE(tls.ok()) << tls.error_message();
  EXPECT_EQ(server.Stop(), 0);
}

TEST_F(TlsTest, MutualTlsRefusesClientsWithoutATrustedCertificate) {
  testing::ServerProcess server;
  ASSERT_TRUE(server.Start(RECALL_SERVER_BIN, *dir_ + "/models", *dir_, TlsFlags(true)));
  const int port = server.grpc_port();
  grpc::Status no_cert = RecallOn(TlsChannel(port, false));
  EXPECT_EQ(no_cert.error_code(), grpc::StatusCode::UNAVAILABLE) << no_cert.error_message();
  // A self-signed certificate of a CA the server does not trust.
  grpc::Status untrusted = RecallOn(TlsChannel(port, true, "other"));
  EXPECT_EQ(untrusted.error_code(), grpc::StatusCode::UNAVAILABLE) << untrusted.error_message();
  grpc::Status with_cert = RecallOn(TlsChannel(port, true));
  EXPECT_TRUE(with_cert.ok()) << with_cert.error_message();
  grpc::Status plain = RecallOn(grpc::CreateChannel("127.0.0.1:" + std::to_string(port),
                                                    grpc::InsecureChannelCredentials()));
  EXPECT_EQ(plain.error_code(), grpc::StatusCode::UNAVAILABLE);
  EXPECT_EQ(server.Stop(), 0);
}

TEST_F(TlsTest, InconsistentTlsFlagsStopTheServerAtStart) {
  testing::ServerProcess server;
  EXPECT_FALSE(server.Start(RECALL_SERVER_BIN, *dir_ + "/models", *dir_,
                            {"--tls_cert_file=" + *dir_ + "/server.pem"}));
  testing::ServerProcess server2;
  EXPECT_FALSE(server2.Start(RECALL_SERVER_BIN, *dir_ + "/models", *dir_,
                             {"--tls_client_ca_file=" + *dir_ + "/ca.pem"}));
}

}  // namespace
}  // namespace recall
