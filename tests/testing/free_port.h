// Test helper: a free loopback port for a server a test starts itself.
#ifndef RECALL_TESTS_TESTING_FREE_PORT_H_
#define RECALL_TESTS_TESTING_FREE_PORT_H_

#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <set>

namespace recall::testing {

// A loopback port nothing listens on now (and that this process has not handed out before).
inline int FreeLoopbackPort() {
  static std::set<int> given;
  for (int attempt = 0; attempt < 100; ++attempt) {
    int fd = ::socket(AF_INET, SOCK_STREAM, 0);
    sockaddr_in addr{};
    addr.sin_family = AF_INET;
    addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    addr.sin_port = 0;
    socklen_t len = sizeof(addr);
    int port = -1;
    if (::bind(fd, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) == 0 &&
        ::getsockname(fd, reinterpret_cast<sockaddr*>(&addr), &len) == 0) {
      port = ntohs(addr.sin_port);
    }
    ::close(fd);
    if (port > 0 && given.insert(port).second) return port;
  }
  return -1;
}

}  // namespace recall::testing

#endif  // RECALL_TESTS_TESTING_FREE_PORT_H_
