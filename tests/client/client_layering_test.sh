#!/usr/bin/env bash
# DESIGN.md "Layout": client/ -> proto/ only (a user can build the client alone). Fails when
#   - a quoted #include in client/ names anything but a client/ header, a header generated from
#     proto/ (spelled "recall/v1/<name>.pb.h" / ".grpc.pb.h") or a third-party one (absl/,
#     google/protobuf/, grpcpp/, grpc/, gflags/);
#   - an angle-bracket #include in client/ names a project folder (<server/...>, <index/...>);
#   - client/CMakeLists.txt names a project library other than recall_client_lib,
#     recall_bench_lib and recall_proto.
# Then it checks that it can fail: on a copy of client/ with one forbidden include (what
# recall_bench.cc once had) and on one whose CMakeLists links recall_server.
# usage: client_layering_test.sh SOURCE_DIR
set -uo pipefail
SRC=${1:?usage: client_layering_test.sh SOURCE_DIR}

# check DIR: prints every violation, returns 1 if there is one.
check() {
  local dir=$1 bad=0 line
  while IFS= read -r line; do
    echo "forbidden include: $line"
    bad=1
  done < <(grep -HnE '^[[:space:]]*#[[:space:]]*include[[:space:]]*"' "$dir"/*.h "$dir"/*.cc |
           grep -vE '#[[:space:]]*include[[:space:]]*"(client/[A-Za-z0-9_]+\.h|recall/v1/[A-Za-z0-9_]+(\.grpc)?\.pb\.h|absl/|google/protobuf/|grpcpp/|grpc/|gflags/)')
  while IFS= read -r line; do
    echo "forbidden include: $line"
    bad=1
  done < <(grep -HnE '^[[:space:]]*#[[:space:]]*include[[:space:]]*<(base|bench|client|deploy|index|model|proto|server|tests|trainer)/' \
             "$dir"/*.h "$dir"/*.cc)
  while IFS= read -r line; do
    echo "forbidden library in $dir/CMakeLists.txt: $line"
    bad=1
  done < <(sed 's/#.*//' "$dir/CMakeLists.txt" | grep -oE '\brecall_[a-z0-9_]+\.?' |
           grep -v '\.$' | sort -u |
           grep -vxE 'recall_(client_lib|bench_lib|proto)')
  return $bad
}

status=0
echo "== $SRC/client"
if check "$SRC/client"; then
  echo "ok: client/ includes only client/, recall/v1 and third-party headers"
else
  status=1
fi

# The check must be able to fail.
TMP=$(mktemp -d)
trap 'rm -rf "$TMP"' EXIT
for bad in '#include "server/recall_engine.h"' '#include "trainer/dataset.h"' \
           '#include "model/openmp_env.h"' '#include "index/embedding_index.h"' \
           '#include "base/whole_file.h"' '#include "recall_engine.h"' '#include <server/metrics.h>'; do
  rm -rf "$TMP/client" && cp -r "$SRC/client" "$TMP/client"
  printf '%s\n' "$bad" >>"$TMP/client/bench_load.h"
  if check "$TMP/client" >/dev/null; then
    echo "self-test FAILED: the check let through: $bad"
    status=1
  fi
done
rm -rf "$TMP/client" && cp -r "$SRC/client" "$TMP/client"
echo 'target_link_libraries(recall-bench PRIVATE recall_server)' >>"$TMP/client/CMakeLists.txt"
if check "$TMP/client" >/dev/null; then
  echo "self-test FAILED: the check let through a link of recall_server"
  status=1
fi
[ $status -eq 0 ] && echo "ok: the check fails on forbidden includes and libraries"
exit $status
