#!/usr/bin/env bash
# Installs every build and runtime dependency of Tower Recall from Debian 12's archive.
# Idempotent: packages already present are left alone, and apt-get update runs only when
# something is missing. No network downloads besides apt.
set -euo pipefail

PACKAGES=(
  # toolchain
  build-essential cmake pkg-config ninja-build git ca-certificates
  # gRPC + protobuf (1.51 / 3.21)
  libgrpc++-dev libprotobuf-dev protobuf-compiler protobuf-compiler-grpc
  # FAISS 1.7.3 (CPU) and the fast BLAS it must load (libblas.so.3 -> OpenBLAS/OpenMP)
  libfaiss-dev libopenblas0-openmp libopenblas-openmp-dev
  # LibTorch 1.13
  libtorch-dev
  # c10d ProcessGroupGloo (recall-train --world_size): its header includes <gloo/...>
  libgloo-dev
  # Abseil, glog/gflags, prometheus-cpp, OpenSSL (sha256, token compare; the openssl CLI makes
  # the TLS tests' certificates)
  libabsl-dev libgoogle-glog-dev libgflags-dev prometheus-cpp-dev libssl-dev openssl
  # tcmalloc: the trainer's and server's allocator (see README "Allocator")
  libgoogle-perftools-dev
  # tests
  libgtest-dev libgmock-dev
  # fuzzing (deploy/fuzz.sh, tests/fuzz): clang with libFuzzer and the sanitizer runtimes
  clang-14 libclang-rt-14-dev
  # Python peers for benchmarks (Debian's interpreter: /usr/bin/python3)
  python3 python3-torch python3-numpy python3-grpcio python3-protobuf python3-faiss
  # tools used by examples and tests: curl for /metrics
  curl
  # training plots (recall-train --report_dir)
  gnuplot-nox
  # deploy checks (tests/deploy): Prometheus server + promtool (scrape test, config/rules/metrics
  # lint), docker-compose v1 (validates docker-compose.yml; no engine needed), PyYAML for
  # /usr/bin/python3 (parses the YAML under deploy/)
  prometheus docker-compose python3-yaml
  # replicated write log and cluster-wide pin (server/nats_write_log.h): the NATS C client with
  # JetStream and KV, and nats-server (JetStream) for the loopback cluster tests
  libnats-dev nats-server
)

missing=()
for p in "${PACKAGES[@]}"; do
  if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed"; then
    missing+=("$p")
  fi
done

SUDO=""
if [ "$(id -u)" -ne 0 ]; then SUDO="sudo"; fi

if ((${#missing[@]})); then
  echo "install-deps: installing ${#missing[@]} package(s): ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  $SUDO apt-get update -q
  $SUDO apt-get install -y -q --no-install-recommends "${missing[@]}"
else
  echo "install-deps: all ${#PACKAGES[@]} packages present"
fi

# libblas.so.3 must resolve to OpenBLAS (OpenMP flavour): the reference BLAS is many times
# slower for both FAISS and LibTorch. Debian's alternatives pick the highest priority, which is
# OpenBLAS once installed; force it in case another provider was selected by hand.
arch=$(dpkg-architecture -qDEB_HOST_MULTIARCH 2>/dev/null || echo x86_64-linux-gnu)
for lib in libblas.so.3 liblapack.so.3; do
  target=/usr/lib/$arch/openblas-openmp/$lib
  if [ -e "$target" ]; then
    $SUDO update-alternatives --set "$lib-$arch" "$target" >/dev/null 2>&1 || true
  fi
done
echo "install-deps: libblas.so.3 -> $(readlink -f /usr/lib/$arch/libblas.so.3)"
