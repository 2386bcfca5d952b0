// The completion-queue pieces of the serving edge (server/async_calls.h) and the health service
// built from them (server/health_service.h), in-process on loopback.
#include <gtest/gtest.h>
#include <grpcpp/grpcpp.h>

#include <atomic>
#include <chrono>
#include <memory>
#include <thread>

#include "absl/strings/str_cat.h"
#include "absl/synchronization/mutex.h"
#include "absl/synchronization/notification.h"
#include "grpc/health/v1/health.grpc.pb.h"
#include "server/async_calls.h"
#include "server/health_service.h"

namespace recall::server {

class BlockingCallPoolTestAccess {
 public:
  static int idle(BlockingCallPool& p) {
    absl::MutexLock lock(&p.mu_);
    return p.idle_;
  }
};

namespace {

using grpc::health::v1::Health;
using grpc::health::v1::HealthCheckRequest;
using grpc::health::v1::HealthCheckResponse;

// A server with only the health service, on `threads` queues.
class HealthServer {
 public:
  explicit HealthServer(int threads = 1) {
    grpc::ServerBuilder builder;
    builder.AddListeningPort("127.0.0.1:0", grpc::InsecureServerCredentials(), &port_);
    builder.RegisterService(health_.service());
    queues_ = std::make_unique<CompletionQueueThreads>(builder, threads);
    server_ = builder.BuildAndStart();
    health_.Arm(*queues_);
    queues_->Start();
    stub_ = Health::NewStub(grpc::CreateChannel(absl::StrCat("127.0.0.1:", port_),
                                                grpc::InsecureChannelCredentials()));
  }
  ~HealthServer() { Stop(); }
  void Stop() {
    if (server_ == nullptr) return;
    health_.Shutdown();
    server_->Shutdown();  // no deadline: it returns once every call has ended
    queues_->Shutdown();
    server_.reset();
  }

  HealthService& health() { return health_; }
  Health::Stub& stub() { return *stub_; }

  grpc::Status Check(const std::string& service, HealthCheckResponse* out) {
    grpc::ClientContext ctx;
    ctx.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(10));
    HealthCheckRequest req;
    req.set_service(service);
    return stub_->Check(&ctx, req, out);
  }

 private:
  HealthService health_;
  int port_ = 0;
  std::unique_ptr<CompletionQueueThreads> queues_;
  std::unique_ptr<grpc::Server> server_;
  std::unique_ptr<Health::Stub> stub_;
};

TEST(HealthServiceTest, CheckAnswersTheServersStatusAndNotFoundForOtherNames) {
  HealthServer s;
  HealthCheckResponse r;
  ASSERT_TRUE(s.Check("", &r).ok());
  EXPECT_EQ(r.status(), HealthCheckResponse::NOT_SERVING);
  s.health().SetServing(true);
  ASSERT_TRUE(s.Check("", &r).ok());
  EXPECT_EQ(r.status(), HealthCheckResponse::SERVING);
  EXPECT_EQ(s.Check("recall.v1.RecallService", &r).error_code(), grpc::StatusCode::NOT_FOUND);
  s.health().SetServing(false);
  ASSERT_TRUE(s.Check("", &r).ok());
  EXPECT_EQ(r.status(), HealthCheckResponse::NOT_SERVING);
  // Many at once, on two queues: each call is answered once.
  HealthServer two(2);
  two.health().SetServing(true);
  std::atomic<int> serving{0};
  std::vector<std::thread> callers;
  for (int t = 0; t < 4; ++t) {
    callers.emplace_back([&] {
      for (int i = 0; i < 50; ++i) {
        HealthCheckResponse out;
        if (two.Check("", &out).ok() && out.status() == HealthCheckResponse::SERVING) ++serving;
      }
    });
  }
  for (auto& c : callers) c.join();
  EXPECT_EQ(serving.load(), 200);
}

// Reads the next status of a watch (false at the stream's end).
bool Next(grpc::ClientReader<HealthCheckResponse>& reader, int* status) {
  HealthCheckResponse r;
  if (!reader.Read(&r)) return false;
  *status = r.status();
  return true;
}

TEST(HealthServiceTest, WatchSendsEveryChangeAndEndsAtShutdown) {
  HealthServer s;
  grpc::ClientContext ctx;
  HealthCheckRequest req;
  auto reader = s.stub().Watch(&ctx, req);
  int status = -1;
  ASSERT_TRUE(Next(*reader, &status));
  EXPECT_EQ(status, HealthCheckResponse::NOT_SERVING);
  s.health().SetServing(true);
  ASSERT_TRUE(Next(*reader, &status));
  EXPECT_EQ(status, HealthCheckResponse::SERVING);
  s.health().SetServing(true);  // no change, no message
  s.health().SetServing(false);
  ASSERT_TRUE(Next(*reader, &status));
  EXPECT_EQ(status, HealthCheckResponse::NOT_SERVING);
  s.health().SetServing(true);
  ASSERT_TRUE(Next(*reader, &status));
  EXPECT_EQ(status, HealthCheckResponse::SERVING);

  grpc::ClientContext unknown_ctx;
  req.set_service("nosuch");
  auto unknown = s.stub().Watch(&unknown_ctx, req);
  ASSERT_TRUE(Next(*unknown, &status));
  EXPECT_EQ(status, HealthCheckResponse::SERVICE_UNKNOWN);

  // Shutdown: the last status goes out and both streams end OK; the server's Shutdown, which
  // has no deadline here, does not wait for the clients.
  std::thread stop([&] { s.Stop(); });
  ASSERT_TRUE(Next(*reader, &status));
  EXPECT_EQ(status, HealthCheckResponse::NOT_SERVING);
  EXPECT_FALSE(Next(*reader, &status));
  EXPECT_TRUE(reader->Finish().ok());
  EXPECT_FALSE(Next(*unknown, &status));
  EXPECT_TRUE(unknown->Finish().ok());
  stop.join();
}

TEST(HealthServiceTest, AWatchTheClientCancelsIsFreedAndLaterChangesStillReachOthers) {
  HealthServer s;
  auto cancelled_ctx = std::make_unique<grpc::ClientContext>();
  auto cancelled = s.stub().Watch(cancelled_ctx.get(), HealthCheckRequest());
  int status = -1;
  ASSERT_TRUE(Next(*cancelled, &status));
  cancelled_ctx->TryCancel();
  EXPECT_EQ(cancelled->Finish().error_code(), grpc::StatusCode::CANCELLED);

  grpc::ClientContext ctx;
  auto reader = s.stub().Watch(&ctx, HealthCheckRequest());
  ASSERT_TRUE(Next(*reader, &status));
  for (int i = 0; i < 20; ++i) s.health().SetServing(i % 2 == 0);  // ends SERVING... then
  s.health().SetServing(false);
  // Changes sent while a write was in flight collapse into the newest: read until it shows.
  while (status != HealthCheckResponse::NOT_SERVING) ASSERT_TRUE(Next(*reader, &status));
  ctx.TryCancel();
  EXPECT_EQ(reader->Finish().error_code(), grpc::StatusCode::CANCELLED);
  // Both watches are gone, so Shutdown without a deadline returns.
  s.Stop();
}

TEST(BlockingCallPoolTest, GrowsToItsCapRunsEverythingAndDrainsOnDestruction) {
  std::atomic<int> ran{0};
  std::atomic<int> running{0};
  std::atomic<int> most{0};
  absl::Notification release;
  {
    BlockingCallPool pool(3);
    for (int i = 0; i < 8; ++i) {
      pool.Run([&] {
        const int now = ++running;
        int seen = most.load();
        while (now > seen && !most.compare_exchange_weak(seen, now)) {
        }
        release.WaitForNotificationWithTimeout(absl::Seconds(30));
        --running;
        ++ran;
      });
    }
    // Three block at once; the other five wait for them, not for threads of their own.
    for (int i = 0; i < 30000 && running.load() < 3; ++i) {  // bounded: 30 s
      std::this_thread::sleep_for(std::chrono::milliseconds(1));
    }
    EXPECT_EQ(running.load(), 3);
    EXPECT_EQ(pool.threads(), 3);
    release.Notify();
  }  // the destructor runs what is still queued
  EXPECT_EQ(ran.load(), 8);
  EXPECT_EQ(most.load(), 3);
}

TEST(BlockingCallPoolTest, ReusesAnIdleThread) {
  BlockingCallPool pool(4);
  for (int i = 0; i < 20; ++i) {
    absl::Notification done;
    pool.Run([&] { done.Notify(); });
    done.WaitForNotification();
    // The thread that ran it goes back to waiting; the next task must find it there.
    for (int j = 0; j < 30000 && BlockingCallPoolTestAccess::idle(pool) == 0; ++j) {
      std::this_thread::sleep_for(std::chrono::milliseconds(1));
    }
  }
  EXPECT_EQ(pool.threads(), 1);
}

}  // namespace
}  // namespace recall::server
