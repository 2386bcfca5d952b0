// Fuzz target: write-ahead log recovery (server/write_ahead_log.h) and the decoding of its
// payloads as recall.v1.WriteAheadRecord (what OnlineWrites::Open does with each record).
//
// Input: byte 0 selects how the log file is made from the rest:
//   even: the rest is the file, byte for byte (arbitrary bytes, torn headers, bad lengths);
//   odd:  the rest describes well-formed records (some up to ~300 KiB, past -max_len), framed
//         here with correct crcs, followed by one corruption, so the fuzzer gets past the
//         checksum and reaches records, long and short payloads and tails of every kind (see
//         BuildStructured).
// For that file it checks:
//   - ReadWal succeeds, valid_bytes + dropped_bytes == file size, drop_reason is set exactly
//     when bytes were dropped, and re-framing the records it returned reproduces the file's
//     first valid_bytes bytes exactly (recovery returns a prefix, never a modified record);
//   - in structured mode without corruption every record comes back, in order;
//   - ReadWal leaves the file untouched;
//   - WriteAheadLog::Open reports the same recovery, cuts the file to valid_bytes, and its
//     stats start at the record count; an Append after it gets the next sequence number and a
//     ReadWal afterwards sees the old records plus the new one with nothing dropped;
//   - Rewrite (compaction) with the recovered payloads yields a log that reads back the same;
//   - a second Open is clean (nothing dropped) and sees the same records.
// Each valid payload is parsed as a WriteAheadRecord, as OnlineWrites' replay does; parsing
// must not crash, and a parsed record must round-trip through serialization.
//
// RECALL_FUZZ_WRITE_SEEDS=<dir> ./wal_fuzzer writes the seed corpus to <dir> and exits.
#include <fcntl.h>
#include <fuzzer/FuzzedDataProvider.h>
#include <glog/logging.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <sstream>
#include <string>
#include <vector>

#include "recall/v1/wal.pb.h"
#include "server/crc32c.h"
#include "server/write_ahead_log.h"
#include "tests/fuzz/fuzz_check.h"

namespace {

using recall::server::kWalHeaderBytes;
using recall::server::ReadWal;
using recall::server::WalRecoveryInfo;
using recall::server::WriteAheadLog;


std::string g_dir;   // per-process scratch directory (tmpfs when available)
std::string g_path;  // the log file

// The record framing of server/WAL.md, written independently of write_ahead_log.cc.
std::string Frame(const std::string& payload) {
  char len[4];
  const uint32_t n = static_cast<uint32_t>(payload.size());
  for (int i = 0; i < 4; ++i) len[i] = static_cast<char>((n >> (8 * i)) & 0xff);
  uint32_t crc = recall::server::Crc32cExtend(recall::server::Crc32c(len, 4), payload.data(),
                                              payload.size());
  crc = recall::server::Crc32cMask(crc);
  std::string out(8, '\0');
  for (int i = 0; i < 4; ++i) out[i] = static_cast<char>((crc >> (8 * i)) & 0xff);
  std::memcpy(&out[4], len, 4);
  return out + payload;
}

std::string ReadFile(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

void WriteFile(const std::string& path, const std::string& bytes) {
  std::ofstream out(path, std::ios::binary | std::ios::trunc);
  out.write(bytes.data(), static_cast<std::streamsize>(bytes.size()));
  out.close();
  FUZZ_CHECK(out.good());
}

// Structured mode: up to 8 records (payloads of fuzzed bytes, a serialized WriteAheadRecord
// built from fuzzed ids, or a large filler), then one corruption of the framed file.
std::string BuildStructured(FuzzedDataProvider& in, std::vector<std::string>* intended,
                            bool* corrupted) {
  std::string file;
  const int n = in.ConsumeIntegralInRange<int>(0, 8);
  for (int i = 0; i < n && in.remaining_bytes() > 0; ++i) {
    std::string payload;
    const int kind = in.ConsumeIntegralInRange<int>(0, 2);
    if (kind == 2) {
      // A filler record of up to ~300 KiB, beyond what -max_len lets raw inputs reach: crosses
      // the recovery reader's 256 KiB buffer (kReadBufferBytes in write_ahead_log.cc), or is
      // read into its own buffer when larger than it.
      const size_t n = in.ConsumeIntegralInRange<size_t>(0, (size_t{300} << 10));
      payload.assign(n, static_cast<char>(in.ConsumeIntegral<uint8_t>()));
    } else if (kind == 1) {
      recall::v1::WriteAheadRecord rec;
      const int ids = in.ConsumeIntegralInRange<int>(0, 4);
      if (in.ConsumeBool()) {
        for (int j = 0; j < ids; ++j) {
          rec.mutable_delete_()->add_item_ids(in.ConsumeIntegral<int64_t>());
        }
      } else {
        auto* up = rec.mutable_upsert();
        for (int j = 0; j < ids; ++j) {
          auto* item = up->add_items();
          if (in.ConsumeBool()) {
            item->mutable_features()->set_item_id(in.ConsumeIntegral<int64_t>());
            (*item->mutable_features()->mutable_categorical())["c"] =
                in.ConsumeRandomLengthString(16);
          } else {
            item->mutable_vector()->set_item_id(in.ConsumeIntegral<int64_t>());
            item->mutable_vector()->add_values(in.ConsumeFloatingPoint<float>());
          }
        }
      }
      payload = rec.SerializeAsString();
    } else {
      payload = in.ConsumeRandomLengthString(512);
    }
    intended->push_back(payload);
    file += Frame(payload);
  }
  *corrupted = true;
  switch (in.ConsumeIntegralInRange<int>(0, 4)) {
    case 0:  // intact
      *corrupted = false;
      break;
    case 1:  // torn tail: cut anywhere
      if (!file.empty()) file.resize(in.ConsumeIntegralInRange<size_t>(0, file.size() - 1));
      break;
    case 2:  // one flipped bit anywhere
      if (!file.empty()) {
        const size_t at = in.ConsumeIntegralInRange<size_t>(0, file.size() - 1);
        file[at] = static_cast<char>(file[at] ^ (1u << in.ConsumeIntegralInRange<int>(0, 7)));
      }
      break;
    case 3:  // one byte overwritten
      if (!file.empty()) {
        file[in.ConsumeIntegralInRange<size_t>(0, file.size() - 1)] =
            static_cast<char>(in.ConsumeIntegral<uint8_t>());
      }
      break;
    case 4:  // garbage appended
      break;
  }
  std::string tail = in.ConsumeRemainingBytesAsString();
  if (!tail.empty()) *corrupted = true;
  return file + tail;
}

struct Scan {
  absl::Status status;
  WalRecoveryInfo info;
  std::vector<std::string> payloads;
};

absl::Status Decode(uint64_t seq, absl::string_view payload) {
  // OnlineWrites::Open's replay: the payload must parse as a WriteAheadRecord.
  recall::v1::WriteAheadRecord rec;
  if (!rec.ParseFromArray(payload.data(), static_cast<int>(payload.size()))) {
    return absl::OkStatus();  // OnlineWrites refuses the log (DataLoss); nothing to check
  }
  recall::v1::WriteAheadRecord again;
  FUZZ_CHECK(again.ParseFromString(rec.SerializeAsString()));
  FUZZ_CHECK(again.SerializeAsString() == rec.SerializeAsString());
  return absl::OkStatus();
}

Scan ReadAll(const std::string& path) {
  Scan s;
  s.status = ReadWal(
      path,
      [&s](uint64_t seq, absl::string_view payload) {
        FUZZ_CHECK(seq == s.payloads.size());
        s.payloads.emplace_back(payload);
        return Decode(seq, payload);
      },
      &s.info);
  return s;
}

void CheckConsistent(const Scan& s, const std::string& file) {
  FUZZ_CHECK(s.status.ok());
  FUZZ_CHECK(s.info.records == s.payloads.size());
  FUZZ_CHECK(s.info.valid_bytes + s.info.dropped_bytes == file.size());
  FUZZ_CHECK(s.info.drop_reason.empty() == (s.info.dropped_bytes == 0));
  std::string framed;
  for (const auto& p : s.payloads) framed += Frame(p);
  FUZZ_CHECK(framed.size() == s.info.valid_bytes);
  FUZZ_CHECK(file.compare(0, framed.size(), framed) == 0);
}

void RunOne(const std::string& file, const std::vector<std::string>* intended, bool corrupted) {
  ::unlink(g_path.c_str());
  ::unlink((g_path + ".rewrite").c_str());
  WriteFile(g_path, file);

  // Read-only recovery.
  Scan first = ReadAll(g_path);
  CheckConsistent(first, file);
  if (intended != nullptr && !corrupted) {
    FUZZ_CHECK(first.payloads == *intended);
    FUZZ_CHECK(first.info.dropped_bytes == 0);
  }
  if (intended != nullptr) {
    // Whatever the corruption (a cut, one flipped bit, one overwritten byte: crc32c detects
    // each), the records before it survive unchanged and no record differs from the one
    // written; records past the intended ones can only come from appended garbage.
    const size_t common = std::min(first.payloads.size(), intended->size());
    for (size_t i = 0; i < common; ++i) FUZZ_CHECK(first.payloads[i] == (*intended)[i]);
  }
  FUZZ_CHECK(ReadFile(g_path) == file);  // ReadWal never modifies the log

  // Open: same recovery, file cut to the valid prefix.
  std::vector<std::string> replayed;
  WalRecoveryInfo info;
  WriteAheadLog::Options opts;
  opts.path = g_path;
  opts.sync = recall::server::WalSyncPolicy::kNone;
  {
    auto wal = WriteAheadLog::Open(
        opts,
        [&replayed](uint64_t seq, absl::string_view payload) {
          FUZZ_CHECK(seq == replayed.size());
          replayed.emplace_back(payload);
          return absl::OkStatus();
        },
        &info);
    FUZZ_CHECK(wal.ok());
    FUZZ_CHECK(replayed == first.payloads);
    FUZZ_CHECK(info.records == first.info.records);
    FUZZ_CHECK(info.valid_bytes == first.info.valid_bytes);
    FUZZ_CHECK(info.dropped_bytes == first.info.dropped_bytes);
    FUZZ_CHECK(ReadFile(g_path) == file.substr(0, info.valid_bytes));
    const recall::server::WalStats st = (*wal)->stats();
    FUZZ_CHECK(st.next_sequence == info.records);
    FUZZ_CHECK(st.file_bytes == info.valid_bytes);

    // An append after recovery starts on a record boundary.
    const std::string extra = "appended-after-recovery";
    auto seq = (*wal)->Append(extra);
    FUZZ_CHECK(seq.ok() && *seq == info.records);
    Scan after = ReadAll(g_path);
    FUZZ_CHECK(after.status.ok());
    FUZZ_CHECK(after.info.dropped_bytes == 0);
    FUZZ_CHECK(after.payloads.size() == replayed.size() + 1);
    FUZZ_CHECK(std::equal(replayed.begin(), replayed.end(), after.payloads.begin()));
    FUZZ_CHECK(after.payloads.back() == extra);

    // Compaction: rewriting with the recovered payloads reads back the same.
    auto bytes = (*wal)->Rewrite(replayed);
    FUZZ_CHECK(bytes.ok());
    Scan rewritten = ReadAll(g_path);
    FUZZ_CHECK(rewritten.status.ok() && rewritten.info.dropped_bytes == 0);
    FUZZ_CHECK(rewritten.payloads == replayed);
    FUZZ_CHECK(rewritten.info.valid_bytes == *bytes);
    FUZZ_CHECK((*wal)->stats().next_sequence == replayed.size());
  }
  // A second Open finds a clean log.
  WalRecoveryInfo again;
  auto wal = WriteAheadLog::Open(opts, nullptr, &again);
  FUZZ_CHECK(wal.ok());
  FUZZ_CHECK(again.records == replayed.size() && again.dropped_bytes == 0);
}

void WriteSeeds(const std::string& dir) {
  auto put = [&dir](const std::string& name, const std::string& bytes) {
    WriteFile(dir + "/" + name, bytes);
  };
  recall::v1::WriteAheadRecord up;
  auto* item = up.mutable_upsert()->add_items();
  item->mutable_features()->set_item_id(42);
  (*item->mutable_features()->mutable_categorical())["category"] = "shoes";
  (*item->mutable_features()->mutable_numeric())["price"] = 19.5f;
  auto* vec = up.mutable_upsert()->add_items()->mutable_vector();
  vec->set_item_id(43);
  vec->set_model_version(3);
  for (int i = 0; i < 4; ++i) vec->add_values(0.5f);
  recall::v1::WriteAheadRecord del;
  del.mutable_delete_()->add_item_ids(42);
  del.mutable_delete_()->add_item_ids(7);
  const std::string log = Frame(up.SerializeAsString()) + Frame(del.SerializeAsString()) +
                          Frame("") + Frame(std::string("opaque\0bytes", 12));
  // Raw mode (selector 0).
  put("raw_valid_log", std::string(1, '\0') + log);
  put("raw_empty_log", std::string(1, '\0'));
  put("raw_torn_header", std::string(1, '\0') + log + log.substr(0, 5));
  put("raw_torn_payload", std::string(1, '\0') + log.substr(0, log.size() - 3));
  std::string flipped = log;
  flipped[20] ^= 0x10;
  put("raw_bad_crc", std::string(1, '\0') + flipped);
  std::string huge_len = Frame("x");
  huge_len[7] = '\x7f';  // length 0x7f000001 > kWalMaxPayloadBytes
  put("raw_length_over_limit", std::string(1, '\0') + log + huge_len);
  put("raw_zero_header", std::string(1, '\0') + std::string(kWalHeaderBytes, '\0'));
  // Structured mode (selector 1): the FuzzedDataProvider takes integers from the end of the
  // input and strings from the front, so these are byte soups; they start the fuzzer in mode 1.
  put("structured_a", std::string("\x01") + "payload-one\\payload-two\\" + std::string(12, '\x03'));
  put("structured_b", std::string("\x01") + "abc\\def" + std::string(24, '\x81'));
}

}  // namespace

extern "C" int LLVMFuzzerInitialize(int* argc, char*** argv) {
  if (const char* dir = std::getenv("RECALL_FUZZ_WRITE_SEEDS")) {
    WriteSeeds(dir);
    std::exit(0);
  }
  FLAGS_minloglevel = 2;  // Open's warning about every dropped tail would flood the output
  const char* base = ::access("/dev/shm", W_OK) == 0 ? "/dev/shm" : "/tmp";
  std::string tmpl = std::string(base) + "/recall-wal-fuzz-XXXXXX";
  FUZZ_CHECK(::mkdtemp(tmpl.data()) != nullptr);
  g_dir = tmpl;
  g_path = g_dir + "/wal.log";
  std::atexit([] {
    ::unlink(g_path.c_str());
    ::unlink((g_path + ".rewrite").c_str());
    ::rmdir(g_dir.c_str());
  });
  return 0;
}

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size < 1) return 0;
  if ((data[0] & 1) == 0) {
    RunOne(std::string(reinterpret_cast<const char*>(data + 1), size - 1), nullptr, true);
  } else {
    FuzzedDataProvider in(data + 1, size - 1);
    std::vector<std::string> intended;
    bool corrupted = false;
    std::string file = BuildStructured(in, &intended, &corrupted);
    RunOne(file, &intended, corrupted);
  }
  return 0;
}
