# Shared set-up for scripts/test and scripts/demo: install what a fresh
# Debian 12 machine lacks, and nothing that is already there.
# shellcheck shell=bash

TANSU_VERSION="0.6.0"

log() { printf '\033[1m==> %s\033[0m\n' "$*" >&2; }

as_root() {
  if [ "$(id -u)" -eq 0 ]; then "$@"; else sudo "$@"; fi
}

# ensure_packages PKG…: apt-get install the Debian packages that are missing.
ensure_packages() {
  local missing=()
  for package in "$@"; do
    dpkg-query -W -f='${Status}' "$package" 2>/dev/null | grep -q "install ok installed" || missing+=("$package")
  done
  if [ "${#missing[@]}" -gt 0 ]; then
    log "installing ${missing[*]}"
    as_root apt-get update -qq
    as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
  fi
}

ensure_rust() {
  if ! command -v cargo >/dev/null 2>&1 && [ -x "$HOME/.cargo/bin/cargo" ]; then
    export PATH="$HOME/.cargo/bin:$PATH"
  fi
  if ! command -v cargo >/dev/null 2>&1; then
    echo "cargo is missing: install a Rust toolchain (1.88 or newer, e.g. with rustup) and rerun." >&2
    exit 1
  fi
}

# The build needs: a C toolchain, libclang for bindgen (redis-module),
# make/cmake/zlib/OpenSSL for the bundled librdkafka, redis-server to run,
# redis-cli (redis-tools) to build test clusters and openssl to make test
# certificates.
ensure_build_deps() {
  ensure_packages build-essential pkg-config libclang-dev cmake zlib1g-dev libssl-dev redis-server redis-tools openssl curl
  ensure_rust
}

# The Python shop of tests/tests/python_shop.rs: redis-py and confluent-kafka
# in a virtual environment under target/ (made once; BANDIT_PYTHON names it).
PYTHON_SHOP_PACKAGES=("redis==5.2.1" "confluent-kafka==2.6.1")
ensure_python_shop() {
  ensure_packages python3 python3-venv
  local venv="${CARGO_TARGET_DIR:-$PWD/target}/pyvenv"
  if ! "$venv/bin/python" -c "import redis, confluent_kafka" >/dev/null 2>&1; then
    log "creating $venv (${PYTHON_SHOP_PACKAGES[*]})"
    python3 -m venv "$venv"
    "$venv/bin/pip" install --quiet "${PYTHON_SHOP_PACKAGES[@]}"
  fi
  export BANDIT_PYTHON="$venv/bin/python"
}

# tansu: the Kafka-protocol broker the tests and the demo run locally.
ensure_tansu() {
  export PATH="$HOME/.cargo/bin:$PATH"
  if tansu --version 2>/dev/null | grep -q "$TANSU_VERSION"; then
    return
  fi
  log "installing tansu $TANSU_VERSION (a Kafka-compatible broker; about 11 minutes, once)"
  cargo install tansu --version "$TANSU_VERSION" --features dynostore,libsql
}

# valkey-server 8 (Debian 12 ships it in bookworm-backports): the integration
# suite runs against it as well as against redis-server.
ensure_valkey() {
  if command -v valkey-server >/dev/null 2>&1; then
    return
  fi
  if ! grep -rqs "bookworm-backports" /etc/apt/sources.list /etc/apt/sources.list.d/; then
    log "adding bookworm-backports to apt's sources (for valkey-server)"
    echo "deb http://deb.debian.org/debian bookworm-backports main" | as_root tee /etc/apt/sources.list.d/bookworm-backports.list >/dev/null
  fi
  log "installing valkey-server from bookworm-backports"
  as_root apt-get update -qq
  as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq -t bookworm-backports valkey-server >/dev/null
  # The package starts a system service on 6379 where systemd runs; the tests
  # start their own servers on free ports and need none.
}
