#!/usr/bin/env bash
# Installs everything a fresh machine lacks to build, test and benchmark xdplb.
# Idempotent: each step checks first, so a machine that has it all finishes in about a second.
# Run alone (`scripts/setup.sh`) or through any `cargo xtask` command, which calls it.
set -euo pipefail

say() { printf 'setup: %s\n' "$*" >&2; }
fail() { printf 'setup: FAILED: %s\n' "$*" >&2; exit 1; }

# Debian packages the lab, the tests and the benchmarks use (command -> package).
declare -A debs=(
  [ip]=iproute2
  [ethtool]=ethtool
  [dpkg-shlibdeps]=dpkg-dev
  [nft]=nftables
  [ping]=iputils-ping
  [bpftool]=bpftool
  [nsenter]=util-linux
  [sysctl]=procps
  [curl]=curl
  [storescp]=dcmtk
  [openssl]=openssl
  [Orthanc]=orthanc
  [nginx]=nginx-light
  [haproxy]=haproxy
  [keepalived]=keepalived
  [chromium]=chromium
  [bird]=bird2
)
# Packages without a command of their own (file -> package). Tests run Debian's python as
# /usr/bin/python3: a python3 earlier on PATH (pyenv) does not see Debian's modules.
declare -A deb_files=(
  [/usr/bin/python3]=python3
  [/usr/lib/python3/dist-packages/hl7/mllp/__init__.py]=python3-hl7
  [/usr/lib/python3/dist-packages/prometheus_client/openmetrics/parser.py]=python3-prometheus-client
)

missing=()
for cmd in "${!debs[@]}"; do
  command -v "$cmd" >/dev/null 2>&1 || [ -x "/usr/sbin/$cmd" ] || missing+=("${debs[$cmd]}")
done
for file in "${!deb_files[@]}"; do
  [ -e "$file" ] || missing+=("${deb_files[$file]}")
done
if [ ${#missing[@]} -gt 0 ]; then
  [ "$(id -u)" -eq 0 ] || fail "need root to install Debian packages: ${missing[*]}"
  say "installing Debian packages: ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq >/dev/null || fail "apt-get update"
  apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null \
    || fail "apt-get install ${missing[*]}"
fi

command -v rustup >/dev/null 2>&1 || fail "rustup is not installed; it is needed for the nightly toolchain"

# The eBPF crate builds with nightly and -Z build-std=core, which needs rust-src.
if ! rustup toolchain list | grep -q '^nightly'; then
  say "installing the nightly toolchain"
  rustup toolchain install nightly --profile minimal >/dev/null || fail "rustup toolchain install nightly"
fi
sysroot=$(rustc +nightly --print sysroot)
if [ ! -d "$sysroot/lib/rustlib/src/rust/library/core" ]; then
  say "adding rust-src to nightly"
  rustup component add rust-src --toolchain nightly >/dev/null || fail "rustup component add rust-src"
fi

# bpf-linker must link the same LLVM major as the nightly rustc that emits the bitcode.
llvm_major=$(rustc +nightly -vV | sed -n 's/^LLVM version: \([0-9]*\).*/\1/p')
[ -n "$llvm_major" ] || fail "cannot read the LLVM version of rustc +nightly"
linker_ok() {
  command -v bpf-linker >/dev/null 2>&1 || return 1
  # The linker dlopens nightly's libLLVM through the rpath we built it with; check it still runs.
  bpf-linker --version >/dev/null 2>&1
}
if ! linker_ok; then
  llvm_so=$(ls "$sysroot"/lib/libLLVM.so."$llvm_major".* 2>/dev/null | head -n1)
  [ -n "$llvm_so" ] || fail "nightly ships no libLLVM.so.$llvm_major.* in $sysroot/lib"
  prefix="${CARGO_HOME:-$HOME/.cargo}/llvm-for-bpf-linker/$llvm_major"
  mkdir -p "$prefix/lib"
  ln -sf "$llvm_so" "$prefix/lib/libLLVM.so"
  ln -sf "$llvm_so" "$prefix/lib/$(basename "$llvm_so")"
  say "building bpf-linker against nightly's LLVM $llvm_major (takes a minute or two)"
  LLVM_PREFIX="$prefix" RUSTFLAGS="-C link-arg=-Wl,-rpath,$sysroot/lib" \
    cargo install --locked bpf-linker --version '^0.13' --no-default-features --features "llvm-$llvm_major" \
      >/tmp/xdplb-bpf-linker-build.log 2>&1 \
    || fail "cargo install bpf-linker (log: /tmp/xdplb-bpf-linker-build.log)"
  linker_ok || fail "bpf-linker installed but does not run"
fi
exit 0
