// CRC-32C (Castagnoli, reflected polynomial 0x82F63B78), the checksum that frames write-ahead
// log records (server/WAL.md).
//
// Hand-written because nothing on the target platform provides it: Abseil 20220623 predates
// absl/crc, and Debian 12 ships no crc32c C/C++ library (google/crc32c is not packaged). The
// SSE4.2 `crc32` instruction computes exactly this polynomial, so x86-64 CPUs that have it take
// the hardware path (chosen once at runtime, so the binary still runs on CPUs without it);
// everything else uses a slicing-by-8 table.
//
// Thread-safety: all functions are pure and thread-safe.
#ifndef RECALL_SERVER_CRC32C_H_
#define RECALL_SERVER_CRC32C_H_

#include <cstddef>
#include <cstdint>

namespace recall::server {

// Returns the crc32c of data[0, n) extended from `crc`, the crc32c of some preceding bytes:
// Crc32cExtend(Crc32c(a), b) == Crc32c(a + b). Crc32cExtend(0, ...) == Crc32c(...).
uint32_t Crc32cExtend(uint32_t crc, const void* data, size_t n);

// Returns the crc32c of data[0, n). Crc32c("123456789", 9) == 0xE3069283.
inline uint32_t Crc32c(const void* data, size_t n) { return Crc32cExtend(0, data, n); }

// The two implementations behind Crc32cExtend, exposed so tests can check they agree.
// Crc32cHardwareExtend must only be called when Crc32cHardwareAvailable() is true.
uint32_t Crc32cSoftwareExtend(uint32_t crc, const void* data, size_t n);
uint32_t Crc32cHardwareExtend(uint32_t crc, const void* data, size_t n);
bool Crc32cHardwareAvailable();

// leveldb's masking, for crcs that are stored: the crc of a string that itself embeds crcs
// (a log holding a log, a record holding its own checksum) is poorly distributed, and an
// all-zero header would otherwise carry a valid-looking zero crc. Mask before storing, Unmask
// after reading.
inline constexpr uint32_t kCrc32cMaskDelta = 0xa282ead8u;
inline uint32_t Crc32cMask(uint32_t crc) {
  return ((crc >> 15) | (crc << 17)) + kCrc32cMaskDelta;  // rotate right by 15, add delta
}
inline uint32_t Crc32cUnmask(uint32_t masked) {
  uint32_t rot = masked - kCrc32cMaskDelta;
  return (rot >> 17) | (rot << 15);
}

}  // namespace recall::server

#endif  // RECALL_SERVER_CRC32C_H_
